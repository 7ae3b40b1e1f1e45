package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/leasequery"
	"github.com/cloudstack-pd/cloudstack-pd/relay"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

const runTestConfig = `
mapping:
  pod-a:
    pool: 2001:db8:200::/40
    interface-id: VLAN2701
server:
  listen: ["[::1]:0"]
  shutdown-delay: 3s
  leasequery:
    requestors: ["::1"]
api:
  interval: 0s
state: STATE
control:
  socket: STATE.sock
http:
  listen: "[::1]:0"
log:
  level: info
`

const runTestPodB = `  pod-b:
    pool: 2001:db8:300::/40
    interface-id: VLAN2702
`

// delegated runs a relayed Solicit and Request for mac on the VLAN named
// iid against srv, as a Junos relay would, and returns the prefix the
// Reply delegates ("" when none).
func delegated(t *testing.T, srv netip.AddrPort, mac net.HardwareAddr, iid string) string {
	t.Helper()
	conn, err := net.ListenUDP("udp6", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fwd := relay.Forward{LinkAddr: netip.IPv6Unspecified(), PeerAddr: relay.EUI64LinkLocal(mac), InterfaceID: []byte(iid),
		RemoteID: relay.JuniperRemoteID(mac), HasSourcePort: true}
	client := dhcpv6.OptClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac})
	ia := &dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, 1}}
	exchange := func(mt dhcpv6.MessageType, opts ...dhcpv6.Option) *dhcpv6.Message {
		m := &dhcpv6.Message{MessageType: mt, TransactionID: dhcpv6.TransactionID{1, 2, byte(mt)}}
		for _, o := range opts {
			m.AddOption(o)
		}
		if _, err := conn.WriteToUDPAddrPort(relay.Encapsulate(m.ToBytes(), fwd), srv); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 65535)
		n, _, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("%s for %s: %v", mt, mac, err)
		}
		rr, err := dhcpv6.FromBytes(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		ans, err := rr.GetInnerMessage()
		if err != nil {
			t.Fatal(err)
		}
		return ans
	}
	prefix := func(m *dhcpv6.Message) string {
		for _, ia := range m.Options.IAPD() {
			for _, p := range ia.Options.Prefixes() {
				if p.ValidLifetime > 0 {
					return p.Prefix.String()
				}
			}
		}
		return ""
	}
	adv := exchange(dhcpv6.MessageTypeSolicit, client, ia)
	if prefix(adv) == "" {
		return ""
	}
	return prefix(exchange(dhcpv6.MessageTypeRequest, client, adv.GetOneOption(dhcpv6.OptionServerID), ia))
}

func readyz(t *testing.T, addr string) int {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// TestRun runs the daemon in-process on a fake clock: it serves the
// stored table and warns about a pool it does not configure; a reload
// with a broken config keeps the old one, one adding the pool serves it;
// when its context ends /readyz turns not ready while it still answers,
// for exactly server.shutdown-delay of its clock; then it returns nil
// with the recorded bindings in the store, and the store closed.
func TestRun(t *testing.T) {
	testenv.IPv6Loopback(t)
	dir := t.TempDir()
	state, cfgPath := filepath.Join(dir, "state.db"), filepath.Join(dir, "cfg.yaml")
	base := strings.ReplaceAll(runTestConfig, "STATE", state)
	withB := strings.Replace(base, "server:", runTestPodB+"server:", 1)
	testenv.WriteFile(t, cfgPath, base)

	// A prefix in pod-a and one in pod-b, which is not configured yet.
	macA, _ := net.ParseMAC("06:32:b2:00:04:79")
	macB, _ := net.ParseMAC("06:32:b2:00:04:80")
	cfgB, err := config.Parse("b.yaml", []byte(withB))
	if err != nil {
		t.Fatal(err)
	}
	st, err := allocator.OpenStore(boltstore.Open(state, boltstore.Options{Create: true}))
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(cfgB.Pools(), func(tx *allocator.Tx) error {
		if err := tx.Put(allocator.Allocation{Pool: "pod-a", MAC: macA, Prefix: netip.MustParsePrefix("2001:db8:200:30::/60"), State: allocator.StateActive}); err != nil {
			return err
		}
		return tx.Put(allocator.Allocation{Pool: "pod-b", MAC: macB, Prefix: netip.MustParsePrefix("2001:db8:300:40::/60"), State: allocator.StateActive})
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	fc := clock.NewFake(epoch)
	var logs testenv.SyncBuffer
	reload := make(chan os.Signal) // unbuffered: a send returns once the last reload is done
	serving := make(chan Addrs, 1)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ran := make(chan error, 1)
	go func() {
		ran <- Run(ctx, cfg, Deps{
			OpenStore: func(cfg *config.Config) (*allocator.Store, error) {
				return allocator.OpenStore(boltstore.Open(cfg.State, boltstore.Options{NoVerify: true}))
			},
			Clock: fc, Log: slog.New(slog.NewTextHandler(&logs, nil)), Reload: reload,
			Serving: func(a Addrs) { serving <- a },
		})
	}()
	var addrs Addrs
	select {
	case addrs = <-serving:
	case err := <-ran:
		t.Fatalf("Run: %v\n%s", err, logs.String())
	}
	srv := addrs.DHCPv6[0]
	if !strings.Contains(logs.String(), "pod-b") {
		t.Errorf("no warning about pod-b's allocation kept but not served:\n%s", logs.String())
	}
	if p := delegated(t, srv, macA, "VLAN2701"); p != "2001:db8:200:30::/60" {
		t.Errorf("pod-a: %q", p)
	}
	if p := delegated(t, srv, macB, "VLAN2702"); p != "" {
		t.Errorf("pod-b served before it is configured: %q", p)
	}
	if code := readyz(t, addrs.HTTP); code != http.StatusOK {
		t.Errorf("/readyz = %d", code)
	}

	api := "http://" + addrs.HTTP
	started := float64(epoch.UnixNano()) / 1e9
	if v := testenv.MetricValue(t, api, "cloudstack_pd_config_last_reload_successful"); v != 1 {
		t.Errorf("config_last_reload_successful at start = %v, want 1", v)
	}
	if v := testenv.MetricValue(t, api, "cloudstack_pd_config_last_reload_success_timestamp_seconds"); v != started {
		t.Errorf("config_last_reload_success_timestamp_seconds at start = %v, want the start's %v", v, started)
	}

	// Each reload is done when the next send on the channel returns.
	reloadTwice := func() { reload <- syscall.SIGHUP; reload <- syscall.SIGHUP }
	testenv.WriteFile(t, cfgPath, base+"server:\n  renew-timer: nope\n")
	fc.Advance(time.Minute)
	reloadTwice()
	if !strings.Contains(logs.String(), "reload refused: the old config stays in force") {
		t.Errorf("broken config not refused:\n%s", logs.String())
	}
	if v := testenv.MetricValue(t, api, "cloudstack_pd_config_last_reload_successful"); v != 0 {
		t.Errorf("config_last_reload_successful after a refused reload = %v, want 0", v)
	}
	if v := testenv.MetricValue(t, api, "cloudstack_pd_config_last_reload_success_timestamp_seconds"); v != started {
		t.Errorf("success timestamp moved on a refused reload: %v", v)
	}
	if p := delegated(t, srv, macA, "VLAN2701"); p != "2001:db8:200:30::/60" {
		t.Errorf("after a refused reload: %q", p)
	}
	testenv.WriteFile(t, cfgPath, withB)
	reloadTwice()
	if !strings.Contains(logs.String(), "msg=reloaded") {
		t.Errorf("not reloaded:\n%s", logs.String())
	}
	// The reloaded line says what changed: pod-b came.
	if !strings.Contains(logs.String(), "mapping.pod-b.pool: added (2001:db8:300::/40)") {
		t.Errorf("the reloaded line does not name the new pool:\n%s", logs.String())
	}
	if p := delegated(t, srv, macB, "VLAN2702"); p != "2001:db8:300:40::/60" {
		t.Errorf("pod-b after the reload: %q", p)
	}
	if v := testenv.MetricValue(t, api, "cloudstack_pd_config_last_reload_successful"); v != 1 {
		t.Errorf("config_last_reload_successful after a good reload = %v, want 1", v)
	}
	if v := testenv.MetricValue(t, api, "cloudstack_pd_config_last_reload_success_timestamp_seconds"); v != started+60 {
		t.Errorf("success timestamp after a good reload = %v, want %v", v, started+60)
	}

	// Leasequery: Bulk Leasequery listens on TCP at the DHCPv6 address and
	// port; once the recorder has flushed (every second of its clock),
	// both transports answer the binding just made.
	if len(addrs.Leasequery) != 1 || addrs.Leasequery[0] != srv {
		t.Errorf("bulk leasequery on %v, want %v", addrs.Leasequery, srv)
	}
	fc.Advance(time.Second)
	for _, bulk := range []bool{false, true} {
		q := leasequery.Options{Server: srv, Bulk: bulk, Timeout: 5 * time.Second,
			Query: leasequery.Query{Type: leasequery.ByAddress, LinkAddress: netip.IPv6Unspecified(), Address: netip.MustParseAddr("2001:db8:200:30::1")}}
		deadline := time.Now().Add(10 * time.Second)
		for {
			a, err := leasequery.Ask(t.Context(), q)
			if err == nil && len(a.Leases) == 1 && len(a.Leases[0].Prefixes) == 1 && a.Leases[0].Prefixes[0].Prefix.String() == "2001:db8:200:30::/60" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("leasequery (bulk %v): %+v, %v", bulk, a, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// Shutdown: not ready at once, answering for shutdown-delay (3s).
	fc.BlockUntil(3) // the recorder's tickers (flush, persist) and the history pass's (api.interval 0: no sync timer)
	cancel()
	fc.BlockUntil(3) // and the shutdown delay's timer
	if code := readyz(t, addrs.HTTP); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the shutdown delay = %d", code)
	}
	if p := delegated(t, srv, macA, "VLAN2701"); p != "2001:db8:200:30::/60" {
		t.Errorf("not answering during the shutdown delay: %q", p)
	}
	fc.Advance(3*time.Second - time.Nanosecond)
	select {
	case err := <-ran:
		t.Fatalf("Run returned before the shutdown delay was over: %v", err)
	default:
	}
	fc.Advance(time.Nanosecond)
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "msg=stopped") {
		t.Errorf("no stop logged:\n%s", logs.String())
	}

	// The store is closed (it opens again) and holds both bindings, which
	// the recorder wrote on the way out.
	st, err = allocator.OpenStore(boltstore.Open(state, boltstore.Options{ReadOnly: true}))
	if err != nil {
		t.Fatalf("store after Run: %v", err)
	}
	defer st.Close()
	bs, err := st.Bindings()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, b := range bs {
		got[b.Prefix.String()] = true
	}
	if !got["2001:db8:200:30::/60"] || !got["2001:db8:300:40::/60"] {
		t.Errorf("bindings after Run: %v", got)
	}
}

// TestRunDiscardsAStoreItCouldNotStartOn: a store OpenStore created
// (--init) for a daemon that could not start is removed again, and the
// error says why it did not start.
func TestRunDiscardsAStoreItCouldNotStartOn(t *testing.T) {
	busy, err := net.Listen("tcp6", "[::1]:0") // http.listen is taken
	if err != nil {
		testenv.IPv6Loopback(t)
		t.Fatal(err)
	}
	defer busy.Close()
	state := filepath.Join(t.TempDir(), "state.db")
	cfg, err := config.Parse("c.yaml", []byte(strings.NewReplacer("STATE", state, `listen: "[::1]:0"`, `listen: "`+busy.Addr().String()+`"`).Replace(runTestConfig)))
	if err != nil {
		t.Fatal(err)
	}
	err = Run(t.Context(), cfg, Deps{
		OpenStore: func(cfg *config.Config) (*allocator.Store, error) {
			return allocator.OpenStore(boltstore.Open(cfg.State, boltstore.Options{Create: true}))
		},
		Clock: clock.NewFake(epoch), Log: slog.New(slog.DiscardHandler),
	})
	if err == nil || !strings.Contains(err.Error(), "http.listen "+busy.Addr().String()) {
		t.Errorf("err = %v", err)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the store made for nothing is left: %v", err)
	}
}
