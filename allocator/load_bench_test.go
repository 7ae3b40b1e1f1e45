package allocator_test

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/bench/synth"
)

// BenchmarkLoadTable1M measures what serve does at start-up before it can
// answer: Store.LoadTable (read every allocation record, build the Table)
// on a store of 1,000,000 allocations over 4 pools (allocatortest's
// synthetic clients), made once in a temporary folder before the timer
// starts.
//
// peak-heap-MB and peak-sys-MB are sampled as in BenchmarkSync100k;
// peak-rss-MB is the process's resident-set high-water mark (VmHWM, reset
// through /proc/self/clear_refs after the store is made), which includes
// the store's pages mapped by bbolt. table-heap-MB is the heap that stays
// in use while the table lives (after a GC).
func BenchmarkLoadTable1M(b *testing.B) {
	benchmarkLoadTable(b, 1_000_000)
}

func benchmarkLoadTable(b *testing.B, n int) {
	pools := synth.Pools(4)
	st, err := allocator.OpenStore(boltstore.Open(filepath.Join(b.TempDir(), "state.db"), boltstore.Options{Create: true, NoSync: true}))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if err := synth.Fill(st, pools, n, 0, time.Unix(1700000000, 0)); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	debug.FreeOSMemory()
	base := heapInUse()
	resetPeakRSS()
	peak := startPeakMemory()
	var tbl *allocator.Table
	for b.Loop() {
		tbl = nil
		tbl, _, err = st.LoadTable(pools)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	peak.report(b)
	if got := tbl.Len(); got != n {
		b.Fatalf("%d allocations loaded, want %d", got, n)
	}
	if rss := peakRSS(); rss > 0 {
		b.ReportMetric(float64(rss)/(1<<20), "peak-rss-MB")
	}
	runtime.GC()
	b.ReportMetric(float64(heapInUse()-base)/(1<<20), "table-heap-MB")
	runtime.KeepAlive(tbl)
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// resetPeakRSS resets VmHWM (Linux: "5" in /proc/self/clear_refs).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS returns VmHWM in bytes, 0 when unknown.
func peakRSS() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmHWM:")); ok {
			kb, _ := strconv.ParseUint(string(bytes.TrimSuffix(bytes.TrimSpace(v), []byte(" kB"))), 10, 64)
			return kb << 10
		}
	}
	return 0
}
