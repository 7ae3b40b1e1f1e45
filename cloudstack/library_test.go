// These tests hold cloudstack-go v2.19.0 itself up against the fake
// server: they show where the library is right (its requests and
// signatures are the server's) and prove that each of its faults that
// transport.go works around is still there. When one of the fault tests
// fails because the library was fixed, its workaround can go.

package cloudstack

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	cs "github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
)

// libraryQuery lets cloudstack-go send one listVirtualMachines request and
// returns the query it sent.
func libraryQuery(t *testing.T, keyword string) url.Values {
	t.Helper()
	var (
		mu  sync.Mutex
		raw string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		raw = r.URL.RawQuery
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"listvirtualmachinesresponse":{}}`))
	}))
	defer srv.Close()
	lib := cs.NewClient(srv.URL+"/client/api", apiKey, secret, false)
	p := lib.VirtualMachine.NewListVirtualMachinesParams()
	p.SetPodid(podA)
	p.SetListall(true)
	p.SetDetails([]string{"nics"})
	p.SetPage(2)
	p.SetPagesize(500)
	if keyword != "" {
		p.SetKeyword(keyword)
	}
	if _, err := lib.VirtualMachine.ListVirtualMachines(p); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	q, err := url.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// The library signs as the management server verifies (the fake's
// Signature is the server's algorithm, written independently), except for
// values holding "~": its EncodeValues leaves "~" as it is where the
// server's Java URLEncoder encodes it (%7E). ListPodNICs sends no such
// value (it refuses a pod id holding "~").
func TestLibrarySignature(t *testing.T) {
	for _, tt := range []struct {
		keyword string
		same    bool
	}{
		{"", true},
		{"web 01*", true},
		{"a+b/c=d&e", true},
		{"ümlaut", true},
		{"a~b", false},
	} {
		t.Run(tt.keyword, func(t *testing.T) {
			q := libraryQuery(t, tt.keyword)
			for _, k := range []string{"apiKey", "command", "response", "signatureversion", "expires", "podid", "details"} {
				if q.Get(k) == "" {
					t.Errorf("library sent no %s: %v", k, q)
				}
			}
			if got := q.Get("signature") == cloudstacktest.Signature(q, secret); got != tt.same {
				t.Errorf("library signature equals the server's = %v, want %v", got, tt.same)
			}
		})
	}
}

// The library's requests pass the fake's verification (RFC 3339 expires
// and all), so the fake checks what the real server checks.
func TestLibraryAcceptedByFake(t *testing.T) {
	fake := newFake(t)
	lib := cs.NewClient(fake.URL, apiKey, secret, false)
	p := lib.VirtualMachine.NewListVirtualMachinesParams()
	p.SetPodid("empty")
	fake.SetPod("empty", cloudstacktest.VMs{})
	if _, err := lib.VirtualMachine.ListVirtualMachines(p); err != nil {
		t.Fatalf("library request refused: %v (%+v)", err, fake.Calls())
	}
	bad := cs.NewClient(fake.URL, apiKey, "wrong", false)
	if _, err := bad.VirtualMachine.ListVirtualMachines(p); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong secret: err = %v", err)
	}
}

// The reason for the rewrite in transport.go: the library cannot decode a
// real page whose VMs carry extradhcpoption or vnfnics objects. Without
// those VMs it can. Through the transport, ListPodNICs reads every page.
// If this test fails because the library decodes the page, the rewrite may
// go.
func TestLibraryDecodeFails(t *testing.T) {
	fake := newFake(t)
	vms, err := cloudstacktest.LoadVMs(filepath.Join(fixtures, "listVirtualMachines-pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	// build-07 and pxe-03 carry extradhcpoption objects, vnf-fw-01 vnfnics.
	fake.SetPod("plain", cloudstacktest.VMs{vms[0], vms[1], vms[3], vms[6], vms[7]})
	fake.SetPod("extradhcpoption", cloudstacktest.VMs{vms[0], vms[2]})
	fake.SetPod("vnfnics", cloudstacktest.VMs{vms[4], vms[0]})
	lib := cs.NewClient(fake.URL, apiKey, secret, false)
	ours := newClient(fake, Options{})
	for _, tt := range []struct {
		pod     string
		libFail string
	}{
		{"plain", ""},
		{"extradhcpoption", "extradhcpoption"},
		{"vnfnics", "vnfnics"},
		{podA, "of type string"},
	} {
		t.Run(tt.pod, func(t *testing.T) {
			p := lib.VirtualMachine.NewListVirtualMachinesParams()
			p.SetPodid(tt.pod)
			p.SetListall(true)
			r, err := lib.VirtualMachine.ListVirtualMachines(p)
			var typ *json.UnmarshalTypeError
			switch {
			case tt.libFail == "" && err != nil:
				t.Errorf("library: %v", err)
			case tt.libFail != "" && (!errors.As(err, &typ) || !strings.Contains(err.Error(), tt.libFail)):
				t.Errorf("library: err = %v, want an UnmarshalTypeError on %s", err, tt.libFail)
			case tt.libFail != "" && r != nil:
				t.Errorf("library returned %d VMs with its error", len(r.VirtualMachines))
			}
			if _, err := ours.ListPodNICs(t.Context(), tt.pod); err != nil {
				t.Errorf("ListPodNICs: %v", err)
			}
		})
	}
}

// The reason for the record in transport.go: the library flattens
// CloudStack's errors into strings, and loses the HTTP status of an answer
// that is not JSON; ListPodNICs keeps them.
func TestLibraryFlattensErrors(t *testing.T) {
	fake := newFake(t)
	lib := cs.NewClient(fake.URL, apiKey, secret, false)
	p := lib.VirtualMachine.NewListVirtualMachinesParams()
	p.SetPodid(podA)

	fake.Inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultInternal, Times: 2})
	_, err := lib.VirtualMachine.ListVirtualMachines(p)
	var ae *APIError
	if err == nil || errors.As(err, &ae) || !strings.Contains(err.Error(), "CloudStack API error 530 (CSExceptionErrorCode: 9999)") {
		t.Errorf("library: err = %v", err)
	}
	_, err = newClient(fake, Options{}).ListPodNICs(t.Context(), podA)
	if !errors.As(err, &ae) || ae.Code != 530 || ae.CSCode != 9999 || ae.HTTPStatus != 530 || ae.Text != cloudstacktest.TextInternal {
		t.Errorf("ListPodNICs: err = %v", err)
	}

	fake.Inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultHTTP500, Times: 2})
	_, err = lib.VirtualMachine.ListVirtualMachines(p)
	var syntax *json.SyntaxError
	if !errors.As(err, &syntax) || strings.Contains(err.Error(), "500") {
		t.Errorf("library: err = %v, want a bare JSON syntax error", err)
	}
	_, err = newClient(fake, Options{}).ListPodNICs(t.Context(), podA)
	if !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), `HTTP 500, not JSON: HTML page "Error 500 Server Error"`) {
		t.Errorf("ListPodNICs: err = %v", err)
	}

	// An error envelope with HTTP 200 is an empty listing to the library.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"listvirtualmachinesresponse":{"errorcode":530,"errortext":"boom"}}`))
	}))
	defer srv.Close()
	r, err := cs.NewClient(srv.URL, apiKey, secret, false).VirtualMachine.ListVirtualMachines(p)
	if err != nil || r.Count != 0 || len(r.VirtualMachines) != 0 {
		t.Errorf("library: %+v, %v; want an empty listing", r, err)
	}
	_, err = New(srv.URL, apiKey, secret, Options{}).ListPodNICs(t.Context(), podA)
	if !errors.As(err, &ae) || ae.Code != 530 || ae.HTTPStatus != 200 {
		t.Errorf("ListPodNICs: err = %v", err)
	}
}

func TestListPodNICsRefusesTilde(t *testing.T) {
	fake := newFake(t)
	_, err := newClient(fake, Options{}).ListPodNICs(t.Context(), "pod~1")
	if err == nil || !strings.Contains(err.Error(), "signs wrongly") || len(fake.Calls()) != 0 {
		t.Errorf("err = %v, %d calls", err, len(fake.Calls()))
	}
}
