package allocator

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// sortedAllocations returns t's allocations by MAC.
func sortedAllocations(t *Table) []Allocation {
	out := make([]Allocation, t.Len())
	for i := range out {
		out[i] = t.At(i)
	}
	slices.SortFunc(out, func(a, b Allocation) int { return bytes.Compare(a.MAC, b.MAC) })
	return out
}

// sameTable fails unless got answers every question as want does: the
// same allocations, and the same Find, Lookup and OverlapsOther for the
// MACs in macs and every delegated prefix of the pools (small ones).
func sameTable(t *testing.T, got, want *Table, macs []net.HardwareAddr) {
	t.Helper()
	if got.Len() != want.Len() {
		t.Fatalf("Len = %d, want %d", got.Len(), want.Len())
	}
	if g, w := sortedAllocations(got), sortedAllocations(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("allocations differ:\n got %+v\nwant %+v", g, w)
	}
	if g, w := got.StateCounts(), want.StateCounts(); !reflect.DeepEqual(g, w) {
		t.Errorf("StateCounts = %v, want %v", g, w)
	}
	for _, m := range macs {
		ge, gok := got.Find(m)
		we, wok := want.Find(m)
		if gok != wok || ge.Prefix != we.Prefix || ge.State != we.State || (gok && ge.Pool.Name != we.Pool.Name) {
			t.Errorf("Find(%s) = %+v, %v; want %+v, %v", m, ge, gok, we, wok)
		}
	}
	for _, p := range want.Pools() {
		if p.PrefixLen-p.Prefix.Bits() > 8 {
			continue
		}
		for a := p.Prefix.Addr(); p.Prefix.Contains(a); a = nextPrefix(a, p.PrefixLen) {
			c := netip.PrefixFrom(a, p.PrefixLen)
			for _, m := range append([]net.HardwareAddr{nil}, macs[:min(4, len(macs))]...) {
				if g, w := got.OverlapsOther(c, m), want.OverlapsOther(c, m); g != w {
					t.Errorf("OverlapsOther(%s, %s) = %v, want %v", c, m, g, w)
				}
			}
			if a == p.Prefix.Addr() && p.PrefixLen > p.Prefix.Bits() {
				// also a prefix shorter than the pool's prefix-len
				s := netip.PrefixFrom(a, p.PrefixLen-1)
				if g, w := got.OverlapsOther(s, nil), want.OverlapsOther(s, nil); g != w {
					t.Errorf("OverlapsOther(%s) = %v, want %v", s, g, w)
				}
			}
		}
	}
}

// model is what a table should hold: allocations by MAC.
type model map[string]Allocation

func (m model) table(t *testing.T, pools []Pool) *Table {
	t.Helper()
	all := make([]Allocation, 0, len(m))
	for _, a := range m {
		all = append(all, a)
	}
	tbl, err := NewTable(pools, all)
	if err != nil {
		t.Fatalf("NewTable of the model: %v", err)
	}
	return tbl
}

// put applies a to m as the rules say, and returns the error Put must give.
func (m model) put(pools []Pool, a Allocation) error {
	i := slices.IndexFunc(pools, func(p Pool) bool { return p.Name == a.Pool })
	if i < 0 {
		return ErrUnknownPool
	}
	if err := pools[i].Contains(a.Prefix); err != nil {
		return err
	}
	if old, ok := m[string(a.MAC)]; ok && old.Pool != a.Pool {
		return ErrDuplicateMAC
	}
	for k, o := range m {
		if k != string(a.MAC) && o.Prefix == a.Prefix {
			return ErrDuplicatePrefix
		}
	}
	m[string(a.MAC)] = a
	return nil
}

var (
	zones = []*time.Location{time.UTC, time.FixedZone("", 3600), time.FixedZone("CET", 3600), time.FixedZone("", -7200)}
	// overPool overlaps poolSmall (whose /60s hold its /62s), so that a
	// table of both keeps no bitmaps but the prefix index.
	overPool = Pool{Name: "over", Prefix: netip.MustParsePrefix("2001:db8:400::/60"), PrefixLen: 62, InterfaceID: "VLAN9"}
	// tinyA and tinyB hold 16 /60s each: prefixes collide often.
	tinyA = Pool{Name: "tiny-a", Prefix: netip.MustParsePrefix("2001:db8:a00::/56"), PrefixLen: 60, InterfaceID: "VLAN10",
		IP6CIDR: netip.MustParsePrefix("2001:db8:aa::/64")}
	tinyB = Pool{Name: "tiny-b", Prefix: netip.MustParsePrefix("2001:db8:b00::/56"), PrefixLen: 60, InterfaceID: "VLAN11"}
)

func randomAllocation(r *rand.Rand, pools []Pool, m net.HardwareAddr) Allocation {
	p := pools[r.IntN(len(pools))]
	n := 1 << (p.PrefixLen - p.Prefix.Bits())
	a := p.Prefix.Addr()
	for range r.IntN(n) {
		a = nextPrefix(a, p.PrefixLen)
	}
	states := []State{StateActive, StateGone, StateQuarantined}
	al := Allocation{Pool: p.Name, MAC: m, Prefix: netip.PrefixFrom(a, p.PrefixLen), State: states[r.IntN(3)],
		Since:  time.Unix(1_700_000_000+r.Int64N(1e6), r.Int64N(1e9)).In(zones[r.IntN(len(zones))]),
		Source: []string{"sync", "import-kea", ""}[r.IntN(3)], IP6CIDR: p.IP6CIDR}
	if r.IntN(2) == 0 {
		al.VMID = fmt.Sprintf("vm-%d", r.IntN(1000))
		al.VMName = strings.Repeat("n", r.IntN(40))
		al.NICID = fmt.Sprintf("nic-%d", r.IntN(1000))
		al.IP6 = netip.AddrFrom16([16]byte{0x20, 1, 0xd, 0xb8, 15: byte(r.IntN(256))})
	}
	if al.State != StateActive {
		al.GoneAt = al.Since.Add(time.Hour)
	}
	if al.State == StateQuarantined {
		al.QuarantinedAt = al.GoneAt.Add(time.Hour)
		if r.IntN(2) == 0 {
			al.IP6 = netip.MustParseAddr("fe80::1%eth0")
		}
	}
	return al
}

// TestTableBuilderReplay replays random puts and deletes through
// TableBuilder, building a snapshot every few changes and going on from
// it, and compares each snapshot with the table NewTable builds from
// scratch; the snapshot before stays as it was. Once with bitmaps (pools
// apart), once with the prefix index (overlapping pools).
func TestTableBuilderReplay(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pools []Pool
	}{
		{"bitmaps", []Pool{tinyA, tinyB}},
		{"prefix index", []Pool{tinyA, poolSmall, overPool}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(11, 12))
			macs := make([]net.HardwareAddr, 48)
			for i := range macs {
				macs[i] = net.HardwareAddr{6, 0, 0, 0, 0, byte(i)}
			}
			macs = append(macs, net.HardwareAddr{1, 2, 3}) // another length
			m := model{}
			cur, err := NewTable(tc.pools, nil)
			if err != nil {
				t.Fatal(err)
			}
			var puts, deletes, refused int
			for round := range 300 {
				prev, prevAll := cur, sortedAllocations(cur)
				b := NewTableBuilder(cur)
				for range 1 + r.IntN(12) {
					mac := macs[r.IntN(len(macs))]
					if r.IntN(4) == 0 {
						pool := tc.pools[r.IntN(len(tc.pools))].Name
						if a, ok := m[string(mac)]; ok && r.IntN(4) > 0 {
							pool = a.Pool
						}
						b.Delete(pool, mac)
						if a, ok := m[string(mac)]; ok && a.Pool == pool {
							delete(m, string(mac))
						}
						deletes++
						continue
					}
					a := randomAllocation(r, tc.pools, mac)
					if old, ok := m[string(mac)]; ok && r.IntN(3) > 0 {
						a.Pool, a.Prefix = old.Pool, old.Prefix // a change of state or fields
					}
					want := m.put(tc.pools, a)
					got := b.Put(a)
					if !errors.Is(got, want) || (want == nil) != (got == nil) {
						t.Fatalf("round %d: Put(%+v) = %v, want %v", round, a, got, want)
					}
					if got != nil {
						refused++
					} else {
						puts++
					}
				}
				cur = b.Build()
				sameTable(t, cur, m.table(t, tc.pools), macs)
				if got := sortedAllocations(prev); !reflect.DeepEqual(got, prevAll) {
					t.Fatalf("round %d: building changed the snapshot it started from", round)
				}
			}
			if puts < 500 || deletes < 100 || refused < 50 {
				t.Errorf("%d puts, %d deletes, %d refused: the replay does not exercise the builder", puts, deletes, refused)
			}
		})
	}
}

// TestTableBuilderEdges: a state change, a delete, a re-add with another
// prefix, a move to another pool, refusals that change nothing, the last
// record deleted, and a builder from an empty table.
func TestTableBuilderEdges(t *testing.T) {
	pools := []Pool{tinyA, tinyB}
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	m1, m2, m3 := mac("06:00:00:00:00:01"), mac("06:00:00:00:00:02"), mac("06:00:00:00:00:03")
	a1 := Allocation{Pool: "tiny-a", MAC: m1, Prefix: p("2001:db8:a00::/60"), State: StateActive, Since: t0, VMID: "vm-1", Source: "sync"}
	a2 := Allocation{Pool: "tiny-a", MAC: m2, Prefix: p("2001:db8:a00:10::/60"), State: StateActive, Since: t0, VMID: "vm-2", Source: "sync"}
	a3 := Allocation{Pool: "tiny-b", MAC: m3, Prefix: p("2001:db8:b00::/60"), State: StateActive, Since: t0}
	base, err := NewTable(pools, []Allocation{a1, a2, a3})
	if err != nil {
		t.Fatal(err)
	}
	gone := a1
	gone.State, gone.GoneAt = StateGone, t0.Add(time.Hour)
	quarantined := gone
	quarantined.State, quarantined.QuarantinedAt = StateQuarantined, t0.Add(2*time.Hour)
	readded := a1
	readded.Prefix = p("2001:db8:a00:20::/60")
	moved := a1
	moved.Pool, moved.Prefix = "tiny-b", p("2001:db8:b00:10::/60")
	takesFreed := a2
	takesFreed.MAC = mac("06:00:00:00:00:09")
	for _, tc := range []struct {
		name  string
		steps func(b *TableBuilder) error
		want  []Allocation
		err   error
	}{
		{"state changes", func(b *TableBuilder) error {
			if err := b.Put(gone); err != nil {
				return err
			}
			return b.Put(quarantined)
		}, []Allocation{quarantined, a2, a3}, nil},
		{"delete", func(b *TableBuilder) error { b.Delete("tiny-a", m1); return nil }, []Allocation{a2, a3}, nil},
		{"delete in the wrong pool", func(b *TableBuilder) error { b.Delete("tiny-b", m1); return nil }, []Allocation{a1, a2, a3}, nil},
		{"delete the last record", func(b *TableBuilder) error { b.Delete("tiny-b", m3); return nil }, []Allocation{a1, a2}, nil},
		{"delete all, add again", func(b *TableBuilder) error {
			b.Delete("tiny-a", m1)
			b.Delete("tiny-a", m2)
			b.Delete("tiny-b", m3)
			return b.Put(a2)
		}, []Allocation{a2}, nil},
		{"re-add with another prefix", func(b *TableBuilder) error {
			b.Delete("tiny-a", m1)
			return b.Put(readded)
		}, []Allocation{readded, a2, a3}, nil},
		{"a prefix freed goes to another MAC", func(b *TableBuilder) error {
			b.Delete("tiny-a", m2)
			return b.Put(takesFreed)
		}, []Allocation{a1, takesFreed, a3}, nil},
		{"a MAC moves pool after a delete", func(b *TableBuilder) error {
			b.Delete("tiny-a", m1)
			return b.Put(moved)
		}, []Allocation{moved, a2, a3}, nil},
		{"a MAC in two pools is refused", func(b *TableBuilder) error { return b.Put(moved) }, []Allocation{a1, a2, a3}, ErrDuplicateMAC},
		{"a prefix of two MACs is refused", func(b *TableBuilder) error { return b.Put(takesFreed) }, []Allocation{a1, a2, a3}, ErrDuplicatePrefix},
		{"a prefix outside the pool is refused", func(b *TableBuilder) error {
			x := a1
			x.Prefix = p("2001:db8:b00:20::/60")
			return b.Put(x)
		}, []Allocation{a1, a2, a3}, ErrOutsidePool},
		{"an unknown pool is refused", func(b *TableBuilder) error {
			x := a1
			x.Pool = "nope"
			return b.Put(x)
		}, []Allocation{a1, a2, a3}, ErrUnknownPool},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewTableBuilder(base)
			if err := tc.steps(b); !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			got := b.Build()
			want, err := NewTable(pools, tc.want)
			if err != nil {
				t.Fatal(err)
			}
			sameTable(t, got, want, []net.HardwareAddr{m1, m2, m3, takesFreed.MAC})
			if all := sortedAllocations(base); !reflect.DeepEqual(all, []Allocation{a1, a2, a3}) {
				t.Errorf("the base changed: %+v", all)
			}
		})
	}
	t.Run("from an empty table", func(t *testing.T) {
		empty, err := NewTable(pools, nil)
		if err != nil {
			t.Fatal(err)
		}
		b := NewTableBuilder(empty)
		for _, a := range []Allocation{a1, a2, a3} {
			if err := b.Put(a); err != nil {
				t.Fatal(err)
			}
		}
		sameTable(t, b.Build(), base, []net.HardwareAddr{m1, m2, m3})
		if empty.Len() != 0 {
			t.Error("the empty base changed")
		}
	})
}

// TestTableBuilderCompacts: a replica rewriting the same allocations
// again and again does not keep every string it ever wrote.
func TestTableBuilderCompacts(t *testing.T) {
	pools := []Pool{tinyA}
	a := Allocation{Pool: "tiny-a", MAC: mac("06:00:00:00:00:01"), Prefix: netip.MustParsePrefix("2001:db8:a00::/60"), State: StateActive, Since: t0}
	tbl, err := NewTable(pools, []Allocation{a})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		a.VMName = fmt.Sprintf("%d-%s", i, strings.Repeat("x", 100))
		b := NewTableBuilder(tbl)
		if err := b.Put(a); err != nil {
			t.Fatal(err)
		}
		tbl = b.Build()
	}
	if n := len(tbl.strs) + len(tbl.extraStrs); n > 128<<10 {
		t.Errorf("the table keeps %d bytes of strings for one allocation", n)
	}
	if got := tbl.At(0); !reflect.DeepEqual(got, a) {
		t.Errorf("At(0) = %+v, want %+v", got, a)
	}
}

// TestTableBuilderCompactsTimes: a replica that sees the same allocation
// released again and again (a new gone-at each time) does not keep every
// gone-at it ever wrote, and shares the attributes that do not change.
func TestTableBuilderCompactsTimes(t *testing.T) {
	pools := []Pool{tinyA}
	a := Allocation{Pool: "tiny-a", MAC: mac("06:00:00:00:00:01"), Prefix: netip.MustParsePrefix("2001:db8:a00::/60"), State: StateGone, Since: t0, Source: "sync"}
	tbl, err := NewTable(pools, []Allocation{a})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20000 {
		a.GoneAt = t0.Add(time.Duration(i+1) * time.Second)
		b := NewTableBuilder(tbl)
		if err := b.Put(a); err != nil {
			t.Fatal(err)
		}
		tbl = b.Build()
	}
	if n := len(tbl.times); n > 2*4096+1 {
		t.Errorf("the table keeps %d gone-at times for one allocation", n)
	}
	if n := len(tbl.attrs); n != 1 {
		t.Errorf("the table keeps %d attributes for one allocation whose state, source and zone never change", n)
	}
	if got := tbl.At(0); !reflect.DeepEqual(got, a) {
		t.Errorf("At(0) = %+v, want %+v", got, a)
	}
}

// The record of an allocation stays 88 bytes: a million of them are most
// of serve's memory (docs/BENCHMARKS.md, start-up).
func TestRecordSize(t *testing.T) {
	if n := unsafe.Sizeof(rec{}); n != 88 {
		t.Errorf("a record takes %d bytes, want 88", n)
	}
}

// A table a builder made finds a MAC without allocating, as one NewTable
// made does.
func TestBuiltTableFindDoesNotAllocate(t *testing.T) {
	base, err := NewTable([]Pool{tinyA}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := NewTableBuilder(base)
	m := mac("06:00:00:00:00:01")
	if err := b.Put(Allocation{Pool: "tiny-a", MAC: m, Prefix: netip.MustParsePrefix("2001:db8:a00::/60"), State: StateActive}); err != nil {
		t.Fatal(err)
	}
	tbl := b.Build()
	if n := testing.AllocsPerRun(100, func() {
		if e, ok := tbl.Find(m); !ok || e.State != StateActive {
			t.Fatal("not found")
		}
	}); n != 0 {
		t.Errorf("Find allocates %v times", n)
	}
}
