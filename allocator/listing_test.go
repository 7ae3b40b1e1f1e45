package allocator

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

// TestForEachByPrefix: a pool's allocations come in prefix order, whatever
// the order of their MACs, each whole.
func TestForEachByPrefix(t *testing.T) {
	s := openTest(t)
	mustPut(t, s,
		alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200:30::/60"),
		alloc("pod-a", "06:00:00:00:00:02", "2001:db8:200::/60"),
		alloc("pod-a", "06:00:00:00:00:03", "2001:db8:200:10::/60"),
		alloc("pod-b", "06:00:00:00:00:04", "2001:db8:300::/60"))
	var got []string
	err := s.View(testPools, func(tx *Tx) error {
		return tx.ForEachByPrefix("pod-a", func(a Allocation) error {
			got = append(got, a.Prefix.String()+" "+a.MAC.String()+" "+string(a.State))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"2001:db8:200::/60 06:00:00:00:00:02 active", "2001:db8:200:10::/60 06:00:00:00:00:03 active", "2001:db8:200:30::/60 06:00:00:00:00:01 active"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	stop := errors.New("stop")
	n := 0
	err = s.View(testPools, func(tx *Tx) error {
		return tx.ForEachByPrefix("pod-a", func(Allocation) error { n++; return stop })
	})
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("fn's error: %v after %d", err, n)
	}
}

// TestScanBindings: bindings come in key order from after a key, stop
// when fn says so, and are counted by CountBindings.
func TestScanBindings(t *testing.T) {
	s := openTest(t)
	if n, err := s.CountBindings(); err != nil || n != 0 {
		t.Fatalf("empty store: %d, %v", n, err)
	}
	var put []Binding
	for i := range 5 {
		m := mac(fmt.Sprintf("06:00:00:00:00:%02x", 5-i))
		put = append(put, Binding{ClientDUID: append([]byte{0, 3, 0, 1}, m...), MAC: m, IAID: uint32(i), Pool: "pod-a",
			Prefix: netip.MustParsePrefix(fmt.Sprintf("2001:db8:200:%x0::/60", i)), ValidLifetime: 60, Expires: t0})
	}
	if err := s.PutBindings(put, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CountBindings(); err != nil || n != 5 {
		t.Fatalf("count %d, %v", n, err)
	}
	scan := func(after []byte, max int) (keys [][]byte, iaids []uint32) {
		t.Helper()
		err := s.ScanBindings(after, func(k []byte, b Binding) (bool, error) {
			keys = append(keys, slices.Clone(k))
			iaids = append(iaids, b.IAID)
			return len(keys) < max, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return keys, iaids
	}
	keys, iaids := scan(nil, 10)
	// Key order: the DUIDs end in MACs 01 … 05, put with IAIDs 4 … 0.
	if !slices.Equal(iaids, []uint32{4, 3, 2, 1, 0}) || !slices.IsSortedFunc(keys, bytes.Compare) {
		t.Fatalf("all: iaids %v", iaids)
	}
	_, got := scan(keys[1], 2)
	if !slices.Equal(got, []uint32{2, 1}) {
		t.Errorf("after the second, two: %v", got)
	}
	// After a key that is not stored: from the next one that is.
	between := append(slices.Clone(keys[2]), 0xff)
	if _, got := scan(between, 10); !slices.Equal(got, []uint32{1, 0}) {
		t.Errorf("after a key between: %v", got)
	}
	if _, got := scan(keys[4], 10); len(got) != 0 {
		t.Errorf("after the last: %v", got)
	}
	boom := errors.New("boom")
	if err := s.ScanBindings(nil, func([]byte, Binding) (bool, error) { return true, boom }); !errors.Is(err, boom) {
		t.Errorf("fn's error: %v", err)
	}
}
