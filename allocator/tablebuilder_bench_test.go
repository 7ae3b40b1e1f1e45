package allocator_test

import (
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/bench/synth"
)

// BenchmarkTableBuilder1M applies a batch of changes to a table of a
// million allocations, as a replica following a change stream does: 100
// allocations change state, 10 are deleted and 10 added (the op). Compare
// with BenchmarkLoadTable1M, which builds the whole table.
func BenchmarkTableBuilder1M(b *testing.B) {
	const n = 1_000_000
	pools := synth.Pools(4)
	since := time.Unix(1700000000, 0).UTC()
	all, err := synth.Allocations(pools, n, since)
	if err != nil {
		b.Fatal(err)
	}
	tbl, err := allocator.NewTable(pools, all)
	if err != nil {
		b.Fatal(err)
	}
	all = nil // the garbage collector would scan it every cycle
	client := func(i int) allocator.Allocation { return synth.Allocation(pools, i, since) }
	next := n // the next client to add
	round := 0
	for b.Loop() {
		tb := allocator.NewTableBuilder(tbl)
		for j := range 100 {
			a := client((round*100 + j) % n)
			a.State, a.GoneAt = allocator.StateGone, since.Add(time.Hour)
			if err := tb.Put(a); err != nil {
				b.Fatal(err)
			}
		}
		for j := range 10 {
			d := client((round*10 + j + n/2) % n)
			tb.Delete(d.Pool, d.MAC)
			if err := tb.Put(client(next)); err != nil {
				b.Fatal(err)
			}
			next++
		}
		tbl = tb.Build()
		round++
	}
}
