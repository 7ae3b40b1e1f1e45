package cloudstacktest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	key    = "Pl4in-API_key"
	secret = "s3cr3t"
	pod    = "77828509-4043-40bc-8756-7745c8ec7a99"
)

var fixtures = filepath.Join("..", "..", "testdata", "cloudstack")

func fixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func newServer(t *testing.T) *Server {
	t.Helper()
	s := NewServer(key, secret)
	t.Cleanup(s.Close)
	vms, err := LoadVMs(filepath.Join(fixtures, "listVirtualMachines-pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	s.SetPod(pod, vms)
	return s
}

// request fills in the usual parameters (a nil value removes one), signs
// them with secret unless a signature is given, and GETs the result.
func request(t *testing.T, s *Server, secret string, set map[string]*string) (int, string) {
	t.Helper()
	params := url.Values{
		"command":          {"listVirtualMachines"},
		"podid":            {pod},
		"listall":          {"true"},
		"details":          {"nics"},
		"response":         {"json"},
		"apiKey":           {key},
		"signatureversion": {"3"},
		"expires":          {time.Now().Add(10 * time.Minute).UTC().Format("2006-01-02T15:04:05-0700")},
	}
	for k, v := range set {
		if v == nil {
			params.Del(k)
		} else {
			params.Set(k, *v)
		}
	}
	if params.Get("signature") == "" {
		params.Set("signature", Signature(params, secret))
	}
	resp, err := http.Get(s.URL + "?" + params.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func str(s string) *string { return &s }

// The vector of the client's sign_test.go, computed with Python.
func TestSignatureVector(t *testing.T) {
	params := url.Values{
		"command": {"listVirtualMachines"}, "podid": {pod}, "listall": {"true"}, "details": {"nics"},
		"page": {"1"}, "pagesize": {"500"}, "response": {"json"}, "apiKey": {key},
		"signatureversion": {"3"}, "expires": {"2030-01-02T03:04:05+0000"}, "keyword": {"a b*c~d+e/é"},
		"signature": {"ignored"},
	}
	if got, want := Signature(params, secret), "CaNDKmQIPTbdrI/gVXn4Z+KPx/Y="; got != want {
		t.Errorf("Signature = %q, want %q", got, want)
	}
}

func TestVerify(t *testing.T) {
	past := time.Now().Add(-time.Minute).UTC()
	future := time.Now().Add(time.Hour).UTC()
	tests := []struct {
		name   string
		secret string
		set    map[string]*string
		ok     bool
		reason string
	}{
		{name: "good", ok: true},
		{name: "expires RFC 3339 Z", set: map[string]*string{"expires": str(future.Format(time.RFC3339))}, ok: true},
		{name: "expires +01:00", set: map[string]*string{"expires": str(future.In(time.FixedZone("", 3600)).Format(time.RFC3339))}, ok: true},
		{name: "expires with millis", set: map[string]*string{"expires": str(future.Format("2006-01-02T15:04:05.000Z07:00"))}, ok: true},
		{name: "no signatureversion: expires not checked", set: map[string]*string{"signatureversion": nil, "expires": str("whenever")}, ok: true},
		{name: "param names compared case-insensitively", set: map[string]*string{"apiKey": nil, "APIKEY": str(key)}, ok: true},
		{name: "wrong secret", secret: "other", reason: "signature"},
		{name: "tampered", set: map[string]*string{"signature": str(Signature(url.Values{"x": {"1"}}, secret))}, reason: "signature"},
		{name: "expired", set: map[string]*string{"expires": str(past.Format("2006-01-02T15:04:05-0700"))}, reason: "request expired"},
		{name: "expires unparseable", set: map[string]*string{"expires": str("tomorrow")}, reason: "unparseable date"},
		{name: "signatureversion 3 without expires", set: map[string]*string{"expires": nil}, reason: "without expires"},
		{name: "unknown apiKey", set: map[string]*string{"apiKey": str("nobody")}, reason: "unknown apiKey"},
		{name: "no apiKey", set: map[string]*string{"apiKey": nil}, reason: "missing"},
		{name: "unknown command", set: map[string]*string{"command": str("listZones")}, reason: "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t)
			sec := secret
			if tt.secret != "" {
				sec = tt.secret
			}
			status, body := request(t, s, sec, tt.set)
			calls := s.Calls()
			if len(calls) != 1 {
				t.Fatalf("%d calls", len(calls))
			}
			if tt.ok {
				if status != 200 || !strings.HasPrefix(body, `{"listvirtualmachinesresponse":{"count":8,"virtualmachine":[`) {
					t.Errorf("status %d, reason %q, body %.100s", status, calls[0].Reason, body)
				}
				return
			}
			want := fixture(t, "error-401.json")
			if tt.name == "unknown command" {
				want = strings.Replace(want, "listvirtualmachinesresponse", "errorresponse", 1)
			}
			if status != 401 || body != want {
				t.Errorf("status %d, body %s\nwant 401, %s", status, body, want)
			}
			if !strings.Contains(calls[0].Reason, tt.reason) {
				t.Errorf("reason %q, want it to contain %q", calls[0].Reason, tt.reason)
			}
		})
	}
}

func TestListing(t *testing.T) {
	tests := []struct {
		name   string
		set    map[string]*string
		status int
		vms    int    // VMs on the page
		prefix string // the body starts with this
		body   string // or is exactly this
	}{
		{name: "default page size", status: 200, vms: 8, prefix: `{"listvirtualmachinesresponse":{"count":8,"virtualmachine":[{`},
		{name: "page 1 of 3", set: map[string]*string{"page": str("1"), "pagesize": str("3")}, status: 200, vms: 3},
		{name: "page 3 of 3", set: map[string]*string{"page": str("3"), "pagesize": str("3")}, status: 200, vms: 2},
		{name: "past the last page", set: map[string]*string{"page": str("4"), "pagesize": str("3")}, status: 200, body: `{"listvirtualmachinesresponse":{"count":8}}`},
		{name: "page 0 is page 1", set: map[string]*string{"page": str("0"), "pagesize": str("5")}, status: 200, vms: 5},
		{name: "pagesize -1 lists all", set: map[string]*string{"pagesize": str("-1")}, status: 200, vms: 8},
		{name: "empty pod", set: map[string]*string{"podid": str("empty")}, status: 200, body: `{"listvirtualmachinesresponse":{}}`},
		{name: "all pods", set: map[string]*string{"podid": nil}, status: 200, vms: 8},
		{name: "details=min,nics", set: map[string]*string{"details": str("min,nics")}, status: 200, vms: 8},
		{name: "XML", set: map[string]*string{"response": nil}, status: 200, prefix: `<?xml version="1.0" encoding="UTF-8"?><listvirtualmachinesresponse`},
		{name: "pagesize above max", set: map[string]*string{"page": str("1"), "pagesize": str("501")}, status: 431, body: "error-431.json"},
		{name: "pagesize -1 with page", set: map[string]*string{"page": str("1"), "pagesize": str("-1")}, status: 431, prefix: `{"listvirtualmachinesresponse":{"uuidList":[],"errorcode":431,"cserrorcode":4350,"errortext":"Can't specify page parameter`},
		{name: "pagesize not a number", set: map[string]*string{"pagesize": str("ten")}, status: 431, prefix: `{"listvirtualmachinesresponse":{"uuidList":[],"errorcode":431,"cserrorcode":9999,"errortext":"Unable to execute API command listvirtualmachines due to invalid value. Invalid parameter pagesize value=ten`},
		{name: "bad details", set: map[string]*string{"details": str("nics,everything")}, status: 431, prefix: `{"listvirtualmachinesresponse":{"uuidList":[],"errorcode":431,"cserrorcode":4350,"errortext":"The details parameter contains a non permitted value`},
		{name: "unknown pod", set: map[string]*string{"podid": str("nope")}, status: 431, prefix: `{"listvirtualmachinesresponse":{"uuidList":[],"errorcode":431,"cserrorcode":9999,"errortext":"Unable to execute API command listvirtualmachines due to invalid value. Invalid parameter podid value=nope due to`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t)
			s.SetPod("empty", VMs{})
			status, body := request(t, s, secret, tt.set)
			if status != tt.status {
				t.Errorf("status %d, want %d: %.200s", status, tt.status, body)
			}
			if strings.HasSuffix(tt.body, ".json") {
				tt.body = fixture(t, tt.body)
			}
			switch {
			case tt.body != "" && body != tt.body:
				t.Errorf("body %s\nwant %s", body, tt.body)
			case tt.prefix != "" && !strings.HasPrefix(body, tt.prefix):
				t.Errorf("body %.300s\nwant prefix %s", body, tt.prefix)
			}
			if tt.vms > 0 {
				var env struct {
					R struct {
						Count int
						VMs   []json.RawMessage `json:"virtualmachine"`
					} `json:"listvirtualmachinesresponse"`
				}
				if err := json.Unmarshal([]byte(body), &env); err != nil {
					t.Fatal(err)
				}
				if env.R.Count != 8 || len(env.R.VMs) != tt.vms {
					t.Errorf("count %d, %d VMs; want 8, %d", env.R.Count, len(env.R.VMs), tt.vms)
				}
			}
		})
	}
}

func TestFaults(t *testing.T) {
	page2 := map[string]*string{"page": str("2"), "pagesize": str("3")}
	tests := []struct {
		fault  Fault
		set    map[string]*string
		status int
		prefix string
	}{
		{Fault{Kind: FaultHTTP500}, nil, 500, "<html>"},
		{Fault{Kind: FaultSignature}, nil, 401, fixtureRef("error-401.json")},
		{Fault{Kind: FaultParam, Text: "bad podid"}, nil, 431, `{"listvirtualmachinesresponse":{"uuidList":[],"errorcode":431,"cserrorcode":9999,"errortext":"bad podid"}}`},
		{Fault{Kind: FaultInternal}, nil, 530, fixtureRef("error-530.json")},
		{Fault{Kind: FaultThrottle}, nil, 429, fixtureRef("error-429.json")},
		{Fault{Kind: FaultNotJSON}, nil, 200, "<!DOCTYPE html>"},
		{Fault{Kind: FaultShortCount, Missing: 2}, page2, 200, `{"listvirtualmachinesresponse":{"count":10,"virtualmachine":[`},
		{Fault{Kind: FaultExpunge}, page2, 200, `{"listvirtualmachinesresponse":{"count":7,"virtualmachine":[{"id":"b8c9d0e1`},
		{Fault{Kind: FaultSlow, Delay: 50 * time.Millisecond}, nil, 200, `{"listvirtualmachinesresponse":{"count":8,`},
		{Fault{Kind: FaultHTTP500, Page: 3}, page2, 200, `{"listvirtualmachinesresponse":{"count":8,`},    // page does not match
		{Fault{Kind: FaultHTTP500, Pod: "other"}, nil, 200, `{"listvirtualmachinesresponse":{"count":8,`}, // pod does not match
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v %+v", tt.fault.Kind, tt.fault), func(t *testing.T) {
			s := newServer(t)
			s.Inject(tt.fault)
			status, body := request(t, s, secret, tt.set)
			want := tt.prefix
			if f, ok := strings.CutPrefix(want, "fixture:"); ok {
				want = fixture(t, f)
			}
			if status != tt.status || !strings.HasPrefix(body, want) {
				t.Errorf("status %d, body %.200s\nwant %d, %s", status, body, tt.status, want)
			}
		})
	}
}

func fixtureRef(name string) string { return "fixture:" + name }

func TestFaultTimes(t *testing.T) {
	s := newServer(t)
	s.Inject(Fault{Kind: FaultInternal, Times: 2})
	var got []int
	for range 4 {
		status, _ := request(t, s, secret, nil)
		got = append(got, status)
	}
	if fmt.Sprint(got) != "[530 530 200 200]" {
		t.Errorf("statuses %v", got)
	}
	s.Inject(Fault{Kind: FaultInternal})
	s.ClearFaults()
	if status, _ := request(t, s, secret, nil); status != 200 {
		t.Errorf("after ClearFaults: %d", status)
	}
}

func TestFaultTruncated(t *testing.T) {
	s := newServer(t)
	s.Inject(Fault{Kind: FaultTruncated})
	params := url.Values{"command": {"listVirtualMachines"}, "podid": {pod}, "response": {"json"}, "apiKey": {key}}
	params.Set("signature", Signature(params, secret))
	resp, err := http.Get(s.URL + "?" + params.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != io.ErrUnexpectedEOF || resp.ContentLength <= int64(len(b)) || len(b) == 0 {
		t.Errorf("read %d of %d bytes, err %v; want a body cut short", len(b), resp.ContentLength, err)
	}
}

func TestSynthetic(t *testing.T) {
	pods := SyntheticPods(4, 20003)
	if len(pods) != 4 {
		t.Fatalf("%d pods", len(pods))
	}
	macs := make(map[string]bool)
	ids := make(map[string]bool)
	var size int
	for k := range 4 {
		p := pods[SyntheticPodID(k)]
		if want := 20003/4 + map[bool]int{true: 1}[k < 3]; p.Len() != want {
			t.Errorf("pod %d: %d VMs, want %d", k, p.Len(), want)
		}
		for i := range p.Len() {
			b := p.AppendVM(nil, i)
			size += len(b)
			var vm struct {
				ID, State, Created string
				NIC                []struct {
					MACAddress, IP6Address, BroadcastURI string
					IsDefault                            bool
				}
			}
			if err := json.Unmarshal(b, &vm); err != nil {
				t.Fatalf("pod %d VM %d: %v: %s", k, i, err, b)
			}
			if !bytes.Equal(b, p.AppendVM(nil, i)) {
				t.Fatalf("pod %d VM %d: not deterministic", k, i)
			}
			if vm.ID != SyntheticVMID(k, i) || ids[vm.ID] || vm.State != SyntheticState(i) {
				t.Fatalf("pod %d VM %d: id %s state %s", k, i, vm.ID, vm.State)
			}
			ids[vm.ID] = true
			if want := 1 + map[bool]int{true: 1}[i%10 == 9]; len(vm.NIC) != want {
				t.Fatalf("pod %d VM %d: %d NICs", k, i, len(vm.NIC))
			}
			for j, n := range vm.NIC {
				if n.MACAddress != SyntheticMAC(k, i, j).String() || macs[n.MACAddress] || n.IsDefault != (j == 0) {
					t.Fatalf("pod %d VM %d NIC %d: %+v", k, i, j, n)
				}
				macs[n.MACAddress] = true
			}
			if vm.NIC[0].IP6Address != SyntheticIP6(k, i).String() || vm.NIC[0].BroadcastURI != fmt.Sprintf("vlan://%d", 2700+k) {
				t.Fatalf("pod %d VM %d: %+v", k, i, vm.NIC[0])
			}
			if _, err := time.Parse("2006-01-02T15:04:05-0700", vm.Created); err != nil {
				t.Fatal(err)
			}
		}
	}
	if avg := size / 20003; avg < 1500 || avg > 3000 {
		t.Errorf("average VM JSON %d bytes, want a real VM's 1.5-3 KB", avg)
	}
}

func TestLoadVMs(t *testing.T) {
	vms, err := LoadVMs(filepath.Join(fixtures, "listVirtualMachines-pod.json"))
	if err != nil || len(vms) != 8 {
		t.Fatalf("LoadVMs = %d VMs, %v", len(vms), err)
	}
	if vms, err := LoadVMs(filepath.Join(fixtures, "listVirtualMachines-empty.json")); err != nil || len(vms) != 0 {
		t.Errorf("empty: %d VMs, %v", len(vms), err)
	}
	if _, err := LoadVMs(filepath.Join(fixtures, "error-431.json")); err == nil {
		t.Error("an error answer loaded as a pod")
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"listvirtualmachinesresponse":{"count":2,"virtualmachine":[{}]}}`), 0o644)
	if _, err := LoadVMs(bad); err == nil || !strings.Contains(err.Error(), "count 2 but 1 VMs") {
		t.Errorf("count mismatch: %v", err)
	}
}
