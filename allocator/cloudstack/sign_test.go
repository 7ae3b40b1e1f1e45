package cloudstack

import (
	"net/url"
	"strings"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/cloudstack/cloudstacktest"
)

// A vector computed by a third implementation (Python's hmac over Java
// URLEncoder rules), so that the client and the fake cannot agree on a
// shared mistake.
func TestSignedQueryVector(t *testing.T) {
	params := url.Values{
		"command":          {"listVirtualMachines"},
		"podid":            {"77828509-4043-40bc-8756-7745c8ec7a99"},
		"listall":          {"true"},
		"details":          {"nics"},
		"page":             {"1"},
		"pagesize":         {"500"},
		"response":         {"json"},
		"apiKey":           {"Pl4in-API_key"},
		"signatureversion": {"3"},
		"expires":          {"2030-01-02T03:04:05+0000"},
		"keyword":          {"a b*c~d+e/é"},
	}
	const want = "apiKey=Pl4in-API_key&command=listVirtualMachines&details=nics" +
		"&expires=2030-01-02T03%3A04%3A05%2B0000&keyword=a%20b*c%7Ed%2Be%2F%C3%A9" +
		"&listall=true&page=1&pagesize=500&podid=77828509-4043-40bc-8756-7745c8ec7a99" +
		"&response=json&signatureversion=3" +
		"&signature=" + "CaNDKmQIPTbdrI%2FgVXn4Z%2BKPx%2FY%3D" // CaNDKmQIPTbdrI/gVXn4Z+KPx/Y=
	if got := signedQuery(params, "s3cr3t"); got != want {
		t.Errorf("signedQuery =\n%s\nwant\n%s", got, want)
	}
}

// The query the client sends decodes, on the server side, to the values it
// signed, and the fake's verifier computes the same signature.
func TestSignedQueryAgreesWithServer(t *testing.T) {
	values := []string{
		"", "plain", "with space", "a+b", "100%", "*", "~", "-_.", "a&b=c",
		"/client/api?x=1", "ümlaut", "日本", "tab\there", "2030-01-02T03:04:05+0000",
		"quote\"'", "#frag", "semi;colon", "\x7f",
	}
	for _, v := range values {
		checkAgrees(t, url.Values{"command": {"listVirtualMachines"}, "apiKey": {"k"}, "keyword": {v}, "Zeta": {"1"}}, "secret")
	}
}

func FuzzSignedQuery(f *testing.F) {
	f.Add("keyword", "a b*c~d", "s3cr3t")
	f.Add("name", "", "")
	f.Add("Upper", "ü/+%", "k")
	f.Add("details[0].key", "x;y", "k")
	f.Fuzz(func(t *testing.T, name, value, secret string) {
		// Names are sent as they are (see signedQuery): only names of the
		// kind CloudStack has.
		if !apiName(name) || strings.EqualFold(name, "signature") || !validUTF8(value) {
			t.Skip()
		}
		checkAgrees(t, url.Values{"command": {"x"}, name: {value}}, secret)
	})
}

func validUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// apiName reports whether name looks like a CloudStack parameter name:
// letters, digits, and "._[]" as in details[0].key.
func apiName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("._[]", c)) {
			return false
		}
	}
	return true
}

func checkAgrees(t *testing.T, params url.Values, secret string) {
	t.Helper()
	q := signedQuery(params, secret)
	got, err := url.ParseQuery(q)
	if err != nil {
		t.Fatalf("query %q does not parse: %v", q, err)
	}
	sig := got.Get("signature")
	got.Del("signature")
	for k, v := range params {
		if got.Get(k) != v[0] {
			t.Errorf("param %s: server decodes %q, client signed %q", k, got.Get(k), v[0])
		}
	}
	if want := cloudstacktest.Signature(got, secret); sig != want {
		t.Errorf("params %v: client signature %q, server computes %q", params, sig, want)
	}
}
