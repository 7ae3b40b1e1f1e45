package cloudstack

import (
	"sync"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
)

// BenchmarkListPodNICs lists 100,000 synthetic VMs (110,000 NICs) over 4
// pods from the fake, 500 VMs a page: 200 signed requests, each answered
// with about 1 MB of JSON. The fake runs in the same process, so ns/op and
// B/op include its work of generating the pages (small next to decoding:
// it appends into a pooled buffer).
func BenchmarkListPodNICs(b *testing.B) {
	const pods, vms = 4, 100_000
	fake := cloudstacktest.NewServer(apiKey, secret)
	defer fake.Close()
	fake.SetPods(cloudstacktest.SyntheticPods(pods, vms))
	c := newClient(fake, Options{})
	ids := make([]string, pods)
	for k := range pods {
		ids[k] = cloudstacktest.SyntheticPodID(k)
	}
	check := func(b *testing.B, total int) {
		if want := vms + vms/10; total != want {
			b.Fatalf("%d NICs, want %d", total, want)
		}
	}

	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			total := 0
			for _, id := range ids {
				nics, err := c.ListPodNICs(b.Context(), id)
				if err != nil {
					b.Fatal(err)
				}
				total += len(nics)
			}
			check(b, total)
		}
		b.ReportMetric(float64(vms)*float64(b.N)/b.Elapsed().Seconds(), "VMs/s")
	})

	b.Run("pods-concurrently", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var (
				wg    sync.WaitGroup
				mu    sync.Mutex
				total int
			)
			for _, id := range ids {
				wg.Go(func() {
					nics, err := c.ListPodNICs(b.Context(), id)
					if err != nil {
						b.Error(err)
						return
					}
					mu.Lock()
					total += len(nics)
					mu.Unlock()
				})
			}
			wg.Wait()
			check(b, total)
		}
		b.ReportMetric(float64(vms)*float64(b.N)/b.Elapsed().Seconds(), "VMs/s")
	})
}
