package etcdstore_test

import (
	"flag"
	"runtime"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/etcdstore"
	"github.com/cloudstack-pd/cloudstack-pd/bench/synth"
	"github.com/cloudstack-pd/cloudstack-pd/internal/etcdtest"
)

var benchAllocs = flag.Int("etcdstore.allocs", 200_000, "allocations BenchmarkOpen loads (1000000 takes minutes to set up)")

// BenchmarkOpen measures what a server does at start-up with a cluster
// table: Open (a paginated load of every key under the prefix into the
// mirror, then the watch) of a store of -etcdstore.allocs allocations
// (200,000 by default: 600,000 keys) over 4 pools, on a one-member
// embedded cluster, written once through allocator.Store before the timer
// starts (the chunked commit path). open-s is the time of one Open;
// mirror-B/key the heap the mirror keeps per key (after a GC), keys and
// values included, of which alloc-record-B is an allocation record's key
// and value (the other two keys of an allocation hold some 20 bytes);
// setup-s how long writing the table through Update took. The etcd member
// runs in the same process: its work is in the times, not in mirror-B/key
// (measured after the member's own garbage is collected, before Open).
func BenchmarkOpen(b *testing.B) {
	n := *benchAllocs
	c := etcdtest.StartOne(b)
	cli := c.Client(b)
	w := fencedStore(b, c, cli, etcdstore.Options{})
	pools := synth.Pools(4)
	start := time.Now()
	if err := synth.Fill(allocator.NewStore(w), pools, n, 0, time.Unix(1700000000, 0)); err != nil {
		b.Fatal(err)
	}
	setup := time.Since(start)
	_ = w.Close()
	var keys int
	runtime.GC()
	base := heapInUse()
	var st *etcdstore.Backend
	var opens time.Duration
	for b.Loop() {
		if st != nil {
			b.StopTimer()
			_ = st.Close()
			st = nil
			runtime.GC()
			b.StartTimer()
		}
		s := time.Now()
		var err error
		if st, err = etcdstore.Open(ctxT(b), etcdstore.Options{Client: cli, Prefix: w.Prefix()}); err != nil {
			b.Fatal(err)
		}
		opens += time.Since(s)
	}
	b.StopTimer()
	b.ReportMetric(setup.Seconds(), "setup-s")
	b.ReportMetric(opens.Seconds()/float64(b.N), "open-s")
	var data int
	_ = st.View(func(tx kvTx) error {
		for _, p := range tx.Pools() {
			_ = tx.Scan(allocSpace(p), nil, func(k, v []byte) error { keys++; data += len(k) + len(v); return nil })
		}
		return nil
	})
	if keys != n {
		b.Fatalf("%d allocations loaded, want %d", keys, n)
	}
	runtime.GC()
	total := 3*n + 4 + 1 // records, prefix and MAC index entries, markers, schema
	b.ReportMetric(float64(heapInUse()-base)/float64(total), "mirror-B/key")
	b.ReportMetric(float64(data)/float64(n), "alloc-record-B")
	b.ReportMetric(float64(heapInUse()-base)/(1<<20), "mirror-MB")
	runtime.KeepAlive(st)
	_ = st.Close()
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
