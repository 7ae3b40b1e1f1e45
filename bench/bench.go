package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/bench/synth"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
	"github.com/cloudstack-pd/cloudstack-pd/server/udpbatch"
)

// benchFlags are the load generator's settings.
type benchFlags struct {
	server      string
	clients     int
	first       int
	pools       int
	outstanding int
	sockets     int
	duration    time.Duration
	warmup      time.Duration
	count       int64
	timeout     time.Duration
	json        bool
	verify      bool
	serverPID   int
	relayPort   int
	flood       bool
	// a storm (benchstorm.go)
	storm         bool
	stormWindow   time.Duration
	serverMetrics string
}

func NewCommand() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load-test a DHCPv6 server (cloudstack-pd or Kea) as Juniper relays would",
		Long: `Bench plays Junos DHCPv6 relays for many VMs at once and measures how many
relayed Solicit/Advertise/Request/Reply exchanges per second a server
answers, and how fast.

Each exchange is one client of the synthetic set (MAC 02:b0 followed by the
client number; the same clients 'bench setup' makes reservations for):
a Solicit in a Relay-Forward with interface-id (option 18), remote-id
(option 37: enterprise 2636 and the MAC), the relay's link-address on the
client's VLAN, the client's link-local address as peer-address and a relay
source port option (135) so that answers come back to bench's own
sockets; then, once the Advertise is in, a Request carrying the server
identifier the Advertise named. The exchange is done when the Reply is in.
--outstanding exchanges are in flight at all times (closed loop): as one
ends, the next client's starts. A message unanswered after --timeout ends
its exchange as a drop.

Each of the --sockets sockets plays one relay (a router): its own UDP
source port (all of them on the local address the route to --server
picks: on loopback, ::1), and on the VLAN of pool k the link-address
2001:db8:0:k::(r+1) for relay r, which the Relay-Reply must echo. Relay r
plays clients r, r+S, r+2S, … of S sockets, so that when S is a multiple
of --pools each relay serves one VLAN, as a pod's router does. The
outstanding exchanges are spread over the relays, so --sockets 4
--outstanding 64 is four routers each relaying 16 clients at a time, and
--sockets 128 --outstanding 128 is 128 routers with one client each: the
shape of a cloud of a few hundred routers each relaying the DHCPv6 of
many VMs, where a burst of packets seldom comes from one source.

A real relay sends from the same address and port all day, and the
server records it in the client's binding: a renewal through the same
relay changes nothing and writes nothing. Bench's sockets take ports the
system picks, new at every run, so that each run changes every client's
binding; --relay-port P gives relay r the port P+r instead, the same run
after run, as a real relay.

Answers are checked: an exchange whose Advertise or Reply delegates no
prefix counts as "no prefix", one whose prefix is not the client's
reservation as "wrong prefix".

Bench only reads the fields it checks (type, transaction id, server id,
IA_PD prefixes), without allocating, so that on a small machine it is not
the bottleneck; --verify also decodes every answer with the DHCPv6 library
and counts disagreements (slower: for tests).

Exchanges per second count the exchanges completed between the end of
--warmup and the end of --duration (or the --count-th exchange); latency
is from the Solicit sent to the Reply received.

With --flood, each exchange is instead one message with a client DUID of
its own (a DUID-LL of random bytes) for a known MAC: alternately a Rebind
and a Solicit with Rapid Commit (the server needs server.rapid-commit),
each answered by a Reply delegating the client's reservation. It floods
the server with distinct DUIDs, as a misbehaving or hostile VM would, to
check that memory stays bounded and answers keep coming.

With --storm, every one of --clients clients sends its Solicit once,
paced evenly over --storm-window (default 1 s: a relay that rebooted, or a
pod's VMs restarted together), and its Request as soon as its Advertise is
in. A message unanswered is sent again as a client does (same transaction
id, after --timeout ±10 %, doubled at each try) until --duration (here:
how long the storm may take in all) is over. It reports the time from the
first Solicit to the last Reply, the clients answered and not, the
retransmissions, and the drops: the kernel's at the server's socket (its
receive buffer full; /proc/net/udp6, for any server on this host) and,
with --server-metrics, the increase of cloudstack-pd's drop counters.

Subcommands prepare the reservations (setup), measure start-up (startup),
answer as cheaply as possible to measure bench itself (reflect) and write
docs/BENCHMARKS.md (report); 'make bench' runs them all.`,
		Example: `  cloudstack-pd bench --server [::1]:10547 --clients 100000 --outstanding 64 --duration 10s
  cloudstack-pd bench --server [::1]:10548 --count 1000 --json
  cloudstack-pd bench --server [::1]:10547 --storm --clients 100000 --server-metrics http://127.0.0.1:9547/metrics`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.storm {
				res, err := runStorm(cmd.Context(), f)
				if err != nil {
					return err
				}
				if f.json {
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					return enc.Encode(res)
				}
				printStorm(cmd.OutOrStdout(), res)
				return nil
			}
			res, err := runBench(cmd.Context(), f)
			if err != nil {
				return err
			}
			return printBench(cmd.OutOrStdout(), res, f.json)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", "[::1]:547", "server address, [addr]:port")
	fl.IntVar(&f.clients, "clients", 100_000, "clients (synthetic MACs) to cycle through")
	fl.IntVar(&f.first, "first-client", 0, "number of the first client")
	fl.IntVar(&f.pools, "pools", 4, "pools the clients are spread over (as 'bench setup --pools')")
	fl.IntVar(&f.outstanding, "outstanding", 64, "exchanges in flight at all times")
	fl.IntVar(&f.sockets, "sockets", 4, "UDP sockets (each read by its own goroutine)")
	fl.DurationVar(&f.duration, "duration", 10*time.Second, "how long to measure, after --warmup (0: until --count)")
	fl.DurationVar(&f.warmup, "warmup", time.Second, "how long to run before measuring")
	fl.Int64Var(&f.count, "count", 0, "stop after this many measured exchanges (0: after --duration)")
	fl.DurationVar(&f.timeout, "timeout", time.Second, "how long to wait for each answer before counting the exchange as a drop")
	fl.BoolVar(&f.json, "json", false, "print the result as JSON")
	fl.BoolVar(&f.verify, "verify", false, "also decode every answer with the DHCPv6 library and count disagreements")
	fl.IntVar(&f.relayPort, "relay-port", 0, "UDP source port of the first relay, the next relays' following it (0: ports the system picks, new at each run)")
	fl.IntVar(&f.serverPID, "server-pid", 0, "the server's process id, to report the CPU time it used (Linux)")
	fl.BoolVar(&f.flood, "flood", false, "one message per exchange with a random client DUID: Rebinds and Rapid Commit Solicits")
	fl.BoolVar(&f.storm, "storm", false, "a storm: every client's Solicit within --storm-window, each exchange retried until answered or --duration ends")
	fl.DurationVar(&f.stormWindow, "storm-window", time.Second, "--storm: the time over which the Solicits are paced")
	fl.StringVar(&f.serverMetrics, "server-metrics", "", "--storm: the server's /metrics URL (cloudstack-pd), to report its drop counters")
	cmd.AddCommand(newBenchSetupCmd(), newBenchStartupCmd(), newBenchReflectCmd(), newBenchReportCmd(), newBenchEtcdCmd())
	return cmd
}

// benchPercentiles are latency percentiles in milliseconds.
type benchPercentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func percentiles(h *latencyHist) benchPercentiles {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return benchPercentiles{P50: ms(h.quantile(.50)), P90: ms(h.quantile(.90)), P99: ms(h.quantile(.99)), Max: ms(time.Duration(h.max))}
}

// benchResult is what a run measured.
type benchResult struct {
	Server      string  `json:"server"`
	ServerID    string  `json:"server_id"`
	Clients     int     `json:"clients"`
	Outstanding int     `json:"outstanding"`
	Sockets     int     `json:"sockets"`
	Seconds     float64 `json:"seconds"` // the measured window
	// Exchanges completed with a prefix in the window, and their rate.
	Exchanges int64   `json:"exchanges"`
	Rate      float64 `json:"exchanges_per_s"`
	// Drops are exchanges ended by a timeout (in the window or after it).
	Drops int64 `json:"drops"`
	// NoPrefix and WrongPrefix are answered exchanges without the
	// client's reservation.
	NoPrefix    int64 `json:"no_prefix"`
	WrongPrefix int64 `json:"wrong_prefix"`
	// Unmatched are answers for no message in flight (late or unknown);
	// Malformed those bench cannot read; SendErrors failed sends.
	Unmatched  int64 `json:"unmatched"`
	Malformed  int64 `json:"malformed"`
	SendErrors int64 `json:"send_errors"`
	// VerifyErrors counts answers the library decodes otherwise (--verify).
	VerifyErrors int64 `json:"verify_errors,omitempty"`
	// Latency of whole exchanges (Solicit sent → Reply received) and
	// round-trip time of single messages, in milliseconds.
	Latency benchPercentiles `json:"latency_ms"`
	RTT     benchPercentiles `json:"rtt_ms"`
	// CPU time per completed exchange (warm-up and drain included), in
	// microseconds, of bench itself and of the server (--server-pid).
	BenchCPU  float64 `json:"bench_cpu_us"`
	ServerCPU float64 `json:"server_cpu_us,omitempty"`
}

func printBench(w io.Writer, r *benchResult, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	fmt.Fprintf(w, "server       %s (server id %s)\n", r.Server, r.ServerID)
	fmt.Fprintf(w, "load         %d clients, %d outstanding, %d sockets, %.1fs measured\n", r.Clients, r.Outstanding, r.Sockets, r.Seconds)
	fmt.Fprintf(w, "exchanges    %d (%.0f/s)\n", r.Exchanges, r.Rate)
	fmt.Fprintf(w, "drops        %d\n", r.Drops)
	fmt.Fprintf(w, "no prefix    %d, wrong prefix %d, unmatched %d, malformed %d, send errors %d\n",
		r.NoPrefix, r.WrongPrefix, r.Unmatched, r.Malformed, r.SendErrors)
	if r.VerifyErrors > 0 {
		fmt.Fprintf(w, "verify       %d answers decoded otherwise by the library\n", r.VerifyErrors)
	}
	fmt.Fprintf(w, "latency      p50 %.3fms  p90 %.3fms  p99 %.3fms  max %.3fms (Solicit to Reply)\n", r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max)
	fmt.Fprintf(w, "rtt          p50 %.3fms  p90 %.3fms  p99 %.3fms  max %.3fms (one message)\n", r.RTT.P50, r.RTT.P90, r.RTT.P99, r.RTT.Max)
	fmt.Fprintf(w, "cpu          bench %.1fµs per exchange", r.BenchCPU)
	if r.ServerCPU > 0 {
		fmt.Fprintf(w, ", server %.1fµs", r.ServerCPU)
	}
	fmt.Fprintln(w)
	return nil
}

// runBench runs the load generator.
func runBench(ctx context.Context, f benchFlags) (*benchResult, error) {
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
	case f.clients < f.sockets:
		return nil, errors.New("--clients must be at least --sockets: each relay plays clients of its own")
	case f.outstanding < f.sockets:
		return nil, errors.New("--outstanding must be at least --sockets")
	case f.outstanding > f.sockets*benchMaxSlots:
		return nil, fmt.Errorf("--outstanding must be at most %d per socket", benchMaxSlots)
	case f.duration <= 0 && f.count <= 0:
		return nil, errors.New("give --duration or --count")
	case f.timeout <= 0:
		return nil, errors.New("--timeout must be positive")
	case f.relayPort < 0 || f.relayPort > 0 && f.relayPort+f.sockets-1 > 65535:
		return nil, fmt.Errorf("--relay-port %d: the relays' ports must be 1 to 65535 (%d sockets)", f.relayPort, f.sockets)
	}
	gen, err := newBenchGen(f.pools, f.first, f.clients)
	if err != nil {
		return nil, err
	}
	run := &benchRun{flags: f, gen: gen, base: time.Now()}
	run.warmupEnd = int64(f.warmup)
	run.stopAt.Store(int64(1<<63 - 1))
	if f.duration > 0 {
		run.stopAt.Store(int64(f.warmup + f.duration))
	}
	var shards []*benchShard
	defer func() {
		for _, s := range shards {
			s.conn.Close()
		}
	}()
	for i := range f.sockets {
		var local *net.UDPAddr
		if f.relayPort > 0 {
			local = &net.UDPAddr{Port: f.relayPort + i}
		}
		c, err := net.DialUDP("udp6", local, net.UDPAddrFromAddrPort(srv))
		if err != nil {
			return nil, fmt.Errorf("open a socket towards %s: %w", srv, err)
		}
		_ = c.SetReadBuffer(4 << 20)
		_ = c.SetWriteBuffer(4 << 20)
		n := f.outstanding / f.sockets
		if i < f.outstanding%f.sockets {
			n++
		}
		sh, err := newBenchShard(run, c, i, n)
		if err != nil {
			c.Close()
			return nil, err
		}
		shards = append(shards, sh)
	}
	stop := context.AfterFunc(ctx, func() { run.stopAt.Store(0) })
	defer stop()
	cpu0, scpu0 := selfCPU(), procCPU(f.serverPID)
	var wg sync.WaitGroup
	groups := relayGroups(len(shards))
	errs := make(chan error, max(groups, 1))
	if groups == 0 {
		for _, s := range shards {
			wg.Go(s.run)
		}
	}
	for g := range groups {
		var mine []*benchShard
		for i := g; i < len(shards); i += groups {
			mine = append(mine, shards[i])
		}
		wg.Go(func() {
			if err := runGroup(mine); err != nil {
				errs <- err
				run.stopAt.Store(0)
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	select {
	case err := <-errs:
		return nil, fmt.Errorf("relays: %w", err)
	default:
	}
	cpu, scpu := selfCPU()-cpu0, procCPU(f.serverPID)-scpu0

	res := &benchResult{Server: srv.String(), Clients: f.clients, Outstanding: f.outstanding, Sockets: f.sockets}
	var lat, rtt latencyHist
	for _, s := range shards {
		res.Exchanges += s.exchanges
		res.Drops += s.drops
		res.NoPrefix += s.noPrefix
		res.WrongPrefix += s.wrongPrefix
		res.Unmatched += s.unmatched
		res.Malformed += s.malformed
		res.SendErrors += s.sendErrors
		res.VerifyErrors += s.verifyErrors
		lat.merge(&s.latency)
		rtt.merge(&s.rtt)
		if res.ServerID == "" && s.sid != nil {
			res.ServerID = hex.EncodeToString(s.sid)
		}
	}
	end := min(run.stopAt.Load(), run.lastAnswer.Load())
	if w := end - run.warmupEnd; w > 0 {
		res.Seconds = time.Duration(w).Seconds()
		res.Rate = float64(res.Exchanges) / res.Seconds
	}
	res.Latency, res.RTT = percentiles(&lat), percentiles(&rtt)
	if all := run.all.Load(); all > 0 {
		res.BenchCPU = float64(cpu.Microseconds()) / float64(all)
		if f.serverPID > 0 {
			res.ServerCPU = float64(scpu.Microseconds()) / float64(all)
		}
	}
	if res.Exchanges+res.NoPrefix+res.WrongPrefix == 0 {
		return res, fmt.Errorf("no exchange completed: %d drops, %d send errors, %d malformed answers; is a server listening on %s?",
			res.Drops, res.SendErrors, res.Malformed, srv)
	}
	return res, nil
}

// benchRun is what the shards share.
type benchRun struct {
	flags     benchFlags
	gen       *benchGen
	base      time.Time
	warmupEnd int64
	// stopAt is when no new exchange starts (ns since base); the count
	// limit and a cancelled context bring it forward.
	stopAt     atomic.Int64
	measured   atomic.Int64 // exchanges completed after the warm-up
	all        atomic.Int64 // exchanges completed, warm-up and drain included
	lastAnswer atomic.Int64 // ns since base of the last completed exchange
}

func (r *benchRun) now() int64 { return int64(time.Since(r.base)) }

// benchMaxSockets is the most sockets (relays) bench opens.
const benchMaxSockets = 4096

// benchMaxSlots is the most exchanges in flight per socket: the slot
// number takes 16 bits of the 24-bit transaction id, a sequence number
// the other 8.
const benchMaxSlots = 1 << 16

// Slot states.
const (
	slotIdle = iota
	slotSolicit
	slotRequest
	slotFlood // a Rebind or Rapid Commit Solicit (--flood), answered by a Reply
)

// benchSlot is one exchange in flight.
type benchSlot struct {
	client int
	state  uint8
	seq    uint8
	start  int64 // Solicit sent
	sent   int64 // last message sent
	pkt    []byte
}

// benchShard is one socket and the exchanges it carries. Only its own
// goroutine touches it while it runs.
type benchShard struct {
	r     *benchRun
	conn  *net.UDPConn
	slots []benchSlot
	next  int // next client, counting from 0 in this shard's sequence
	index int
	step  int

	sid  []byte // server id of the request templates
	reqs []benchTemplate
	// links are this relay's link-addresses, by pool
	links [][16]byte
	// chain is the answer being read, its levels reused answer after answer
	chain relay.Chain

	exchanges, drops, noPrefix, wrongPrefix int64
	unmatched, malformed, sendErrors        int64
	verifyErrors                            int64
	latency, rtt                            latencyHist

	// Datagrams move in batches (udpbatch), like the server's: answers
	// are read up to benchBatch at a time, and the messages they call
	// for go out together.
	bio  *udpbatch.Conn
	bufs [][]byte
	lens []int
	out  [][]byte
}

// benchBatch is the most datagrams a shard reads or sends in one call.
const benchBatch = 16

func newBenchShard(run *benchRun, c *net.UDPConn, index, slots int) (*benchShard, error) {
	s := &benchShard{r: run, conn: c, index: index, step: run.flags.sockets, slots: make([]benchSlot, slots)}
	for k := range run.flags.pools {
		s.links = append(s.links, synth.RelayLinkAddr(k, index).As16())
	}
	for i := range s.slots {
		s.slots[i].pkt = make([]byte, 0, 512)
	}
	bio, err := udpbatch.New(c, benchBatch, nil)
	if err != nil {
		return nil, err
	}
	s.bio = bio
	s.bufs = make([][]byte, bio.Size())
	for i := range s.bufs {
		s.bufs[i] = make([]byte, 4096)
	}
	s.lens = make([]int, bio.Size())
	return s, nil
}

// nextClient returns the next client of this shard. Shard r plays
// clients r, r+S, r+2S, … of S shards, and only those, round after round:
// a client always comes through the same relay, as a VM does through its
// router. (Were it to move between relays, every renewal would change
// the binding's relay data, and serve would write it to its store each
// time instead of keeping its time in memory.)
func (s *benchShard) nextClient() int {
	n := (s.r.flags.clients - s.index + s.step - 1) / s.step // this shard's clients
	c := s.index + s.next%max(n, 1)*s.step
	s.next++
	return s.r.flags.first + c
}

func (s *benchShard) run() {
	now := s.r.now()
	for i := range s.slots {
		s.startExchange(i, now)
	}
	const tick = 5 * time.Millisecond
	var deadline, nextScan int64
	for {
		now = s.r.now()
		if now >= nextScan {
			busy := s.scan(now)
			s.flush()
			if !busy {
				return
			}
			nextScan = now + int64(tick)
		}
		s.flush()
		if now >= deadline-int64(tick) {
			deadline = now + 4*int64(tick)
			_ = s.conn.SetReadDeadline(s.r.base.Add(time.Duration(deadline)))
		}
		n, ok, stop := s.readBatch()
		if stop {
			return
		}
		if !ok {
			continue
		}
		now = s.r.now()
		for j := range n {
			s.answer(s.bufs[j][:s.lens[j]], now)
		}
	}
}

// flush sends the messages queued by send.
func (s *benchShard) flush() {
	if len(s.out) == 0 {
		return
	}
	if err := s.bio.Write(s.out, nil); err != nil {
		s.sendErrors++ // those not sent time out
	}
	clear(s.out)
	s.out = s.out[:0]
}

// scan ends the exchanges that timed out and reports whether any is
// still in flight.
func (s *benchShard) scan(now int64) bool {
	busy := false
	timeout := int64(s.r.flags.timeout)
	for i := range s.slots {
		sl := &s.slots[i]
		if sl.state == slotIdle {
			continue
		}
		if now-sl.sent > timeout {
			s.drops++
			s.startExchange(i, now)
		}
		busy = busy || sl.state != slotIdle
	}
	return busy
}

// startExchange puts slot i's next client on the wire, or leaves it idle
// when the run is over.
func (s *benchShard) startExchange(i int, now int64) {
	sl := &s.slots[i]
	sl.state = slotIdle
	sl.seq++ // an answer to the old exchange no longer matches
	if now >= s.r.stopAt.Load() {
		return
	}
	sl.client = s.nextClient()
	sl.start = now
	if s.r.flags.flood {
		t := &s.r.gen.floods[2*s.r.gen.pool(sl.client)+s.next%2]
		s.send(i, t, slotFlood, now)
		t.randomDUID(sl.pkt)
		return
	}
	s.send(i, &s.r.gen.solicits[s.r.gen.pool(sl.client)], slotSolicit, now)
}

func (s *benchShard) send(i int, t *benchTemplate, state uint8, now int64) {
	sl := &s.slots[i]
	sl.pkt = t.fill(sl.pkt, sl.client, uint32(i)<<8|uint32(sl.seq), &s.links[s.r.gen.pool(sl.client)])
	sl.state, sl.sent = state, now
	s.out = append(s.out, sl.pkt) // sent by flush, before the slot changes again
}

// answer handles one datagram from the server.
func (s *benchShard) answer(b []byte, now int64) {
	a, ok := parseBenchAnswerInto(&s.chain, b)
	if !ok {
		s.malformed++
		return
	}
	i := int(a.xid >> 8)
	if i >= len(s.slots) {
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
		s.unmatched++
		return
	}
	if s.r.flags.verify && !verifyBenchAnswer(b, a) {
		s.verifyErrors++
	}
	measured := now >= s.r.warmupEnd
	if measured {
		s.rtt.record(now - sl.sent)
	}
	if !a.hasPrefix {
		if measured {
			s.noPrefix++
		}
		s.startExchange(i, now)
		return
	}
	if a.prefix != s.r.gen.prefix(sl.client) {
		if measured {
			s.wrongPrefix++
		}
		s.startExchange(i, now)
		return
	}
	if sl.state == slotSolicit {
		if !bytes.Equal(a.serverID, s.sid) {
			if err := s.requestTemplates(a.serverID); err != nil {
				s.malformed++
				s.startExchange(i, now)
				return
			}
		}
		s.send(i, &s.reqs[s.r.gen.pool(sl.client)], slotRequest, now)
		return
	}
	s.r.all.Add(1)
	if measured {
		s.latency.record(now - sl.start)
		if now < s.r.stopAt.Load() {
			s.exchanges++
			s.r.lastAnswer.Store(now)
			if c := s.r.flags.count; c > 0 && s.r.measured.Add(1) >= c {
				s.r.stopAt.Store(now)
			}
		}
	}
	s.startExchange(i, now)
}

// requestTemplates builds the Request templates naming server id sid.
func (s *benchShard) requestTemplates(sid []byte) error {
	reqs, err := s.r.gen.requests(sid)
	if err != nil {
		return err
	}
	s.sid, s.reqs = bytes.Clone(sid), reqs
	return nil
}

// benchGen makes the clients' packets: per pool, a template encoded by
// the DHCPv6 library for a sentinel client, in which a client's MAC,
// link-local address and transaction id are written at known offsets.
type benchGen struct {
	pools, first, clients int
	solicits              []benchTemplate
	// floods are, per pool, a Rebind and a Solicit with Rapid Commit
	// (--flood): pool k's at 2k and 2k+1.
	floods []benchTemplate
}

// benchSentinel is the MAC of the template client; it must not occur
// elsewhere in a packet.
var benchSentinel = net.HardwareAddr{0x02, 0xb0, 0xfe, 0xed, 0xfa, 0xce}

func newBenchGen(pools, first, clients int) (*benchGen, error) {
	if first < 0 || first+clients > synth.Capacity(pools) || first+clients > 1<<32-1 {
		return nil, fmt.Errorf("clients %d to %d do not fit in %d pools", first, first+clients-1, pools)
	}
	g := &benchGen{pools: pools, first: first, clients: clients}
	for k := range pools {
		t, err := newBenchTemplate(k, dhcpv6.MessageTypeSolicit, nil)
		if err != nil {
			return nil, err
		}
		g.solicits = append(g.solicits, t)
		rebind, err := newBenchTemplate(k, dhcpv6.MessageTypeRebind, nil)
		if err != nil {
			return nil, err
		}
		rapid, err := newBenchTemplate(k, dhcpv6.MessageTypeSolicit, nil, &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit})
		if err != nil {
			return nil, err
		}
		g.floods = append(g.floods, rebind, rapid)
	}
	return g, nil
}

func (g *benchGen) pool(client int) int { return synth.Pool(client, g.pools) }

func (g *benchGen) prefix(client int) [17]byte {
	p := synth.Prefix(client, g.pools)
	var out [17]byte
	a := p.Addr().As16()
	copy(out[:], a[:])
	out[16] = byte(p.Bits())
	return out
}

func (g *benchGen) peer(client int) [16]byte {
	var mac [6]byte
	synth.PutMAC(mac[:], client)
	return relay.EUI64LinkLocal(mac[:]).As16()
}

func (g *benchGen) requests(sid []byte) ([]benchTemplate, error) {
	if _, err := dhcpv6.DUIDFromBytes(sid); err != nil || len(sid) < 2 {
		return nil, fmt.Errorf("server id %x: %v", sid, err)
	}
	var out []benchTemplate
	for k := range g.pools {
		t, err := newBenchTemplate(k, dhcpv6.MessageTypeRequest, sid)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// benchTemplate is one encoded Relay-Forward and where to write a client in it.
type benchTemplate struct {
	pkt  []byte
	xid  int    // offset of the client message's transaction id
	macs [2]int // offsets of the MAC: remote-id and DUID-LL (in the client message)
	peer int    // offset of the relay's peer-address
	link int    // offset of the relay's link-address
}

// newBenchTemplate encodes, with the DHCPv6 library, the message of type
// t (Solicit, or Request naming server sid) of the sentinel client on
// pool k, with the extra options, relayed as a Junos relay does.
func newBenchTemplate(k int, t dhcpv6.MessageType, sid []byte, extra ...dhcpv6.Option) (benchTemplate, error) {
	m := &dhcpv6.Message{MessageType: t}
	m.AddOption(dhcpv6.OptClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: benchSentinel}))
	if sid != nil {
		m.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionServerID, OptionData: sid})
	}
	for _, o := range extra {
		m.AddOption(o)
	}
	m.AddOption(dhcpv6.OptElapsedTime(0))
	m.AddOption(&dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, 1}})
	msg := m.ToBytes()
	peer := relay.EUI64LinkLocal(benchSentinel)
	pkt := relay.Encapsulate(msg, relay.Forward{
		LinkAddr:      synth.LinkAddr(k),
		PeerAddr:      peer,
		InterfaceID:   []byte(synth.InterfaceID(k)),
		RemoteID:      relay.JuniperRemoteID(benchSentinel),
		HasSourcePort: true,
	})
	tp := benchTemplate{pkt: pkt, xid: len(pkt) - len(msg) + 1}
	if !bytes.Equal(pkt[tp.xid-1:], msg) {
		return tp, errors.New("bench template: the client message is not last in the Relay-Forward")
	}
	n := 0
	for off := 0; ; {
		j := bytes.Index(pkt[off:], benchSentinel)
		if j < 0 {
			break
		}
		if n == len(tp.macs) {
			return tp, errors.New("bench template: the sentinel MAC occurs more than twice")
		}
		tp.macs[n] = off + j
		n++
		off += j + 1
	}
	p16, l16 := peer.As16(), synth.LinkAddr(k).As16()
	tp.peer, tp.link = bytes.Index(pkt, p16[:]), bytes.Index(pkt, l16[:])
	if n != 2 || tp.peer < 0 || tp.link < 0 || tp.macs[1] < tp.xid {
		return tp, errors.New("bench template: cannot find the client's MAC, link-local address and link-address")
	}
	return tp, nil
}

// randomDUID gives the client message in b, filled from t, a DUID-LL of
// random bytes instead of the client's MAC (--flood).
func (t *benchTemplate) randomDUID(b []byte) {
	var r [8]byte
	binary.LittleEndian.PutUint64(r[:], rand.Uint64())
	copy(b[t.macs[1]:t.macs[1]+6], r[:])
}

// fill writes the template for client with transaction id xid, relayed
// with link-address link, into b.
func (t *benchTemplate) fill(b []byte, client int, xid uint32, link *[16]byte) []byte {
	b = append(b[:0], t.pkt...)
	copy(b[t.link:t.link+16], link[:])
	for _, off := range t.macs {
		synth.PutMAC(b[off:off+6], client)
	}
	var mac [6]byte
	synth.PutMAC(mac[:], client)
	p := relay.EUI64LinkLocal(mac[:]).As16()
	copy(b[t.peer:t.peer+16], p[:])
	b[t.xid], b[t.xid+1], b[t.xid+2] = byte(xid>>16), byte(xid>>8), byte(xid)
	return b
}

// benchAnswer is what bench reads of an answer.
type benchAnswer struct {
	typ       uint8
	xid       uint32
	peer      [16]byte
	link      [16]byte
	serverID  []byte
	hasPrefix bool
	prefix    [17]byte // first IA_PD prefix with a valid lifetime: address and length
}

// parseBenchAnswer reads a Relay-Reply as bench needs it: the outermost
// level's echoed peer-address and link-address, and in the message inside, the type,
// transaction id, server id and the first delegated prefix, decoded with
// relay.DecodeReplyInto and relay.WalkOptions; --verify checks it against
// the library.
func parseBenchAnswer(b []byte) (benchAnswer, bool) {
	return parseBenchAnswerInto(&relay.Chain{}, b)
}

// parseBenchAnswerInto is parseBenchAnswer decoding into c, whose levels it
// reuses: with a c kept from answer to answer it does not allocate.
func parseBenchAnswerInto(c *relay.Chain, b []byte) (a benchAnswer, ok bool) {
	if relay.DecodeReplyInto(c, b) != nil || len(c.Message) < 4 {
		return a, false
	}
	a.peer, a.link = c.Outermost().PeerAddr.As16(), c.Outermost().LinkAddr.As16()
	msg := c.Message
	a.typ = msg[0]
	a.xid = uint32(msg[1])<<16 | uint32(msg[2])<<8 | uint32(msg[3])
	w := relay.WalkOptions(msg[4:])
	for w.Next() {
		data := w.Data()
		switch w.Code() {
		case uint16(dhcpv6.OptionServerID):
			if a.serverID == nil {
				a.serverID = data
			}
		case uint16(dhcpv6.OptionIAPD):
			if a.hasPrefix || len(data) < 12 {
				continue
			}
			sub := relay.WalkOptions(data[12:])
			for sub.Next() {
				// IAPREFIX: preferred (4), valid (4), length (1), prefix (16)
				if d := sub.Data(); sub.Code() == uint16(dhcpv6.OptionIAPrefix) && len(d) >= 25 && binary.BigEndian.Uint32(d[4:]) > 0 {
					copy(a.prefix[:16], d[9:25])
					a.prefix[16] = d[8]
					a.hasPrefix = true
					break
				}
			}
			if sub.Err() != nil {
				return a, false
			}
		}
	}
	return a, w.Err() == nil
}

// verifyBenchAnswer decodes b with the DHCPv6 library and reports whether
// it agrees with what parseBenchAnswer read.
func verifyBenchAnswer(b []byte, a benchAnswer) bool {
	d, err := dhcpv6.FromBytes(b)
	if err != nil {
		return false
	}
	rr, ok := d.(*dhcpv6.RelayMessage)
	if !ok || !bytes.Equal(rr.PeerAddr.To16(), a.peer[:]) || !bytes.Equal(rr.LinkAddr.To16(), a.link[:]) {
		return false
	}
	m, err := rr.GetInnerMessage()
	if err != nil || uint8(m.MessageType) != a.typ {
		return false
	}
	x := m.TransactionID
	if uint32(x[0])<<16|uint32(x[1])<<8|uint32(x[2]) != a.xid {
		return false
	}
	if sid := m.Options.ServerID(); sid == nil || !bytes.Equal(sid.ToBytes(), a.serverID) {
		return false
	}
	var got [17]byte
	has := false
	for _, ia := range m.Options.IAPD() {
		for _, p := range ia.Options.Prefixes() {
			if !has && p.ValidLifetime > 0 && p.Prefix != nil {
				copy(got[:16], p.Prefix.IP.To16())
				ones, _ := p.Prefix.Mask.Size()
				got[16] = byte(ones)
				has = true
			}
		}
	}
	return has == a.hasPrefix && got == a.prefix
}

// selfCPU returns the CPU time this process used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU returns the CPU time process pid used so far (0: none, or unknown).
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// After the command name in parentheses: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ
	return time.Duration(ut+st) * time.Second / ticks
}

// readBatch reads the next answers into s.bufs (their lengths in s.lens).
// A read that failed reads none (ok false): a malformed one is counted, a
// timeout or a port unreachable is not; stop when the socket is closed.
func (s *benchShard) readBatch() (n int, ok, stop bool) {
	n, err := s.bio.Read(s.bufs, s.lens, nil)
	if err == nil {
		return n, true, false
	}
	stop, bad := readFailure(err)
	if bad {
		s.malformed++
	}
	return 0, false, stop
}

// readFailure says what a failed read of a generator's socket means: stop
// (the socket is closed), or count it as malformed, or neither: a
// timeout, or an ICMP port unreachable for an earlier send (that message
// is lost and will time out).
func readFailure(err error) (stop, malformed bool) {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, syscall.ECONNREFUSED):
		return false, false
	case errors.Is(err, net.ErrClosed):
		return true, false
	}
	return false, true
}
