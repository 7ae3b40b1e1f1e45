package etcdstore

import (
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/bench/synth"
)

// BenchmarkMirror1M measures the mirror of 1,000,000 allocations (3,000,001
// keys: records, prefix and MAC index entries, the schema; 4 pools of
// bench/synth) built as a load builds it, without etcd: heap-B/key is
// the heap the tree keeps per key after a GC, keys and values included,
// data-B/key the keys' and values' own bytes, so the difference is the
// structure's cost.
func BenchmarkMirror1M(b *testing.B) {
	const n = 1_000_000
	pools := synth.Pools(4)
	var items []item
	var data int
	add := func(sp kv.Space, k, v []byte) {
		rel := spacePrefix(sp) + string(k)
		items = append(items, item{kv: rel + string(v), klen: uint32(len(rel)), rev: int64(len(items) + 2)})
		data += len(rel) + len(v)
	}
	add(kv.Space{Kind: kv.Meta}, []byte("schema"), []byte(kv.SchemaVersion))
	for i := range n {
		a := synth.Allocation(pools, i, time.Unix(1700000000, 0))
		rec, err := allocator.EncodeAllocation(a)
		if err != nil {
			b.Fatal(err)
		}
		add(kv.Space{Kind: kv.Alloc, Pool: a.Pool}, a.MAC, rec)
		add(kv.Space{Kind: kv.Prefix, Pool: a.Pool}, allocator.PrefixKey(a.Prefix), a.MAC)
		add(kv.Space{Kind: kv.MACs}, a.MAC, []byte(a.Pool))
	}
	slices.SortFunc(items, func(x, y item) int { return strings.Compare(x.key(), y.key()) })
	var t interface{ Len() int }
	var heap uint64
	for b.Loop() {
		t = nil
		runtime.GC()
		before := heapAlloc()
		t = build(items)
		runtime.GC()
		heap = heapAlloc() - before
	}
	b.ReportMetric(float64(heap)/float64(len(items)), "heap-B/key")
	b.ReportMetric(float64(data)/float64(len(items)), "data-B/key")
	b.ReportMetric(float64(heap)/(1<<20), "tree-MB")
	runtime.KeepAlive(t)
	runtime.KeepAlive(items)
}

func heapAlloc() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
