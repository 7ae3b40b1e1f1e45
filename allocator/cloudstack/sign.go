package cloudstack

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// signedQuery returns the query string of a signed API request: params
// sorted by name, each as name=value with the value encoded, joined by "&",
// then "&signature=" and the signature.
//
// This is the whole of CloudStack's request signing, done here because
// cloudstack-go v2.19.0 keeps its request path unexported (see doc.go). The
// management server (ApiServer.verifyRequest) rebuilds the same string from
// the parameters it decoded: names sorted case-sensitively (Java
// Collections.sort), the first value of each, encoded with Java's
// URLEncoder.encode and "+" replaced by "%20"; it lower-cases the whole
// string, takes its HMAC-SHA1 with the user's secret key, encodes that in
// standard base64 and compares it with the signature parameter.
//
// The encoded string doubles as the URL's query: it is valid percent-
// encoding, so the server decodes the values we signed. Names are not
// encoded (the server does not encode them either), so they must be URL-
// safe, as every CloudStack parameter name is (letters, digits, "._[]").
// cloudstack-go's EncodeValues leaves "~" unencoded where Java encodes it
// (%7E), so a value holding "~" gets a signature the server rejects;
// javaURLEncode does not have that bug. sign_test.go checks this function
// against the fake server's independent implementation, and
// library_test.go (build tag cloudstackgo) against cloudstack-go's own
// signing on the same parameters.
func signedQuery(params url.Values, secretKey string) string {
	var b strings.Builder
	for i, name := range slices.Sorted(maps.Keys(params)) {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(name)
		b.WriteByte('=')
		javaURLEncode(&b, params.Get(name))
	}
	query := b.String()
	mac := hmac.New(sha1.New, []byte(secretKey))
	mac.Write([]byte(strings.ToLower(query)))
	signature := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return query + "&signature=" + url.QueryEscape(signature)
}

// javaURLEncode writes s as Java's URLEncoder.encode(s, "UTF-8") does, with
// the space as %20 instead of "+": ASCII letters, digits and ".-*_" stay,
// every other byte of the UTF-8 encoding becomes %XX.
func javaURLEncode(b *strings.Builder, s string) {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '-', c == '*', c == '_':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
}
