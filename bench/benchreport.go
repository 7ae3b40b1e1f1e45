package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

type benchReportFlags struct {
	doc     string
	cs, kea []string
	reflect []string
	gobench string
	startup []string
	// startupFirst is the start of a store that had never been served:
	// it also makes the server DUID (a write, after the store's check).
	startupFirst string
	command      string
	machine      string
	settings     string
	startupN     int
	// A cluster (docs/ha.md): exchange runs against a server of one,
	// its start-up from etcd, and TestClusterBench's failover and
	// change-to-answer (a JSON file).
	cluster        []string
	clusterStartup []string
	clusterHA      string
	// A storm (bench --storm) against each server.
	stormKea, stormCS string
}

func newBenchReportCmd() *cobra.Command {
	var f benchReportFlags
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Write the results of 'make bench' into docs/BENCHMARKS.md",
		Long: `Report reads the JSON results of 'bench' runs against cloudstack-pd (--cs)
and Kea (--kea), the output of 'go test -bench' (--go-bench) and of 'bench
startup --json' (--startup), and replaces the part of --doc between the
lines "<!-- make bench: begin -->" and "<!-- make bench: end -->" with them:
the medians of the runs, their ratio, each target of issue 7 met or not,
the machine, the command and the date. The rest of --doc is kept as it is.
Without --doc the section goes to standard output.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sec, err := benchReport(f, time.Now())
			if err != nil {
				return err
			}
			if f.doc == "" {
				_, err := io.WriteString(cmd.OutOrStdout(), sec)
				return err
			}
			return replaceSection(f.doc, sec)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.doc, "doc", "", "the Markdown file to update (docs/BENCHMARKS.md)")
	fl.StringSliceVar(&f.cs, "cs", nil, "JSON results of bench runs against cloudstack-pd")
	fl.StringSliceVar(&f.kea, "kea", nil, "JSON results of bench runs against Kea")
	fl.StringSliceVar(&f.reflect, "reflect", nil, "JSON results of bench runs against bench reflect (one per load shape)")
	fl.StringVar(&f.gobench, "go-bench", "", "output of go test -bench")
	fl.StringSliceVar(&f.startup, "startup", nil, "JSON results of bench startup")
	fl.StringVar(&f.startupFirst, "startup-first", "", "JSON result of bench startup on the store's first start (it makes the server DUID), reported beside --startup but not in its median")
	fl.StringVar(&f.command, "command", "make bench", "the command that produced the results")
	fl.StringVar(&f.machine, "machine-load", "", "a file describing what else the machine was doing")
	fl.StringVar(&f.settings, "settings", "", "the load settings, as shown in the report")
	fl.IntVar(&f.startupN, "startup-allocations", 1_000_000, "allocations of the store bench startup measured")
	fl.StringSliceVar(&f.cluster, "cluster", nil, "JSON results of bench runs against a server of a cluster (table in etcd)")
	fl.StringSliceVar(&f.clusterStartup, "cluster-startup", nil, "JSON results of bench startup of a server of a cluster")
	fl.StringVar(&f.clusterHA, "cluster-ha", "", "JSON result of TestClusterBench (failover, change-to-answer)")
	fl.StringVar(&f.stormKea, "storm-kea", "", "JSON result of bench --storm against Kea")
	fl.StringVar(&f.stormCS, "storm-cs", "", "JSON result of bench --storm against cloudstack-pd")
	return cmd
}

const (
	sectionBegin = "<!-- make bench: begin -->"
	sectionEnd   = "<!-- make bench: end -->"
)

func replaceSection(path, sec string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, sectionBegin), strings.Index(s, sectionEnd)
	var out string
	if i < 0 || j < i {
		out = s + "\n" + sectionBegin + "\n" + sec + sectionEnd + "\n"
	} else {
		out = s[:i] + sectionBegin + "\n" + sec + s[j:]
	}
	return os.WriteFile(path, []byte(out), 0o644)
}

func readJSONs[T any](paths []string) ([]T, error) {
	var out []T
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var v T
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianOf[T any](v []T, f func(T) float64) float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = f(x)
	}
	return median(out)
}

// runsOf writes " (n runs)".
func runsOf(n int) string {
	if n == 1 {
		return " (1 run)"
	}
	return fmt.Sprintf(" (%d runs)", n)
}

// loadShape is how the generator's load is spread: over how many relays
// (sockets), with how many exchanges in flight in all.
type loadShape struct{ sockets, outstanding int }

func shapeOf(r benchResult) loadShape { return loadShape{r.Sockets, r.Outstanding} }

// shapesOf returns the load shapes of the runs, fewest relays first.
func shapesOf(runs ...[]benchResult) []loadShape {
	var out []loadShape
	for _, rs := range runs {
		for _, r := range rs {
			if !slices.Contains(out, shapeOf(r)) {
				out = append(out, shapeOf(r))
			}
		}
	}
	slices.SortFunc(out, func(a, b loadShape) int {
		if a.sockets != b.sockets {
			return a.sockets - b.sockets
		}
		return a.outstanding - b.outstanding
	})
	return out
}

// of returns the runs of rs under shape sh, in their order.
func (sh loadShape) of(rs []benchResult) []benchResult {
	var out []benchResult
	for _, r := range rs {
		if shapeOf(r) == sh {
			out = append(out, r)
		}
	}
	return out
}

func (sh loadShape) name() string {
	return fmt.Sprintf("%d relays, %d outstanding", sh.sockets, sh.outstanding)
}

// title names the shape and what it stands for.
func (sh loadShape) title() string {
	per := float64(sh.outstanding) / float64(max(sh.sockets, 1))
	switch {
	case per >= 4:
		return fmt.Sprintf("%s: a few relays, each with %.0f exchanges in flight (bursts from one source)", sh.name(), per)
	case per <= 1:
		return fmt.Sprintf("%s: many relays, one exchange in flight each (every packet from another source: a large cloud)", sh.name())
	}
	return fmt.Sprintf("%s: %.1f exchanges in flight per relay", sh.name(), per)
}

// shapesIntro says what the load shapes are.
const shapesIntro = `Each generator socket plays one relay (a router: its own source port on ::1,
its own link-address per VLAN). A cloud has a few hundred routers, each
relaying the DHCPv6 of many VMs: a server there sees many relays with a few
exchanges each in flight, not a few relays sending bursts. Each relay keeps
its source port from run to run (--relay-port), as a real relay does, so
that renewals through it change no binding. The shapes run one after the
other in the same run (the first run of the second shape finds every
client behind another relay, and every server records the change),
alternating Kea and cloudstack-pd.

`

// benchSummary is the medians over runs of one server.
type benchSummary struct {
	runs                    int
	rate, p50, p90, p99, mx float64
	drops, noPrefix, wrong  float64
	serverCPU, benchCPU     float64
}

func summarize(rs []benchResult) benchSummary {
	return benchSummary{
		runs:      len(rs),
		rate:      medianOf(rs, func(r benchResult) float64 { return r.Rate }),
		p50:       medianOf(rs, func(r benchResult) float64 { return r.Latency.P50 }),
		p90:       medianOf(rs, func(r benchResult) float64 { return r.Latency.P90 }),
		p99:       medianOf(rs, func(r benchResult) float64 { return r.Latency.P99 }),
		mx:        medianOf(rs, func(r benchResult) float64 { return r.Latency.Max }),
		drops:     medianOf(rs, func(r benchResult) float64 { return float64(r.Drops) }),
		noPrefix:  medianOf(rs, func(r benchResult) float64 { return float64(r.NoPrefix) }),
		wrong:     medianOf(rs, func(r benchResult) float64 { return float64(r.WrongPrefix) }),
		serverCPU: medianOf(rs, func(r benchResult) float64 { return r.ServerCPU }),
		benchCPU:  medianOf(rs, func(r benchResult) float64 { return r.BenchCPU }),
	}
}

func met(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**not met**"
}

var allocsRe = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+.*?(\d+) allocs/op`)

func benchReport(f benchReportFlags, now time.Time) (string, error) {
	css, err := readJSONs[benchResult](f.cs)
	if err != nil {
		return "", err
	}
	keas, err := readJSONs[benchResult](f.kea)
	if err != nil {
		return "", err
	}
	ups, err := readJSONs[benchStartup](f.startup)
	if err != nil {
		return "", err
	}
	var first []benchStartup
	if f.startupFirst != "" {
		if first, err = readJSONs[benchStartup]([]string{f.startupFirst}); err != nil {
			return "", err
		}
	}
	var gobench []byte
	if f.gobench != "" {
		if gobench, err = os.ReadFile(f.gobench); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "_Generated by `%s` on %s. Do not edit between the markers: the next run rewrites it._\n\n",
		f.command, now.UTC().Format("2006-01-02 15:04 MST"))
	b.WriteString("### Machine\n\n")
	fmt.Fprintf(&b, "- CPUs (`nproc`): %d, model: %s\n", runtime.NumCPU(), cpuModel())
	fmt.Fprintf(&b, "- memory: %s; kernel %s; %s; Kea %s\n", memTotal(), commandLine("uname", "-r"), runtime.Version(), commandLine("kea-dhcp6", "-v"))
	if f.machine != "" {
		if data, err := os.ReadFile(f.machine); err == nil {
			b.WriteString("- what else ran (load average at the start, then the busiest processes):\n\n```\n")
			b.Write(bytes.TrimSpace(data))
			b.WriteString("\n```\n")
		}
	}
	b.WriteString("\n")

	var reflects []benchResult
	if len(f.reflect) > 0 {
		if reflects, err = readJSONs[benchResult](f.reflect); err != nil {
			return "", err
		}
	}
	if len(css) > 0 && len(keas) > 0 {
		fmt.Fprintf(&b, "### Relayed exchanges, %s reservations\n\n", thousands(css[0].Clients))
		if f.settings != "" {
			fmt.Fprintf(&b, "Load: %s, under each load shape below. Medians of the runs, Kea and cloudstack-pd alternating.\n\n", f.settings)
		}
		shapes := shapesOf(keas, css)
		b.WriteString(shapesIntro)
		var targets strings.Builder
		for _, sh := range shapes {
			kr, cr, rr := sh.of(keas), sh.of(css), sh.of(reflects)
			if len(kr) == 0 || len(cr) == 0 {
				continue
			}
			kea, cs := summarize(kr), summarize(cr)
			fmt.Fprintf(&b, "#### %s\n\n", sh.title())
			b.WriteString("| server | exchanges/s | drops | no prefix | wrong prefix | p50 ms | p90 ms | p99 ms | max ms | server CPU µs/exchange | bench CPU µs/exchange |\n")
			b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
			row := func(name string, s benchSummary) {
				fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.0f | %.0f | %.3f | %.3f | %.3f | %.3f | %.1f | %.1f |\n",
					name, s.rate, s.drops, s.noPrefix, s.wrong, s.p50, s.p90, s.p99, s.mx, s.serverCPU, s.benchCPU)
			}
			row("Kea 2.2"+runsOf(len(kr)), kea)
			row("cloudstack-pd"+runsOf(len(cr)), cs)
			var refl benchSummary
			if len(rr) > 0 {
				refl = summarize(rr)
				row("bench reflect, the generator's ceiling"+runsOf(len(rr)), refl)
			}
			ratio := 0.0
			if kea.rate > 0 {
				ratio = cs.rate / kea.rate
			}
			fmt.Fprintf(&b, "\nRatio cloudstack-pd / Kea: **%.2f×**\n\n", ratio)
			b.WriteString("Every run:\n\n```\n")
			for i := range max(len(cr), len(kr)) {
				if i < len(kr) {
					r := kr[i]
					fmt.Fprintf(&b, "kea           run %d: %8.0f/s drops %d p99 %.3fms max %.3fms CPU %.1fµs\n", i+1, r.Rate, r.Drops, r.Latency.P99, r.Latency.Max, r.ServerCPU)
				}
				if i < len(cr) {
					r := cr[i]
					fmt.Fprintf(&b, "cloudstack-pd run %d: %8.0f/s drops %d p99 %.3fms max %.3fms CPU %.1fµs\n", i+1, r.Rate, r.Drops, r.Latency.P99, r.Latency.Max, r.ServerCPU)
				}
			}
			b.WriteString("```\n\n")
			var drops int64
			for _, r := range cr {
				drops += r.Drops
			}
			name := sh.name()
			fmt.Fprintf(&targets, "| %s: exchanges/s ≥ 3× Kea's | %.2f× | %s |\n", name, ratio, met(ratio >= 3))
			fmt.Fprintf(&targets, "| %s: no drops | %d drops in %d runs | %s |\n", name, drops, len(cr), met(drops == 0))
			fmt.Fprintf(&targets, "| %s: p99 ≤ Kea's | %.3f ms vs %.3f ms | %s |\n", name, cs.p99, kea.p99, met(cs.p99 <= kea.p99))
			if len(rr) > 0 && refl.serverCPU > 0 {
				fmt.Fprintf(&targets, "| %s: serve's CPU per exchange ≤ 2× bench reflect's | %.1f µs vs %.1f µs (%.2f×) | %s |\n",
					name, cs.serverCPU, refl.serverCPU, cs.serverCPU/refl.serverCPU, met(cs.serverCPU <= 2*refl.serverCPU))
			}
		}
		b.WriteString("| target (issues 7 and 16) | measured | |\n|---|---|---|\n")
		b.WriteString(targets.String())
		if len(ups) > 0 {
			ready := medianOf(ups, func(u benchStartup) float64 { return u.ReadySeconds })
			peak := medianOf(ups, func(u benchStartup) float64 { return u.PeakRSSMB })
			fmt.Fprintf(&b, "| %s allocations: ready ≤ 2 s | %.2f s | %s |\n", thousands(f.startupN), ready, met(ready <= 2))
			fmt.Fprintf(&b, "| %s allocations: resident memory < 400 MB | peak %.0f MB | %s |\n", thousands(f.startupN), peak, met(peak < 400))
			fmt.Fprintf(&b, "| %s allocations: ready < 1 s with < 200 MB resident (issue 16) | %.2f s, peak %.0f MB | %s |\n", thousands(f.startupN), ready, peak, met(ready < 1 && peak < 200))
		}
		if worst, ok := handleAllocs(gobench); ok {
			fmt.Fprintf(&b, "| ≤ 10 allocations per answered packet | %d (BenchmarkHandle, worst case) | %s |\n", worst, met(worst <= 10))
		}
		b.WriteString("\n")
	}
	if err := stormReport(&b, f); err != nil {
		return "", err
	}
	if len(ups) > 0 {
		fmt.Fprintf(&b, "### Start-up with %s allocations (`bench startup`)\n\n", thousands(f.startupN))
		b.WriteString("| run | ready s | peak RSS MB | RSS MB after 1 s | anonymous MB | file MB |\n|---:|---:|---:|---:|---:|---:|\n")
		for _, u := range first {
			fmt.Fprintf(&b, "| first start (not in the median) | %.3f | %.0f | %.0f | %.0f | %.0f |\n", u.ReadySeconds, u.PeakRSSMB, u.RSSMB, u.AnonMB, u.FileMB)
		}
		for i, u := range ups {
			fmt.Fprintf(&b, "| %d | %.3f | %.0f | %.0f | %.0f | %.0f |\n", i+1, u.ReadySeconds, u.PeakRSSMB, u.RSSMB, u.AnonMB, u.FileMB)
		}
		if len(first) > 0 {
			b.WriteString("\nThe first start of a store that was never served also makes and stores the server's DUID, a write, which waits for the check of the store that runs once the table is loaded; the targets are the median of the starts after it, which find their DUID stored, as every restart of a server does.\n")
		}
		b.WriteString("\n")
	}
	if err := clusterReport(&b, f, css); err != nil {
		return "", err
	}
	if f.gobench != "" {
		var lines []string
		sc := bufio.NewScanner(bytes.NewReader(gobench))
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "Benchmark") || strings.HasPrefix(l, "pkg:") {
				lines = append(lines, l)
			}
		}
		if len(lines) > 0 {
			b.WriteString("### Go benchmarks\n\n```\n" + strings.Join(lines, "\n") + "\n```\n\n")
		}
	}
	return b.String(), nil
}

// handleAllocs returns the largest allocs/op of the answered cases of
// BenchmarkHandle (the median over -count repetitions of each case) in
// the output of go test -bench.
func handleAllocs(data []byte) (int, bool) {
	byCase := map[string][]float64{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		m := allocsRe.FindStringSubmatch(sc.Text())
		if m == nil || !strings.HasPrefix(m[1], "BenchmarkHandle/") {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		byCase[m[1]] = append(byCase[m[1]], float64(n))
	}
	worst, ok := 0, false
	for _, v := range byCase {
		worst, ok = max(worst, int(median(v))), true
	}
	return worst, ok
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() string {
	data, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return fmt.Sprintf("%.1f GiB", kb/(1<<20))
		}
	}
	return "unknown"
}

func commandLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "(" + name + " not found)"
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

// thousands writes n with commas: 1,000,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// clusterHA is what TestClusterBench measured (cmd/cloudstack-pd).
type clusterHA struct {
	Servers      int       `json:"servers"`
	LeaseTTL     string    `json:"lease_ttl"`
	ChangeMS     []float64 `json:"change_to_answer_ms"`
	FailoverS    []float64 `json:"failover_s"`
	FailoverSync []float64 `json:"failover_to_sync_s"`
}

// clusterReport writes the cluster section: exchanges against a server of
// a cluster beside the single server of the same run, start-up from etcd,
// failover and change-to-answer, each against issue 12's targets.
func clusterReport(b *strings.Builder, f benchReportFlags, standalone []benchResult) error {
	cls, err := readJSONs[benchResult](f.cluster)
	if err != nil {
		return err
	}
	ups, err := readJSONs[benchStartup](f.clusterStartup)
	if err != nil {
		return err
	}
	var ha *clusterHA
	if f.clusterHA != "" {
		hs, err := readJSONs[clusterHA]([]string{f.clusterHA})
		if err != nil {
			return err
		}
		ha = &hs[0]
	}
	if len(cls) == 0 && len(ups) == 0 && ha == nil {
		return nil
	}
	b.WriteString("### A cluster: the table in etcd (docs/ha.md)\n\n")
	b.WriteString("| target (issue 12) | measured | |\n|---|---|---|\n")
	if len(cls) > 0 {
		// the single server's runs under the cluster's load shape
		standalone = shapeOf(cls[0]).of(standalone)
	}
	if len(cls) > 0 && len(standalone) > 0 {
		c, s := summarize(cls), summarize(standalone)
		// Each cluster run follows a single server's run in the same
		// round: the ratio of each pair, then their median, so that the
		// machine's load drifting between rounds does not count.
		var ratios []float64
		for i := range min(len(cls), len(standalone)) {
			if standalone[i].Rate > 0 {
				ratios = append(ratios, cls[i].Rate/standalone[i].Rate)
			}
		}
		ratio := median(ratios)
		fmt.Fprintf(b, "| exchanges/s of a server of a cluster ≥ 0.9 × a single server's, same run | median of the %d rounds' ratios %.2f× (each round: %s); medians %.0f/s vs %.0f/s, p99 %.3f ms vs %.3f ms, server CPU %.1f vs %.1f µs/exchange (after a warm-up that recorded every client's binding, in etcd and in bbolt) | %s |\n",
			len(ratios), ratio, floats2(ratios), c.rate, s.rate, c.p99, s.p99, c.serverCPU, s.serverCPU, met(ratio >= 0.9))
	}
	if len(ups) > 0 {
		ready := medianOf(ups, func(u benchStartup) float64 { return u.ReadySeconds })
		peak := medianOf(ups, func(u benchStartup) float64 { return u.PeakRSSMB })
		fmt.Fprintf(b, "| %s allocations loaded from etcd: ready < 10 s | %.2f s (median of %d) | %s |\n", thousands(f.startupN), ready, len(ups), met(ready < 10))
		fmt.Fprintf(b, "| %s allocations loaded from etcd: RSS < 500 MB | peak %.0f MB | %s |\n", thousands(f.startupN), peak, met(peak < 500))
	}
	if ha != nil {
		slices.Sort(ha.ChangeMS)
		q := func(v []float64, p float64) float64 {
			if len(v) == 0 {
				return 0
			}
			return v[min(len(v)-1, int(p*float64(len(v))))]
		}
		fmt.Fprintf(b, "| a change written anywhere answered by every server within 1 s | p50 %.0f ms, p95 %.0f ms, max %.0f ms (%d changes, %d servers) | %s |\n",
			q(ha.ChangeMS, 0.5), q(ha.ChangeMS, 0.95), q(ha.ChangeMS, 1), len(ha.ChangeMS), ha.Servers, met(len(ha.ChangeMS) > 0 && q(ha.ChangeMS, 1) < 1000))
		worst := 0.0
		for _, v := range ha.FailoverSync {
			worst = max(worst, v)
		}
		fmt.Fprintf(b, "| syncer killed (SIGKILL): another syncs within 10 s | elected after %s s, synced after %s s (lease-ttl %s) | %s |\n",
			floats(ha.FailoverS), floats(ha.FailoverSync), ha.LeaseTTL, met(len(ha.FailoverSync) > 0 && worst < 10))
	}
	b.WriteString("\n")
	if len(ups) > 0 {
		b.WriteString("| start-up from etcd, run | ready s | peak RSS MB | RSS MB after 1 s | anonymous MB | file MB |\n|---:|---:|---:|---:|---:|---:|\n")
		for i, u := range ups {
			fmt.Fprintf(b, "| %d | %.3f | %.0f | %.0f | %.0f | %.0f |\n", i+1, u.ReadySeconds, u.PeakRSSMB, u.RSSMB, u.AnonMB, u.FileMB)
		}
		b.WriteString("\n")
	}
	if len(cls) > 0 {
		b.WriteString("Every run of the cluster's server:\n\n```\n")
		for i, r := range cls {
			fmt.Fprintf(b, "cluster run %d: %8.0f/s drops %d p99 %.3fms max %.3fms\n", i+1, r.Rate, r.Drops, r.Latency.P99, r.Latency.Max)
		}
		b.WriteString("```\n\n")
	}
	return nil
}

// floats2 writes v with two decimals, comma-separated.
func floats2(v []float64) string {
	var parts []string
	for _, x := range v {
		parts = append(parts, strconv.FormatFloat(x, 'f', 2, 64))
	}
	return strings.Join(parts, ", ")
}

func floats(v []float64) string {
	var parts []string
	for _, x := range v {
		parts = append(parts, strconv.FormatFloat(x, 'f', 1, 64))
	}
	return strings.Join(parts, ", ")
}

// stormReport writes the storm section: each server's storm, and issue
// 16's target for cloudstack-pd's.
func stormReport(b *strings.Builder, f benchReportFlags) error {
	if f.stormCS == "" {
		return nil
	}
	paths := []string{f.stormCS}
	names := []string{"cloudstack-pd"}
	if f.stormKea != "" {
		paths, names = append([]string{f.stormKea}, paths...), append([]string{"Kea 2.2"}, names...)
	}
	rs, err := readJSONs[stormResult](paths)
	if err != nil {
		return err
	}
	cs := rs[len(rs)-1]
	fmt.Fprintf(b, "### A storm: %s clients within %.1f s\n\n", thousands(cs.Clients), cs.Window)
	b.WriteString("Every client sends its Solicit once, paced evenly over the window (a relay that rebooted, a pod's VMs restarted together), " +
		"then its Request as soon as its Advertise is in; an unanswered message is sent again as a client does (same transaction id, " +
		"after 1 s ±10 %, doubled each time). Kernel drops are the datagrams the kernel dropped at the server's socket (its receive buffer full); " +
		"server drops the increase of cloudstack-pd's drop counters (`/metrics`).\n\n")
	b.WriteString("| server | answered | unanswered | last Reply s | p50 ms | p99 ms | Solicits sent again | Requests sent again | kernel drops | server drops | server CPU s |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n")
	for i, r := range rs {
		fmt.Fprintf(b, "| %s | %d | %d | %.3f | %.1f | %.1f | %d | %d | %d | %s | %.2f |\n", names[i], r.Answered, r.Unanswered+r.NoPrefix+r.WrongPrefix,
			r.LastReply, r.Latency.P50, r.Latency.P99, r.SolicitRetrans, r.RequestRetrans, r.KernelDrops, serverDrops(r.ServerDrops), r.ServerCPU)
	}
	var counted float64
	for _, v := range cs.ServerDrops {
		counted += v
	}
	all := cs.Answered == int64(cs.Clients)
	fmt.Fprintf(b, "\n| target (issue 16) | measured | |\n|---|---|---|\n")
	fmt.Fprintf(b, "| a storm: every exchange answered | %d of %d, the last Reply after %.3f s | %s |\n", cs.Answered, cs.Clients, cs.LastReply, met(all))
	fmt.Fprintf(b, "| a storm: no drops, counted by the server or at its socket | %s; %d at its socket | %s |\n",
		serverDrops(cs.ServerDrops), cs.KernelDrops, met(counted == 0 && cs.ServerDrops != nil && cs.KernelDrops == 0))
	b.WriteString("\n")
	return nil
}

// serverDrops writes the drop counters that rose, or "none".
func serverDrops(m map[string]float64) string {
	if m == nil {
		return "(not read)"
	}
	var parts []string
	for _, k := range slices.Sorted(mapKeys(m)) {
		parts = append(parts, fmt.Sprintf("`%s` %.0f", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
