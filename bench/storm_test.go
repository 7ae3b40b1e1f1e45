package bench

import (
	"encoding/json"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cloudstack-pd/cloudstack-pd/bench/synth"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
	"github.com/cloudstack-pd/cloudstack-pd/server"
)

// TestBenchStorm plays a storm against the listener and handler in
// process, through a filter that loses the first Solicit of every tenth
// client and the first Request of every tenth other one: every client is
// answered all the same, by retransmissions, and the drops the filter
// counts in the server's registry come back through --server-metrics.
func TestBenchStorm(t *testing.T) {
	const n = 1000
	reg := prometheus.NewRegistry()
	lost := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_filter_drops_total", Help: "messages the test lost"})
	reg.MustRegister(lost)
	f := &lossFilter{lost: lost, seen: map[[2]int]bool{}}
	srv := benchServerWrapped(t, 4, n, func(hc *server.HandlerConfig) {
		hc.Metrics = server.NewMetrics(reg)
	}, func(h server.PacketHandler) server.PacketHandler {
		f.next = h
		return f
	})
	metrics := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer metrics.Close()

	res, err := runStorm(t.Context(), benchFlags{
		server: srv.String(), clients: n, pools: 4, sockets: 3, storm: true,
		stormWindow: 100 * time.Millisecond, timeout: 200 * time.Millisecond, duration: 20 * time.Second,
		verify: true, serverMetrics: metrics.URL + "/metrics",
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Answered != n || res.Unanswered != 0 || res.NoPrefix+res.WrongPrefix+res.Malformed+res.SendErrors != 0 {
		t.Errorf("every client should get its prefix: %+v", res)
	}
	// Each lost message is sent again; a slow answer may be too.
	if res.SolicitRetrans < n/10 || res.RequestRetrans < n/10 {
		t.Errorf("%d Solicits and %d Requests sent again, want at least %d each", res.SolicitRetrans, res.RequestRetrans, n/10)
	}
	// The lost Requests' clients waited one retransmission time (±10 %) at least.
	if res.LastReply < 0.18 || res.Latency.Max < 180 {
		t.Errorf("last reply after %.3fs, slowest exchange %.1fms: the lost messages' clients waited less than a retransmission", res.LastReply, res.Latency.Max)
	}
	if got := res.ServerDrops["test_filter_drops_total"]; got != 2*n/10 {
		t.Errorf("server drops %v, want test_filter_drops_total %d", res.ServerDrops, 2*n/10)
	}
	if res.KernelDrops < 0 {
		t.Errorf("the server socket's drops were not found in /proc/net/udp6")
	}
	if res.ServerID != "000100012f00000102cd00000001" {
		t.Errorf("server id %q", res.ServerID)
	}
	var out strings.Builder
	printStorm(&out, res)
	if !strings.Contains(out.String(), "answered     1000 with their prefix") {
		t.Errorf("printed:\n%s", out.String())
	}
}

// lossFilter loses the first Solicit of clients 0, 10, 20, … and the
// first Request of clients 5, 15, 25, …, counting them in lost.
type lossFilter struct {
	next server.PacketHandler
	lost prometheus.Counter
	mu   sync.Mutex
	seen map[[2]int]bool
}

func (f *lossFilter) HandleAppend(dst []byte, src netip.AddrPort, pkt []byte) (server.Reply, error) {
	c, typ, ok := relayClient(pkt)
	if ok && (typ == dhcpv6.MessageTypeSolicit && c%10 == 0 || typ == dhcpv6.MessageTypeRequest && c%10 == 5) {
		f.mu.Lock()
		first := !f.seen[[2]int{c, int(typ)}]
		f.seen[[2]int{c, int(typ)}] = true
		f.mu.Unlock()
		if first {
			f.lost.Inc()
			return server.Reply{}, errLost
		}
	}
	return f.next.HandleAppend(dst, src, pkt)
}

var errLost = stringError("lost by the test")

type stringError string

func (e stringError) Error() string { return string(e) }

// relayClient returns the client a Relay-Forward is for (its remote-id)
// and the type of the message inside.
func relayClient(pkt []byte) (client int, typ dhcpv6.MessageType, ok bool) {
	if len(pkt) < relay.HeaderLen || pkt[0] != relay.MsgRelayForward {
		return 0, 0, false
	}
	rid, ok1 := relay.FindOption(pkt[relay.HeaderLen:], relay.OptRemoteID)
	msg, ok2 := relay.FindOption(pkt[relay.HeaderLen:], relay.OptRelayMsg)
	if !ok1 || !ok2 || len(rid) < 10 || len(msg) < 1 {
		return 0, 0, false
	}
	c, ok := synth.Index(rid[4:])
	return c, dhcpv6.MessageType(msg[0]), ok
}

func TestUDPDrops(t *testing.T) {
	page := []byte(`  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
12154: 00000000000000000000000001000000:29FB 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1342102 2 000000002072642d 182397
12155: 00000000000000000000000001000000:29FB 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1342103 2 000000002072642e 3
 9000: 00000000000000000000000001000000:29FC 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1342104 2 000000002072642f 7
`)
	for _, tc := range []struct {
		port uint16
		want int64
	}{{0x29FB, 182400}, {0x29FC, 7}, {0x29FD, -1}, {0x9FB, -1}} {
		if got := udpDrops(page, tc.port); got != tc.want {
			t.Errorf("port %d: %d drops, want %d", tc.port, got, tc.want)
		}
	}
}

func TestDropCounters(t *testing.T) {
	page := []byte(`# HELP cloudstack_pd_drops_total Packets that got no answer, by reason.
# TYPE cloudstack_pd_drops_total counter
cloudstack_pd_drops_total{reason="queue-full"} 7317
cloudstack_pd_drops_total{reason="panic"} 0
cloudstack_pd_bindings_dropped_total{reason="pending-full"} 2.0583e+04
cloudstack_pd_packets_received_total{type="SOLICIT"} 100000
cloudstack_pd_drops_total_not{a="b"} 5
`)
	got := dropCounters(page)
	want := map[string]float64{
		`cloudstack_pd_drops_total{reason="queue-full"}`:              7317,
		`cloudstack_pd_drops_total{reason="panic"}`:                   0,
		`cloudstack_pd_bindings_dropped_total{reason="pending-full"}`: 20583,
	}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

// TestBenchReportStorm: the storm section shows both servers and issue
// 16's storm targets, met or not, from the storms' files.
func TestBenchReportStorm(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, v any) string {
		p := filepath.Join(dir, name)
		data, _ := json.Marshal(v)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kea := write("kea", stormResult{Clients: 1000, Window: 1, Answered: 900, Unanswered: 100, LastReply: 30, KernelDrops: 50})
	for _, tc := range []struct {
		cs   stormResult
		want []string
	}{
		{stormResult{Clients: 1000, Window: 1, Answered: 1000, LastReply: 2.5, ServerDrops: map[string]float64{}},
			[]string{"### A storm: 1,000 clients within 1.0 s", "| Kea 2.2 | 900 | 100 | 30.000 |", "| cloudstack-pd | 1000 | 0 | 2.500 |",
				"every exchange answered | 1000 of 1000, the last Reply after 2.500 s | **met** |", "no drops, counted by the server or at its socket | none; 0 at its socket | **met** |"}},
		{stormResult{Clients: 1000, Window: 1, Answered: 999, Unanswered: 1, LastReply: 30, KernelDrops: 7,
			ServerDrops: map[string]float64{`cloudstack_pd_drops_total{reason="queue-full"}`: 12}},
			[]string{"every exchange answered | 999 of 1000, the last Reply after 30.000 s | **not met** |",
				"no drops, counted by the server or at its socket | `cloudstack_pd_drops_total{reason=\"queue-full\"}` 12; 7 at its socket | **not met** |"}},
	} {
		sec, err := benchReport(benchReportFlags{stormKea: kea, stormCS: write("cs", tc.cs)}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range tc.want {
			if !strings.Contains(sec, want) {
				t.Errorf("report lacks %q:\n%s", want, sec)
			}
		}
	}
}
