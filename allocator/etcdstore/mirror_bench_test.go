package etcdstore

import (
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/bench/synth"
)

// BenchmarkMirror1M measures the mirror of 1,000,000 allocations (3,000,001
// keys: records, prefix and MAC index entries, the schema; 4 pools of
// bench/synth) built as a load builds it, without etcd: mirror-B/key is
// the heap it keeps per key after a GC, keys and values included;
// data-B/key the keys' and values' own bytes; tree-B/key the B-tree's
// nodes alone.
func BenchmarkMirror1M(b *testing.B) {
	const n = 1_000_000
	pools := synth.Pools(4)
	var data int
	makeItems := func() []item {
		items := make([]item, 0, 3*n+1)
		data = 0
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
		return items
	}
	var t interface{ Len() int }
	var total, tree uint64
	var keys int
	for b.Loop() {
		t = nil
		runtime.GC()
		before := heapAlloc()
		items := makeItems()
		keys = len(items)
		runtime.GC()
		strs := heapAlloc() - before - uint64(cap(items))*uint64(unsafe.Sizeof(item{}))
		t = build(items)
		items = nil
		runtime.GC()
		total = heapAlloc() - before
		tree = total - strs
	}
	b.ReportMetric(float64(total)/float64(keys), "mirror-B/key")
	b.ReportMetric(float64(tree)/float64(keys), "tree-B/key")
	b.ReportMetric(float64(data)/float64(keys), "data-B/key")
	b.ReportMetric(float64(total)/(1<<20), "mirror-MB")
	runtime.KeepAlive(t)
}

func heapAlloc() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
