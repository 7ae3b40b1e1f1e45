package server

import (
	"bytes"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/storetest"
	"github.com/cloudstack-pd/cloudstack-pd/bench/synth"
	"github.com/cloudstack-pd/cloudstack-pd/leasequery"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// benchStore opens a bbolt store in dir holding the bindings of synthetic
// clients 0..n-1 over pools pools (client i on pool i mod pools' link,
// all relayed by the relay with DUID lqRelayID), last heard from 100 s
// before testNow.
func benchStore(b *testing.B, n, pools int) *allocator.Store {
	b.Helper()
	st, err := allocator.OpenStore(boltstore.Open(filepath.Join(b.TempDir(), "state.db"), boltstore.Options{Create: true}))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	ps := synth.Pools(pools)
	batch := make([]allocator.Binding, 0, 1000)
	le := testNow.Add(-100 * time.Second)
	for i := range n {
		k := synth.Pool(i, pools)
		mac := synth.MAC(i)
		batch = append(batch, allocator.Binding{ClientDUID: duidLL(mac), MAC: mac, IAID: 1, Pool: ps[k].Name,
			Prefix: synth.Prefix(i, pools), PreferredLifetime: 86400, ValidLifetime: 172800,
			Expires: le.Add(172800 * time.Second), LastExchange: le, LastMessage: "RENEW",
			RelaySource: relayAddr, LinkAddress: synth.LinkAddr(k), PeerAddress: vmPeer,
			InterfaceID: []byte(synth.InterfaceID(k)), RemoteID: relay.JuniperRemoteID(mac), RelayID: lqRelayID})
		if len(batch) == cap(batch) || i == n-1 {
			if err := st.PutBindings(batch, nil); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	return st
}

// BenchmarkBulkLeasequery100k: one Bulk Leasequery answered over 100,000
// bindings, as a router asks after a reboot: by relay-id (every binding
// matches: 100,000 messages streamed) and by link-address (a quarter
// match; the others are skipped on their stored bytes). The messages go
// to an emit that only counts them, so this is the server's side: store
// reads, decoding, building and encoding. B/op is all it allocates; what
// it holds at once is one page of bindings (TestBulkStreamsInPages).
func BenchmarkBulkLeasequery100k(b *testing.B) {
	const n, pools = 100_000, 4
	st := benchStore(b, n, pools)
	h := synthLQHandler(b, st, n, pools)
	for _, c := range []struct {
		name string
		q    leasequery.Query
		want int
	}{
		{"relay-id", leasequery.Query{Type: leasequery.ByRelayID, LinkAddress: anyLink, RelayID: lqRelayID}, n},
		{"link-address", leasequery.Query{Type: leasequery.ByLinkAddress, LinkAddress: synth.LinkAddr(1)}, n / pools},
	} {
		b.Run(c.name, func(b *testing.B) {
			q := leasequery.NewQueryMessage(lqXID, lqRequestor, c.q).ToBytes()
			b.ReportAllocs()
			var msgs, bytes int
			runtime.GC()
			base, peak := heapLive(), uint64(0)
			for b.Loop() {
				msgs, bytes = 0, 0
				err := h.AnswerBulk(lqRouter, q, func(m []byte) error {
					msgs++
					bytes += len(m)
					if msgs%1000 == 0 {
						peak = max(peak, heapLive())
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			// The live heap the answer grew to above what was live before
			// (garbage not yet collected included): it does not grow with
			// the number of bindings.
			b.ReportMetric(float64(peak-min(peak, base))/1e6, "MB-heap-peak")
			if msgs != c.want+1 { // the bindings and the DONE
				b.Fatalf("%d messages, want %d", msgs, c.want+1)
			}
			b.ReportMetric(float64(c.want), "bindings/op")
			b.ReportMetric(float64(bytes)/1e6, "MB-sent/op")
		})
	}
}

// synthLQHandler answers leasequeries from st, with the table of the n
// synthetic clients over pools pools.
func synthLQHandler(tb testing.TB, st *allocator.Store, n, pools int) *Handler {
	tb.Helper()
	ps := synth.Pools(pools)
	allocs, err := synth.Allocations(ps, n, testNow)
	if err != nil {
		tb.Fatal(err)
	}
	tbl, err := allocator.NewTable(ps, allocs)
	if err != nil {
		tb.Fatal(err)
	}
	opts := testOptions
	opts.LeasequeryRequestors = lqRequestors
	h, err := NewHandler(HandlerConfig{Table: allocator.NewLive(tbl), ServerID: serverDUID, Options: opts,
		Now: func() time.Time { return testNow }, Leases: st})
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// TestBulkStreamsInPages: a bulk answer reads the store a page at a time
// and sends each page's messages before reading the next: memory holds
// one page, whatever the number of bindings.
func TestBulkStreamsInPages(t *testing.T) {
	const n = 3*bulkPage + 10
	st := allocator.NewStore(storetest.NewMemory())
	h := synthLQHandler(t, st, n, 1)
	src := &pagedSource{LeaseSource: st}
	h.leases = src
	var bs []allocator.Binding
	le := testNow.Add(-time.Second)
	for i := range n {
		mac := synth.MAC(i)
		bs = append(bs, allocator.Binding{ClientDUID: duidLL(mac), MAC: mac, IAID: 1, Prefix: synth.Prefix(i, 1),
			PreferredLifetime: 100, ValidLifetime: 100, LastExchange: le, Expires: le.Add(100 * time.Second),
			LinkAddress: lqLinkC2, RelaySource: relayAddr})
	}
	if err := st.PutBindings(bs, nil); err != nil {
		t.Fatal(err)
	}
	sentBefore := map[int]int{} // pages read → messages sent before the read
	src.onPage = func(pages int) { sentBefore[pages] = src.sent }
	err := h.AnswerBulk(lqRouter, lqQuery(leasequery.Query{Type: leasequery.ByLinkAddress, LinkAddress: lqLinkC2}), func([]byte) error {
		src.sent++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := len(bs) + 1 // the bindings, the DONE
	if src.sent != want || src.maxLimit > bulkPage || src.pages < 4 {
		t.Fatalf("sent %d (want %d) over %d pages of at most %d", src.sent, want, src.pages, src.maxLimit)
	}
	for p := 2; p <= src.pages; p++ {
		if sentBefore[p] < (p-1)*bulkPage-1 {
			t.Errorf("page %d read after only %d messages: the answer is not streamed", p, sentBefore[p])
		}
	}
}

// pagedSource watches the pages a bulk answer reads.
type pagedSource struct {
	LeaseSource
	pages, maxLimit, sent int
	onPage                func(pages int)
}

func (p *pagedSource) BindingsPage(after []byte, limit int, q allocator.BindingQuery) ([]allocator.Binding, []byte, error) {
	p.pages++
	p.maxLimit = max(p.maxLimit, limit)
	p.onPage(p.pages)
	return p.LeaseSource.BindingsPage(after, limit, q)
}

// writeAll hides a store's TouchBindings: the Recorder then writes every
// record, as before renewals stopped being written.
type writeAll struct{ st *allocator.Store }

func (w writeAll) PutBindings(put []allocator.Binding, del []allocator.BindingRelease) error {
	return w.st.PutBindings(put, del)
}

// BenchmarkRenewExchange: serve's cost per Renew exchange, the handler and
// the Recorder's writes to a bbolt store together, for 1,000 clients that
// renew in turn (a flush per 1,000 renewals, as one second of a busy
// server): "before", every renewal rewrites its binding; "after", a
// renewal that changes nothing writes nothing (its time is persisted
// later, once per server.last-exchange-staleness, not measured here).
// cpu-ns/op is the process's CPU time (user and system) per exchange.
func BenchmarkRenewExchange(b *testing.B) {
	const clients = 1000
	ps := synth.Pools(1)
	allocs, err := synth.Allocations(ps, clients, testNow)
	if err != nil {
		b.Fatal(err)
	}
	tbl, err := allocator.NewTable(ps, allocs)
	if err != nil {
		b.Fatal(err)
	}
	pkts := make([][]byte, clients)
	requests := make([][]byte, clients)
	for i := range clients {
		mac := synth.MAC(i)
		fwd := relay.Forward{LinkAddr: synth.LinkAddr(0), PeerAddr: vmPeer, InterfaceID: []byte(synth.InterfaceID(0)), RemoteID: relay.JuniperRemoteID(mac)}
		requests[i] = relay.Encapsulate(msg(dhcpv6.MessageTypeRequest, clientID(mac), serverID(serverDUID), iapd(1)), fwd)
		pkts[i] = relay.Encapsulate(msg(dhcpv6.MessageTypeRenew, clientID(mac), serverID(serverDUID), iapd(1, synth.Prefix(i, 1))), fwd)
	}
	for _, mode := range []string{"before", "after"} {
		b.Run(mode, func(b *testing.B) {
			st, err := allocator.OpenStore(boltstore.Open(filepath.Join(b.TempDir(), "state.db"), boltstore.Options{Create: true}))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			var store BindingStore = st
			if mode == "before" {
				store = writeAll{st}
			}
			rec := NewRecorder(store, 0, nil)
			now := testNow
			h, err := NewHandler(HandlerConfig{Table: allocator.NewLive(tbl), ServerID: serverDUID, Options: testOptions,
				Bindings: rec, Now: func() time.Time { return now }})
			if err != nil {
				b.Fatal(err)
			}
			for _, p := range requests {
				if _, err := h.Handle(relayAddr, p); err != nil {
					b.Fatal(err)
				}
			}
			if err := rec.Flush(); err != nil {
				b.Fatal(err)
			}
			var out []byte
			b.ReportAllocs()
			cpu0 := cpuTime()
			i := 0
			for b.Loop() {
				now = now.Add(time.Millisecond)
				r, err := h.HandleAppend(out[:0], relayAddr, pkts[i%clients])
				if err != nil || !bytes.Contains(r.Data, []byte{0, 0x1a}) {
					b.Fatalf("renew: %v", err)
				}
				out = r.Data
				i++
				if i%clients == 0 {
					if err := rec.Flush(); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := rec.Flush(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// heapLive is the bytes of heap objects, live or not yet swept.
func heapLive() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
