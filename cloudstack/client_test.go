package cloudstack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
)

const (
	podA   = "77828509-4043-40bc-8756-7745c8ec7a99"
	apiKey = "Pl4in-API_key"
	secret = "s3cr3t-Secret_key"
)

// newFake starts a fake serving the fixture pod as podA.
func newFake(t testing.TB) *cloudstacktest.Server {
	t.Helper()
	fake := cloudstacktest.NewServer(apiKey, secret)
	t.Cleanup(fake.Close)
	vms, err := cloudstacktest.LoadVMs(filepath.Join(fixtures, "listVirtualMachines-pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	fake.SetPod(podA, vms)
	return fake
}

func newClient(fake *cloudstacktest.Server, opts Options) *Client {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return New(fake.URL, apiKey, secret, opts)
}

// describe renders a NIC on one line for comparisons.
func describe(n NIC) string {
	ip6, cidr := "-", "-"
	if n.IP6.IsValid() {
		ip6 = n.IP6.String()
	}
	if n.IP6CIDR.IsValid() {
		cidr = n.IP6CIDR.String()
	}
	return fmt.Sprintf("%s %s/%s nic=%s mac=%s net=%s vlan=%d default=%v ip6=%s cidr=%s created=%s",
		n.VMID[:8], n.VMName, n.VMState, n.NICID[:8], n.MAC, n.NetworkID[:8], n.VLAN, n.IsDefault,
		ip6, cidr, n.Created.UTC().Format(time.RFC3339))
}

// The fixture pod, NIC by NIC, in listing order.
var fixtureNICs = []string{
	"3c5b7a4e web-01/Running nic=5a0e6c1d mac=1e:00:5d:00:01:7a net=f0e1d2c3 vlan=2701 default=true ip6=2001:db8:100:0:1c00:5dff:fe00:17a cidr=2001:db8:100::/64 created=2021-10-04T09:24:38Z",
	"8d1e2f3a db-01/Running nic=b7c6d5e4 mac=1e:00:a2:00:02:12 net=2c3d4e5f vlan=2702 default=false ip6=- cidr=- created=2022-02-17T13:03:11Z",
	"8d1e2f3a db-01/Running nic=a6b5c4d3 mac=1e:00:a2:00:02:11 net=f0e1d2c3 vlan=2701 default=true ip6=2001:db8:100:0:1c00:a2ff:fe00:211 cidr=2001:db8:100::/64 created=2022-02-17T13:03:11Z",
	"8d1e2f3a db-01/Running nic=d4e5f6a7 mac=1e:00:a2:00:02:13 net=3e4f5a6b vlan=0 default=false ip6=- cidr=- created=2022-02-17T13:03:11Z",
	"1f2e3d4c build-07/Stopped nic=e5f6a7b8 mac=1e:00:13:00:07:01 net=f0e1d2c3 vlan=2701 default=true ip6=2001:db8:100:0:1c00:13ff:fe00:701 cidr=2001:db8:100::/64 created=2023-07-30T22:41:05Z",
	"6a7b8c9d old-02/Destroyed nic=f6a7b8c9 mac=1e:00:0b:00:02:02 net=f0e1d2c3 vlan=2701 default=true ip6=2001:db8:100:0:1c00:bff:fe00:202 cidr=2001:db8:100::/64 created=2019-05-02T08:00:01Z",
	"b8c9d0e1 vnf-fw-01/Running nic=c9d0e1f2 mac=1e:00:fa:00:00:01 net=f0e1d2c3 vlan=2701 default=true ip6=2001:db8:100:0:1c00:faff:fe00:1 cidr=2001:db8:100::/64 created=2024-01-15T10:12:13Z",
	"b8c9d0e1 vnf-fw-01/Running nic=d0e1f2a3 mac=1e:00:fa:00:00:02 net=4f5a6b7c vlan=2703 default=false ip6=- cidr=- created=2024-01-15T10:12:13Z",
	"c0d1e2f3 pxe-03/Running nic=e1f2a3b4 mac=1e:00:99:00:00:21 net=5a6b7c8d vlan=0 default=true ip6=- cidr=- created=2024-06-01T00:00:00Z",
	"e4f5a6b7 gone-05/Expunging nic=a3b4c5d6 mac=1e:00:0b:00:05:05 net=f0e1d2c3 vlan=2701 default=true ip6=2001:db8:100:0:1c00:bff:fe00:505 cidr=2001:db8:100::/64 created=2020-11-11T11:11:11Z",
}

func describeAll(nics []NIC) []string {
	var out []string
	for _, n := range nics {
		out = append(out, describe(n))
	}
	return out
}

func diffLines(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("got %d lines:\n%s\nwant %d lines:\n%s", len(got), strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
	}
}

func TestListPodNICs(t *testing.T) {
	// 8 VMs: page sizes that split them in 8, 3 (3+3+2), 2 (4+4) and 1 pages.
	for _, tt := range []struct{ pageSize, pages int }{{1, 8}, {3, 3}, {4, 2}, {7, 2}, {8, 1}, {0, 1}, {500, 1}, {501, 1}} {
		t.Run(fmt.Sprintf("pagesize %d", tt.pageSize), func(t *testing.T) {
			fake := newFake(t)
			c := newClient(fake, Options{PageSize: tt.pageSize})
			nics, err := c.ListPodNICs(t.Context(), podA)
			if err != nil {
				t.Fatal(err)
			}
			diffLines(t, describeAll(nics), fixtureNICs)
			calls := fake.Calls()
			if len(calls) != tt.pages {
				t.Errorf("%d requests, want %d", len(calls), tt.pages)
			}
			for i, call := range calls {
				if call.Page != i+1 || call.Status != 200 {
					t.Errorf("request %d: page %d, status %d", i, call.Page, call.Status)
				}
			}
		})
	}
}

// The request carries what the issue asks for and what the server needs;
// cloudstack-go builds it, and signs it so that the fake's verifier (the
// server's algorithm) accepts it.
func TestListPodNICsRequest(t *testing.T) {
	fake := newFake(t)
	c := newClient(fake, Options{PageSize: 3})
	before := time.Now()
	if _, err := c.ListPodNICs(t.Context(), podA); err != nil {
		t.Fatal(err)
	}
	call := fake.Calls()[1]
	want := map[string]string{
		"command":          "listVirtualMachines",
		"podid":            podA,
		"listall":          "true",
		"details":          "nics",
		"page":             "2",
		"pagesize":         "3",
		"response":         "json",
		"apiKey":           apiKey,
		"signatureversion": "3",
	}
	for k, v := range want {
		if got := call.Params.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	// cloudstack-go's expires: RFC 3339 in UTC, 15 minutes on.
	exp, err := time.Parse(time.RFC3339, call.Params.Get("expires"))
	if err != nil || !strings.HasSuffix(call.Params.Get("expires"), "Z") ||
		exp.Before(before.Add(14*time.Minute)) || exp.After(time.Now().Add(16*time.Minute)) {
		t.Errorf("expires = %q (%v)", call.Params.Get("expires"), err)
	}
	if len(call.Params) != len(want)+2 || call.Params.Get("signature") == "" {
		t.Errorf("params %v: want exactly %d plus expires and signature", call.Params, len(want))
	}
}

func TestListPodNICsSelect(t *testing.T) {
	c := newClient(newFake(t), Options{PageSize: 3})
	nics, err := c.ListPodNICs(t.Context(), podA)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range allocator.SelectNICs(nics, 0) {
		ids = append(ids, n.VMName+":"+n.NICID[:4])
	}
	// db-01's default NIC is its second one; failed-09 has no NIC.
	if want := []string{"web-01:5a0e", "db-01:a6b5", "build-07:e5f6", "old-02:f6a7", "vnf-fw-01:c9d0", "pxe-03:e1f2", "gone-05:a3b4"}; !slices.Equal(ids, want) {
		t.Errorf("Select(0) = %v\nwant %v", ids, want)
	}
	ids = nil
	for _, n := range allocator.SelectNICs(nics, 2701) {
		if allocator.Eligible(n.VMState) {
			ids = append(ids, n.VMName+":"+n.NICID[:4])
		}
	}
	if want := []string{"web-01:5a0e", "db-01:a6b5", "build-07:e5f6", "vnf-fw-01:c9d0"}; !slices.Equal(ids, want) {
		t.Errorf("eligible Select(2701) = %v\nwant %v", ids, want)
	}
}

func TestListPodNICsEmpty(t *testing.T) {
	fake := newFake(t)
	empty, err := cloudstacktest.LoadVMs(filepath.Join(fixtures, "listVirtualMachines-empty.json"))
	if err != nil {
		t.Fatal(err)
	}
	fake.SetPod("empty-pod", empty)
	nics, err := newClient(fake, Options{}).ListPodNICs(t.Context(), "empty-pod")
	if err != nil || len(nics) != 0 {
		t.Fatalf("ListPodNICs = %v, %v; want nothing, no error", nics, err)
	}
	if calls := fake.Calls(); len(calls) != 1 {
		t.Errorf("%d requests, want 1", len(calls))
	}
}

// Every failure aborts the listing with an error naming the pod, the
// command, the page and what CloudStack (or the network) said.
func TestListPodNICsFailures(t *testing.T) {
	type setup func(fake *cloudstacktest.Server, opts *Options)
	inject := func(f cloudstacktest.Fault) setup {
		return func(fake *cloudstacktest.Server, _ *Options) { fake.Inject(f) }
	}
	tests := []struct {
		name    string
		setup   setup
		pod     string
		wantErr error // a sentinel, or an *APIError with the wanted Code
		has     []string
	}{
		{"HTTP 500 page", inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultHTTP500, Page: 2}), podA,
			ErrBadResponse, []string{"page 2:", `HTTP 500, not JSON: HTML page "Error 500 Server Error"`}},
		{"401 signature", inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultSignature}), podA,
			&APIError{Code: 401}, []string{"page 1:", "CloudStack error 401: unable to verify user credentials and/or request signature"}},
		{"431 parameter", inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultParam, Page: 3}), podA,
			&APIError{Code: 431}, []string{"page 3:", "CloudStack error 431 (cserrorcode 9999): Unable to execute API command listvirtualmachines due to invalid value"}},
		{"530 internal", inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultInternal, Page: 2}), podA,
			&APIError{Code: 530}, []string{"page 2:", "CloudStack error 530 (cserrorcode 9999): Internal error executing command"}},
		{"429 throttled", inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultThrottle}), podA,
			&APIError{Code: 429}, []string{"page 1:", "CloudStack error 429 (cserrorcode 9999): The given user has reached his/her account api limit"}},
		{"timeout", func(fake *cloudstacktest.Server, opts *Options) {
			fake.Inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultSlow, Page: 2, Delay: 10 * time.Second})
			opts.Timeout = 100 * time.Millisecond
		}, podA, ErrTimeout, []string{"page 2:", "request timed out after 100ms"}},
		{"truncated body", inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultTruncated, Page: 2}), podA,
			ErrBadResponse, []string{"page 2:", "HTTP 200, body truncated after"}},
		{"non-JSON body", inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultNotJSON, Page: 3}), podA,
			ErrBadResponse, []string{"page 3:", `HTTP 200, not JSON: HTML page "Scheduled maintenance"`}},
		{"listing ends before count", inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultShortCount}), podA,
			ErrIncomplete, []string{"page 4:", "listing ended before count was reached: read 8 of 9 VMs"}},
		{"first page empty but count", func(fake *cloudstacktest.Server, _ *Options) {
			fake.SetPod("p0", cloudstacktest.VMs{})
			fake.Inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultShortCount, Missing: 5})
		}, "p0", ErrIncomplete, []string{"pod p0:", "page 1:", "read 0 of 5 VMs"}},
		{"listing keeps changing", inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultExpunge, Page: 2}), podA,
			ErrInconsistent, []string{"page 2:", "count 6 on page 1, 5 on page 2", "(after 3 attempts)"}},
		{"wrong secret key", func(_ *cloudstacktest.Server, opts *Options) {}, "wrong-secret",
			&APIError{Code: 401}, []string{"unable to verify user credentials"}},
		{"clock far behind", func(fake *cloudstacktest.Server, _ *Options) {
			// cloudstack-go's requests expire 15 minutes on.
			fake.SetClock(func() time.Time { return time.Now().Add(16 * time.Minute) })
		}, podA, &APIError{Code: 401}, []string{"page 1:", "unable to verify user credentials"}},
		{"unknown pod", func(*cloudstacktest.Server, *Options) {}, "11111111-2222-4333-8444-555555555555",
			&APIError{Code: 431}, []string{"pod 11111111-2222-4333-8444-555555555555:", "Invalid parameter podid value=11111111-2222-4333-8444-555555555555"}},
		{"page size above the server's", func(fake *cloudstacktest.Server, opts *Options) {
			fake.SetMaxPageSize(100)
			opts.PageSize = 500
		}, podA, &APIError{Code: 431}, []string{"CloudStack error 431 (cserrorcode 4350): Page size can't exceed max allowed page size value: 100"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := newFake(t)
			opts := Options{PageSize: 3}
			tt.setup(fake, &opts)
			c := newClient(fake, opts)
			pod := tt.pod
			if pod == "wrong-secret" {
				c = New(fake.URL, apiKey, "not-the-secret", Options{Logger: slog.New(slog.DiscardHandler)})
				pod = podA
			}
			start := time.Now()
			nics, err := c.ListPodNICs(t.Context(), pod)
			if err == nil {
				t.Fatalf("no error; %d NICs", len(nics))
			}
			if nics != nil {
				t.Errorf("NICs returned with the error: %d", len(nics))
			}
			if want, ok := tt.wantErr.(*APIError); ok {
				var ae *APIError
				if !errors.As(err, &ae) || ae.Code != want.Code || ae.Command != "listVirtualMachines" {
					t.Errorf("err = %v, want *APIError code %d", err, want.Code)
				}
			} else if !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			msg := err.Error()
			for _, s := range append([]string{"cloudstack: pod " + pod + ": listVirtualMachines page "}, tt.has...) {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q\ndoes not contain %q", msg, s)
				}
			}
			if time.Since(start) > 5*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
		})
	}
}

// A listing that changed once is restarted and then succeeds.
func TestListPodNICsRestart(t *testing.T) {
	fake := newFake(t)
	fake.Inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultExpunge, Page: 2, Times: 1})
	var logs bytes.Buffer
	c := newClient(fake, Options{PageSize: 3, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	nics, err := c.ListPodNICs(t.Context(), podA)
	if err != nil {
		t.Fatal(err)
	}
	diffLines(t, describeAll(nics), fixtureNICs[1:]) // web-01 was expunged
	var pages []int
	for _, call := range fake.Calls() {
		pages = append(pages, call.Page)
	}
	if want := []int{1, 2, 1, 2, 3}; !slices.Equal(pages, want) {
		t.Errorf("pages requested %v, want %v", pages, want)
	}
	if !strings.Contains(logs.String(), "listing changed while read; restarting it") {
		t.Errorf("no restart logged: %s", logs.String())
	}
	// Restarts: -1 gives up at once.
	fake.Inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultExpunge, Page: 2, Times: 1})
	_, err = newClient(fake, Options{PageSize: 3, Restarts: -1}).ListPodNICs(t.Context(), podA)
	if !errors.Is(err, ErrInconsistent) || strings.Contains(err.Error(), "attempts") {
		t.Errorf("err = %v, want ErrInconsistent on the first attempt", err)
	}
}

// dupPod lists VM 0 again in place of VM 3: pages shifted under the reader.
type dupPod struct{ cloudstacktest.VMs }

func (d dupPod) AppendVM(dst []byte, i int) []byte {
	if i == 3 {
		i = 0
	}
	return d.VMs.AppendVM(dst, i)
}

func TestListPodNICsDuplicateVM(t *testing.T) {
	fake := newFake(t)
	vms, _ := cloudstacktest.LoadVMs(filepath.Join(fixtures, "listVirtualMachines-pod.json"))
	fake.SetPod("dup", dupPod{vms})
	_, err := newClient(fake, Options{PageSize: 3, Restarts: -1}).ListPodNICs(t.Context(), "dup")
	if !errors.Is(err, ErrInconsistent) || !strings.Contains(err.Error(), "page 2: listing changed while it was read: VM 3c5b7a4e-1f0d-4b8e-9a61-0d2c4e6f8a10 listed twice") {
		t.Errorf("err = %v", err)
	}
}

// VMs the library cannot decode, and a raw control byte the server's
// unescaping produces, do not break the page; a NIC whose MAC does not
// parse is dropped and logged, the rest kept.
func TestListPodNICsOddVMs(t *testing.T) {
	fake := newFake(t)
	fake.SetPod("odd", cloudstacktest.VMs{
		json.RawMessage("{\"id\":\"v1\",\"name\":\"ctl\",\"displayname\":\"tab\\there \x01 raw\",\"state\":\"Running\",\"created\":\"not a date\",\"nic\":[{\"id\":\"n1\",\"macaddress\":\"02:00:00:00:00:01\",\"isdefault\":true,\"broadcasturi\":\"vlan://10\",\"ip6address\":\"10.0.0.1\",\"ip6cidr\":\"garbage\"}]}"),
		json.RawMessage(`{"id":"v2","name":"vnf","state":"Running","vnfnics":[{"deviceid":0,"name":"mgmt","required":true}],"nic":[{"id":"n2","macaddress":"not-a-mac","isdefault":true},{"id":"n3","macaddress":"02:00:00:00:00:03","extradhcpoption":[{"extradhcpoptioncode":67,"extradhcpvalue":"x"}],"ip6address":"2001:db8::3","ip6cidr":"2001:db8::3/64"}]}`),
	})
	var logs bytes.Buffer
	c := newClient(fake, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	nics, err := c.ListPodNICs(t.Context(), "odd")
	if err != nil {
		t.Fatal(err)
	}
	if len(nics) != 2 {
		t.Fatalf("%d NICs, want 2: %+v", len(nics), nics)
	}
	if n := nics[0]; n.NICID != "n1" || n.VLAN != 10 || n.IP6.IsValid() || n.IP6CIDR.IsValid() || !n.Created.IsZero() {
		t.Errorf("NIC n1 = %+v", n)
	}
	if n := nics[1]; n.NICID != "n3" || n.IP6 != netip.MustParseAddr("2001:db8::3") || n.IP6CIDR != netip.MustParsePrefix("2001:db8::/64") {
		t.Errorf("NIC n3 = %+v", n)
	}
	if !strings.Contains(logs.String(), `msg="cloudstack: NIC dropped: its MAC does not parse" pod=odd vm=v2 vm-name=vnf nic=n2 mac=not-a-mac`) {
		t.Errorf("dropped NIC not logged: %s", logs.String())
	}
}

func TestListPodNICsCanceled(t *testing.T) {
	fake := newFake(t)
	fake.Inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultSlow, Delay: 10 * time.Second})
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := newClient(fake, Options{}).ListPodNICs(ctx, podA)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "page 1: canceled") {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestListPodNICsUnreachable(t *testing.T) {
	fake := newFake(t)
	url := fake.URL
	fake.Close()
	_, err := New(url, apiKey, secret, Options{}).ListPodNICs(t.Context(), podA)
	if err == nil || !strings.Contains(err.Error(), "cloudstack: pod "+podA+": listVirtualMachines page 1: GET "+url+": ") || strings.Contains(err.Error(), "signature=") {
		t.Errorf("err = %v", err)
	}
}

func TestNewBadURL(t *testing.T) {
	for _, u := range []string{"", "cloud.example.com/client/api", "ftp://cloud/client/api", "https://cloud/client/api?x=1", "https://user:pw@cloud/client/api", "http://[::1",
		"https://cloud/client/api?apikey=AK-pw&signature=S-pw", "https://cloud/client/api#pw", "https://u:pw@cloud/\x7f", "cloud/client/api?secretkey=pw"} {
		_, err := New(u, apiKey, secret, Options{}).ListPodNICs(t.Context(), podA)
		if err == nil || !strings.HasPrefix(err.Error(), "cloudstack: API URL") || strings.Contains(err.Error(), "pw") {
			t.Errorf("New(%q): err = %v", u, err)
		}
	}
	if _, err := New("http://x/client/api", apiKey, secret, Options{}).ListPodNICs(t.Context(), ""); err == nil {
		t.Error("empty pod id accepted")
	}
}

// Synthetic pods read concurrently through one client: deterministic MACs,
// each VM's default NIC first, every tenth VM with a second NIC.
func TestListPodNICsSyntheticConcurrent(t *testing.T) {
	fake := cloudstacktest.NewServer(apiKey, secret)
	defer fake.Close()
	const pods, vms = 4, 2002
	fake.SetPods(cloudstacktest.SyntheticPods(pods, vms))
	c := newClient(fake, Options{PageSize: 100})
	var wg sync.WaitGroup
	results := make([][]NIC, pods)
	errs := make([]error, pods)
	for k := range pods {
		wg.Go(func() { results[k], errs[k] = c.ListPodNICs(t.Context(), cloudstacktest.SyntheticPodID(k)) })
	}
	wg.Wait()
	total := 0
	for k, nics := range results {
		if errs[k] != nil {
			t.Fatal(errs[k])
		}
		n := vms / pods
		if k < vms%pods {
			n++
		}
		want := n + n/10
		if len(nics) != want {
			t.Errorf("pod %d: %d NICs, want %d", k, len(nics), want)
		}
		i := 0
		for j, nic := range nics {
			if !nic.IsDefault {
				if nic.MAC.String() != cloudstacktest.SyntheticMAC(k, i-1, 1).String() || nic.VLAN != 3000+k {
					t.Fatalf("pod %d NIC %d = %s", k, j, describe(nic))
				}
				continue
			}
			if nic.VMID != cloudstacktest.SyntheticVMID(k, i) || nic.MAC.String() != cloudstacktest.SyntheticMAC(k, i, 0).String() ||
				nic.VLAN != 2700+k || nic.IP6 != cloudstacktest.SyntheticIP6(k, i) || nic.VMState != cloudstacktest.SyntheticState(i) ||
				nic.IP6CIDR.Bits() != 64 || !nic.IP6CIDR.Contains(nic.IP6) {
				t.Fatalf("pod %d NIC %d (VM %d) = %s", k, j, i, describe(nic))
			}
			i++
		}
		total += len(allocator.SelectNICs(nics, 0))
	}
	if total != vms {
		t.Errorf("%d default NICs, want %d", total, vms)
	}
}

// Answers no real server gives, from a hand-written server.
func TestListPodNICsMalformedCounts(t *testing.T) {
	for _, tt := range []struct{ name, body, has string }{
		{"negative count", `{"listvirtualmachinesresponse":{"count":-1}}`, "bad response: count -1 with 0 VMs"},
		{"VMs without count", `{"listvirtualmachinesresponse":{"virtualmachine":[{"id":"a"}]}}`, "bad response: count 0 with 1 VMs"},
		{"huge count", `{"listvirtualmachinesresponse":{"count":9000000000000000000}}`, "listing ended before count was reached: read 0 of 9000000000000000000 VMs"},
		{"VM without id", `{"listvirtualmachinesresponse":{"count":1,"virtualmachine":[{"name":"a"}]}}`, "bad response: VM 0 of the page has no id"},
		{"more VMs than count", `{"listvirtualmachinesresponse":{"count":1,"virtualmachine":[{"id":"a"},{"id":"b"}]}}`, "listing changed while it was read: read 2 VMs, count is 1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			c := New(srv.URL, apiKey, secret, Options{Restarts: -1, Logger: slog.New(slog.DiscardHandler)})
			_, err := c.ListPodNICs(t.Context(), podA)
			if err == nil || !strings.Contains(err.Error(), "page 1: "+tt.has) {
				t.Errorf("err = %v, want %q", err, tt.has)
			}
		})
	}
}

// ListVMNICs lists only the VMs asked for, in the pod asked for, naming at
// most MaxIDsPerCall of them a call; a VM CloudStack does not list is
// simply absent.
func TestListVMNICs(t *testing.T) {
	fake := newFake(t)
	c := newClient(fake, Options{})
	all, err := c.ListPodNICs(t.Context(), podA)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{all[0].VMID: true, all[1].VMID: true}
	fake.ResetCalls()
	ask := []string{all[0].VMID, all[1].VMID, "5b0c0e3e-0000-4000-8000-000000000000"}
	for i := range 2 * MaxIDsPerCall {
		ask = append(ask, fmt.Sprintf("00000000-0000-4000-8000-%012d", i))
	}
	nics, err := c.ListVMNICs(t.Context(), podA, ask)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range nics {
		if !want[n.VMID] {
			t.Errorf("NIC of VM %s listed", n.VMID)
		}
		got = append(got, describe(n))
	}
	diffLines(t, got, fixtureNICs[:4]) // web-01's NIC and db-01's three
	calls := fake.Calls()
	if len(calls) != 3 {
		t.Fatalf("%d calls, want 3 (%d ids, %d a call)", len(calls), len(ask), MaxIDsPerCall)
	}
	for _, call := range calls {
		if call.Pod != podA || len(strings.Split(call.Params.Get("ids"), ",")) > MaxIDsPerCall || call.Params.Get("listall") != "true" {
			t.Errorf("call %+v", call.Params)
		}
	}
	if _, err := c.ListVMNICs(t.Context(), podA, []string{"a,b"}); err == nil {
		t.Error("an id with a comma was sent")
	}
}
