package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/storetest"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
	"github.com/cloudstack-pd/cloudstack-pd/leasequery"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// countingBackend counts the write transactions that reach a backend.
type countingBackend struct {
	kv.Backend
	updates atomic.Int64
}

func (c *countingBackend) Update(fn func(kv.Tx) error) error {
	c.updates.Add(1)
	return c.Backend.Update(fn)
}

// renewalWorld is a handler with a Recorder on a counting store, on a fake
// clock.
type renewalWorld struct {
	h     *Handler
	rec   *Recorder
	st    *allocator.Store
	be    *countingBackend
	clock *clock.Fake
}

func newRenewalWorld(t *testing.T) *renewalWorld {
	w := &renewalWorld{be: &countingBackend{Backend: storetest.NewMemory()}, clock: clock.NewFake(testNow)}
	w.st = allocator.NewStore(w.be)
	w.rec = NewRecorder(w.st, 0, nil)
	w.rec.SetClock(w.clock)
	opts := testOptions
	opts.LeasequeryRequestors = lqRequestors
	h, err := NewHandler(HandlerConfig{Table: allocator.NewLive(testTable(t)), ServerID: serverDUID, Options: opts,
		Bindings: w.rec, Now: w.clock.Now, Leases: w.st})
	if err != nil {
		t.Fatal(err)
	}
	w.h = h
	return w
}

func (w *renewalWorld) exchange(t *testing.T, typ dhcpv6.MessageType, src ...relay.Forward) {
	t.Helper()
	fwd := relay.Forward{LinkAddr: linkAddr, PeerAddr: vmPeer, InterfaceID: []byte("VLAN2701"), RemoteID: relay.JuniperRemoteID(macA)}
	if len(src) > 0 {
		fwd = src[0]
	}
	pkt := relay.Encapsulate(msg(typ, clientID(macA), serverID(serverDUID), iapd(1, prefixA)), fwd)
	if _, err := w.h.Handle(relayAddr, pkt); err != nil {
		t.Fatal(err)
	}
	if err := w.rec.Flush(); err != nil {
		t.Fatal(err)
	}
}

func (w *renewalWorld) stored(t *testing.T) allocator.Binding {
	t.Helper()
	b, ok, err := w.st.BindingByPrefix(prefixA)
	if err != nil || !ok {
		t.Fatalf("BindingByPrefix: %v %v", ok, err)
	}
	return b
}

// answered is what a leasequery by address answers of A's binding.
func (w *renewalWorld) answered(t *testing.T) leasequery.Lease {
	t.Helper()
	r, err := w.h.Handle(lqRouter, lqQuery(leasequery.Query{Type: leasequery.ByAddress, Address: prefixA.Addr()}))
	if err != nil {
		t.Fatal(err)
	}
	a := answerOf(t, true, r.Data)
	if len(a.Leases) != 1 {
		t.Fatalf("answer: %+v", a)
	}
	return a.Leases[0]
}

// TestRenewalsWriteNothing: after the Request's write, N renewals that
// change nothing commit nothing to the store, while leasequery answers
// carry the freshest exchange; the last exchange reaches the store
// within ExchangeStaleness; a renewal that changes the binding is written.
func TestRenewalsWriteNothing(t *testing.T) {
	w := newRenewalWorld(t)
	w.exchange(t, dhcpv6.MessageTypeRequest)
	if n := w.be.updates.Load(); n != 1 {
		t.Fatalf("the Request committed %d transactions, want 1", n)
	}
	requested := w.clock.Now()

	const renewals = 100
	for range renewals {
		w.clock.Advance(10 * time.Second)
		w.exchange(t, dhcpv6.MessageTypeRenew)
	}
	if n := w.be.updates.Load(); n != 1 {
		t.Errorf("%d renewals that change nothing committed %d transactions, want 0", renewals, n-1)
	}
	if got := testutil.ToFloat64(w.rec.unchangedCount); got != renewals {
		t.Errorf("bindings_unchanged_total = %v, want %d", got, renewals)
	}
	if b := w.stored(t); !b.LastExchange.Equal(requested) {
		t.Errorf("stored last exchange %s, want the Request's %s", b.LastExchange, requested)
	}
	// Answers use the freshest exchange this server knows: just now.
	if l := w.answered(t); l.CLT != 0 || l.Prefixes[0].Valid != testOptions.ValidLifetime {
		t.Errorf("answered CLT %s, valid %d; want 0 and the full %d", l.CLT, l.Prefixes[0].Valid, testOptions.ValidLifetime)
	}

	// The persist loop writes the time within the bound, in one commit.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.rec.Run(ctx) }()
	w.clock.BlockUntil(2) // Run's tickers are armed
	lastRenewal := w.clock.Now()
	before := w.be.updates.Load()
	w.clock.Advance(w.rec.ExchangeStaleness())
	deadline := time.Now().Add(10 * time.Second)
	for !w.stored(t).LastExchange.Equal(lastRenewal) {
		if time.Now().After(deadline) {
			t.Fatalf("last exchange not persisted within ExchangeStaleness: stored %s, want %s", w.stored(t).LastExchange, lastRenewal)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if n := w.be.updates.Load() - before; n != 1 {
		t.Errorf("persisting committed %d transactions, want 1", n)
	}
	b := w.stored(t)
	if !b.Expires.Equal(lastRenewal.Add(172800*time.Second)) || b.LastMessage != "RENEW" {
		t.Errorf("persisted binding: expires %s, last message %s", b.Expires, b.LastMessage)
	}
	if got := testutil.ToFloat64(w.rec.persisted); got != 1 {
		t.Errorf("binding_exchanges_persisted_total = %v, want 1", got)
	}

	// A renewal through another relay address changes the binding: written.
	before = w.be.updates.Load()
	w.clock.Advance(10 * time.Second)
	w.exchange(t, dhcpv6.MessageTypeRenew, relay.Forward{LinkAddr: lqLinkC1, PeerAddr: vmPeer, InterfaceID: []byte("VLAN2701"), RemoteID: relay.JuniperRemoteID(macA)})
	if n := w.be.updates.Load() - before; n != 1 {
		t.Errorf("a renewal changing the link-address committed %d transactions, want 1", n)
	}
	if b := w.stored(t); b.LinkAddress != lqLinkC1 {
		t.Errorf("stored link-address %s", b.LinkAddress)
	}
}

// TestPersistNeverMovesTimeBack: a touch older than what the store holds
// (another server wrote a later exchange) changes nothing, nor does one
// for a binding whose prefix or MAC changed.
func TestPersistNeverMovesTimeBack(t *testing.T) {
	st := allocator.NewStore(storetest.NewMemory())
	b := lqBindings()[0]
	if err := st.PutBindings([]allocator.Binding{b}, nil); err != nil {
		t.Fatal(err)
	}
	touch := func(tt allocator.BindingTouch) int {
		n, _, err := st.TouchBindings([]allocator.BindingTouch{tt}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	base := allocator.BindingTouch{ClientDUID: b.ClientDUID, IAID: b.IAID, MAC: b.MAC, Prefix: b.Prefix, LastMessage: "RENEW"}
	older, other, later := base, base, base
	older.LastExchange = b.LastExchange.Add(-time.Second)
	other.LastExchange, other.Prefix = b.LastExchange.Add(time.Hour), prefixB
	later.LastExchange = b.LastExchange.Add(time.Hour)
	if touch(older) != 0 || touch(other) != 0 {
		t.Error("an older touch, or one of another prefix, rewrote the binding")
	}
	if touch(later) != 1 {
		t.Fatal("a later touch did not rewrite the binding")
	}
	got, _, _ := st.BindingByPrefix(b.Prefix)
	want := b
	want.LastExchange, want.Expires = later.LastExchange, later.LastExchange.Add(172800*time.Second)
	if got.LastExchange != want.LastExchange || got.Expires != want.Expires || string(got.RelayID) != string(b.RelayID) || got.LinkAddress != b.LinkAddress {
		t.Errorf("touched binding %+v, want %+v", got, want)
	}
}

// TestRecorderWithoutToucherWritesEveryRecord: a store that cannot touch
// gets every record, as before.
func TestRecorderWithoutToucherWritesEveryRecord(t *testing.T) {
	fs := &fakeStore{}
	rec := NewRecorder(fs, 0, nil)
	b := allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 1}, MAC: macA, IAID: 1, Prefix: prefixA, ValidLifetime: 100}
	for range 3 {
		rec.Record(b)
		if err := rec.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if len(fs.calls) != 3 {
		t.Errorf("%d writes, want 3", len(fs.calls))
	}
}

// TestPersistRewritesAGoneBinding: a binding another writer removed (or
// rewrote) while this server only kept its time is found out at the next
// persist, and the IA's next renewal writes it in full again.
func TestPersistRewritesAGoneBinding(t *testing.T) {
	w := newRenewalWorld(t)
	w.exchange(t, dhcpv6.MessageTypeRequest)
	w.clock.Advance(10 * time.Second)
	w.exchange(t, dhcpv6.MessageTypeRenew)
	// Another server sharing the store ended it.
	if err := w.st.PutBindings(nil, []allocator.BindingRelease{{ClientDUID: duidLL(macA), IAID: 1, MAC: macA}}); err != nil {
		t.Fatal(err)
	}
	if err := w.rec.PersistExchanges(); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := w.st.BindingByPrefix(prefixA); ok {
		t.Fatal("the persist re-created a binding it only had the time of")
	}
	w.clock.Advance(10 * time.Second)
	w.exchange(t, dhcpv6.MessageTypeRenew)
	if b := w.stored(t); !b.LastExchange.Equal(w.clock.Now()) || string(b.InterfaceID) != "VLAN2701" {
		t.Errorf("after the next renewal: %+v", b)
	}
}

// TestRecorderConcurrentExchanges: records, releases, answers (Fresh),
// flushes and persists at once; run with -race. At the end the store
// holds each IA's binding with its last exchange, or none when its last
// word was a Release.
func TestRecorderConcurrentExchanges(t *testing.T) {
	st := allocator.NewStore(storetest.NewMemory())
	fc := clock.NewFake(testNow)
	rec := NewRecorder(st, 0, nil)
	rec.SetClock(fc)
	const ias = 20
	bind := func(i int, at time.Time) allocator.Binding {
		mac := []byte{6, 0, 0, 0, 0, byte(i)}
		return allocator.Binding{ClientDUID: duidLL(mac), MAC: mac, IAID: 1, Pool: "pod-a",
			Prefix:            netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 2, 0, byte(i >> 4), byte(i << 4)}), 60),
			PreferredLifetime: 100, ValidLifetime: 200, LastExchange: at, Expires: at.Add(200 * time.Second), LastMessage: "RENEW"}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for round := range 200 {
			for i := range ias {
				b := bind(i, testNow.Add(time.Duration(round)*time.Second))
				if i%5 == 0 && round == 199 {
					rec.Release(allocator.BindingRelease{ClientDUID: b.ClientDUID, IAID: 1, MAC: b.MAC})
					continue
				}
				rec.Record(b)
			}
		}
		close(done)
	})
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			for i := range ias {
				b := bind(i, testNow)
				rec.Fresh(&b)
			}
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := rec.Flush(); err != nil {
				t.Error(err)
			}
			if err := rec.PersistExchanges(); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := rec.PersistExchanges(); err != nil {
		t.Fatal(err)
	}
	last := testNow.Add(199 * time.Second)
	for i := range ias {
		b := bind(i, last)
		got, ok, err := st.BindingByPrefix(b.Prefix)
		switch {
		case err != nil:
			t.Fatal(err)
		case i%5 == 0 && ok:
			t.Errorf("IA %d released last, still stored", i)
		case i%5 != 0 && (!ok || !got.LastExchange.Equal(last)):
			t.Errorf("IA %d: stored %v, last exchange %s, want %s", i, ok, got.LastExchange, last)
		}
	}
}

// TestRememberedByMAC: a VM that changes IAID at every exchange (or a
// flood of IAIDs) takes one remembered entry, and each new IAID is
// written, since the store's binding of the MAC's prefix changes.
func TestRememberedByMAC(t *testing.T) {
	be := &countingBackend{Backend: storetest.NewMemory()}
	rec := NewRecorder(allocator.NewStore(be), 0, nil)
	for i := range 50 {
		b := lqBindings()[0]
		b.IAID = uint32(i)
		rec.Record(b)
		if err := rec.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	rec.mu.Lock()
	n := len(rec.seen)
	rec.mu.Unlock()
	if n != 1 || be.updates.Load() != 50 {
		t.Errorf("%d entries remembered, %d writes; want 1 and 50", n, be.updates.Load())
	}
}

// touchLog is a store that notes the keys of the touches it is given, in
// the order given.
type touchLog struct {
	*allocator.Store
	keys [][]byte
}

func (l *touchLog) TouchBindings(touches []allocator.BindingTouch, same func(int, *allocator.Binding) bool) (int, []int, error) {
	for _, t := range touches {
		l.keys = append(l.keys, allocator.AppendBindingKey(nil, t.ClientDUID, t.IAID))
	}
	return l.Store.TouchBindings(touches, same)
}

// TestPersistInKeyOrder: the last exchanges kept in memory are persisted
// in the order of the store's binding keys, across transactions, as a
// flush writes; and every one of them reaches its binding (what is sorted
// stays with its binding).
func TestPersistInKeyOrder(t *testing.T) {
	st := &touchLog{Store: openTestStore(t)}
	fc := clock.NewFake(testNow)
	rec := NewRecorder(st, 0, nil)
	rec.SetClock(fc)
	n := 2*flushChunk + flushChunk/2
	binding := func(i int, at time.Time) allocator.Binding {
		mac := binary.BigEndian.AppendUint32([]byte{2, 0}, uint32(i))
		a := [16]byte{0x20, 0x01, 0x0d, 0xb8}
		binary.BigEndian.PutUint32(a[4:], uint32(i)<<4)
		return allocator.Binding{ClientDUID: append(append([]byte{0, 3, 0, 1}, mac...), make([]byte, i%3)...), MAC: mac, IAID: uint32(i % 2),
			Prefix: netip.PrefixFrom(netip.AddrFrom16(a), 60), ValidLifetime: 7200, LastExchange: at}
	}
	for i := range n {
		rec.Record(binding(i, testNow))
	}
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
	}
	later := testNow.Add(time.Minute)
	for i := range n {
		rec.Record(binding(i, later)) // unchanged: kept in memory
	}
	fc.Set(later)
	if err := rec.PersistExchanges(); err != nil {
		t.Fatal(err)
	}
	if len(st.keys) != n || !slices.IsSortedFunc(st.keys, bytes.Compare) {
		t.Errorf("%d touches, in key order: %v; want %d in key order", len(st.keys), slices.IsSortedFunc(st.keys, bytes.Compare), n)
	}
	if got := testutil.ToFloat64(rec.persisted); got != float64(n) {
		t.Errorf("binding_exchanges_persisted_total = %v, want %d", got, n)
	}
	bs, err := st.Bindings()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if !b.LastExchange.Equal(later) {
			t.Fatalf("binding of %s: last exchange %v, want %v", b.MAC, b.LastExchange, later)
		}
	}
}
