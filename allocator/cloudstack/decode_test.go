package cloudstack

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var fixtures = filepath.Join("..", "..", "testdata", "cloudstack")

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The fixture's VNF VM carries vnfnics objects and two VMs carry
// extradhcpoption objects, as real servers send them: every VM decodes.
func TestDecodeRealPage(t *testing.T) {
	p, err := decodeListVMs(cmdListVMs, 200, readFixture(t, "listVirtualMachines-pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Count != 8 || len(p.VMs) != 8 {
		t.Fatalf("count %d, %d VMs; want 8, 8", p.Count, len(p.VMs))
	}
	var names []string
	for _, vm := range p.VMs {
		names = append(names, vm.Name+"/"+vm.State)
	}
	want := "web-01/Running db-01/Running build-07/Stopped old-02/Destroyed vnf-fw-01/Running pxe-03/Running failed-09/Error gone-05/Expunging"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("VMs %s\nwant %s", got, want)
	}
	vnf := p.VMs[4]
	if len(vnf.NICs) != 2 || vnf.NICs[1].MACAddress != "1e:00:fa:00:00:02" || vnf.NICs[1].BroadcastURI != "vlan://2703" {
		t.Errorf("VNF VM NICs = %+v", vnf.NICs)
	}
	build := p.VMs[2]
	if len(build.NICs) != 1 || !build.NICs[0].IsDefault || build.NICs[0].IP6Address != "2001:db8:100:0:1c00:13ff:fe00:701" {
		t.Errorf("VM with extradhcpoption: NICs = %+v", build.NICs)
	}
}

func TestDecodeErrorEnvelopes(t *testing.T) {
	tests := []struct {
		file   string
		code   int
		cscode int
		text   string
	}{
		{"error-401.json", 401, 0, "unable to verify user credentials and/or request signature"},
		{"error-431.json", 431, 4350, "Page size can't exceed max allowed page size value: 500"},
		{"error-530.json", 530, 9999, "Internal error executing command, please contact your system administrator"},
		{"error-429.json", 429, 9999, "The given user has reached his/her account api limit, please retry after 218 ms."},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, err := decodeListVMs(cmdListVMs, tt.code, readFixture(t, tt.file))
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v, want *APIError", err)
			}
			want := APIError{Code: tt.code, CSCode: tt.cscode, Text: tt.text, Command: cmdListVMs, HTTPStatus: tt.code}
			if *ae != want {
				t.Errorf("APIError = %+v, want %+v", *ae, want)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %q does not carry errortext", err)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		body    string
		count   int
		vms     int
		wantErr error
		errHas  string
	}{
		{name: "empty listing", status: 200, body: `{"listvirtualmachinesresponse":{}}`},
		{name: "empty listing, spaced", status: 200, body: " {\"listvirtualmachinesresponse\" : { } }\n"},
		{name: "past the last page", status: 200, body: `{"listvirtualmachinesresponse":{"count":7}}`, count: 7},
		{name: "one VM", status: 200, body: `{"listvirtualmachinesresponse":{"count":1,"virtualmachine":[{"id":"x","nic":[]}]}}`, count: 1, vms: 1},
		{name: "unknown fields of any shape", status: 200, body: `{"listvirtualmachinesresponse":{"count":1,"virtualmachine":[{"id":"x","vnfnics":[{"deviceid":0}],"details":{"a":{"b":[1]}},"nic":[{"id":"n","extradhcpoption":[{"extradhcpoptioncode":67}],"secondaryip":[{"id":"s"}]}]}]}}`, count: 1, vms: 1},
		{name: "raw control byte in a name", status: 200, body: "{\"listvirtualmachinesresponse\":{\"count\":1,\"virtualmachine\":[{\"id\":\"x\",\"displayname\":\"bad\x01name\x1f\"}]}}", count: 1, vms: 1},
		{name: "error envelope under errorresponse", status: 401, body: `{"errorresponse":{"uuidList":[],"errorcode":401,"errortext":"unable to verify user credentials and/or request signature"}}`, wantErr: &APIError{}, errHas: "CloudStack error 401: unable to verify"},
		{name: "error envelope with HTTP 200", status: 200, body: `{"listvirtualmachinesresponse":{"errorcode":530,"errortext":"boom"}}`, wantErr: &APIError{}, errHas: "CloudStack error 530 (HTTP 200): boom"},
		{name: "HTML error page", status: 500, body: "<html><body><h2>HTTP ERROR 500</h2></body></html>", wantErr: ErrBadResponse, errHas: `HTTP 500, not JSON: "<html><body><h2>HTTP ERROR 500</h2></body></html>"`},
		{name: "HTML with HTTP 200", status: 200, body: "<!DOCTYPE html><html>maintenance</html>", wantErr: ErrBadResponse, errHas: "HTTP 200, not JSON"},
		{name: "empty body", status: 200, body: "", wantErr: ErrBadResponse, errHas: "not JSON"},
		{name: "XML", status: 200, body: `<?xml version="1.0"?><listvirtualmachinesresponse/>`, wantErr: ErrBadResponse, errHas: "not JSON"},
		{name: "JSON error without envelope", status: 502, body: `{"message":"bad gateway"}`, wantErr: ErrBadResponse, errHas: "HTTP 502 without a CloudStack error"},
		{name: "truncated JSON", status: 200, body: `{"listvirtualmachinesresponse":{"count":2,"virtualmachine":[{"id":"x","na`, wantErr: ErrBadResponse, errHas: "truncated JSON"},
		{name: "invalid JSON", status: 200, body: `{"listvirtualmachinesresponse":{"count":2,,}}`, wantErr: ErrBadResponse, errHas: "invalid JSON at byte"},
		{name: "other envelope", status: 200, body: `{"listzonesresponse":{"count":1,"zone":[]}}`, wantErr: ErrBadResponse, errHas: `no "listvirtualmachinesresponse"`},
		{name: "a needed field of the wrong type", status: 200, body: `{"listvirtualmachinesresponse":{"count":1,"virtualmachine":[{"id":"x","nic":[{"isdefault":"true"}]}]}}`, wantErr: ErrBadResponse, errHas: "isdefault is JSON string, not bool"},
		{name: "count of the wrong type", status: 200, body: `{"listvirtualmachinesresponse":{"count":"1"}}`, wantErr: ErrBadResponse, errHas: "count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := decodeListVMs(cmdListVMs, tt.status, []byte(tt.body))
			switch want := tt.wantErr.(type) {
			case nil:
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				if p.Count != tt.count || len(p.VMs) != tt.vms {
					t.Errorf("count %d, %d VMs; want %d, %d", p.Count, len(p.VMs), tt.count, tt.vms)
				}
			case *APIError:
				if !errors.As(err, &want) {
					t.Fatalf("err = %v, want *APIError", err)
				}
			default:
				if !errors.Is(err, want) {
					t.Fatalf("err = %v, want %v", err, want)
				}
			}
			if tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)) {
				t.Errorf("err = %v, want it to contain %q", err, tt.errHas)
			}
		})
	}
}

func TestScrubControlBytes(t *testing.T) {
	b := []byte("a\x00b\x01c\td\ne\rf\x1fg\x7fé")
	if !scrubControlBytes(b) {
		t.Error("found nothing")
	}
	if got, want := string(b), "a b c\td\ne\rf g\x7fé"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if scrubControlBytes([]byte("{\"a\":\"\tb\"}\r\n")) {
		t.Error("found control bytes in clean JSON")
	}
}

// Whatever the bytes, decodeListVMs answers a page, an *APIError or
// ErrBadResponse, and never panics.
func FuzzDecodeListVMs(f *testing.F) {
	for _, name := range []string{"listVirtualMachines-pod.json", "listVirtualMachines-empty.json", "error-401.json", "error-431.json"} {
		b, err := os.ReadFile(filepath.Join(fixtures, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(200, b)
	}
	f.Add(500, []byte("<html><title>x</title></html>"))
	f.Add(200, []byte(`{"listvirtualmachinesresponse":{"count":1,"virtualmachine":[{"id":"a\x01"}]}}`))
	f.Add(200, []byte(`{"listvirtualmachinesresponse":{"count":1,"virtualmachine":[{"id":"a","nic":[{"isdefault":1}]}]}}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		p, err := decodeListVMs(cmdListVMs, status, body)
		var ae *APIError
		switch {
		case err == nil && p == nil:
			t.Fatal("no page and no error")
		case err != nil && p != nil:
			t.Fatal("a page and an error")
		case err != nil && !errors.Is(err, ErrBadResponse) && !errors.As(err, &ae):
			t.Fatalf("err = %v: neither ErrBadResponse nor *APIError", err)
		}
	})
}
