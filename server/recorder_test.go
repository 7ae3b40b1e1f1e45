package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
)

func openTestStore(t *testing.T) *allocator.Store {
	t.Helper()
	st, err := allocator.OpenStore(boltstore.Open(filepath.Join(t.TempDir(), "state.db"), boltstore.Options{Create: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestRecorderWritesHandlerBindings runs the handler with a Recorder on a
// real store: a Request's binding reaches the store at the flush, not
// before, with the relay's fields; a Release removes it.
func TestRecorderWritesHandlerBindings(t *testing.T) {
	st := openTestStore(t)
	rec := NewRecorder(st, 0, nil)
	h, err := NewHandler(HandlerConfig{Table: allocator.NewLive(testTable(t)), ServerID: serverDUID, Options: testOptions, Bindings: rec})
	if err != nil {
		t.Fatal(err)
	}
	request := juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeRequest, clientID(macA), serverID(serverDUID), iapd(1)))
	if _, err := h.Handle(relayAddr, request); err != nil {
		t.Fatal(err)
	}
	if bs, _ := st.Bindings(); len(bs) != 0 {
		t.Fatalf("binding written before the flush: %d", len(bs))
	}
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
	}
	bs, err := st.Bindings()
	if err != nil || len(bs) != 1 {
		t.Fatalf("bindings = %v, %v", bs, err)
	}
	if bs[0].Prefix != prefixA || string(bs[0].InterfaceID) != "VLAN2701" || bs[0].RelaySource != relayAddr {
		t.Errorf("stored binding = %+v", bs[0])
	}
	if b, ok, err := st.BindingByPrefix(prefixA); err != nil || !ok || b.IAID != 1 {
		t.Errorf("BindingByPrefix = %+v %v %v", b, ok, err)
	}

	release := juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeRelease, clientID(macA), serverID(serverDUID), iapd(1, prefixA)))
	if _, err := h.Handle(relayAddr, release); err != nil {
		t.Fatal(err)
	}
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
	}
	if bs, _ := st.Bindings(); len(bs) != 0 {
		t.Errorf("binding kept after Release: %+v", bs)
	}
}

// TestRecorderCoalesces: many renewals of one IA between flushes are one
// write of the last one.
func TestRecorderCoalesces(t *testing.T) {
	fs := &fakeStore{}
	rec := NewRecorder(fs, 0, nil)
	for i := range 100 {
		rec.Record(allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 1}, MAC: macA, IAID: 1, Prefix: prefixA, ValidLifetime: uint32(i)})
	}
	rec.Record(allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 2}, MAC: macB, IAID: 1, Prefix: prefixB})
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(fs.calls) != 1 || len(fs.calls[0]) != 2 {
		t.Fatalf("calls = %d, bindings in batch = %v", len(fs.calls), fs.calls)
	}
	for _, b := range fs.calls[0] {
		if b.Prefix == prefixA && b.ValidLifetime != 99 {
			t.Errorf("not the last record: %d", b.ValidLifetime)
		}
	}
}

// TestRecorderKeepsBatchOnStoreError: a failed write loses nothing; the
// next flush writes it, and a newer record of the same key wins.
func TestRecorderKeepsBatchOnStoreError(t *testing.T) {
	fs := &fakeStore{fail: true}
	rec := NewRecorder(fs, 0, nil)
	rec.Record(allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 1}, MAC: macA, IAID: 1, Prefix: prefixA, ValidLifetime: 1})
	rec.Record(allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 2}, MAC: macB, IAID: 1, Prefix: prefixB, ValidLifetime: 1})
	if err := rec.Flush(); err == nil {
		t.Fatal("flush succeeded on a failing store")
	}
	if n := flushErrors(t, rec); n != 1 {
		t.Errorf("bindings_flush_errors_total = %v after a failed flush, want 1", n)
	}
	rec.Record(allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 1}, MAC: macA, IAID: 1, Prefix: prefixA, ValidLifetime: 2})
	fs.fail = false
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := flushErrors(t, rec); n != 1 {
		t.Errorf("bindings_flush_errors_total = %v after a good flush, want 1 still", n)
	}
	got := map[netip.Prefix]uint32{}
	for _, b := range fs.calls[len(fs.calls)-1] {
		got[b.Prefix] = b.ValidLifetime
	}
	if len(got) != 2 || got[prefixA] != 2 || got[prefixB] != 1 {
		t.Errorf("after retry: %v", got)
	}
}

type fakeStore struct {
	mu   sync.Mutex
	fail bool
	// failAt makes the call of this number (from 1) fail, as fail does.
	failAt int
	calls  [][]allocator.Binding
	dels   [][]allocator.BindingRelease
}

func (f *fakeStore) PutBindings(put []allocator.Binding, del []allocator.BindingRelease) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail || len(f.calls)+1 == f.failAt {
		f.failAt = 0
		return errors.New("disk full")
	}
	f.calls = append(f.calls, slices.Clone(put)) // the caller reuses its slices
	f.dels = append(f.dels, slices.Clone(del))
	return nil
}

// flushErrors reads bindings_flush_errors_total.
func flushErrors(t *testing.T, rec *Recorder) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(rec.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "cloudstack_pd_bindings_flush_errors_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no bindings_flush_errors_total")
	return 0
}

// droppedCount reads bindings_dropped_total{reason}.
func droppedCount(t *testing.T, rec *Recorder, reason string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(rec.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "cloudstack_pd_bindings_dropped_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no bindings_dropped_total{reason=%q}", reason)
	return 0
}

// TestRecorderBadBindingDoesNotStopBatch: a binding the store can never
// hold (a client-id of 256 bytes) is dropped and counted when recorded,
// logged once; the bindings recorded with it reach the store, at this
// flush and the next ones.
func TestRecorderBadBindingDoesNotStopBatch(t *testing.T) {
	st := openTestStore(t)
	var logs bytes.Buffer
	rec := NewRecorder(st, 0, slog.New(slog.NewTextHandler(&logs, nil)))
	good := func(mac net.HardwareAddr, p netip.Prefix) allocator.Binding {
		return allocator.Binding{ClientDUID: append([]byte{0, 3, 0, 1}, mac...), MAC: mac, IAID: 1, Prefix: p}
	}
	bad := good(macQuar, prefixQuar)
	bad.ClientDUID = bytes.Repeat([]byte{7}, 256)
	noMAC := good(macGone, prefixGone)
	noMAC.MAC = nil
	rec.Record(good(macA, prefixA))
	rec.Record(bad)
	rec.Record(noMAC)
	rec.Record(good(macB, prefixB))
	if err := rec.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if bs, _ := st.Bindings(); len(bs) != 2 {
		t.Fatalf("%d bindings stored, want the 2 valid ones", len(bs))
	}
	rec.Record(bad)
	rec.Record(good(macGone, prefixGone))
	if err := rec.Flush(); err != nil {
		t.Fatalf("second flush: %v", err)
	}
	if bs, _ := st.Bindings(); len(bs) != 3 {
		t.Errorf("%d bindings stored after the second flush, want 3", len(bs))
	}
	if n := droppedCount(t, rec, allocator.ProblemClientDUID); n != 2 {
		t.Errorf("dropped{client-duid-length} = %v, want 2", n)
	}
	if n := droppedCount(t, rec, DropMAC); n != 1 {
		t.Errorf("dropped{mac} = %v, want 1", n)
	}
	if n := strings.Count(logs.String(), "reason=client-duid-length"); n != 1 {
		t.Errorf("logged %d times for client-duid-length, want once:\n%s", n, logs.String())
	}
}

// TestRecorderOneEntryPerIA: a flood of records with a new client DUID
// each, for a few VMs, is one pending entry per MAC and IAID, the newest.
func TestRecorderOneEntryPerIA(t *testing.T) {
	fs := &fakeStore{}
	rec := NewRecorder(fs, 0, nil)
	macs := []net.HardwareAddr{macA, macB, macGone}
	newest := map[string]uint32{}
	for i := range 30000 {
		mac := macs[i%len(macs)]
		duid := binary.BigEndian.AppendUint32([]byte{0, 4}, uint32(i))
		rec.Record(allocator.Binding{ClientDUID: duid, MAC: mac, IAID: 1, Prefix: prefixA, ValidLifetime: uint32(i)})
		newest[mac.String()] = uint32(i)
	}
	if n := rec.Pending(); n != len(macs) {
		t.Fatalf("pending = %d after 30000 DUIDs of %d VMs, want %d", n, len(macs), len(macs))
	}
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(fs.calls) != 1 || len(fs.calls[0]) != len(macs) {
		t.Fatalf("batches %v", fs.calls)
	}
	for _, b := range fs.calls[0] {
		if b.ValidLifetime != newest[b.MAC.String()] {
			t.Errorf("%s: record %d written, want the newest %d", b.MAC, b.ValidLifetime, newest[b.MAC.String()])
		}
	}
}

// TestRecorderCap: beyond the cap, without Run (nothing would flush),
// records of new IAs are dropped and counted at once; records of pending
// IAs still replace theirs; after a flush there is room again, and a
// store failure puts back only what fits. (With Run, recorder_wait_test.go.)
func TestRecorderCap(t *testing.T) {
	fs := &fakeStore{}
	rec := NewRecorder(fs, 0, nil)
	rec.max = 10
	b := func(i int, lifetime uint32) allocator.Binding {
		return allocator.Binding{ClientDUID: []byte{0, 4, byte(i)}, MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(i)},
			IAID: 1, Prefix: prefixA, ValidLifetime: lifetime}
	}
	for i := range 15 {
		rec.Record(b(i, 1))
	}
	rec.Release(allocator.BindingRelease{ClientDUID: []byte{0, 4, 20}, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 20}, IAID: 1})
	rec.Record(b(3, 2)) // pending: replaces
	if n := rec.Pending(); n != 10 {
		t.Errorf("pending = %d, want the cap, 10", n)
	}
	if n := droppedCount(t, rec, DropPendingFull); n != 6 {
		t.Errorf("dropped{pending-full} = %v, want 6", n)
	}
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(fs.calls[0]) != 10 {
		t.Errorf("flushed %d, want 10", len(fs.calls[0]))
	}
	for _, x := range fs.calls[0] {
		if x.MAC[5] == 3 && x.ValidLifetime != 2 {
			t.Errorf("pending record not replaced when full: %+v", x)
		}
	}

	// A failing store: the batch is put back, as far as the cap allows.
	fs.fail = true
	for i := range 10 {
		rec.Record(b(i, 3))
	}
	if err := rec.Flush(); err == nil {
		t.Fatal("flush succeeded on a failing store")
	}
	for i := 100; i < 105; i++ {
		rec.Record(b(i, 4))
	}
	if n := rec.Pending(); n != 10 {
		t.Errorf("pending = %d after a failed flush and 5 new records, want the cap, 10", n)
	}
	if n := droppedCount(t, rec, DropPendingFull); n != 11 {
		t.Errorf("dropped{pending-full} = %v, want 11: the put-back batch fills the cap, the 5 new IAs are dropped", n)
	}
}

// TestRecorderReleaseCoalesces: a release ends what is pending for its
// MAC and IAID when it names the same client DUID; a pending binding of
// another DUID stays (once written, the release would end nothing); a
// newer record replaces a pending release.
func TestRecorderReleaseCoalesces(t *testing.T) {
	duid1, duid2 := []byte{0, 4, 1}, []byte{0, 4, 2}
	for _, tc := range []struct {
		name       string
		ops        func(rec *Recorder)
		puts, dels int
	}{
		{"release of the pending DUID", func(rec *Recorder) {
			rec.Record(allocator.Binding{ClientDUID: duid1, MAC: macA, IAID: 1, Prefix: prefixA})
			rec.Release(allocator.BindingRelease{ClientDUID: duid1, MAC: macA, IAID: 1})
		}, 0, 1},
		{"release of another DUID", func(rec *Recorder) {
			rec.Record(allocator.Binding{ClientDUID: duid1, MAC: macA, IAID: 1, Prefix: prefixA})
			rec.Release(allocator.BindingRelease{ClientDUID: duid2, MAC: macA, IAID: 1})
		}, 1, 0},
		{"record after release", func(rec *Recorder) {
			rec.Release(allocator.BindingRelease{ClientDUID: duid1, MAC: macA, IAID: 1})
			rec.Record(allocator.Binding{ClientDUID: duid2, MAC: macA, IAID: 1, Prefix: prefixA})
		}, 1, 0},
		{"another MAC's IA", func(rec *Recorder) {
			rec.Record(allocator.Binding{ClientDUID: duid1, MAC: macA, IAID: 1, Prefix: prefixA})
			rec.Release(allocator.BindingRelease{ClientDUID: duid1, MAC: macB, IAID: 1})
		}, 1, 1},
		{"release without MAC or DUID", func(rec *Recorder) {
			rec.Release(allocator.BindingRelease{ClientDUID: duid1, IAID: 1})
			rec.Release(allocator.BindingRelease{MAC: macA, IAID: 1})
		}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := &fakeStore{}
			rec := NewRecorder(fs, 0, nil)
			tc.ops(rec)
			if err := rec.Flush(); err != nil {
				t.Fatal(err)
			}
			var puts, dels int
			for i := range fs.calls {
				puts += len(fs.calls[i])
				dels += len(fs.dels[i])
			}
			if puts != tc.puts || dels != tc.dels {
				t.Errorf("written %d bindings and %d releases, want %d and %d", puts, dels, tc.puts, tc.dels)
			}
		})
	}
}

// TestRecorderFlushesInChunks: a large batch is written flushChunk
// records per store transaction; when one fails, what was written stays
// written and the rest is pending again.
func TestRecorderFlushesInChunks(t *testing.T) {
	fs := &fakeStore{failAt: 2}
	rec := NewRecorder(fs, 0, nil)
	n := 2*flushChunk + flushChunk/2
	for i := range n {
		mac := binary.BigEndian.AppendUint32([]byte{2, 0}, uint32(i))
		rec.Record(allocator.Binding{ClientDUID: append([]byte{0, 3, 0, 1}, mac...), MAC: mac, IAID: 1, Prefix: prefixA})
	}
	rec.Release(allocator.BindingRelease{ClientDUID: []byte{0, 4, 1}, MAC: macA, IAID: 1})
	if err := rec.Flush(); err == nil {
		t.Fatal("flush succeeded with a failing transaction")
	}
	if len(fs.calls) != 1 || len(fs.calls[0])+len(fs.dels[0]) != flushChunk {
		t.Fatalf("written before the failure: %d transactions", len(fs.calls))
	}
	if got := rec.Pending(); got != n+1-flushChunk {
		t.Errorf("pending after the failure = %d, want %d", got, n+1-flushChunk)
	}
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var dels int
	for i := range fs.calls {
		if len(fs.calls[i])+len(fs.dels[i]) > flushChunk {
			t.Errorf("transaction %d: %d records, want at most %d", i, len(fs.calls[i])+len(fs.dels[i]), flushChunk)
		}
		for _, b := range fs.calls[i] {
			seen[string(b.MAC)] = true
		}
		dels += len(fs.dels[i])
	}
	if len(seen) != n || dels != 1 || rec.Pending() != 0 {
		t.Errorf("written %d distinct bindings and %d releases, want %d and 1", len(seen), dels, n)
	}
}

// TestRecorderFlushesInKeyOrder: a flush writes its records in the order
// of the store's binding keys (client DUID by length then bytes, then
// IAID), across its transactions, so that each transaction rewrites
// neighbouring pages of the store.
func TestRecorderFlushesInKeyOrder(t *testing.T) {
	fs := &fakeStore{}
	rec := NewRecorder(fs, 0, nil)
	n := 2*flushChunk + flushChunk/2
	for i := range n {
		mac := binary.BigEndian.AppendUint32([]byte{2, 0}, uint32(i))
		// DUIDs of two lengths, and two IAIDs of some of them.
		duid := append([]byte{0, 3, 0, 1}, mac[:4+i%2]...)
		rec.Record(allocator.Binding{ClientDUID: duid, MAC: mac, IAID: uint32(i % 3), Prefix: prefixA})
	}
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
	}
	var keys [][]byte
	for _, call := range fs.calls {
		for _, b := range call {
			keys = append(keys, allocator.AppendBindingKey(nil, b.ClientDUID, b.IAID))
		}
	}
	if len(fs.calls) != 3 || len(keys) != n {
		t.Fatalf("%d records in %d transactions, want %d in 3", len(keys), len(fs.calls), n)
	}
	if !slices.IsSortedFunc(keys, bytes.Compare) {
		t.Error("records not written in the order of their keys")
	}
}
