package bench

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/bench/synth"
	"github.com/cloudstack-pd/cloudstack-pd/kea"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
	"github.com/cloudstack-pd/cloudstack-pd/server"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// benchServer serves the first n synthetic clients of pools pools on
// [::1]:0, in process, until the test ends.
func benchServer(t testing.TB, pools, n int) netip.AddrPort {
	t.Helper()
	return benchServerWith(t, pools, n, nil)
}

// benchServerWith is benchServer with the handler's settings changed by
// change (nil: none).
func benchServerWith(t testing.TB, pools, n int, change func(*server.HandlerConfig)) netip.AddrPort {
	t.Helper()
	return benchServerWrapped(t, pools, n, change, nil)
}

// benchServerWrapped is benchServerWith with the listener's packets going
// through wrap (nil: straight to the handler).
func benchServerWrapped(t testing.TB, pools, n int, change func(*server.HandlerConfig), wrap func(server.PacketHandler) server.PacketHandler) netip.AddrPort {
	t.Helper()
	ps := synth.Pools(pools)
	allocs, err := synth.Allocations(ps, n, time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := allocator.NewTable(ps, allocs)
	if err != nil {
		t.Fatal(err)
	}
	duid := []byte{0, 1, 0, 1, 0x2f, 0, 0, 1, 2, 0xcd, 0, 0, 0, 1}
	hc := server.HandlerConfig{
		Table: allocator.NewLive(tbl), ServerID: duid,
		Options: server.Options{MACSources: []relay.MACSource{relay.SourceRemoteID},
			PreferredLifetime: 86400, ValidLifetime: 172800, RenewTimer: 1000, RebindTimer: 2000},
		Bindings: server.NewRecorder(nil, time.Hour, nil),
	}
	if change != nil {
		change(&hc)
	}
	h, err := server.NewHandler(hc)
	if err != nil {
		t.Fatal(err)
	}
	var ph server.PacketHandler = h
	if wrap != nil {
		ph = wrap(h)
	}
	l, err := server.Listen(server.ListenerConfig{Addrs: []netip.AddrPort{netip.MustParseAddrPort("[::1]:0")},
		Logger: slog.New(slog.DiscardHandler), Metrics: hc.Metrics}, ph)
	if err != nil {
		testenv.IPv6Loopback(t)
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// Labelled, so that a CPU profile of a test or benchmark tells the
	// server's goroutines from the generator's (go tool pprof -tagfocus).
	go pprof.Do(ctx, pprof.Labels("side", "server"), func(ctx context.Context) { done <- l.Serve(ctx) })
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addrs()[0]
}

// TestBenchCountsEveryExchange runs a few hundred exchanges against a
// server on loopback and checks the counts, and that every exchange got
// the client's reservation. Speed is not checked: tests never assert it.
func TestBenchCountsEveryExchange(t *testing.T) {
	srv := benchServer(t, 4, 500)
	res, err := runBench(t.Context(), benchFlags{
		server: srv.String(), clients: 500, pools: 4, outstanding: 8, sockets: 2,
		count: 300, timeout: 5 * time.Second, verify: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Exchanges < 300 {
		t.Errorf("%d exchanges, want at least 300", res.Exchanges)
	}
	if res.NoPrefix != 0 || res.WrongPrefix != 0 || res.Drops != 0 || res.Unmatched != 0 || res.Malformed != 0 || res.SendErrors != 0 || res.VerifyErrors != 0 {
		t.Errorf("every exchange should get its prefix: %+v", res)
	}
	if res.ServerID != "000100012f00000102cd00000001" {
		t.Errorf("server id %q", res.ServerID)
	}
	if res.Latency.P50 <= 0 || res.Latency.P99 < res.Latency.P50 || res.Latency.Max < res.Latency.P99 || res.RTT.P50 <= 0 {
		t.Errorf("latency %+v, rtt %+v", res.Latency, res.RTT)
	}
	var out strings.Builder
	if err := printBench(&out, res, true); err != nil {
		t.Fatal(err)
	}
	var back benchResult
	if err := json.Unmarshal([]byte(out.String()), &back); err != nil || back.Exchanges != res.Exchanges {
		t.Errorf("JSON output %s: %v", out.String(), err)
	}
}

// TestBenchRelays: each socket plays one relay, with a source port and,
// per VLAN, a link-address of its own (synth.RelayLinkAddr), and the
// answers echo them (an answer with another link-address would not count).
//
// With 24 sockets on 2 CPUs the relays are played by 2 goroutines reading
// through epoll (relayGroups), on Linux.
func TestBenchRelays(t *testing.T) {
	const sockets, pools = 24, 3
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	seen := &relaySources{links: map[netip.AddrPort]map[netip.Addr]bool{}}
	srv := benchServerWrapped(t, pools, 600, nil, func(h server.PacketHandler) server.PacketHandler {
		seen.next = h
		return seen
	})
	res, err := runBench(t.Context(), benchFlags{
		server: srv.String(), clients: 600, pools: pools, outstanding: sockets, sockets: sockets,
		count: 600, timeout: 5 * time.Second, verify: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Exchanges < 600 || res.NoPrefix+res.WrongPrefix+res.Drops+res.Unmatched+res.Malformed+res.VerifyErrors != 0 {
		t.Errorf("every exchange should get its prefix: %+v", res)
	}
	seen.mu.Lock()
	defer seen.mu.Unlock()
	if len(seen.links) != sockets {
		t.Errorf("%d relay sources, want %d", len(seen.links), sockets)
	}
	relays := map[int]bool{}
	for src, links := range seen.links {
		// Every link-address of one source is one relay's, on each VLAN.
		r := -1
		for a := range links {
			found := false
			for k := range pools {
				for i := range sockets {
					if a == synth.RelayLinkAddr(k, i) && (r < 0 || r == i) {
						r, found = i, true
					}
				}
			}
			if !found {
				t.Errorf("relay %s sent link-address %s, not its own", src, a)
			}
		}
		// Relay r plays clients r, r+24, …: 24 sockets over 3 pools, one VLAN each.
		if len(links) != 1 {
			t.Errorf("relay %s used %d link-addresses, want the one of its VLAN", src, len(links))
		}
		relays[r] = true
	}
	if len(relays) != sockets {
		t.Errorf("%d distinct relays' link-addresses, want %d", len(relays), sockets)
	}
}

// relaySources is a PacketHandler that notes, per source, the
// link-addresses of the Relay-Forwards it passes on to next.
type relaySources struct {
	next  server.PacketHandler
	mu    sync.Mutex
	links map[netip.AddrPort]map[netip.Addr]bool
}

func (r *relaySources) HandleAppend(dst []byte, src netip.AddrPort, pkt []byte) (server.Reply, error) {
	if len(pkt) >= relay.HeaderLen {
		a := netip.AddrFrom16([16]byte(pkt[2:18]))
		r.mu.Lock()
		if r.links[src] == nil {
			r.links[src] = map[netip.Addr]bool{}
		}
		r.links[src][a] = true
		r.mu.Unlock()
	}
	return r.next.HandleAppend(dst, src, pkt)
}

// TestBenchFlood: with --flood every exchange is one Rebind or Rapid
// Commit Solicit answered by a Reply with the client's reservation, each
// with a client DUID of its own.
func TestBenchFlood(t *testing.T) {
	sink := &duidSink{duids: map[string]bool{}, types: map[string]int{}}
	srv := benchServerWith(t, 2, 100, func(hc *server.HandlerConfig) {
		hc.Options.RapidCommit = true
		hc.Bindings = sink
	})
	res, err := runBench(t.Context(), benchFlags{
		server: srv.String(), clients: 100, pools: 2, outstanding: 8, sockets: 2,
		count: 400, timeout: 5 * time.Second, verify: true, flood: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Exchanges < 400 || res.NoPrefix != 0 || res.WrongPrefix != 0 || res.Drops != 0 || res.Unmatched != 0 || res.VerifyErrors != 0 {
		t.Errorf("every flood message should get a Reply with its prefix: %+v", res)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.duids) < 400 || sink.types["REBIND"] < 200 || sink.types["SOLICIT"] < 200 {
		t.Errorf("%d distinct client DUIDs recorded, by message %v: want one per message, half Rebinds", len(sink.duids), sink.types)
	}
}

// duidSink is a BindingSink that remembers the client DUIDs it saw and
// counts the messages by type.
type duidSink struct {
	mu    sync.Mutex
	duids map[string]bool
	types map[string]int
}

func (s *duidSink) Record(b allocator.Binding) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.duids[string(b.ClientDUID)] = true
	s.types[b.LastMessage]++
}

func (s *duidSink) Release(allocator.BindingRelease) {}

// TestBenchCountsNoPrefix plays clients the server has no reservation
// for: their exchanges end at the Advertise, counted as "no prefix".
func TestBenchCountsNoPrefix(t *testing.T) {
	srv := benchServer(t, 2, 10)
	res, err := runBench(t.Context(), benchFlags{
		server: srv.String(), clients: 20, pools: 2, outstanding: 4, sockets: 1,
		count: 50, duration: 10 * time.Second, timeout: 5 * time.Second, verify: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.NoPrefix == 0 || res.Exchanges == 0 || res.WrongPrefix != 0 || res.VerifyErrors != 0 {
		t.Errorf("half the clients are unknown: %+v", res)
	}
}

func TestBenchNoServer(t *testing.T) {
	port := testenv.FreeUDPPort(t)
	_, err := runBench(t.Context(), benchFlags{
		server: netip.AddrPortFrom(netip.IPv6Loopback(), uint16(port)).String(), clients: 10, pools: 1,
		outstanding: 2, sockets: 1, duration: 300 * time.Millisecond, timeout: 100 * time.Millisecond,
	})
	if err == nil || !strings.Contains(err.Error(), "no exchange completed") {
		t.Errorf("err = %v", err)
	}
}

func TestLatencyHist(t *testing.T) {
	var h latencyHist
	for i := 1; i <= 1000; i++ {
		h.record(int64(i) * int64(time.Microsecond))
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{.5, 500 * time.Microsecond}, {.9, 900 * time.Microsecond}, {.99, 990 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.quantile(tc.q)
		if d := got - tc.want; d < -tc.want/50 || d > tc.want/50 {
			t.Errorf("quantile(%v) = %s, want %s ± 2%%", tc.q, got, tc.want)
		}
	}
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 1 << 40, 1<<63 - 1} {
		low, width := histLow(histBucket(v))
		if v < low || v >= low+width {
			t.Errorf("%d in bucket [%d, %d)", v, low, low+width)
		}
	}
}

// TestBenchSetup writes a small benchmark and checks that the Kea config
// holds every client's reservation (kea-dhcp6 -t accepts it, when
// installed) and the cloudstack-pd config loads.
func TestBenchSetup(t *testing.T) {
	dir := t.TempDir()
	var out strings.Builder
	if err := runBenchSetup(&out, benchSetupFlags{dir: dir, clients: 40, pools: 4, port: 10547, kea: true, fill: true, since: "2026-01-01T00:00:00Z"}); err != nil {
		t.Fatal(err)
	}
	kc, err := kea.Load(filepath.Join(dir, "reservations.kea.conf"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range kc.Subnets {
		for _, r := range s.Reservations {
			mac, err := r.MAC()
			if err != nil {
				t.Fatal(err)
			}
			i, ok := synth.Index(mac)
			if !ok || len(r.Prefixes) != 1 || r.Prefixes[0] != synth.Prefix(i, 4).String() || s.InterfaceID != synth.InterfaceID(i%4) {
				t.Errorf("reservation %s: %s %v in %s", r.Path, mac, r.Prefixes, s.InterfaceID)
			}
			n++
		}
	}
	if n != 40 {
		t.Errorf("%d reservations, want 40", n)
	}
	if bin := testenv.Look("kea-dhcp6"); bin != "" {
		testenv.KeaCheckFile(t, bin, filepath.Join(dir, "reservations.kea.conf"))
	}
	st, err := allocator.OpenStore(boltstore.Open(filepath.Join(dir, "state.db"), boltstore.Options{ReadOnly: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tbl, _, err := st.LoadTable(synth.Pools(4))
	if err != nil || tbl.Len() != 40 {
		t.Fatalf("store: %v, %d allocations", err, tbl.Len())
	}
}

func TestBenchReport(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, v any) string {
		p := filepath.Join(dir, name)
		data, _ := json.Marshal(v)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var kea, cs, reflect []string
	for i, rate := range []float64{20000, 21000, 19000} {
		n := string(rune('0' + i))
		kea = append(kea, write("kea"+n, benchResult{Sockets: 4, Outstanding: 64, Rate: rate, Latency: benchPercentiles{P99: 3}}))
		cs = append(cs, write("cs"+n, benchResult{Sockets: 4, Outstanding: 64, Rate: 3 * rate, Latency: benchPercentiles{P99: 1}, ServerCPU: 20}))
		// the other shape, in the same rounds: cloudstack-pd slower there
		kea = append(kea, write("kea-many"+n, benchResult{Sockets: 128, Outstanding: 128, Rate: rate, Latency: benchPercentiles{P99: 3}}))
		cs = append(cs, write("cs-many"+n, benchResult{Sockets: 128, Outstanding: 128, Rate: 2 * rate, Latency: benchPercentiles{P99: 4}, ServerCPU: 30}))
	}
	reflect = append(reflect, write("reflect", benchResult{Sockets: 4, Outstanding: 64, Rate: 90000, ServerCPU: 8}),
		write("reflect-many", benchResult{Sockets: 128, Outstanding: 128, Rate: 60000, ServerCPU: 12}))
	gobench := filepath.Join(dir, "go.txt")
	os.WriteFile(gobench, []byte("BenchmarkHandle/solicit-2 \t 100 \t 2000 ns/op \t 1360 B/op \t 34 allocs/op\nBenchmarkHandle/request-2 \t 100 \t 2000 ns/op \t 1360 B/op \t 40 allocs/op\n"), 0o644)
	doc := filepath.Join(dir, "BENCHMARKS.md")
	os.WriteFile(doc, []byte("# Benchmarks\n\nbefore\n\n"+sectionBegin+"\nold\n"+sectionEnd+"\n\nafter\n"), 0o644)
	sec, err := benchReport(benchReportFlags{doc: doc, kea: kea, cs: cs, reflect: reflect, gobench: gobench,
		startup:      []string{write("up", benchStartup{ReadySeconds: 1.2, PeakRSSMB: 300})},
		startupFirst: write("up-first", benchStartup{ReadySeconds: 2.5, PeakRSSMB: 310}), startupN: 1_000_000}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := replaceSection(doc, sec); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(doc)
	for _, want := range []string{"before", "after", "1,000,000 allocations: ready",
		"#### 4 relays, 64 outstanding: a few relays, each with 16 exchanges in flight", "| Kea 2.2 (3 runs) | 20000 |", "| cloudstack-pd (3 runs) | 60000 |",
		"#### 128 relays, 128 outstanding: many relays, one exchange in flight each", "| cloudstack-pd (3 runs) | 40000 |",
		"| 4 relays, 64 outstanding: exchanges/s ≥ 3× Kea's | 3.00× | **met** |",
		"| 128 relays, 128 outstanding: exchanges/s ≥ 3× Kea's | 2.00× | **not met** |",
		"| 128 relays, 128 outstanding: p99 ≤ Kea's | 4.000 ms vs 3.000 ms | **not met** |",
		"| 4 relays, 64 outstanding: serve's CPU per exchange ≤ 2× bench reflect's | 20.0 µs vs 8.0 µs (2.50×) | **not met** |",
		"| 128 relays, 128 outstanding: serve's CPU per exchange ≤ 2× bench reflect's | 30.0 µs vs 12.0 µs (2.50×) | **not met** |",
		"| ≤ 10 allocations per answered packet | 40 (BenchmarkHandle, worst case) | **not met** |", "ready ≤ 2 s | 1.20 s | **met**",
		"| first start (not in the median) | 2.500 | 310 |"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(string(got), "old") {
		t.Errorf("the old section is still there:\n%s", got)
	}
}

// TestBenchReflect drives the reflector: every exchange gets its prefix,
// and the library decodes its answers as bench reads them.
func TestBenchReflect(t *testing.T) {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		testenv.IPv6Loopback(t)
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- runBenchReflect(ctx, c, 3) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("reflect: %v", err)
		}
	}()
	res, err := runBench(t.Context(), benchFlags{
		server: c.LocalAddr().(*net.UDPAddr).AddrPort().String(), clients: 1000, first: 17, pools: 3, outstanding: 16, sockets: 2,
		count: 400, timeout: 5 * time.Second, verify: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Exchanges < 400 || res.NoPrefix+res.WrongPrefix+res.Drops+res.Unmatched+res.Malformed+res.VerifyErrors != 0 {
		t.Errorf("%+v", res)
	}
}

// TestBenchReportCluster: the cluster section holds each target of issue
// 12, met or not, from the runs' files.
func TestBenchReportCluster(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, v any) string {
		p := filepath.Join(dir, name)
		data, _ := json.Marshal(v)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cs := []string{write("cs", benchResult{Sockets: 4, Outstanding: 64, Rate: 60000, Latency: benchPercentiles{P99: 1}}),
		write("cs-many", benchResult{Sockets: 128, Outstanding: 128, Rate: 30000, Latency: benchPercentiles{P99: 1}})}
	kea := []string{write("kea", benchResult{Sockets: 4, Outstanding: 64, Rate: 20000, Latency: benchPercentiles{P99: 3}})}
	sec, err := benchReport(benchReportFlags{kea: kea, cs: cs, startupN: 1_000_000,
		cluster:        []string{write("cl", benchResult{Sockets: 4, Outstanding: 64, Rate: 50000, Latency: benchPercentiles{P99: 1.5}})},
		clusterStartup: []string{write("up", benchStartup{ReadySeconds: 6.5, PeakRSSMB: 620})},
		clusterHA:      write("ha", clusterHA{Servers: 3, LeaseTTL: "5s", ChangeMS: []float64{30, 20, 1500}, FailoverS: []float64{5.1}, FailoverSync: []float64{6.2}}),
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"median of the 1 rounds' ratios 0.83× (each round: 0.83); medians 50000/s vs 60000/s", "| **not met** |\n| 1,000,000 allocations loaded from etcd: ready < 10 s | 6.50 s (median of 1) | **met** |",
		"RSS < 500 MB | peak 620 MB | **not met**", "max 1500 ms (3 changes, 3 servers) | **not met**",
		"elected after 5.1 s, synced after 6.2 s (lease-ttl 5s) | **met**",
	} {
		if !strings.Contains(sec, want) {
			t.Errorf("report lacks %q:\n%s", want, sec)
		}
	}
}

// With --relay-port, relay r sends from port P+r, run after run, as a real
// relay does: the server sees the same sources in a second run.
func TestBenchRelayPort(t *testing.T) {
	const sockets, pools = 4, 2
	seen := &relaySources{links: map[netip.AddrPort]map[netip.Addr]bool{}}
	srv := benchServerWrapped(t, pools, 100, nil, func(h server.PacketHandler) server.PacketHandler {
		seen.next = h
		return seen
	})
	base := testenv.FreeUDPPortRange(t, sockets)
	for run := range 2 {
		res, err := runBench(t.Context(), benchFlags{
			server: srv.String(), clients: 100, pools: pools, outstanding: sockets, sockets: sockets,
			count: 100, timeout: 5 * time.Second, relayPort: base,
		})
		if err != nil {
			t.Fatalf("run %d: %v", run+1, err)
		}
		if res.Exchanges < 100 || res.Drops != 0 {
			t.Errorf("run %d: %+v", run+1, res)
		}
	}
	seen.mu.Lock()
	defer seen.mu.Unlock()
	if len(seen.links) != sockets {
		t.Errorf("%d relay sources over two runs, want the same %d", len(seen.links), sockets)
	}
	for src := range seen.links {
		if p := int(src.Port()); p < base || p >= base+sockets {
			t.Errorf("relay source %s: port outside %d-%d", src, base, base+sockets-1)
		}
	}
	if _, err := runBench(t.Context(), benchFlags{server: srv.String(), clients: 100, pools: pools, outstanding: sockets,
		sockets: sockets, count: 1, timeout: time.Second, relayPort: 65534}); err == nil || !strings.Contains(err.Error(), "--relay-port") {
		t.Errorf("ports beyond 65535: err = %v", err)
	}
}
