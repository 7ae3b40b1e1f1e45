// Package storetest is the conformance suite of the storage seam: Run
// checks that a kv.Backend keeps its key spaces as package kv says, and
// that allocator.Store's rules hold on it. Every backend runs it in its
// tests (boltstore and etcdstore do). Memory is a backend in
// memory that passes it. Imported by tests only.
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// Run runs the conformance suite. newBackend must return a new, empty,
// writable store (with its schema marker, as a backend creates one) that
// the test owns; Run closes it.
func Run(t *testing.T, newBackend func(t *testing.T) kv.Backend) {
	open := func(t *testing.T) kv.Backend {
		t.Helper()
		b := newBackend(t)
		t.Cleanup(func() { _ = b.Close() })
		return b
	}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, b kv.Backend)
	}{
		{"SpacesAreApart", testSpacesAreApart},
		{"Order", testOrder},
		{"Scan", testScan},
		{"Pools", testPools},
		{"UpdateRollsBack", testUpdateRollsBack},
		{"ViewIsReadOnly", testViewIsReadOnly},
		{"Invariants", testInvariants},
		{"LowestFree", testLowestFree},
		{"DeleteFrees", testDeleteFrees},
		{"LoadTable", testLoadTable},
		{"Bindings", testBindings},
		{"BindingQueries", testBindingQueries},
		{"ServerDUID", testServerDUID},
		{"CheckSound", testCheckSound},
		{"HistoryOfChanges", testHistoryOfChanges},
		{"HistorySameInstant", testHistorySameInstant},
		{"HistoryRollsBack", testHistoryRollsBack},
		{"HistoryPrune", testHistoryPrune},
		{"HeldAt", testHeldAt},
		{"Release", testRelease},
		{"Move", testMove},
		{"ForgetPool", testForgetPool},
		{"HeldExpires", testHeldExpires},
		{"AdminDryRun", testAdminDryRun},
		{"CopyHeldAndHistory", testCopyHeldAndHistory},
		{"HeldNotRetaken", testHeldNotRetaken},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

var (
	t0    = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	poolA = allocator.Pool{Name: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200::/56"), PrefixLen: 60, InterfaceID: "VLAN1"}
	poolB = allocator.Pool{Name: "pod-b", Prefix: netip.MustParsePrefix("2001:db8:300::/56"), PrefixLen: 60, InterfaceID: "VLAN2"}
	// poolOver overlaps poolA: its /64s lie inside poolA's /60s.
	poolOver = allocator.Pool{Name: "pod-over", Prefix: netip.MustParsePrefix("2001:db8:200::/60"), PrefixLen: 64, InterfaceID: "VLAN3"}
	pools    = []allocator.Pool{poolA, poolB, poolOver}
)

func mac(i int) net.HardwareAddr { return net.HardwareAddr{6, 0, 0, 0, byte(i >> 8), byte(i)} }

func alloc(pool string, i int, prefix string) allocator.Allocation {
	return allocator.Allocation{Pool: pool, MAC: mac(i), Prefix: netip.MustParsePrefix(prefix),
		State: allocator.StateActive, Since: t0, Source: "sync", VMID: fmt.Sprintf("vm-%d", i)}
}

func update(t *testing.T, b kv.Backend, fn func(tx kv.Tx) error) {
	t.Helper()
	if err := b.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func testSpacesAreApart(t *testing.T, b kv.Backend) {
	spaces := []kv.Space{{Kind: kv.Meta}, {Kind: kv.Alloc, Pool: "p"}, {Kind: kv.Prefix, Pool: "p"},
		{Kind: kv.Alloc, Pool: "q"}, {Kind: kv.MACs}, {Kind: kv.Bindings}, {Kind: kv.BindingPrefix},
		{Kind: kv.Held}, {Kind: kv.History}}
	key := []byte("k")
	update(t, b, func(tx kv.Tx) error {
		for i, s := range spaces {
			if err := tx.Put(s, key, []byte{byte(i)}); err != nil {
				return err
			}
		}
		// A transaction reads its own writes.
		if v := tx.Get(spaces[3], key); !bytes.Equal(v, []byte{3}) {
			t.Errorf("Get in Update after Put = %v", v)
		}
		return nil
	})
	err := b.View(func(tx kv.Tx) error {
		for i, s := range spaces {
			if v := tx.Get(s, key); !bytes.Equal(v, []byte{byte(i)}) {
				t.Errorf("%s: %v, want [%d]", s, v, i)
			}
		}
		if v := tx.Get(kv.Space{Kind: kv.Prefix, Pool: "q"}, key); v != nil {
			t.Errorf("prefix/q holds %v", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	update(t, b, func(tx kv.Tx) error {
		if err := tx.Delete(spaces[1], key); err != nil {
			return err
		}
		return tx.Delete(kv.Space{Kind: kv.Alloc, Pool: "absent"}, key) // not an error
	})
	_ = b.View(func(tx kv.Tx) error {
		if v := tx.Get(spaces[1], key); v != nil {
			t.Errorf("deleted key holds %v", v)
		}
		if v := tx.Get(spaces[3], key); !bytes.Equal(v, []byte{3}) {
			t.Errorf("delete in alloc/p removed alloc/q's key: %v", v)
		}
		return nil
	})
}

// keys are prefix keys out of order, as a prefix index holds them.
var orderKeys = [][]byte{{0x20, 1, 0x0d, 0xb8, 2, 0x10}, {0x20, 1}, {0x20, 1, 0x0d, 0xb8, 2}, {0xff}, {0x20, 1, 0x0d, 0xb8, 2, 0x10, 0}}

func sortedKeys() [][]byte {
	ks := slices.Clone(orderKeys)
	slices.SortFunc(ks, bytes.Compare)
	return ks
}

func putKeys(t *testing.T, b kv.Backend, s kv.Space) {
	t.Helper()
	update(t, b, func(tx kv.Tx) error {
		for i, k := range orderKeys {
			if err := tx.Put(s, k, []byte{byte(i)}); err != nil {
				return err
			}
		}
		return nil
	})
}

func testOrder(t *testing.T, b kv.Backend) {
	s := kv.Space{Kind: kv.Prefix, Pool: "p"}
	putKeys(t, b, s)
	want := sortedKeys()
	_ = b.View(func(tx kv.Tx) error {
		for i, k := range want {
			if got, _ := tx.Seek(s, k); !bytes.Equal(got, k) {
				t.Errorf("Seek(%x) = %x", k, got)
			}
			// Just above k: the next key.
			above := append(slices.Clone(k), 0, 0)
			var next []byte
			if i+1 < len(want) {
				next = want[i+1]
				if bytes.Equal(next, above[:len(k)+1]) {
					continue // k+0x00 is itself a key
				}
			}
			if got, _ := tx.Seek(s, above); !bytes.Equal(got, next) {
				t.Errorf("Seek(%x) = %x, want %x", above, got, next)
			}
			var prev []byte
			if i > 0 {
				prev = want[i-1]
			}
			if got, _ := tx.Last(s, k); !bytes.Equal(got, prev) {
				t.Errorf("Last(before %x) = %x, want %x", k, got, prev)
			}
		}
		if got, _ := tx.Last(s, nil); !bytes.Equal(got, want[len(want)-1]) {
			t.Errorf("Last(nil) = %x", got)
		}
		if got, v := tx.Seek(s, []byte{0xff, 0}); got != nil || v != nil {
			t.Errorf("Seek past the end = %x, %x", got, v)
		}
		if got, _ := tx.Seek(kv.Space{Kind: kv.Prefix, Pool: "none"}, nil); got != nil {
			t.Errorf("Seek in a missing space = %x", got)
		}
		if got, _ := tx.Last(kv.Space{Kind: kv.Prefix, Pool: "none"}, nil); got != nil {
			t.Errorf("Last in a missing space = %x", got)
		}
		return nil
	})
}

func testScan(t *testing.T, b kv.Backend) {
	s := kv.Space{Kind: kv.Bindings}
	putKeys(t, b, s)
	want := sortedKeys()
	scan := func(from []byte, stopAfter int, fail error) ([][]byte, error) {
		var got [][]byte
		err := b.View(func(tx kv.Tx) error {
			return tx.Scan(s, from, func(k, v []byte) error {
				if i := slices.IndexFunc(orderKeys, func(o []byte) bool { return bytes.Equal(o, k) }); i < 0 || !bytes.Equal(v, []byte{byte(i)}) {
					t.Errorf("Scan gave %x = %x", k, v)
				}
				got = append(got, bytes.Clone(k))
				if len(got) == stopAfter {
					if fail != nil {
						return fail
					}
					return kv.ErrStop
				}
				return nil
			})
		})
		return got, err
	}
	if got, err := scan(nil, -1, nil); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Scan(nil) = %x, %v; want %x", got, err, want)
	}
	if got, err := scan(want[2], -1, nil); err != nil || !reflect.DeepEqual(got, want[2:]) {
		t.Errorf("Scan(from %x) = %x, %v", want[2], got, err)
	}
	if got, err := scan(nil, 2, nil); err != nil || !reflect.DeepEqual(got, want[:2]) {
		t.Errorf("Scan stopped by ErrStop = %x, %v", got, err)
	}
	boom := errors.New("boom")
	if got, err := scan(nil, 3, boom); !errors.Is(err, boom) || len(got) != 3 {
		t.Errorf("Scan stopped by an error = %x, %v", got, err)
	}
	_ = b.View(func(tx kv.Tx) error {
		return tx.Scan(kv.Space{Kind: kv.Alloc, Pool: "none"}, nil, func(k, _ []byte) error {
			t.Errorf("Scan of a missing space gave %x", k)
			return nil
		})
	})
}

func testPools(t *testing.T, b kv.Backend) {
	_ = b.View(func(tx kv.Tx) error {
		if p := tx.Pools(); len(p) != 0 {
			t.Errorf("new store: Pools() = %q", p)
		}
		return nil
	})
	update(t, b, func(tx kv.Tx) error {
		for _, p := range []string{"zeta", "alpha", "mid"} {
			if err := tx.Put(kv.Space{Kind: kv.Alloc, Pool: p}, []byte{6}, []byte("{}")); err != nil {
				return err
			}
		}
		return tx.Put(kv.Space{Kind: kv.MACs}, []byte{6}, []byte("beta"))
	})
	_ = b.View(func(tx kv.Tx) error {
		if p := tx.Pools(); !reflect.DeepEqual(p, []string{"alpha", "mid", "zeta"}) {
			t.Errorf("Pools() = %q", p)
		}
		return nil
	})
}

func testUpdateRollsBack(t *testing.T, b kv.Backend) {
	boom := errors.New("boom")
	err := b.Update(func(tx kv.Tx) error {
		if err := tx.Put(kv.Space{Kind: kv.MACs}, []byte{1}, []byte("x")); err != nil {
			return err
		}
		if err := tx.Put(kv.Space{Kind: kv.Alloc, Pool: "p"}, []byte{1}, []byte("x")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want fn's error", err)
	}
	_ = b.View(func(tx kv.Tx) error {
		if v := tx.Get(kv.Space{Kind: kv.MACs}, []byte{1}); v != nil {
			t.Errorf("rolled back write is there: %q", v)
		}
		if v := tx.Get(kv.Space{Kind: kv.Alloc, Pool: "p"}, []byte{1}); v != nil {
			t.Errorf("rolled back write is there: %q", v)
		}
		return nil
	})
	// A rule broken in a Store.Update rolls back what came before it.
	st := allocator.NewStore(b)
	err = st.Update(pools, func(tx *allocator.Tx) error {
		if err := tx.Put(alloc("pod-a", 1, "2001:db8:200::/60")); err != nil {
			return err
		}
		return tx.Put(alloc("pod-a", 2, "2001:db8:200::/60"))
	})
	if !errors.Is(err, allocator.ErrDuplicatePrefix) {
		t.Fatalf("Update = %v, want ErrDuplicatePrefix", err)
	}
	if n := loadAll(t, st); len(n) != 0 {
		t.Errorf("rolled back allocations are there: %v", n)
	}
}

func testViewIsReadOnly(t *testing.T, b kv.Backend) {
	err := b.View(func(tx kv.Tx) error {
		if tx.Writable() {
			t.Error("View's Tx is writable")
		}
		return tx.Put(kv.Space{Kind: kv.MACs}, []byte{1}, []byte("x"))
	})
	if !errors.Is(err, kv.ErrReadOnly) {
		t.Errorf("Put in View = %v, want ErrReadOnly", err)
	}
	st := allocator.NewStore(b)
	err = st.View(pools, func(tx *allocator.Tx) error { return tx.Put(alloc("pod-a", 1, "2001:db8:200::/60")) })
	if !errors.Is(err, allocator.ErrReadOnly) {
		t.Errorf("Tx.Put in View = %v, want ErrReadOnly", err)
	}
}

func mustPut(t *testing.T, st *allocator.Store, as ...allocator.Allocation) {
	t.Helper()
	err := st.Update(pools, func(tx *allocator.Tx) error {
		tx.SetActor(allocator.Actor{At: t0, By: "sync"})
		for _, a := range as {
			if err := tx.Put(a); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func loadAll(t *testing.T, st *allocator.Store) []allocator.Allocation {
	t.Helper()
	tbl, _, err := st.LoadTable(pools)
	if err != nil {
		t.Fatal(err)
	}
	out := slices.Clone(tbl.Allocations())
	slices.SortFunc(out, func(a, b allocator.Allocation) int { return bytes.Compare(a.MAC, b.MAC) })
	return out
}

func testInvariants(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	mustPut(t, st, alloc("pod-a", 1, "2001:db8:200::/60"), alloc("pod-b", 2, "2001:db8:300::/60"))
	for _, tc := range []struct {
		name string
		a    allocator.Allocation
		want error
	}{
		{"prefix of another MAC", alloc("pod-a", 3, "2001:db8:200::/60"), allocator.ErrDuplicatePrefix},
		{"MAC in another pool", alloc("pod-b", 1, "2001:db8:300:10::/60"), allocator.ErrDuplicateMAC},
		{"prefix moves", alloc("pod-a", 1, "2001:db8:200:10::/60"), allocator.ErrPrefixMoved},
		{"overlap across pools", alloc("pod-over", 4, "2001:db8:200:1::/64"), allocator.ErrDuplicatePrefix},
		{"unknown pool", alloc("pod-z", 5, "2001:db8:200:20::/60"), allocator.ErrUnknownPool},
		{"outside the pool", alloc("pod-a", 6, "2001:db8:999::/60"), allocator.ErrOutsidePool},
		{"wrong length", alloc("pod-a", 7, "2001:db8:200:20::/64"), allocator.ErrPrefixLength},
		{"bad state", func() allocator.Allocation {
			a := alloc("pod-a", 8, "2001:db8:200:20::/60")
			a.State = "lost"
			return a
		}(), allocator.ErrInvalidState},
	} {
		err := st.Update(pools, func(tx *allocator.Tx) error { return tx.Put(tc.a) })
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Put = %v, want %v", tc.name, err, tc.want)
		}
	}
	// Updating an allocation in place (its state) is allowed.
	gone := alloc("pod-a", 1, "2001:db8:200::/60")
	gone.State, gone.GoneAt = allocator.StateGone, t0.Add(time.Hour)
	mustPut(t, st, gone)
	got := loadAll(t, st)
	want := []allocator.Allocation{gone, alloc("pod-b", 2, "2001:db8:300::/60")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("store holds %+v\nwant %+v", got, want)
	}
	_ = st.View(pools, func(tx *allocator.Tx) error {
		if a, ok, err := tx.Lookup(mac(2)); err != nil || !ok || a.Pool != "pod-b" {
			t.Errorf("Lookup = %+v, %v, %v", a, ok, err)
		}
		if owner, ok := tx.PrefixOwner("pod-a", netip.MustParsePrefix("2001:db8:200::/60")); !ok || !bytes.Equal(owner, mac(1)) {
			t.Errorf("PrefixOwner = %v, %v", owner, ok)
		}
		if owner, in, ok := tx.PrefixElsewhere("pod-over", netip.MustParsePrefix("2001:db8:200:5::/64")); !ok || in != "pod-a" || !bytes.Equal(owner, mac(1)) {
			t.Errorf("PrefixElsewhere = %v, %q, %v", owner, in, ok)
		}
		if _, _, ok := tx.PrefixElsewhere("pod-over", netip.MustParsePrefix("2001:db8:201::/64")); ok {
			t.Error("PrefixElsewhere found an owner for a free prefix")
		}
		return nil
	})
}

func testLowestFree(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	mustPut(t, st, alloc("pod-a", 1, "2001:db8:200::/60"), alloc("pod-a", 2, "2001:db8:200:20::/60"))
	// pod-over's /64s overlap pod-a's first /60 (taken) and nothing else.
	lowest := func(p allocator.Pool) netip.Prefix {
		var got netip.Prefix
		err := st.View(pools, func(tx *allocator.Tx) (err error) {
			got, err = tx.LowestFree(p)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := lowest(poolA); got != netip.MustParsePrefix("2001:db8:200:10::/60") {
		t.Errorf("LowestFree(pod-a) = %s", got)
	}
	if got := lowest(poolB); got != netip.MustParsePrefix("2001:db8:300::/60") {
		t.Errorf("LowestFree(pod-b) = %s", got)
	}
	// Every /64 of pod-over lies in pod-a's first /60, which mac 1 holds.
	err := st.View(pools, func(tx *allocator.Tx) error {
		_, err := tx.LowestFree(poolOver)
		return err
	})
	if !errors.Is(err, allocator.ErrPoolExhausted) {
		t.Errorf("LowestFree(pod-over) = %v, want ErrPoolExhausted (pod-a holds its range)", err)
	}
}

func testDeleteFrees(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	mustPut(t, st, alloc("pod-a", 1, "2001:db8:200::/60"))
	err := st.Update(pools, func(tx *allocator.Tx) error {
		if err := tx.Delete("pod-a", mac(1)); err != nil {
			return err
		}
		if err := tx.Delete("pod-a", mac(9)); err != nil { // absent: not an error
			return err
		}
		// The MAC may now go to another pool, and its prefix to another MAC.
		if err := tx.Put(alloc("pod-b", 1, "2001:db8:300::/60")); err != nil {
			return err
		}
		return tx.Put(alloc("pod-a", 3, "2001:db8:200::/60"))
	})
	if err != nil {
		t.Fatal(err)
	}
	got := loadAll(t, st)
	want := []allocator.Allocation{alloc("pod-b", 1, "2001:db8:300::/60"), alloc("pod-a", 3, "2001:db8:200::/60")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("store holds %+v\nwant %+v", got, want)
	}
	checkSound(t, st)
}

func testLoadTable(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	var want []allocator.Allocation
	for i := range 32 {
		p := poolA
		if i%2 == 1 {
			p = poolB
		}
		a := alloc(p.Name, i+1, netip.PrefixFrom(p.Prefix.Addr(), 60).String())
		addr := p.Prefix.Addr().As16()
		addr[7] = byte(i / 2 << 4)
		a.Prefix = netip.PrefixFrom(netip.AddrFrom16(addr), 60)
		want = append(want, a)
	}
	mustPut(t, st, want...)
	// A pool no longer configured is reported, not loaded.
	tbl, rep, err := st.LoadTable([]allocator.Pool{poolA})
	if err != nil {
		t.Fatal(err)
	}
	if tbl.Len() != 16 || len(rep.Orphaned) != 16 || rep.OrphanedByPool()["pod-b"] != 16 {
		t.Errorf("LoadTable(pod-a) = %d allocations, orphans %v", tbl.Len(), rep.OrphanedByPool())
	}
	got := loadAll(t, st)
	slices.SortFunc(want, func(a, b allocator.Allocation) int { return bytes.Compare(a.MAC, b.MAC) })
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadTable differs from what was Put:\n%+v\nwant %+v", got, want)
	}
}

func testBindings(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	bind := func(duid byte, iaid uint32, m int, prefix string) allocator.Binding {
		return allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 6, duid}, MAC: mac(m), IAID: iaid, Pool: "pod-a",
			Prefix: netip.MustParsePrefix(prefix), PreferredLifetime: 3600, ValidLifetime: 7200, LastMessage: "REQUEST",
			Expires: t0.Add(2 * time.Hour), LastExchange: t0}
	}
	b1, b2 := bind(1, 1, 1, "2001:db8:200::/60"), bind(2, 1, 2, "2001:db8:200:10::/60")
	if err := st.PutBindings([]allocator.Binding{b1, b2}, nil); err != nil {
		t.Fatal(err)
	}
	// A new IA taking b1's prefix supersedes b1; a release by another MAC
	// deletes nothing.
	b3 := bind(3, 7, 1, "2001:db8:200::/60")
	if err := st.PutBindings([]allocator.Binding{b3}, []allocator.BindingRelease{{ClientDUID: b2.ClientDUID, IAID: 1, MAC: mac(9)}}); err != nil {
		t.Fatal(err)
	}
	all, err := st.Bindings()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || !reflect.DeepEqual(all[0].Key(), b2.Key()) || !reflect.DeepEqual(all[1].Key(), b3.Key()) {
		t.Errorf("Bindings() = %+v", all)
	}
	got, ok, err := st.BindingByPrefix(b3.Prefix)
	if err != nil || !ok || !bytes.Equal(got.Key(), b3.Key()) || !got.Expires.Equal(b3.Expires) {
		t.Errorf("BindingByPrefix = %+v, %v, %v", got, ok, err)
	}
	if err := st.PutBindings(nil, []allocator.BindingRelease{{ClientDUID: b2.ClientDUID, IAID: 1, MAC: mac(2)}}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := st.BindingByPrefix(b2.Prefix); ok {
		t.Error("released binding still found by prefix")
	}
	checkSound(t, st)
}

// testBindingQueries: the reads Leasequery answers from. By any address
// of a prefix (and none outside every prefix, between two of them or past
// the last); a client's bindings, and not those of a client whose DUID
// extends it; pages of the bindings a relay recorded, which together are
// every match once, in key order; a touch that only moves a binding's last
// exchange forward.
func testBindingQueries(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	link1, link2 := netip.MustParseAddr("2001:db8:1::1"), netip.MustParseAddr("2001:db8:2::1")
	relayID := []byte{0, 2, 0, 0, 0x0a, 0x4c, 1}
	var bs []allocator.Binding
	for i := range 40 {
		link := link1
		if i%4 == 0 {
			link = link2
		}
		bs = append(bs, allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 6, byte(i)}, MAC: mac(i), IAID: 1, Pool: "pod-a",
			Prefix:            netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 2, 0, byte(i >> 4), byte(i << 4)}), 60),
			PreferredLifetime: 3600, ValidLifetime: 7200, Expires: t0.Add(2 * time.Hour), LastExchange: t0, LastMessage: "REQUEST",
			LinkAddress: link, RelayID: relayID, RemoteID: append([]byte{0, 0, 0x0a, 0x4c}, mac(i)...)})
	}
	// A second IA of client 5, and a client whose DUID extends client 5's.
	second := bs[5]
	second.IAID, second.Prefix = 2, netip.MustParsePrefix("2001:db8:300::/60")
	longer := bs[5]
	longer.ClientDUID, longer.MAC, longer.Prefix = append(bytes.Clone(bs[5].ClientDUID), 9), mac(99), netip.MustParsePrefix("2001:db8:300:10::/60")
	bs = append(bs, second, longer)
	if err := st.PutBindings(bs, nil); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		addr string
		want netip.Prefix // invalid: none
	}{
		{"2001:db8:200:30::", bs[3].Prefix},
		{"2001:db8:200:3f:ffff:ffff:ffff:ffff", bs[3].Prefix},
		{"2001:db8:200:30::1", bs[3].Prefix},
		{"2001:db8:1ff::1", netip.Prefix{}},
		{"2001:db8:300:20::", netip.Prefix{}},
		{"2001:db8:ffff::1", netip.Prefix{}},
	} {
		got, ok, err := st.BindingByAddress(netip.MustParseAddr(tc.addr))
		if err != nil || ok != tc.want.IsValid() || ok && got.Prefix != tc.want {
			t.Errorf("BindingByAddress(%s) = %s %v %v, want %s", tc.addr, got.Prefix, ok, err, tc.want)
		}
	}

	of5, err := st.BindingsOfClient(bs[5].ClientDUID)
	if err != nil || len(of5) != 2 || of5[0].IAID != 1 || of5[1].IAID != 2 {
		t.Errorf("BindingsOfClient = %+v, %v; want client 5's IAs 1 and 2", of5, err)
	}

	for _, q := range []struct {
		name string
		q    allocator.BindingQuery
		want int
	}{
		{"relay-id", allocator.BindingQuery{RelayID: relayID}, len(bs)},
		{"link-address", allocator.BindingQuery{LinkAddress: link2}, 10},
		{"remote-id", allocator.BindingQuery{RemoteID: bs[7].RemoteID}, 1},
		{"none", allocator.BindingQuery{RelayID: []byte{1}}, 0},
	} {
		var got [][]byte
		var after []byte
		for pages := 0; ; pages++ {
			page, next, err := st.BindingsPage(after, 3, q.q)
			if err != nil || len(page) > 3 || pages > len(bs) {
				t.Fatalf("%s: page of %d: %v", q.name, len(page), err)
			}
			for i := range page {
				if !q.q.Matches(&page[i]) {
					t.Errorf("%s: %+v does not match", q.name, page[i])
				}
				got = append(got, page[i].Key())
			}
			if next == nil {
				break
			}
			after = next
		}
		if len(got) != q.want || !slices.IsSortedFunc(got, bytes.Compare) || len(slices.CompactFunc(slices.Clone(got), bytes.Equal)) != len(got) {
			t.Errorf("%s: %d bindings over the pages (in order, once each?), want %d", q.name, len(got), q.want)
		}
	}

	later := t0.Add(time.Hour)
	n, stale, err := st.TouchBindings([]allocator.BindingTouch{
		{ClientDUID: bs[3].ClientDUID, IAID: 1, MAC: bs[3].MAC, Prefix: bs[3].Prefix, LastExchange: later, LastMessage: "RENEW"},
		{ClientDUID: bs[4].ClientDUID, IAID: 1, MAC: bs[4].MAC, Prefix: bs[4].Prefix, LastExchange: t0.Add(-time.Hour), LastMessage: "RENEW"},
		{ClientDUID: bs[6].ClientDUID, IAID: 1, MAC: mac(77), Prefix: bs[6].Prefix, LastExchange: later, LastMessage: "RENEW"},
		{ClientDUID: bs[8].ClientDUID, IAID: 1, MAC: bs[8].MAC, Prefix: bs[8].Prefix, LastExchange: later, LastMessage: "RENEW"},
		{ClientDUID: []byte{0, 3, 0, 1, 0xee}, IAID: 1, MAC: mac(88), Prefix: bs[9].Prefix, LastExchange: later, LastMessage: "RENEW"},
	}, func(i int, stored *allocator.Binding) bool { return i != 3 })
	if err != nil || n != 1 || !slices.Equal(stale, []int{2, 3, 4}) {
		t.Fatalf("TouchBindings = %d, stale %v, %v; want 1 rewritten (an older time changes nothing), stale [2 3 4] (another MAC, not the same, gone)", n, stale, err)
	}
	got, _, _ := st.BindingByPrefix(bs[3].Prefix)
	want := bs[3]
	want.LastExchange, want.Expires, want.LastMessage = later, later.Add(2*time.Hour), "RENEW"
	if !reflect.DeepEqual(got, want) {
		t.Errorf("touched binding\n got %+v\nwant %+v", got, want)
	}
	if got, _, _ := st.BindingByPrefix(bs[4].Prefix); !got.LastExchange.Equal(t0) {
		t.Errorf("an older touch moved the time back: %s", got.LastExchange)
	}
	checkSound(t, st)
}

func testServerDUID(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	calls := 0
	gen := func(d byte) func() ([]byte, error) {
		return func() ([]byte, error) { calls++; return []byte{0, 3, 0, 1, 6, d}, nil }
	}
	d1, err := st.ServerDUID(gen(1))
	if err != nil {
		t.Fatal(err)
	}
	d2, err := st.ServerDUID(gen(2))
	if err != nil || !bytes.Equal(d1, d2) || calls != 1 {
		t.Errorf("second ServerDUID = %x, %v (first %x, %d generations)", d2, err, d1, calls)
	}
	if _, err := allocator.NewStore(b).ServerDUID(func() ([]byte, error) { return []byte{1}, nil }); err != nil {
		t.Errorf("a stored DUID is not read back: %v", err)
	}
}

func checkSound(t *testing.T, st *allocator.Store) {
	t.Helper()
	lines, err := st.Check(pools)
	if err != nil || len(lines) > 0 {
		t.Errorf("Check: %v\n%q", err, lines)
	}
}

func testCheckSound(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	checkSound(t, st)
	mustPut(t, st, alloc("pod-a", 1, "2001:db8:200::/60"), alloc("pod-b", 2, "2001:db8:300::/60"))
	checkSound(t, st)
	// A record written around the rules is found.
	update(t, b, func(tx kv.Tx) error {
		return tx.Put(kv.Space{Kind: kv.MACs}, mac(9), []byte("pod-a"))
	})
	lines, err := st.Check(pools)
	if err != nil || len(lines) != 1 {
		t.Errorf("Check after a stray MAC index entry: %v\n%q", err, lines)
	}
}
