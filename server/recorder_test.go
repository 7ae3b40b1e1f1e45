package server

import (
	"errors"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
)

func openTestStore(t *testing.T) *allocator.Store {
	t.Helper()
	st, err := allocator.Open(filepath.Join(t.TempDir(), "state.db"), allocator.StoreOptions{Create: true})
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
		rec.Record(allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 1}, IAID: 1, Prefix: prefixA, ValidLifetime: uint32(i)})
	}
	rec.Record(allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 2}, IAID: 1, Prefix: prefixB})
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
	rec.Record(allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 1}, IAID: 1, Prefix: prefixA, ValidLifetime: 1})
	rec.Record(allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 2}, IAID: 1, Prefix: prefixB, ValidLifetime: 1})
	if err := rec.Flush(); err == nil {
		t.Fatal("flush succeeded on a failing store")
	}
	rec.Record(allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 1}, IAID: 1, Prefix: prefixA, ValidLifetime: 2})
	fs.fail = false
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
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
	mu    sync.Mutex
	fail  bool
	calls [][]allocator.Binding
}

func (f *fakeStore) PutBindings(put []allocator.Binding, del [][]byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errors.New("disk full")
	}
	f.calls = append(f.calls, put)
	return nil
}
