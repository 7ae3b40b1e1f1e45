package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
	"github.com/cloudstack-pd/cloudstack-pd/server"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// The test world: two pools, four VMs in pod-a (one gone, one
// quarantined), one in pod-b.
var (
	testNow    = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	serverDUID = []byte{0, 1, 0, 1, 0x2f, 0x00, 0x00, 0x01, 0x02, 0xcd, 0x00, 0x00, 0x00, 0x01}
	relayAddr  = netip.MustParseAddrPort("[2001:db8:ffff::1]:547")
	linkAddr   = netip.MustParseAddr("2001:db8:100::1")
	vmPeer     = netip.MustParseAddr("fe80::432:b2ff:fe00:479")

	poolA = allocator.Pool{Name: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60,
		InterfaceID: "VLAN2701", IP6CIDR: netip.MustParsePrefix("2001:db8:100::/64")}
	poolB = allocator.Pool{Name: "pod-b", Prefix: netip.MustParsePrefix("2001:db8:300::/40"), PrefixLen: 56,
		InterfaceID: "VLAN2702"}

	macA    = mustMAC("06:32:b2:00:04:79")
	macA2   = mustMAC("06:32:b2:00:04:7a")
	macGone = mustMAC("06:32:b2:00:04:81")
	macQuar = mustMAC("06:32:b2:00:04:82")
	macB    = mustMAC("06:32:b2:00:04:80")
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func testAllocations() []allocator.Allocation {
	since := testNow.Add(-30 * 24 * time.Hour)
	return []allocator.Allocation{
		{Pool: "pod-a", MAC: macA, Prefix: netip.MustParsePrefix("2001:db8:200::/60"), State: allocator.StateActive, Since: since,
			VMID: "vm-1111", VMName: "Web-1", NICID: "nic-1", IP6: netip.MustParseAddr("2001:db8:100:0:432:b2ff:fe00:479"),
			IP6CIDR: poolA.IP6CIDR, Source: "sync"},
		{Pool: "pod-a", MAC: macA2, Prefix: netip.MustParsePrefix("2001:db8:200:10::/60"), State: allocator.StateActive, Since: since,
			VMID: "vm-2222", VMName: "db-1", NICID: "nic-2", Source: "sync"},
		{Pool: "pod-a", MAC: macGone, Prefix: netip.MustParsePrefix("2001:db8:200:20::/60"), State: allocator.StateGone, Since: since,
			GoneAt: testNow.Add(-time.Hour), VMID: "vm-3333", VMName: "old-1", Source: "import-kea"},
		{Pool: "pod-a", MAC: macQuar, Prefix: netip.MustParsePrefix("2001:db8:200:30::/60"), State: allocator.StateQuarantined, Since: since,
			GoneAt: testNow.Add(-48 * time.Hour), QuarantinedAt: testNow.Add(-24 * time.Hour), Source: "sync"},
		{Pool: "pod-b", MAC: macB, Prefix: netip.MustParsePrefix("2001:db8:300::/56"), State: allocator.StateActive, Since: since,
			VMID: "vm-4444", VMName: "web-2", Source: "sync"},
	}
}

// world is a store, its table, a handler recording into the store, and
// the API over them, all sharing one registry.
type world struct {
	st      *allocator.Store
	live    *allocator.Live
	reg     *prometheus.Registry
	h       *server.Handler
	rec     *server.Recorder
	sync    *SyncMetrics
	api     *API
	now     atomic.Pointer[time.Time]
	ready   atomic.Pointer[Readiness]
	pools   []allocator.Pool
	handler http.Handler
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{pools: []allocator.Pool{poolA, poolB}}
	now := testNow
	w.now.Store(&now)
	w.ready.Store(&Readiness{})
	st, err := allocator.OpenStore(boltstore.Open(filepath.Join(t.TempDir(), "state.db"), boltstore.Options{Create: true, NoSync: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w.st = st
	if err := st.Update(w.pools, func(tx *allocator.Tx) error {
		for _, a := range testAllocations() {
			if err := tx.Put(a); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	tbl, _, err := st.LoadTable(w.pools)
	if err != nil {
		t.Fatal(err)
	}
	w.live = allocator.NewLive(tbl)
	w.reg = prometheus.NewRegistry()
	metrics := server.NewMetrics(w.reg)
	if err := NewCollectors(w.reg, w.live, st, "1.2.3-test"); err != nil {
		t.Fatal(err)
	}
	w.sync = NewSyncMetrics(w.reg)
	w.rec = server.NewRecorder(st, time.Hour, nil)
	w.h, err = server.NewHandler(server.HandlerConfig{
		Table: w.live, ServerID: serverDUID, Bindings: w.rec, Metrics: metrics,
		Now: w.clock,
		Options: server.Options{
			MACSources:        []relay.MACSource{relay.SourceRemoteID},
			TrustedRelays:     []netip.Prefix{netip.MustParsePrefix("2001:db8:ffff::/48")},
			PreferredLifetime: 86400, ValidLifetime: 172800, RenewTimer: 1000, RebindTimer: 2000,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	w.api = New(Config{
		Table: w.live, Bindings: st, Registry: w.reg, Version: "1.2.3-test",
		Ready: func() Readiness { return *w.ready.Load() },
		Now:   w.clock,
	})
	w.handler = w.api
	return w
}

func (w *world) clock() time.Time { return *w.now.Load() }

func (w *world) advance(d time.Duration) {
	n := w.clock().Add(d)
	w.now.Store(&n)
}

func (w *world) setReady(r Readiness) { w.ready.Store(&r) }

// get answers method path through the API, without a socket.
func (w *world) do(t *testing.T, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	rr := httptest.NewRecorder()
	w.handler.ServeHTTP(rr, httptest.NewRequest(method, path, nil))
	return rr
}

func (w *world) get(t *testing.T, path string, wantStatus int, into any) string {
	t.Helper()
	rr := w.do(t, http.MethodGet, path)
	if rr.Code != wantStatus {
		t.Fatalf("GET %s: status %d, want %d; body:\n%s", path, rr.Code, wantStatus, rr.Body)
	}
	if into != nil {
		if ct := rr.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("GET %s: Content-Type %q", path, ct)
		}
		if err := json.Unmarshal(rr.Body.Bytes(), into); err != nil {
			t.Fatalf("GET %s: %v; body:\n%s", path, err, rr.Body)
		}
	}
	return rr.Body.String()
}

// list GETs a listing (200 expected), puts its items into into, and
// returns its next cursor ("" on the last page).
func (w *world) list(t *testing.T, path string, into any) string {
	t.Helper()
	var page struct {
		Items json.RawMessage `json:"items"`
		Next  *string         `json:"next"`
	}
	w.get(t, path, http.StatusOK, &page)
	if err := json.Unmarshal(page.Items, into); err != nil {
		t.Fatalf("GET %s: items: %v", path, err)
	}
	if page.Next == nil {
		return ""
	}
	if *page.Next == "" {
		t.Fatalf("GET %s: next is \"\", want a cursor or null", path)
	}
	return *page.Next
}

// Client messages, relayed the way a Junos relay does.
func clientMsg(typ dhcpv6.MessageType, mac net.HardwareAddr, withServerID bool) []byte {
	m := &dhcpv6.Message{MessageType: typ, TransactionID: dhcpv6.TransactionID{1, 2, 3}}
	m.AddOption(dhcpv6.OptClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac}))
	if withServerID {
		m.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionServerID, OptionData: serverDUID})
	}
	m.AddOption(&dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, 1}})
	return m.ToBytes()
}

func juniper(iid []byte, mac net.HardwareAddr, m []byte) []byte {
	return relay.Encapsulate(m, relay.Forward{LinkAddr: linkAddr, PeerAddr: vmPeer,
		InterfaceID: iid, RemoteID: relay.JuniperRemoteID(mac)})
}

func TestHealthz(t *testing.T) {
	w := newWorld(t)
	if body := w.get(t, "/healthz", http.StatusOK, nil); body != "ok\n" {
		t.Errorf("body %q", body)
	}
	// Alive even when nothing is loaded or listening.
	api := New(Config{})
	rr := httptest.NewRecorder()
	api.ServeHTTP(rr, httptest.NewRequest(http.MethodHead, "/healthz", nil))
	if rr.Code != http.StatusOK {
		t.Errorf("HEAD /healthz of a bare API: %d", rr.Code)
	}
}

func TestReadyzFlips(t *testing.T) {
	w := newWorld(t)
	var st ReadyStatus

	// Table loaded, not listening yet.
	w.get(t, "/readyz", http.StatusServiceUnavailable, &st)
	if st.Ready || !st.TableLoaded || len(st.Listening) != 0 || st.Allocations != 5 || st.Pools != 2 {
		t.Errorf("before listening: %+v", st)
	}

	// Listening: ready.
	listen := []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::100:69]:547")}
	w.setReady(Readiness{Listening: listen})
	w.get(t, "/readyz", http.StatusOK, &st)
	if !st.Ready || st.Listening[0] != "[2001:db8::100:69]:547" || st.LastSync != nil || len(st.Warnings) != 0 {
		t.Errorf("listening: %+v", st)
	}

	// The table goes away (a Reader that lost it): not ready.
	tbl := w.live.Current()
	w.live.Swap(nil)
	w.get(t, "/readyz", http.StatusServiceUnavailable, &st)
	if st.Ready || st.TableLoaded || !strings.Contains(strings.Join(st.Warnings, "|"), "not loaded") {
		t.Errorf("without a table: %+v", st)
	}
	w.live.Swap(tbl)

	// Shutting down: the serve loop stops listing endpoints.
	w.setReady(Readiness{})
	w.get(t, "/readyz", http.StatusServiceUnavailable, &st)
	w.setReady(Readiness{Listening: listen})
	w.get(t, "/readyz", http.StatusOK, &st)
}

func TestReadyzSyncStaleIsAWarningOnly(t *testing.T) {
	w := newWorld(t)
	listen := []netip.AddrPort{netip.MustParseAddrPort("[::1]:547")}
	var st ReadyStatus

	// A sync is configured and has not succeeded yet, shortly after start.
	w.setReady(Readiness{Listening: listen, SyncEnabled: true})
	w.get(t, "/readyz", http.StatusOK, &st)
	if st.LastSync != nil || len(st.Warnings) != 0 {
		t.Errorf("fresh start: %+v", st)
	}
	// CloudStack stays down for an hour: still ready, with a warning.
	w.advance(time.Hour)
	w.get(t, "/readyz", http.StatusOK, &st)
	if !st.Ready || len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "no successful sync since the start 1h0m0s ago") {
		t.Errorf("never synced: %+v", st)
	}

	// A sync succeeds, through SyncMetrics as the sync code will report it.
	w.sync.Observe(SyncOK, 2*time.Second, map[string]int{"kept": 5}, w.clock())
	w.setReady(Readiness{Listening: listen, SyncEnabled: true, LastSync: w.sync.LastSuccessTime()})
	w.get(t, "/readyz", http.StatusOK, &st)
	if st.LastSync == nil || !st.LastSync.Equal(w.clock()) || len(st.Warnings) != 0 {
		t.Errorf("synced: %+v", st)
	}

	// Two hours later, CloudStack down since: stale, still ready.
	w.advance(2 * time.Hour)
	w.setReady(Readiness{Listening: listen, SyncEnabled: true, LastSync: w.sync.LastSuccessTime(),
		Warnings: []string{"last sync failed: listVirtualMachines pod pod-a: 530"}})
	w.get(t, "/readyz", http.StatusOK, &st)
	if !st.Ready || len(st.Warnings) != 2 || !strings.HasPrefix(st.Warnings[0], "sync stale: last success 2h0m0s ago") ||
		!strings.HasPrefix(st.Warnings[1], "last sync failed") {
		t.Errorf("stale: %+v", st)
	}

	// No sync configured: no sync warning, whatever the clock.
	w.setReady(Readiness{Listening: listen})
	w.get(t, "/readyz", http.StatusOK, &st)
	if st.LastSync != nil || len(st.Warnings) != 0 {
		t.Errorf("no sync configured: %+v", st)
	}
}

func TestReadyzWarnsOfAnEmptyTable(t *testing.T) {
	w := newWorld(t)
	empty, err := allocator.NewTable(w.pools, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.live.Swap(empty)
	w.setReady(Readiness{Listening: []netip.AddrPort{netip.MustParseAddrPort("[::1]:547")}})
	var st ReadyStatus
	w.get(t, "/readyz", http.StatusOK, &st)
	if !st.Ready || len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "empty") {
		t.Errorf("empty table: %+v", st)
	}
}

func TestOnlyGETAndHEAD(t *testing.T) {
	w := newWorld(t)
	for _, path := range []string{"/", "/healthz", "/readyz", "/metrics", "/v1/pools", "/v1/allocations", "/v1/leases", "/nope"} {
		for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions} {
			rr := w.do(t, m, path)
			if rr.Code != http.StatusMethodNotAllowed || rr.Header().Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: %d, Allow %q", m, path, rr.Code, rr.Header().Get("Allow"))
			}
			var e errorBody
			if err := json.Unmarshal(rr.Body.Bytes(), &e); err != nil || !strings.Contains(e.Error, m) {
				t.Errorf("%s %s: body %s", m, path, rr.Body)
			}
		}
		if rr := w.do(t, http.MethodHead, path); path != "/nope" && rr.Code != http.StatusOK && rr.Code != http.StatusServiceUnavailable {
			t.Errorf("HEAD %s: %d", path, rr.Code)
		}
	}
}

func TestNotFoundAndIndex(t *testing.T) {
	w := newWorld(t)
	var e errorBody
	w.get(t, "/v2/pools", http.StatusNotFound, &e)
	if !strings.Contains(e.Error, "/v2/pools") {
		t.Errorf("404 body %+v", e)
	}
	var idx struct {
		Name, Version string
		Endpoints     []string
		Parameters    map[string][]string
		Examples      []string
	}
	w.get(t, "/", http.StatusOK, &idx)
	if idx.Version != "1.2.3-test" || len(idx.Endpoints) != 6 || len(idx.Examples) == 0 {
		t.Errorf("index %+v", idx)
	}
	// What the index shows works as it is written: every endpoint and
	// example answers (200; /readyz 503 while not listening), every
	// parameter it names is accepted.
	w.setReady(Readiness{Listening: []netip.AddrPort{netip.MustParseAddrPort("[::1]:547")}})
	for _, path := range append(idx.Endpoints, idx.Examples...) {
		if rr := w.do(t, http.MethodGet, path); rr.Code != http.StatusOK {
			t.Errorf("GET %s (from /): %d %s", path, rr.Code, rr.Body)
		}
	}
	for path, params := range idx.Parameters {
		for _, p := range params {
			if rr := w.do(t, http.MethodGet, path+"?"+p+"=x"); rr.Code == http.StatusBadRequest && strings.Contains(rr.Body.String(), "unknown parameter") {
				t.Errorf("GET %s?%s=x (from /): %s", path, p, rr.Body)
			}
		}
	}
	w.get(t, "/healthz?verbose=1", http.StatusBadRequest, &e)
}

func TestPools(t *testing.T) {
	w := newWorld(t)
	var pools []map[string]any
	body := w.get(t, "/v1/pools", http.StatusOK, &pools)
	if len(pools) != 2 {
		t.Fatalf("pools:\n%s", body)
	}
	a := pools[0]
	want := map[string]any{
		"name": "pod-a", "prefix": "2001:db8:200::/40", "prefix-len": 60.0, "interface-id": "VLAN2701",
		"ip6-cidr": "2001:db8:100::/64", "size": 1048576.0, "free": 1048572.0,
		"counts": map[string]any{"active": 2.0, "gone": 1.0, "quarantined": 1.0},
	}
	for k, v := range want {
		if !jsonEqual(a[k], v) {
			t.Errorf("pod-a %s = %v, want %v", k, a[k], v)
		}
	}
	if len(a) != len(want) {
		t.Errorf("pod-a has fields %v, want exactly %v", a, want)
	}
	b := pools[1]
	if b["ip6-cidr"] != "" || b["size"] != 65536.0 || !jsonEqual(b["counts"], map[string]any{"active": 1.0, "gone": 0.0, "quarantined": 0.0}) {
		t.Errorf("pod-b = %v", b)
	}
	// Table not loaded: 503.
	w.live.Swap(nil)
	w.get(t, "/v1/pools", http.StatusServiceUnavailable, &errorBody{})
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func TestAllocationFields(t *testing.T) {
	w := newWorld(t)
	var got []map[string]any
	w.list(t, "/v1/allocations?mac=06:32:b2:00:04:79", &got)
	if len(got) != 1 {
		t.Fatalf("got %v", got)
	}
	want := map[string]any{
		"mac": "06:32:b2:00:04:79", "prefix": "2001:db8:200::/60", "pool": "pod-a", "interface-id": "VLAN2701",
		"vm-id": "vm-1111", "vm-name": "Web-1", "nic-id": "nic-1", "state": "active",
		"since": "2026-10-23T12:00:00Z", "gone-at": nil, "quarantined-at": nil,
		"ip6": "2001:db8:100:0:432:b2ff:fe00:479", "ip6-cidr": "2001:db8:100::/64", "source": "sync",
	}
	if !jsonEqual(got[0], want) {
		t.Errorf("allocation\n got %v\nwant %v", got[0], want)
	}
	w.list(t, "/v1/allocations?state=quarantined", &got)
	if len(got) != 1 || got[0]["gone-at"] != "2026-11-20T12:00:00Z" || got[0]["quarantined-at"] != "2026-11-21T12:00:00Z" || got[0]["ip6"] != "" || got[0]["ip6-cidr"] != "" || got[0]["vm-id"] != "" {
		t.Errorf("quarantined allocation %v", got)
	}
}

func TestAllocationFilters(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		query string
		want  []string // MACs, in answer order (pool, then prefix)
	}{
		{"", []string{"06:32:b2:00:04:79", "06:32:b2:00:04:7a", "06:32:b2:00:04:81", "06:32:b2:00:04:82", "06:32:b2:00:04:80"}},
		{"mac=06:32:b2:00:04:79", []string{"06:32:b2:00:04:79"}},
		{"mac=06-32-B2-00-04-79", []string{"06:32:b2:00:04:79"}},
		{"mac=0632.b200.0479", []string{"06:32:b2:00:04:79"}},
		{"mac=0632B2000479", []string{"06:32:b2:00:04:79"}},
		{"mac=%2006:32:b2:00:04:79%20", []string{"06:32:b2:00:04:79"}},
		{"mac=06:32:b2:00:0f:ff", []string{}},
		{"pool=pod-b", []string{"06:32:b2:00:04:80"}},
		{"pool=pod-a&state=active", []string{"06:32:b2:00:04:79", "06:32:b2:00:04:7a"}},
		{"state=GONE", []string{"06:32:b2:00:04:81"}},
		{"vm=vm-2222", []string{"06:32:b2:00:04:7a"}},
		{"vm=web-1", []string{"06:32:b2:00:04:79"}},
		{"vm=WEB-2", []string{"06:32:b2:00:04:80"}},
		{"vm=nobody", []string{}},
		{"vm=web-2&pool=pod-a", []string{}},
		{"mac=06:32:b2:00:04:80&pool=pod-a", []string{}},
		{"prefix=2001:db8:200:10::/60", []string{"06:32:b2:00:04:7a"}},
		{"prefix=2001:db8:200:10::1/60", []string{"06:32:b2:00:04:7a"}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			var got []Allocation
			w.list(t, "/v1/allocations?"+tt.query, &got)
			macs := []string{}
			for _, a := range got {
				macs = append(macs, a.MAC)
			}
			if strings.Join(macs, " ") != strings.Join(tt.want, " ") {
				t.Errorf("got %v, want %v", macs, tt.want)
			}
		})
	}
}

func TestBadParametersNameThemselves(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		path, param, msg string
	}{
		{"/v1/allocations?mac=zz:zz", "mac", "not a MAC"},
		{"/v1/allocations?mac=0632b200047", "mac", "not a MAC"},
		{"/v1/allocations?pool=pod-z", "pool", "pod-a, pod-b"},
		{"/v1/allocations?state=lost", "state", "lost"},
		{"/v1/allocations?prefix=10.0.0.0/8", "prefix", "IPv6"},
		{"/v1/allocations?prefix=nope", "prefix", "nope"},
		{"/v1/allocations?vm=", "vm", "empty"},
		{"/v1/allocations?mca=06:32:b2:00:04:79", "mca", "unknown parameter"},
		{"/v1/allocations?mac=06:32:b2:00:04:79&mac=06:32:b2:00:04:80", "mac", "2 times"},
		{"/v1/leases?vm=web-1", "vm", "mac, pool, prefix"},
		{"/v1/leases?mac=x", "mac", "not a MAC"},
		{"/v1/pools?pool=pod-a", "pool", "takes none"},
		{"/readyz?x", "x", "takes none"},
		{"/v1/allocations?mac=%zz", "", "invalid URL escape"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			var e errorBody
			w.get(t, tt.path, http.StatusBadRequest, &e)
			if e.Parameter != tt.param || !strings.Contains(e.Error, tt.msg) {
				t.Errorf("error %+v, want parameter %q and %q", e, tt.param, tt.msg)
			}
		})
	}
}

func TestLeasesFromHandledPackets(t *testing.T) {
	w := newWorld(t)
	var leases []Lease
	w.list(t, "/v1/leases", &leases)
	if len(leases) != 0 {
		t.Fatalf("leases before any packet: %v", leases)
	}

	// A VM asks for its prefix; the recorder writes the binding at its flush.
	req := juniper([]byte("VLAN2701"), macA, clientMsg(dhcpv6.MessageTypeRequest, macA, true))
	if _, err := w.h.Handle(relayAddr, req); err != nil {
		t.Fatal(err)
	}
	if err := w.rec.Flush(); err != nil {
		t.Fatal(err)
	}
	// A binding relayed with a binary interface-id, written straight to the store.
	if err := w.st.PutBindings([]allocator.Binding{{
		ClientDUID: []byte{0, 3, 0, 1, 6, 0x32, 0xb2, 0, 4, 0x80}, MAC: macB, IAID: 7, Pool: "pod-b",
		Prefix: netip.MustParsePrefix("2001:db8:300::/56"), PreferredLifetime: 60, ValidLifetime: 120,
		Expires: testNow.Add(-time.Minute), LastExchange: testNow.Add(-3 * time.Minute), LastMessage: "RENEW",
		InterfaceID: []byte{0, 0x0a, 0x8e}, RelayID: []byte{1, 2},
	}}, nil); err != nil {
		t.Fatal(err)
	}

	var raw []map[string]any
	w.list(t, "/v1/leases?mac=0632.b200.0479", &raw)
	if len(raw) != 1 {
		t.Fatalf("leases of macA: %v", raw)
	}
	want := map[string]any{
		"client-duid": "00:03:00:01:06:32:b2:00:04:79", "iaid": 1.0, "mac": "06:32:b2:00:04:79",
		"pool": "pod-a", "prefix": "2001:db8:200::/60",
		"preferred-lifetime": 86400.0, "valid-lifetime": 172800.0,
		"expires": "2026-11-24T12:00:00Z", "expired": false,
		"last-exchange": "2026-11-22T12:00:00Z", "last-message": "REQUEST",
		"relay-source": "[2001:db8:ffff::1]:547", "link-address": "2001:db8:100::1",
		"peer-address": "fe80::432:b2ff:fe00:479", "interface-id": "VLAN2701",
		"remote-id": "00:00:0a:4c:06:32:b2:00:04:79", "relay-id": "",
	}
	if !jsonEqual(raw[0], want) {
		t.Errorf("lease\n got %v\nwant %v", raw[0], want)
	}

	w.list(t, "/v1/leases", &leases)
	if len(leases) != 2 || leases[0].Pool != "pod-a" || leases[1].InterfaceID != "0x000a8e" || !leases[1].Expired ||
		leases[1].RelayID != "01:02" || leases[1].RelaySource != "" || leases[1].LinkAddress != "" {
		t.Errorf("all leases: %+v", leases)
	}
	w.list(t, "/v1/leases?pool=pod-b", &leases)
	if len(leases) != 1 || leases[0].IAID != 7 {
		t.Errorf("pod-b leases: %+v", leases)
	}
	w.list(t, "/v1/leases?prefix=2001:db8:200::/60", &leases)
	if len(leases) != 1 || leases[0].MAC != "06:32:b2:00:04:79" {
		t.Errorf("leases by prefix: %+v", leases)
	}

	// A Release ends the binding.
	rel := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeRelease, TransactionID: dhcpv6.TransactionID{4, 5, 6}}
	rel.AddOption(dhcpv6.OptClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: macA}))
	rel.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionServerID, OptionData: serverDUID})
	pd := &dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, 1}}
	pd.Options.Add(&dhcpv6.OptIAPrefix{Prefix: &net.IPNet{IP: net.ParseIP("2001:db8:200::"), Mask: net.CIDRMask(60, 128)}})
	rel.AddOption(pd)
	if _, err := w.h.Handle(relayAddr, juniper([]byte("VLAN2701"), macA, rel.ToBytes())); err != nil {
		t.Fatal(err)
	}
	if err := w.rec.Flush(); err != nil {
		t.Fatal(err)
	}
	w.list(t, "/v1/leases?mac=06:32:b2:00:04:79", &leases)
	if len(leases) != 0 {
		t.Errorf("lease after release: %+v", leases)
	}
}

type failingBindings struct{}

func (failingBindings) ScanBindings([]byte, func([]byte, allocator.Binding) (bool, error)) error {
	return errors.New("store /x: disk on fire")
}

func TestLeasesWithoutOrWithBrokenStore(t *testing.T) {
	w := newWorld(t)
	var e errorBody
	api := New(Config{Table: w.live})
	rr := httptest.NewRecorder()
	api.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/v1/leases", nil))
	if rr.Code != http.StatusServiceUnavailable {
		t.Errorf("no binding store: %d %s", rr.Code, rr.Body)
	}
	w.handler = New(Config{Table: w.live, Bindings: failingBindings{}})
	w.get(t, "/v1/leases", http.StatusInternalServerError, &e)
	if !strings.Contains(e.Error, "disk on fire") {
		t.Errorf("error %+v", e)
	}
	// /metrics without a registry is not served.
	w.get(t, "/metrics", http.StatusNotFound, &e)
}

// scrape reads /metrics the way Prometheus does.
func (w *world) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	rr := w.do(t, http.MethodGet, "/metrics")
	if rr.Code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", rr.Code, rr.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rr.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// value returns the value of the sample of family name whose labels
// include labels (name=value pairs), or -1 when there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
	}
	return -1
}

func TestMetricsChangeAsPacketsAreHandled(t *testing.T) {
	w := newWorld(t)
	before := w.scrape(t)
	if v := value(before, "cloudstack_pd_packets_answered_total", "type", "ADVERTISE"); v > 0 {
		t.Fatalf("answered before any packet: %v", v)
	}
	// Series alerts and dashboards read exist at 0 before the first
	// event, so that increase() sees the first one.
	for _, c := range []struct{ name, label, value string }{
		{"cloudstack_pd_drops_total", "reason", "untrusted-relay"},
		{"cloudstack_pd_answers_total", "result", "declined"},
		{"cloudstack_pd_answers_total", "result", "prefix"},
		{"cloudstack_pd_answers_total", "result", "other-ia"},
		{"cloudstack_pd_packets_received_total", "type", "DECLINE"},
		{"cloudstack_pd_packets_received_total", "type", "SOLICIT"},
		{"cloudstack_pd_packets_answered_total", "type", "REPLY"},
		{"cloudstack_pd_malformed_relay_options_total", "code", "37"},
		{"cloudstack_pd_malformed_relay_options_total", "code", "135"},
	} {
		if v := value(before, c.name, c.label, c.value); v != 0 {
			t.Errorf("%s{%s=%q} before any packet: %v, want 0 (pre-set)", c.name, c.label, c.value, v)
		}
	}

	solicit := juniper([]byte("VLAN2701"), macA, clientMsg(dhcpv6.MessageTypeSolicit, macA, false))
	for range 3 {
		if _, err := w.h.Handle(relayAddr, solicit); err != nil {
			t.Fatal(err)
		}
	}
	unknown := mustMAC("06:32:b2:00:0f:ff")
	if _, err := w.h.Handle(relayAddr, juniper([]byte("VLAN2701"), unknown, clientMsg(dhcpv6.MessageTypeSolicit, unknown, false))); err != nil {
		t.Fatal(err)
	}
	// Dropped: from outside trusted-relays, and unrelayed.
	if _, err := w.h.Handle(netip.MustParseAddrPort("[2001:db8:eeee::1]:547"), solicit); err == nil {
		t.Fatal("untrusted relay answered")
	}
	if _, err := w.h.Handle(relayAddr, clientMsg(dhcpv6.MessageTypeSolicit, macA, false)); err == nil {
		t.Fatal("unrelayed Solicit answered")
	}

	after := w.scrape(t)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		// By the client's message inside: four relayed Solicits and the
		// unrelayed one; the untrusted relay's is not decoded.
		{"cloudstack_pd_packets_received_total", []string{"type", "RELAY-FORW"}, 1},
		{"cloudstack_pd_packets_received_total", []string{"type", "SOLICIT"}, 5},
		{"cloudstack_pd_packets_answered_total", []string{"type", "ADVERTISE"}, 4},
		{"cloudstack_pd_answers_total", []string{"result", "prefix"}, 3},
		{"cloudstack_pd_answers_total", []string{"result", "unknown-mac"}, 1},
		{"cloudstack_pd_drops_total", []string{"reason", "untrusted-relay"}, 1},
		{"cloudstack_pd_drops_total", []string{"reason", "unrelayed"}, 1},
		{"cloudstack_pd_drops_total", []string{"reason", "panic"}, 0},
		{"cloudstack_pd_handle_seconds", nil, 6},
	} {
		if got := value(after, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

func TestPoolAndStoreMetrics(t *testing.T) {
	w := newWorld(t)
	fams := w.scrape(t)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"cloudstack_pd_pool_prefixes", []string{"pool", "pod-a", "interface_id", "VLAN2701"}, 1 << 20},
		{"cloudstack_pd_pool_prefixes", []string{"pool", "pod-b", "interface_id", "VLAN2702"}, 1 << 16},
		{"cloudstack_pd_pool_allocations", []string{"pool", "pod-a", "state", "active"}, 2},
		{"cloudstack_pd_pool_allocations", []string{"pool", "pod-a", "state", "gone"}, 1},
		{"cloudstack_pd_pool_allocations", []string{"pool", "pod-a", "state", "quarantined"}, 1},
		{"cloudstack_pd_pool_allocations", []string{"pool", "pod-b", "state", "gone"}, 0},
		{"cloudstack_pd_table_loaded", nil, 1},
		{"cloudstack_pd_store_stat_ok", nil, 1},
		{"cloudstack_pd_build_info", []string{"version", "1.2.3-test"}, 1},
	} {
		if got := value(fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if v := value(fams, "cloudstack_pd_store_size_bytes"); v < 4096 {
		t.Errorf("store size %v", v)
	}
	if value(fams, "go_goroutines") < 1 || value(fams, "process_start_time_seconds") < 0 {
		t.Errorf("go and process collectors missing")
	}

	// A sync adds a NIC to pod-b and drops pod-a's quarantined prefix;
	// the new table is swapped in and the next scrape shows it.
	allocs := testAllocations()
	allocs = append(allocs[:3], allocs[4], allocator.Allocation{Pool: "pod-b", MAC: mustMAC("06:32:b2:00:05:00"),
		Prefix: netip.MustParsePrefix("2001:db8:300:100::/56"), State: allocator.StateActive})
	tbl, err := allocator.NewTable(w.pools, allocs)
	if err != nil {
		t.Fatal(err)
	}
	w.live.Swap(tbl)
	fams = w.scrape(t)
	if got := value(fams, "cloudstack_pd_pool_allocations", "pool", "pod-b", "state", "active"); got != 2 {
		t.Errorf("pod-b active after swap = %v", got)
	}
	if got := value(fams, "cloudstack_pd_pool_allocations", "pool", "pod-a", "state", "quarantined"); got != 0 {
		t.Errorf("pod-a quarantined after swap = %v", got)
	}

	// A reload removes pod-b: its series go away.
	onlyA, err := allocator.NewTable(w.pools[:1], allocs[:3])
	if err != nil {
		t.Fatal(err)
	}
	w.live.Swap(onlyA)
	fams = w.scrape(t)
	if got := value(fams, "cloudstack_pd_pool_prefixes", "pool", "pod-b"); got != -1 {
		t.Errorf("pod-b still exported after its removal: %v", got)
	}
	w.live.Swap(nil)
	if got := value(w.scrape(t), "cloudstack_pd_table_loaded"); got != 0 {
		t.Errorf("table_loaded without a table = %v", got)
	}
}

type missingFile struct{}

func (missingFile) Path() string { return "/nonexistent/cloudstack-pd/state.db" }

func TestStoreMetricWhenTheFileIsMissing(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := NewCollectors(reg, allocator.NewLive(nil), missingFile{}, ""); err != nil {
		t.Fatal(err)
	}
	w := &world{handler: New(Config{Registry: reg})}
	fams := w.scrape(t)
	if value(fams, "cloudstack_pd_store_stat_ok") != 0 || value(fams, "cloudstack_pd_store_size_bytes") != -1 {
		t.Errorf("missing store: stat_ok %v size %v", value(fams, "cloudstack_pd_store_stat_ok"), value(fams, "cloudstack_pd_store_size_bytes"))
	}
	if value(fams, "cloudstack_pd_build_info", "version", "unknown") != 1 && value(fams, "cloudstack_pd_build_info") != 1 {
		t.Errorf("build info missing")
	}
	// Registering twice into one registry is an error, not a panic.
	if err := NewCollectors(reg, nil, nil, "x"); err == nil {
		t.Error("second NewCollectors on one registry: no error")
	}
}

func TestSyncMetrics(t *testing.T) {
	w := newWorld(t)
	if !w.sync.LastSuccessTime().IsZero() {
		t.Fatal("last success before any sync")
	}
	at := testNow.Add(90 * time.Second)
	w.sync.SetConflicts(map[string]int{"pod-a": 1, "pod-gone": 2})
	w.sync.Observe(SyncOK, 3*time.Second, map[string]int{"added": 2, "kept": 5, "gone": 1, "returned": 0, "quarantined": -1}, at)
	w.sync.SetConflicts(map[string]int{"pod-a": 3, "pod-b": 0})
	w.sync.Observe(SyncFailed, 30*time.Second, map[string]int{"added": 100}, at.Add(time.Minute))
	w.sync.Observe(SyncRefused, time.Second, map[string]int{"gone": 400}, at.Add(2*time.Minute))
	fams := w.scrape(t)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"cloudstack_pd_sync_runs_total", []string{"outcome", "ok"}, 1},
		{"cloudstack_pd_sync_runs_total", []string{"outcome", "failed"}, 1},
		{"cloudstack_pd_sync_runs_total", []string{"outcome", "refused"}, 1},
		{"cloudstack_pd_sync_changes_total", []string{"kind", "added"}, 2},
		{"cloudstack_pd_sync_kept_allocations", nil, 5},
		{"cloudstack_pd_sync_conflicts", []string{"pool", "pod-a"}, 3},
		{"cloudstack_pd_sync_conflicts", []string{"pool", "pod-b"}, 0},
		{"cloudstack_pd_sync_conflicts", []string{"pool", "pod-gone"}, -1},
		{"cloudstack_pd_sync_changes_total", []string{"kind", "gone"}, 1},
		{"cloudstack_pd_sync_changes_total", []string{"kind", "quarantined"}, 0},
		{"cloudstack_pd_sync_changes_total", []string{"kind", "released"}, 0},
		{"cloudstack_pd_sync_duration_seconds", nil, 3},
		{"cloudstack_pd_sync_last_success_timestamp_seconds", nil, float64(at.Unix())},
	} {
		if got := value(fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := w.sync.LastSuccessTime(); !got.Equal(at) {
		t.Errorf("LastSuccessTime = %v, want %v", got, at)
	}
	// Kept is not a change.
	if got := value(fams, "cloudstack_pd_sync_changes_total", "kind", "kept"); got != -1 {
		t.Errorf("sync_changes_total{kind=kept} = %v: what a sync keeps is no change", got)
	}
}

func TestReloadMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewReloadMetrics(reg)
	w := &world{handler: New(Config{Registry: reg})}
	start := testNow
	m.Observe(true, start)
	m.Observe(false, start.Add(time.Minute))
	fams := w.scrape(t)
	if v := value(fams, "cloudstack_pd_config_last_reload_successful"); v != 0 {
		t.Errorf("successful after a refused reload = %v", v)
	}
	if v := value(fams, "cloudstack_pd_config_last_reload_success_timestamp_seconds"); v != float64(start.Unix()) {
		t.Errorf("success timestamp after a refused reload = %v, want the start's %v", v, start.Unix())
	}
	m.Observe(true, start.Add(2*time.Minute))
	fams = w.scrape(t)
	if v := value(fams, "cloudstack_pd_config_last_reload_successful"); v != 1 {
		t.Errorf("successful after a good reload = %v", v)
	}
	if v := value(fams, "cloudstack_pd_config_last_reload_success_timestamp_seconds"); v != float64(start.Add(2*time.Minute).Unix()) {
		t.Errorf("success timestamp = %v", v)
	}
}

// TestBindingsMetric: cloudstack_pd_bindings counts the store's
// bindings, at most once every BindingsCountEvery.
func TestBindingsMetric(t *testing.T) {
	w := newWorld(t)
	if v := value(w.scrape(t), "cloudstack_pd_bindings"); v != 0 {
		t.Fatalf("bindings of an empty store = %v", v)
	}
	put := func(iaid uint32) {
		t.Helper()
		if err := w.st.PutBindings([]allocator.Binding{{ClientDUID: []byte{0, 3, 0, 1, 6, 0x32, 0xb2, 0, 4, 0x79}, MAC: macA, IAID: iaid,
			Pool: "pod-a", Prefix: netip.MustParsePrefix(fmt.Sprintf("2001:db8:200:%x0::/60", iaid)), ValidLifetime: 60, Expires: testNow}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	put(1)
	put(2)
	// On a clock of the test's: counted again only once a minute has passed.
	now := testNow
	reg := prometheus.NewRegistry()
	reg.MustRegister(&storeCollector{store: w.st, now: func() time.Time { return now }})
	counter := &world{handler: New(Config{Registry: reg})}
	if v := value(counter.scrape(t), "cloudstack_pd_bindings"); v != 2 {
		t.Errorf("bindings = %v, want 2", v)
	}
	put(3)
	now = now.Add(BindingsCountEvery - time.Second)
	if v := value(counter.scrape(t), "cloudstack_pd_bindings"); v != 2 {
		t.Errorf("bindings within a minute of the count = %v, want the count's 2", v)
	}
	now = now.Add(time.Second)
	if v := value(counter.scrape(t), "cloudstack_pd_bindings"); v != 3 {
		t.Errorf("bindings a minute later = %v, want 3", v)
	}
}

func TestParseMAC(t *testing.T) {
	for _, s := range []string{"06:32:b2:00:04:79", "06-32-B2-00-04-79", "0632.b200.0479", "0632b2000479", "0632B2000479", " 06:32:b2:00:04:79 "} {
		mac, err := ParseMAC(s)
		if err != nil || mac.String() != "06:32:b2:00:04:79" {
			t.Errorf("ParseMAC(%q) = %v, %v", s, mac, err)
		}
	}
	if mac, err := ParseMAC("0632b2fffe000479"); err != nil || len(mac) != 8 {
		t.Errorf("EUI-64 bare hex: %v, %v", mac, err)
	}
	for _, s := range []string{"", "06:32:b2:00:04", "0632b200047", "06:32:b2:00:04:7g", "web-1", "0632b2000479x"} {
		if mac, err := ParseMAC(s); err == nil {
			t.Errorf("ParseMAC(%q) = %v, want an error", s, mac)
		}
	}
}

func TestServeShutsDownWithItsContext(t *testing.T) {
	w := newWorld(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		testenv.TCPLoopback(t)
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, w.api, nil) }()

	var wg sync.WaitGroup
	for _, path := range []string{"/healthz", "/v1/pools", "/metrics"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get("http://" + ln.Addr().String() + path)
			if err != nil {
				t.Errorf("GET %s: %v", path, err)
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || len(body) == 0 {
				t.Errorf("GET %s over TCP: %d %q", path, resp.StatusCode, body)
			}
		}()
	}
	wg.Wait()
	// A scraper's connection that never sends a request must not hold the
	// shutdown beyond ShutdownTimeout.
	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v after its context ended", err)
		}
	case <-time.After(ShutdownTimeout + time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		t.Error("still answering after shutdown")
	}
}
