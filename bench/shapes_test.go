package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/bench/synth"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
	"github.com/cloudstack-pd/cloudstack-pd/server"
)

// BenchmarkShapes drives the listener and handler in process (as
// benchServer sets them up: the Recorder without a store) under the two
// load shapes of make bench and a light load (4 relays, 8 outstanding), with the generator in process (gen=inproc:
// the CPU reported is both sides') or in a process of its own
// (gen=process: the CPU reported, and a CPU profile, are the server's
// alone, as serve's is measured). A profile of gen=inproc tells the sides
// apart by label:
//
//	go test -run '^$' -bench 'Shapes/gen=process' -cpuprofile /tmp/cpu.out ./bench/
//	go test -run '^$' -bench 'Shapes/gen=inproc' -cpuprofile /tmp/cpu.out ./bench/
//	go tool pprof -tagfocus side=server -top /tmp/cpu.out
func BenchmarkShapes(b *testing.B) {
	const clients = 20000
	plain := benchServer(b, 4, clients)
	// As serve runs it: metrics, and the Recorder writing to a store of
	// the allocations and keeping the last exchanges in memory.
	st, err := allocator.OpenStore(boltstore.Open(filepath.Join(b.TempDir(), "state.db"), boltstore.Options{Create: true}))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if err := synth.Fill(st, synth.Pools(4), clients, 0, time.Unix(1700000000, 0)); err != nil {
		b.Fatal(err)
	}
	rec := server.NewRecorder(st, server.DefaultFlushInterval, nil)
	ctx, cancel := context.WithCancel(b.Context())
	recDone := make(chan struct{})
	go func() { defer close(recDone); rec.Run(ctx) }()
	defer func() { cancel(); <-recDone }()
	serveLike := benchServerWith(b, 4, clients, func(hc *server.HandlerConfig) {
		hc.Metrics, hc.Bindings, hc.Exchanges, hc.Leases = server.NewMetrics(nil), rec, rec, st
	})
	top := b
	var bin string
	for _, gen := range []string{"inproc", "process", "process,server=serve-like"} {
		// make bench's two shapes, and a light load: few packets per wake-up
		shapes := []loadShape{{4, 64}, {128, 128}, {4, 8}}
		for _, sh := range shapes {
			b.Run(fmt.Sprintf("gen=%s/relays=%d,outstanding=%d", gen, sh.sockets, sh.outstanding), func(b *testing.B) {
				srv := plain
				if strings.HasSuffix(gen, "serve-like") {
					srv = serveLike
				}
				f := benchFlags{server: srv.String(), clients: clients, pools: 4,
					outstanding: sh.outstanding, sockets: sh.sockets, count: int64(b.N), timeout: 5 * time.Second}
				var res *benchResult
				var err error
				cpu0, sw0 := selfCPU(), threadSwitches()
				if gen == "inproc" {
					pprof.Do(b.Context(), pprof.Labels("side", "bench"), func(ctx context.Context) {
						res, err = runBench(ctx, f)
					})
				} else {
					if bin == "" {
						bin = testenv.BuildBinary(top, "../cmd/cloudstack-pd")
						cpu0, sw0 = selfCPU(), threadSwitches()
					}
					res, err = benchProcess(b.Context(), bin, f)
				}
				if err != nil {
					b.Fatal(err)
				}
				if res.Drops+res.NoPrefix+res.WrongPrefix != 0 {
					b.Fatalf("%+v", res)
				}
				b.ReportMetric(float64((selfCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/exchange")
				b.ReportMetric(float64(threadSwitches()-sw0)/float64(b.N), "sleeps/exchange")
				b.ReportMetric(res.Rate, "exchanges/s")
			})
		}
	}
}

// benchProcess runs the generator of bench binary bin with f's load.
func benchProcess(ctx context.Context, bin string, f benchFlags) (*benchResult, error) {
	out, err := exec.CommandContext(ctx, bin, "bench", "--server", f.server, "--clients", strconv.Itoa(f.clients),
		"--pools", strconv.Itoa(f.pools), "--sockets", strconv.Itoa(f.sockets), "--outstanding", strconv.Itoa(f.outstanding),
		"--count", strconv.FormatInt(f.count, 10), "--duration", "0", "--warmup", "0", "--timeout", f.timeout.String(), "--json").Output()
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	var r benchResult
	return &r, json.Unmarshal(out, &r)
}

// threadSwitches returns how many times this process's threads went to
// sleep so far (voluntary context switches, Linux; 0 elsewhere): each is
// a wake-up to pay for when work comes again.
func threadSwitches() int64 {
	tasks, _ := filepath.Glob("/proc/self/task/*/status")
	var n int64
	for _, p := range tasks {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "voluntary_ctxt_switches:"); ok {
				x, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += x
			}
		}
	}
	return n
}
