package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/bench/synth"
)

// A storm (--storm): every one of --clients clients sends its Solicit
// within --storm-window, paced evenly over it (a relay that rebooted, or a
// pod's VMs restarted together), and its Request as soon as its Advertise
// is in. Nothing is dropped: a message unanswered after its retransmission
// time is sent again, as a client does (RFC 8415 section 15: the same
// transaction id, the time doubled each try from --timeout, ±10 %), until
// the storm's --duration is over. The result is the time from the first
// Solicit to the last Reply, how many clients got their prefix, how many
// retransmissions that took, and what the server dropped: its own counters
// (--server-metrics, cloudstack-pd's /metrics) and the kernel's at its
// socket (full receive buffer, /proc/net/udp6).

// stormResult is what a storm measured.
type stormResult struct {
	Clients int     `json:"clients"`
	Window  float64 `json:"window_s"` // the Solicits' pacing window
	// Answered clients got a Reply with their prefix; NoPrefix and
	// WrongPrefix a Reply without it; Unanswered none before the end.
	Answered    int64 `json:"answered"`
	NoPrefix    int64 `json:"no_prefix"`
	WrongPrefix int64 `json:"wrong_prefix"`
	Unanswered  int64 `json:"unanswered"`
	// LastReply is the time from the first Solicit sent to the last
	// Reply received, in seconds.
	LastReply float64 `json:"last_reply_s"`
	// Retransmissions of Solicits and Requests.
	SolicitRetrans int64 `json:"solicit_retransmissions"`
	RequestRetrans int64 `json:"request_retransmissions"`
	// Unmatched answers: late answers to a message sent again, or unknown.
	Unmatched  int64 `json:"unmatched"`
	Malformed  int64 `json:"malformed"`
	SendErrors int64 `json:"send_errors"`
	// Latency is Solicit (the first one) to Reply.
	Latency benchPercentiles `json:"latency_ms"`
	// ServerDrops are the increases of the server's drop counters over the
	// storm, by series (--server-metrics); KernelDrops the datagrams the
	// kernel dropped at the server's socket (-1: unknown).
	ServerDrops map[string]float64 `json:"server_drops"`
	KernelDrops int64              `json:"kernel_drops"`
	ServerCPU   float64            `json:"server_cpu_s,omitempty"`
	BenchCPU    float64            `json:"bench_cpu_s"`
	ServerID    string             `json:"server_id"`
}

func printStorm(w io.Writer, r *stormResult) {
	fmt.Fprintf(w, "storm        %d clients, Solicits paced over %.1fs\n", r.Clients, r.Window)
	fmt.Fprintf(w, "answered     %d with their prefix (no prefix %d, wrong prefix %d), unanswered %d\n", r.Answered, r.NoPrefix, r.WrongPrefix, r.Unanswered)
	fmt.Fprintf(w, "last reply   %.3fs after the first Solicit\n", r.LastReply)
	fmt.Fprintf(w, "retransmits  %d Solicits, %d Requests (unmatched answers %d)\n", r.SolicitRetrans, r.RequestRetrans, r.Unmatched)
	fmt.Fprintf(w, "latency      p50 %.3fms  p90 %.3fms  p99 %.3fms  max %.3fms (first Solicit to Reply)\n", r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max)
	drops := "kernel (the server socket's receive buffer) " + strconv.FormatInt(r.KernelDrops, 10)
	if r.KernelDrops < 0 {
		drops = "kernel unknown"
	}
	for _, k := range slices.Sorted(mapKeys(r.ServerDrops)) {
		drops += fmt.Sprintf(", %s %.0f", k, r.ServerDrops[k])
	}
	fmt.Fprintf(w, "drops        %s\n", drops)
	fmt.Fprintf(w, "cpu          bench %.2fs, server %.2fs\n", r.BenchCPU, r.ServerCPU)
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// stormRun is what the storm's shards share.
type stormRun struct {
	flags    benchFlags
	gen      *benchGen
	base     time.Time
	end      int64 // ns since base: the storm stops here, answered or not
	perStart int64 // ns between two Solicits (all shards together)
	lastRep  atomic.Int64
	left     atomic.Int64 // clients not done
}

func (r *stormRun) now() int64 { return int64(time.Since(r.base)) }

// stormShard is one relay's socket and its clients: slot i is client
// index + i*step, started at (index + i*step) * perStart.
type stormShard struct {
	benchShard
	sr      *stormRun
	started int // slots started so far
	tries   []uint8
	rt      []int64 // each slot's current retransmission time
	done    int

	answered, noPrefix, wrongPrefix, solRe, reqRe int64
}

// runStorm plays the storm.
func runStorm(ctx context.Context, f benchFlags) (*stormResult, error) {
	srv, err := netip.ParseAddrPort(f.server)
	if err != nil {
		return nil, fmt.Errorf("--server %q: %w", f.server, err)
	}
	switch {
	case f.clients < 1:
		return nil, errors.New("--clients must be at least 1")
	case f.pools < 1 || f.pools > synth.MaxPools:
		return nil, fmt.Errorf("--pools must be 1 to %d", synth.MaxPools)
	case f.sockets < 1 || f.sockets > benchMaxSockets:
		return nil, fmt.Errorf("--sockets must be 1 to %d", benchMaxSockets)
	case (f.clients+f.sockets-1)/f.sockets > benchMaxSlots:
		return nil, fmt.Errorf("--storm: at most %d clients per socket: give --sockets %d or more", benchMaxSlots, (f.clients+benchMaxSlots-1)/benchMaxSlots)
	case f.stormWindow <= 0:
		return nil, errors.New("--storm-window must be positive")
	case f.duration <= f.stormWindow:
		return nil, errors.New("--storm: --duration (how long the storm may take) must be longer than --storm-window")
	case f.timeout <= 0:
		return nil, errors.New("--timeout must be positive")
	}
	gen, err := newBenchGen(f.pools, f.first, f.clients)
	if err != nil {
		return nil, err
	}
	run := &stormRun{flags: f, gen: gen, perStart: int64(f.stormWindow) / int64(f.clients)}
	run.left.Store(int64(f.clients))
	// the closed loop's run, for the parts of benchShard the storm reuses
	brun := &benchRun{flags: f, gen: gen}
	brun.stopAt.Store(1<<63 - 1)
	var shards []*stormShard
	defer func() {
		for _, s := range shards {
			s.conn.Close()
		}
	}()
	for i := range f.sockets {
		c, err := net.DialUDP("udp6", nil, net.UDPAddrFromAddrPort(srv))
		if err != nil {
			return nil, fmt.Errorf("open a socket towards %s: %w", srv, err)
		}
		_ = c.SetReadBuffer(4 << 20)
		_ = c.SetWriteBuffer(4 << 20)
		n := f.clients / f.sockets
		if i < f.clients%f.sockets {
			n++
		}
		bs, err := newBenchShard(brun, c, i, n)
		if err != nil {
			c.Close()
			return nil, err
		}
		shards = append(shards, &stormShard{benchShard: *bs, sr: run, tries: make([]uint8, n), rt: make([]int64, n)})
	}
	stop := context.AfterFunc(ctx, func() {
		for _, s := range shards {
			_ = s.conn.SetReadDeadline(time.Unix(1, 0))
		}
	})
	defer stop()

	kernel0 := socketDrops(srv)
	metrics0, err := readDropCounters(f.serverMetrics)
	if err != nil {
		return nil, err
	}
	cpu0, scpu0 := selfCPU(), procCPU(f.serverPID)
	run.base = time.Now()
	run.end = int64(f.duration)
	var wg sync.WaitGroup
	for _, s := range shards {
		wg.Go(func() { s.storm(ctx) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	cpu, scpu := selfCPU()-cpu0, procCPU(f.serverPID)-scpu0
	res := &stormResult{Clients: f.clients, Window: f.stormWindow.Seconds(), KernelDrops: -1,
		BenchCPU: cpu.Seconds(), ServerCPU: scpu.Seconds()}
	// Answers still in flight to the server's counters: give its
	// workers a moment before reading them.
	time.Sleep(100 * time.Millisecond)
	if k0, k1 := kernel0, socketDrops(srv); k0 >= 0 && k1 >= 0 {
		res.KernelDrops = k1 - k0
	}
	if f.serverMetrics != "" {
		metrics1, err := readDropCounters(f.serverMetrics)
		if err != nil {
			return nil, err
		}
		res.ServerDrops = map[string]float64{}
		for k, v := range metrics1 {
			if d := v - metrics0[k]; d != 0 {
				res.ServerDrops[k] = d
			}
		}
	}
	var lat latencyHist
	for _, s := range shards {
		res.Answered += s.answered
		res.NoPrefix += s.noPrefix
		res.WrongPrefix += s.wrongPrefix
		res.SolicitRetrans += s.solRe
		res.RequestRetrans += s.reqRe
		res.Unmatched += s.unmatched
		res.Malformed += s.malformed
		res.SendErrors += s.sendErrors
		res.Unanswered += int64(len(s.slots) - s.done)
		lat.merge(&s.latency)
		if res.ServerID == "" && s.sid != nil {
			res.ServerID = hex.EncodeToString(s.sid)
		}
	}
	res.LastReply = time.Duration(run.lastRep.Load()).Seconds()
	res.Latency = percentiles(&lat)
	if res.Answered+res.NoPrefix+res.WrongPrefix == 0 {
		return res, fmt.Errorf("no client answered: %d send errors, %d malformed answers; is a server listening on %s?",
			res.SendErrors, res.Malformed, srv)
	}
	return res, nil
}

// client returns slot i's client number.
func (s *stormShard) client(i int) int { return s.sr.flags.first + s.index + i*s.step }

// due returns when slot i's Solicit goes out (ns since base).
func (s *stormShard) due(i int) int64 { return int64(s.index+i*s.step) * s.sr.perStart }

func (s *stormShard) storm(ctx context.Context) {
	scanEvery := min(max(int64(s.sr.flags.timeout)/20, int64(time.Millisecond)), int64(50*time.Millisecond))
	var nextScan, deadline int64
	for s.done < len(s.slots) {
		now := s.sr.now()
		if now >= s.sr.end || ctx.Err() != nil {
			return
		}
		for s.started < len(s.slots) && s.due(s.started) <= now {
			s.startStorm(s.started, now)
			s.started++
		}
		if now >= nextScan {
			s.retransmit(now)
			nextScan = now + scanEvery
		}
		s.flush()
		// Wake for the next Solicit due, the next scan, or the end.
		wake := min(nextScan, s.sr.end)
		if s.started < len(s.slots) {
			wake = min(wake, s.due(s.started))
		}
		if wake != deadline {
			deadline = wake
			_ = s.conn.SetReadDeadline(s.sr.base.Add(time.Duration(deadline)))
		}
		n, ok, stop := s.readBatch()
		if stop {
			return
		}
		if !ok {
			continue
		}
		now = s.sr.now()
		for j := range n {
			s.stormAnswer(s.bufs[j][:s.lens[j]], now)
		}
	}
}

// startStorm sends slot i's first Solicit.
func (s *stormShard) startStorm(i int, now int64) {
	sl := &s.slots[i]
	sl.client, sl.start = s.client(i), now
	s.rt[i] = s.firstRT()
	s.send(i, &s.r.gen.solicits[s.r.gen.pool(sl.client)], slotSolicit, now)
}

// firstRT is the first retransmission time: --timeout ±10 %.
func (s *stormShard) firstRT() int64 {
	t := int64(s.sr.flags.timeout)
	return t + (rand.Int64N(t/5+1) - t/10)
}

// retransmit sends again the messages unanswered for their retransmission
// time, and doubles it (RFC 8415 section 15, without a cap: a storm lasts
// seconds).
func (s *stormShard) retransmit(now int64) {
	for i := range s.slots[:s.started] {
		sl := &s.slots[i]
		if sl.state == slotIdle || now-sl.sent < s.rt[i] {
			continue
		}
		if sl.state == slotSolicit {
			s.solRe++
		} else {
			s.reqRe++
		}
		s.tries[i]++
		s.rt[i] *= 2
		sl.sent = now
		s.out = append(s.out, sl.pkt) // the same message, the same transaction id
	}
}

// finish ends slot i's exchange.
func (s *stormShard) finish(i int, now int64) {
	s.slots[i].state = slotIdle
	s.done++
	s.sr.left.Add(-1)
	for {
		last := s.sr.lastRep.Load()
		if now <= last || s.sr.lastRep.CompareAndSwap(last, now) {
			return
		}
	}
}

// stormAnswer handles one datagram from the server.
func (s *stormShard) stormAnswer(b []byte, now int64) {
	a, ok := parseBenchAnswerInto(&s.chain, b)
	if !ok {
		s.malformed++
		return
	}
	i := int(a.xid >> 8)
	if i >= s.started {
		s.unmatched++
		return
	}
	sl := &s.slots[i]
	want := uint8(dhcpv6.MessageTypeAdvertise)
	if sl.state != slotSolicit {
		want = uint8(dhcpv6.MessageTypeReply)
	}
	if sl.state == slotIdle || uint8(a.xid) != sl.seq || a.typ != want || a.peer != s.r.gen.peer(sl.client) ||
		a.link != s.links[s.r.gen.pool(sl.client)] {
		s.unmatched++ // among them the answers to a message sent twice
		return
	}
	if s.r.flags.verify && !verifyBenchAnswer(b, a) {
		s.verifyErrors++
	}
	switch {
	case !a.hasPrefix:
		s.noPrefix++
		s.finish(i, now)
		return
	case a.prefix != s.r.gen.prefix(sl.client):
		s.wrongPrefix++
		s.finish(i, now)
		return
	}
	if sl.state == slotSolicit {
		if !bytes.Equal(a.serverID, s.sid) {
			if err := s.requestTemplates(a.serverID); err != nil {
				s.malformed++
				return // the Solicit goes out again
			}
		}
		s.rt[i] = s.firstRT()
		s.send(i, &s.reqs[s.r.gen.pool(sl.client)], slotRequest, now)
		return
	}
	s.answered++
	s.latency.record(now - sl.start)
	s.finish(i, now)
}

// socketDrops returns the datagrams the kernel dropped at the UDP socket
// bound to srv's port on this host (/proc/net/udp6, every socket on that
// port summed), or -1 when none is found.
func socketDrops(srv netip.AddrPort) int64 {
	data, err := os.ReadFile("/proc/net/udp6")
	if err != nil {
		return -1
	}
	return udpDrops(data, srv.Port())
}

// udpDrops reads /proc/net/udp6 (or udp): the drops of the sockets whose
// local port is port, or -1 when there is none.
func udpDrops(data []byte, port uint16) int64 {
	want := fmt.Sprintf(":%04X", port)
	var sum int64 = -1
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st ... drops (the last field)
		if len(f) < 13 || !strings.HasSuffix(f[1], want) {
			continue
		}
		d, err := strconv.ParseInt(f[len(f)-1], 10, 64)
		if err != nil {
			continue
		}
		sum = max(sum, 0) + d
	}
	return sum
}

// readDropCounters reads the drop counters of a cloudstack-pd /metrics
// page at url (empty: none): every series of a metric whose name ends
// in drops_total or dropped_total, by series.
func readDropCounters(url string) (map[string]float64, error) {
	if url == "" {
		return nil, nil
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, fmt.Errorf("--server-metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("--server-metrics %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("--server-metrics %s: %w", url, err)
	}
	return dropCounters(body), nil
}

// dropCounters returns the series of the Prometheus text page whose metric
// name ends in drops_total or dropped_total, with their values.
func dropCounters(page []byte) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(page))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		series, val := l[:i], l[i+1:]
		name, _, _ := strings.Cut(series, "{")
		if !strings.HasSuffix(name, "drops_total") && !strings.HasSuffix(name, "dropped_total") {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		out[series] = v
	}
	return out
}
