package allocator_test

import (
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
)

// peakMemory samples the Go runtime's memory every few milliseconds until
// stopped, and keeps the peaks of the heap in use (live and not yet swept
// objects) and of all memory the runtime mapped (MemStats.Sys).
type peakMemory struct {
	stop chan struct{}
	done sync.WaitGroup
	heap uint64
	sys  uint64
}

func startPeakMemory() *peakMemory {
	p := &peakMemory{stop: make(chan struct{})}
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/total:bytes"}}
	read := func() {
		metrics.Read(samples)
		p.heap = max(p.heap, samples[0].Value.Uint64())
		p.sys = max(p.sys, samples[1].Value.Uint64())
	}
	p.done.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			read()
			select {
			case <-p.stop:
				read()
				return
			case <-tick.C:
			}
		}
	})
	return p
}

func (p *peakMemory) report(b *testing.B) {
	close(p.stop)
	p.done.Wait()
	b.ReportMetric(float64(p.heap)/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(p.sys)/(1<<20), "peak-sys-MB")
}

// cpuTime is the CPU time (user and system) the process has used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter sums the process's CPU time over the timed parts of a
// benchmark: start and stop it with the timer.
type cpuMeter struct {
	total time.Duration
	from  time.Duration
}

func (m *cpuMeter) start(b *testing.B) { m.from = cpuTime(b) }
func (m *cpuMeter) stop(b *testing.B)  { m.total += cpuTime(b) - m.from }

// report adds cpu-s/op: the CPU seconds of all the process's threads
// (the fake's included) per operation.
func (m *cpuMeter) report(b *testing.B) {
	b.ReportMetric(m.total.Seconds()/float64(b.N), "cpu-s/op")
}

// BenchmarkSync100k syncs 100,000 synthetic VMs (110,000 NICs; each VM's
// default NIC qualifies, 99,900 get a prefix: every thousandth VM is
// Destroyed) over 4 pods from the fake CloudStack, through the real client
// (cloudstack-go and its transport), 500 VMs a page, into a store in a
// temporary folder with fsync on, as serve and sync run it:
//
//   - initial: into an empty store (every NIC added, one transaction);
//   - steady: the same listings again (nothing changes, nothing written).
//
// The fake runs in the same process, so time and memory include its work
// of generating the pages. peak-heap-MB is the peak of the heap's objects
// (live and not yet swept), peak-sys-MB the peak of all memory the Go
// runtime had mapped, both sampled every 5 ms; cpu-s/op the CPU time of
// the whole process (user and system, every thread) per sync.
func BenchmarkSync100k(b *testing.B) {
	const pods, vms = 4, 100_000
	fake := cloudstacktest.NewServer(csKey, csSecret)
	defer fake.Close()
	fake.SetPods(cloudstacktest.SyntheticPods(pods, vms))
	c := cloudstack.New(fake.URL, csKey, csSecret, cloudstack.Options{Logger: slog.New(slog.DiscardHandler)})
	var pools []allocator.Pool
	for k := range pods {
		pools = append(pools, allocator.Pool{
			Name: cloudstacktest.SyntheticPodID(k), PrefixLen: 60, InterfaceID: fmt.Sprintf("VLAN%d", 2700+k),
			Prefix: netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x00::/40", 0x10+k)),
		})
	}
	open := func(b *testing.B) *allocator.Store {
		st, err := allocator.OpenStore(boltstore.Open(filepath.Join(b.TempDir(), "state.db"), boltstore.Options{Create: true}))
		if err != nil {
			b.Fatal(err)
		}
		return st
	}
	check := func(b *testing.B, rep *allocator.SyncReport, added, kept int) {
		if tot := rep.Totals(); tot.Added != added || tot.Kept != kept {
			b.Fatalf("totals %+v, want %d added, %d kept", tot, added, kept)
		}
	}

	b.Run("initial", func(b *testing.B) {
		var (
			peak *peakMemory
			cpu  cpuMeter
		)
		for b.Loop() {
			b.StopTimer()
			st := open(b)
			runtime.GC()
			if peak == nil {
				peak = startPeakMemory()
			}
			b.StartTimer()
			cpu.start(b)
			rep, err := st.Sync(b.Context(), pools, c, allocator.SyncOptions{})
			cpu.stop(b)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			check(b, rep, vms-vms/1000, 0)
			st.Close()
			b.StartTimer()
		}
		peak.report(b)
		cpu.report(b)
		b.ReportMetric(float64(vms)*float64(b.N)/b.Elapsed().Seconds(), "VMs/s")
	})

	b.Run("steady", func(b *testing.B) {
		st := open(b)
		defer st.Close()
		if _, err := st.Sync(b.Context(), pools, c, allocator.SyncOptions{}); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		peak := startPeakMemory()
		var cpu cpuMeter
		for b.Loop() {
			cpu.start(b)
			rep, err := st.Sync(b.Context(), pools, c, allocator.SyncOptions{})
			cpu.stop(b)
			if err != nil {
				b.Fatal(err)
			}
			check(b, rep, 0, vms-vms/1000)
		}
		peak.report(b)
		cpu.report(b)
		b.ReportMetric(float64(vms)*float64(b.N)/b.Elapsed().Seconds(), "VMs/s")
	})
}
