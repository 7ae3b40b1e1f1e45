package cloudstack

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	cs "github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
)

// neededOf keeps of a page decoded by the library only the fields
// decodeNeeded decodes, for comparisons.
func neededOf(r *cs.ListVirtualMachinesResponse) *cs.ListVirtualMachinesResponse {
	out := &cs.ListVirtualMachinesResponse{Count: r.Count}
	if r.VirtualMachines != nil {
		out.VirtualMachines = make([]*cs.VirtualMachine, len(r.VirtualMachines))
	}
	for i, vm := range r.VirtualMachines {
		if vm == nil {
			continue
		}
		v := &cs.VirtualMachine{Id: vm.Id, Name: vm.Name, State: vm.State, Created: vm.Created}
		if vm.Nic != nil {
			v.Nic = make([]cs.Nic, len(vm.Nic))
		}
		for j, n := range vm.Nic {
			v.Nic[j] = cs.Nic{Id: n.Id, Macaddress: n.Macaddress, Networkid: n.Networkid, Broadcasturi: n.Broadcasturi,
				Isolationuri: n.Isolationuri, Isdefault: n.Isdefault, Ip6address: n.Ip6address, Ip6cidr: n.Ip6cidr}
		}
		out.VirtualMachines[i] = v
	}
	return out
}

// assertNeededAgrees checks that, on a page the library decodes,
// decodeNeeded decodes too and gives the library's values.
func assertNeededAgrees(t testing.TB, body []byte) {
	t.Helper()
	lib, err := libraryDecode(body)
	if err != nil {
		return
	}
	got, err := decodeNeeded(body)
	if err != nil {
		t.Fatalf("the library decodes %q, decodeNeeded does not: %v", body, err)
	}
	if want := neededOf(lib); !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeNeeded differs from the library on %q:\ngot  %s\nwant %s", body, dump(got), dump(want))
	}
}

// assertPageAgrees checks that, when the transport's pageReader read a
// page that checkListing passed, decodeNeeded (which agrees with the
// library) decodes it too, to the same values.
func assertPageAgrees(t testing.TB, out []byte, pc pageCheck) {
	t.Helper()
	if pc.page == nil {
		return
	}
	r, err := decodeNeeded(out)
	if err != nil {
		t.Fatalf("pageReader read %q, decodeNeeded cannot: %v", out, err)
	}
	if want := pageFromLibrary(r); !reflect.DeepEqual(pc.page, want) {
		t.Fatalf("pageReader differs from decodeNeeded on %q:\ngot  %s\nwant %s", out, dumpPage(pc.page), dumpPage(want))
	}
}

func dumpPage(p *vmPage) string {
	s := fmt.Sprintf("count=%d vms=%v", p.Count, p.VMs == nil)
	for _, vm := range p.VMs {
		if vm == nil {
			s += " <nil>"
			continue
		}
		s += fmt.Sprintf(" {id=%q name=%q state=%q created=%q nic=%+v}", vm.Id, vm.Name, vm.State, vm.Created, vm.Nic)
	}
	return s
}

func dump(r *cs.ListVirtualMachinesResponse) string {
	s := fmt.Sprintf("count=%d vms=%v", r.Count, r.VirtualMachines == nil)
	for _, vm := range r.VirtualMachines {
		if vm == nil {
			s += " <nil>"
			continue
		}
		s += fmt.Sprintf(" {id=%q name=%q state=%q created=%q nic=%+v}", vm.Id, vm.Name, vm.State, vm.Created, vm.Nic)
	}
	return s
}

// decodeNeeded gives the fields this package reads the values the library
// gives them, on the fixture and on corner cases of the JSON.
func TestDecodeNeededAgreesWithLibrary(t *testing.T) {
	page, pc := checkListing(cmdListVMs, 200, readFixture(t, "listVirtualMachines-pod.json"))
	if pc.err != nil {
		t.Fatal(pc.err)
	}
	assertNeededAgrees(t, page)
	for _, s := range []string{
		`{"listvirtualmachinesresponse":{}}`,
		`{"listvirtualmachinesresponse":{"count":3,"virtualmachine":[]}}`,
		`{"listvirtualmachinesresponse":{"count":3,"virtualmachine":null}}`,
		`{"listvirtualmachinesresponse":{"count":3,"virtualmachine":[null,{"id":"a","nic":null},{"id":"b","nic":[]},{"id":"c","nic":[null,{}]}]}}`,
		`{"LISTVIRTUALMACHINESRESPONSE":{"Count":1,"VirtualMachine":[{"ID":"a","Name":"n","STATE":"Running","nic":[{"MacAddress":"02:00:00:00:00:01","IsDefault":true}]}]}}`,
		// Duplicate keys: the last wins, unless the library re-encodes the
		// VM (ostypeid a number, success a string), which sorts its keys.
		`{"listvirtualmachinesresponse":{"count":1,"virtualmachine":[{"id":"a","ID":"b","id":"c"}]}}`,
		`{"listvirtualmachinesresponse":{"count":1,"virtualmachine":[{"id":"a","ID":"b","ostypeid":12}]}}`,
		`{"listvirtualmachinesresponse":{"count":1,"virtualmachine":[{"Name":"a","name":"b","success":"true"}]}}`,
		`{"listvirtualmachinesresponse":{"count":1,"virtualmachine":[{"id":"x\u00e9\ud800<&>","name":"\"q\"","nic":[{"id":"n","broadcasturi":"vlan://7","isolationuri":"vlan://8","ip6address":"2001:db8::1","ip6cidr":"2001:db8::/64","networkid":"w"}]}]}}`,
		"{\"listvirtualmachinesresponse\":{\"count\":1,\"virtualmachine\":[{\"id\":\"a\xff\",\"name\":null,\"Name\":\"n\",\"name\":null,\"nic\":[null,{\"isdefault\":true,\"IsDefault\":null,\"macaddress\":\"m\",\"MACADDRESS\":\"k\"}]}]}}",
		`{"listvirtualmachinesresponse":{"count":null,"count":2,"virtualmachine":null}}`,
		`{"listvirtualmachinesresponse":{"virtualmachine":[{"id":"a"}],"virtualmachine":[{"name":"b"}]}}`,
		`{"listvirtualmachinesresponse":{"virtualmachine":[{"nic":[{"id":"a"}],"nic":[{"macaddress":"b"}]}]}}`,
		`{"listvirtualmachinesresponse":{"count":1e2,"virtualmachine":[]}}`,
		`{"listvirtualmachinesresponse":{"virtualmachine":[{"\u0069d":"a","Id":"b"}]}}`,
	} {
		assertNeededAgrees(t, []byte(s))
		out, pc := checkListing(cmdListVMs, 200, []byte(s))
		if pc.err == nil {
			assertPageAgrees(t, out, pc)
		}
	}
	// The fixture is read by pageReader, whole.
	out, pc := checkListing(cmdListVMs, 200, readFixture(t, "listVirtualMachines-pod.json"))
	if pc.page == nil || len(pc.page.VMs) != 8 {
		t.Fatalf("pageReader did not read the fixture: %+v", pc)
	}
	assertPageAgrees(t, out, pc)
}

// mistype replaces, in the raw VM, the value of key matched by re with
// repl, and fails unless it matched.
func mistype(t *testing.T, vm json.RawMessage, re, repl string) json.RawMessage {
	t.Helper()
	out := regexp.MustCompile(re).ReplaceAll(vm, []byte(repl))
	if bytes.Equal(out, vm) {
		t.Fatalf("%s not in %s", re, vm)
	}
	return out
}

// One VM with "cpunumber":"2" and another (the VNF VM, whose vnfnics the
// transport rewrites) with "details":"x": the library would fail every
// page holding either. The transport reads the fields this package needs
// and never looks at those: the sync lists every VM and NIC, with no
// fallback. When the transport cannot read such a page either (here: a
// VM's success is a string, which the library decodes differently), the
// library gets the page, fails, and the fallback decoder reads it, which
// is logged and counted page by page.
func TestListPodNICsMistypedFields(t *testing.T) {
	for _, libraryPath := range []bool{false, true} {
		t.Run(fmt.Sprintf("library %v", libraryPath), func(t *testing.T) { testMistypedFields(t, libraryPath) })
	}
}

func testMistypedFields(t *testing.T, libraryPath bool) {
	vms, err := cloudstacktest.LoadVMs(filepath.Join(fixtures, "listVirtualMachines-pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	vms[0] = mistype(t, vms[0], `"cpunumber":\s*\d+`, `"cpunumber":"2"`)
	vms[4] = mistype(t, vms[4], `"details":\s*\{[^}]*\}`, `"details":"x"`)
	if libraryPath {
		vms[0] = mistype(t, vms[0], `^\{`, `{"success":"true",`)
		vms[4] = mistype(t, vms[4], `^\{`, `{"success":"true",`)
	}

	// The library fails on each of them, on a field this package ignores.
	for i, field := range map[int]string{0: "cpunumber", 4: "details"} {
		page := []byte(`{"listvirtualmachinesresponse":{"count":1,"virtualmachine":[` + string(vms[i]) + `]}}`)
		out, pc := checkListing(cmdListVMs, 200, page)
		if pc.err != nil {
			t.Fatal(pc.err)
		}
		var typ *json.UnmarshalTypeError
		if _, err := libraryDecode(out); !errors.As(err, &typ) || !strings.Contains(err.Error(), field) {
			t.Fatalf("library on VM %d: err = %v, want an UnmarshalTypeError on %s", i, err, field)
		}
	}

	for _, tt := range []struct{ pageSize, pages, fallbacks int }{{8, 1, 1}, {3, 3, 2}, {1, 8, 2}} {
		if !libraryPath {
			tt.fallbacks = 0
		}
		t.Run(fmt.Sprintf("pagesize %d", tt.pageSize), func(t *testing.T) {
			fake := newFake(t)
			fake.SetPod("mistyped", vms)
			var logs bytes.Buffer
			c := newClient(fake, Options{PageSize: tt.pageSize, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			nics, err := c.ListPodNICs(t.Context(), "mistyped")
			if err != nil {
				t.Fatal(err)
			}
			diffLines(t, describeAll(nics), fixtureNICs)
			if n := len(fake.Calls()); n != tt.pages {
				t.Errorf("%d requests, want %d", n, tt.pages)
			}
			if got := c.DecodeFallbacks(); got != uint64(tt.fallbacks) {
				t.Errorf("DecodeFallbacks = %d, want %d", got, tt.fallbacks)
			}
			want := []string{
				`level=WARN msg="cloudstack: cloudstack-go cannot decode the page; read the fields this package needs with the fallback decoder" pod=mistyped page=1 vms=`,
				`err="json: cannot unmarshal string into Go struct field ListVirtualMachinesResponse.virtualmachine.cpunumber of type int"`,
			}
			switch tt.fallbacks {
			case 0:
				want = nil
			case 2: // on one page, the library names the first VM's error only
				want = append(want, `err="json: cannot unmarshal string into Go struct field ListVirtualMachinesResponse.virtualmachine.details of type map[string]string"`)
			}
			for _, want := range want {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks %s:\n%s", want, logs.String())
				}
			}
			if got := strings.Count(logs.String(), "fallback decoder"); got != tt.fallbacks {
				t.Errorf("%d fallback records, want %d:\n%s", got, tt.fallbacks, logs.String())
			}
		})
	}
}

// A page whose fields this package reads are broken still aborts the
// sync: the fallback decoder is as strict about them as the library.
func TestListPodNICsNeededFieldBroken(t *testing.T) {
	const vm = `{"id":"v1","name":"a","state":"Running","cpunumber":"2","nic":[{"id":"n1","macaddress":"02:00:00:00:00:01","isdefault":true}]}`
	for _, tt := range []struct{ name, body, has string }{
		{"macaddress a number", `{"listvirtualmachinesresponse":{"count":2,"virtualmachine":[` + vm + `,{"id":"v2","nic":[{"id":"n2","macaddress":2}]}]}}`,
			"nor can the fallback decoder of the fields this package reads: json: cannot unmarshal number into Go struct field .listvirtualmachinesresponse.virtualmachine.nic.macaddress of type string"},
		{"isdefault a string", `{"listvirtualmachinesresponse":{"count":1,"virtualmachine":[{"id":"x","details":"x","nic":[{"isdefault":"true"}]}]}}`,
			"nor can the fallback decoder of the fields this package reads: json: cannot unmarshal string into Go struct field .listvirtualmachinesresponse.virtualmachine.nic.isdefault of type bool"},
		{"id a number", `{"listvirtualmachinesresponse":{"count":1,"virtualmachine":[{"id":7}]}}`, "virtualmachine.id of type string"},
		{"nic an object", `{"listvirtualmachinesresponse":{"count":1,"virtualmachine":[{"id":"x","nic":{}}]}}`, "virtualmachine.nic of type []cloudstack.neededNIC"},
		{"a VM a string", `{"listvirtualmachinesresponse":{"count":1,"virtualmachine":["x"]}}`, "nor can the fallback decoder"},
		{"count a string", `{"listvirtualmachinesresponse":{"count":"1","virtualmachine":[` + vm + `]}}`, "count of type int"},
		{"truncated", `{"listvirtualmachinesresponse":{"count":2,"virtualmachine":[` + vm, "truncated JSON"},
		{"invalid", `{"listvirtualmachinesresponse":{"count":1,"virtualmachine":[` + vm + `,]}}`, "invalid JSON"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(tt.body)) }))
			defer srv.Close()
			c := New(srv.URL, apiKey, secret, Options{Restarts: -1, Logger: slog.New(slog.DiscardHandler)})
			nics, err := c.ListPodNICs(t.Context(), podA)
			if nics != nil || !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), "page 1: bad response: ") || !strings.Contains(err.Error(), tt.has) {
				t.Errorf("%d NICs, err = %v; want ErrBadResponse with %q", len(nics), err, tt.has)
			}
			if c.DecodeFallbacks() != 0 {
				t.Errorf("DecodeFallbacks = %d", c.DecodeFallbacks())
			}
		})
	}
}

// A later page that the fallback cannot read aborts the whole listing,
// even though an earlier page was read with it.
func TestListPodNICsFallbackThenBroken(t *testing.T) {
	fake := newFake(t)
	fake.SetPod("p", cloudstacktest.VMs{
		json.RawMessage(`{"id":"v1","success":"true","cpunumber":"2","nic":[{"id":"n1","macaddress":"02:00:00:00:00:01"}]}`),
		json.RawMessage(`{"id":"v2","details":"x","nic":[{"id":"n2","macaddress":["02:00:00:00:00:02"]}]}`),
	})
	c := newClient(fake, Options{PageSize: 1, Restarts: -1})
	nics, err := c.ListPodNICs(t.Context(), "p")
	if nics != nil || !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), "page 2: ") || !strings.Contains(err.Error(), "macaddress of type string") {
		t.Errorf("%d NICs, err = %v", len(nics), err)
	}
	if c.DecodeFallbacks() != 1 {
		t.Errorf("DecodeFallbacks = %d, want 1", c.DecodeFallbacks())
	}
}
