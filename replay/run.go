package replay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/cloudstack-pd/cloudstack-pd/capture"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// DefaultTimeout is how long Run waits for an answer when Options.Timeout is zero.
const DefaultTimeout = 2 * time.Second

// Options tunes Run. The zero value sends in closed loop with DefaultTimeout.
type Options struct {
	// Rate is how many requests per second to send; 0 sends each request
	// as soon as the previous one is answered or timed out (one
	// outstanding).
	Rate float64
	// Timeout is how long to wait for each answer; 0 means DefaultTimeout.
	Timeout time.Duration
	// ServerIDs, index by index with the targets, is the DUID each target
	// uses, for rewriting; nil (or a nil entry) learns it from the
	// target's first Advertise or Reply.
	ServerIDs [][]byte
	// KeepServerID sends Server Identifiers as captured.
	KeepServerID bool
	// Done, when not nil, is called with each exchange once every target
	// has answered it or timed out, in request order.
	Done func(x *Exchange)
	// Clock paces the sending and times the answers out, and stamps what
	// Func targets send and answer; nil means clock.Real. A target with
	// a socket (UDP) stamps with real time whatever Clock is.
	Clock clock.Clock
}

// Exchange is one request and what each target did with it.
type Exchange struct {
	Request *Request
	// Outcomes are index by index with Run's targets.
	Outcomes []Outcome

	settled bool // every outcome is done, and the exchange left inFlight
}

// Outcome is what one target did with one request.
type Outcome struct {
	// Payload is what was sent: Request.Payload with the Server
	// Identifier rewritten when Rewritten.
	Payload   []byte
	Rewritten bool
	// Sent says when and between which addresses the request went.
	Sent Sent
	// Answer is the target's answer; nil when it gave none.
	Answer *Received
	// Normalized is Answer normalized; nil when there is no answer.
	Normalized *Answer
	// Latency is from sending to receiving the answer.
	Latency time.Duration
	// Dropped says why a synchronous target did not answer.
	Dropped error
	// Err says why the request could not be sent.
	Err error

	done bool
}

// Answered reports whether the target answered.
func (o *Outcome) Answered() bool { return o.Answer != nil }

// TargetReport is what Run learned about one target.
type TargetReport struct {
	Name string
	// ServerID is the target's DUID: given, or learned from an answer;
	// nil when neither happened.
	ServerID []byte
	// ServerIDFrom says where ServerID came from: "given", "learned from
	// the answer to frame N", or "learned from the answer to an
	// Information-request sent to learn it".
	ServerIDFrom string
	// DiscoveryFailed is set when replay asked for the DUID and got no answer.
	DiscoveryFailed bool
	// Rewritten counts the requests whose Server Identifier was rewritten.
	Rewritten int
	// Late counts answers that came after their request timed out.
	Late int
	// Unmatched counts datagrams that answer no request sent.
	Unmatched int
}

// Result is what Run did.
type Result struct {
	Exchanges []*Exchange
	Targets   []TargetReport
	// Elapsed is how long the run took.
	Elapsed time.Duration
}

// waiting is a request (or a discovery) waiting for a target's answer.
type waiting struct {
	x        int // exchange index; -1 for a discovery
	target   int
	key      string
	deadline time.Time
}

type targetState struct {
	t          Target
	send       func(r *Request, pkt []byte) (Sent, error) // t.Send, on Run's clock when t has one
	rep        *TargetReport
	waiting    map[string][]*waiting // by key, oldest first
	expired    map[string]int        // keys of requests that timed out
	discovery  *waiting
	discovered bool // a discovery was tried
}

// tagged is a datagram from the target of that index.
type tagged struct {
	target int
	r      Received
}

// Run sends the requests to every target and matches their answers. The
// first target is the server under test, the others are compared with
// it. It returns the exchanges in request order; on ctx's end it stops
// sending and returns what it has with ctx's error.
func Run(ctx context.Context, reqs []Request, targets []Target, opts Options) (*Result, error) {
	if len(targets) == 0 {
		return nil, errors.New("replay: no target")
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	clk := clock.OrReal(opts.Clock)
	res := &Result{Targets: make([]TargetReport, len(targets))}
	states := make([]*targetState, len(targets))
	for i, t := range targets {
		res.Targets[i].Name = t.Name()
		if i < len(opts.ServerIDs) && opts.ServerIDs[i] != nil {
			res.Targets[i].ServerID = bytes.Clone(opts.ServerIDs[i])
			res.Targets[i].ServerIDFrom = "given"
		}
		states[i] = &targetState{t: t, send: t.Send, rep: &res.Targets[i], waiting: map[string][]*waiting{}, expired: map[string]int{}}
		if c, ok := t.(clocked); ok {
			states[i].send = func(r *Request, pkt []byte) (Sent, error) { return c.sendOn(clk, r, pkt) }
		}
	}

	// Every asynchronous target's answers, on one channel.
	in := make(chan tagged)
	stop := make(chan struct{})
	defer close(stop)
	for i, t := range targets {
		ch := t.Answers()
		if ch == nil {
			continue
		}
		go func() {
			for r := range ch {
				select {
				case in <- tagged{target: i, r: r}:
				case <-stop:
					return
				}
			}
		}()
	}

	run := &runner{res: res, states: states, reqs: reqs, opts: opts, timeout: timeout, clk: clk}
	start := clk.Now()
	err := run.loop(ctx, in, start)
	res.Elapsed = clk.Now().Sub(start)
	return res, err
}

type runner struct {
	res      *Result
	states   []*targetState
	reqs     []Request
	opts     Options
	timeout  time.Duration
	clk      clock.Clock
	flushed  int
	inFlight int // exchanges sent and not done
}

// loop sends, matches and expires until every request is settled. Its
// timer is armed only while it waits for an answer, the next send or a
// deadline, and stopped as soon as it wakes: tests with a fake clock rely
// on this to know when the loop is idle.
func (r *runner) loop(ctx context.Context, in <-chan tagged, start time.Time) error {
	next := 0
	cancelled := ctx.Done()
	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		now := r.clk.Now()
		r.expire(now)
		if next == len(r.reqs) && r.inFlight == 0 && !r.discovering() {
			return nil
		}
		var sendAt time.Time
		if next < len(r.reqs) && ctx.Err() == nil && !r.discovering() {
			if r.opts.Rate > 0 {
				sendAt = start.Add(time.Duration(float64(next) / r.opts.Rate * float64(time.Second)))
			} else if r.inFlight == 0 {
				sendAt = now
			}
			if !sendAt.IsZero() && !sendAt.After(now) {
				if r.discover(&r.reqs[next]) {
					continue
				}
				r.send(next)
				next++
				continue
			}
		}
		if ctx.Err() != nil && r.inFlight == 0 && !r.discovering() {
			return ctx.Err()
		}
		wake := r.earliestDeadline()
		if !sendAt.IsZero() && (wake.IsZero() || sendAt.Before(wake)) {
			wake = sendAt
		}
		d := time.Hour
		if !wake.IsZero() {
			d = max(wake.Sub(r.clk.Now()), 0)
		}
		if ctx.Err() != nil {
			// Already ended (by Done, say): no need to wake for it.
			cancelled = nil
		}
		if timer == nil {
			timer = r.clk.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case a := <-in:
			r.received(a.target, a.r)
		case <-timer.C():
		case <-cancelled:
			// Stop sending; wait for what is in flight.
			cancelled = nil
		}
		if !timer.Stop() {
			select {
			case <-timer.C():
			default:
			}
		}
	}
}

func (r *runner) discovering() bool {
	for _, s := range r.states {
		if s.discovery != nil {
			return true
		}
	}
	return false
}

// discover starts, for every target that needs the DUID for req and does
// not know it, an Information-request to learn it. It reports whether it
// started any (or any is still going).
func (r *runner) discover(req *Request) bool {
	if r.opts.KeepServerID || !req.Rewritable() {
		return false
	}
	started := false
	for i, s := range r.states {
		if s.rep.ServerID != nil || s.discovered {
			continue
		}
		s.discovered = true
		pkt, key := discoveryRequest()
		sent, err := s.send(&Request{Wrapped: true}, pkt)
		if err != nil {
			s.rep.DiscoveryFailed = true
			continue
		}
		if sent.Sync {
			if sent.Answer != nil {
				r.learn(i, sent.Answer.Data, "learned from the answer to an Information-request sent to learn it")
			}
			if s.rep.ServerID == nil {
				s.rep.DiscoveryFailed = true
			}
			continue
		}
		w := &waiting{x: -1, target: i, key: key, deadline: sent.At.Add(r.timeout)}
		s.discovery = w
		s.waiting[key] = append(s.waiting[key], w)
		started = true
	}
	return started
}

// discoveryClient is the client of the Information-request replay sends to
// learn a server's DUID: a locally administered MAC no VM has.
var discoveryClient = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x05, 0x47}

// discoveryRequest is an Information-request without IA, relayed with a
// relay source port option, which a server answers with a Reply naming
// itself (RFC 8415 section 18.3.6).
func discoveryRequest() ([]byte, string) {
	var xid dhcpv6.TransactionID
	_, _ = rand.Read(xid[:])
	m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeInformationRequest, TransactionID: xid}
	m.AddOption(dhcpv6.OptClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: discoveryClient}))
	m.AddOption(dhcpv6.OptElapsedTime(0))
	peer := netip.MustParseAddr("fe80::ff:fe00:547")
	pkt := relay.Encapsulate(m.ToBytes(), relay.Forward{LinkAddr: netip.IPv6Unspecified(), PeerAddr: peer,
		InterfaceID: []byte("cloudstack-pd-replay"), HasSourcePort: true})
	return pkt, matchKey(xid, []levelHeader{{0, netip.IPv6Unspecified(), peer}})
}

// send sends request x to every target.
func (r *runner) send(x int) {
	req := &r.reqs[x]
	ex := &Exchange{Request: req, Outcomes: make([]Outcome, len(r.states))}
	r.res.Exchanges = append(r.res.Exchanges, ex)
	r.inFlight++
	key, hasKey := req.Key()
	for i, s := range r.states {
		o := &ex.Outcomes[i]
		o.Payload = req.Payload
		if req.Rewritable() && !r.opts.KeepServerID && s.rep.ServerID != nil {
			if p, n, err := capture.ReplaceServerID(req.Payload, s.rep.ServerID); err == nil && n > 0 && !bytes.Equal(p, req.Payload) {
				o.Payload, o.Rewritten = p, true
				s.rep.Rewritten++
			}
		}
		sent, err := s.send(req, o.Payload)
		o.Sent = sent
		if err != nil {
			o.Err = err
			o.done = true
			continue
		}
		if sent.Sync {
			o.Dropped = sent.Dropped
			if sent.Answer != nil {
				r.answered(x, i, *sent.Answer)
			}
			o.done = true
			continue
		}
		if !hasKey {
			// Nothing can match its answer: a malformed request. Wait
			// for the timeout all the same, so that a server that
			// answers shows up as unmatched answers.
			key = fmt.Sprintf("unmatchable frame %d", req.Frame)
		}
		s.waiting[key] = append(s.waiting[key], &waiting{x: x, target: i, key: key, deadline: sent.At.Add(r.timeout)})
	}
	r.checkDone(x)
}

// received matches a datagram from a target with the request it answers.
func (r *runner) received(target int, a Received) {
	s := r.states[target]
	key, ok := answerKey(a.Data)
	if !ok {
		s.rep.Unmatched++
		return
	}
	ws := s.waiting[key]
	if len(ws) == 0 {
		if s.expired[key] > 0 {
			s.expired[key]--
			s.rep.Late++
		} else {
			s.rep.Unmatched++
		}
		return
	}
	w := ws[0]
	if len(ws) == 1 {
		delete(s.waiting, key)
	} else {
		s.waiting[key] = ws[1:]
	}
	if w.x < 0 {
		s.discovery = nil
		r.learn(target, a.Data, "learned from the answer to an Information-request sent to learn it")
		if s.rep.ServerID == nil {
			s.rep.DiscoveryFailed = true
		}
		return
	}
	r.answered(w.x, target, a)
	r.res.Exchanges[w.x].Outcomes[target].done = true
	r.checkDone(w.x)
}

func (r *runner) answered(x, target int, a Received) {
	ex := r.res.Exchanges[x]
	o := &ex.Outcomes[target]
	r.learn(target, a.Data, fmt.Sprintf("learned from the answer to frame %d", ex.Request.Frame))
	o.Answer = &a
	o.Latency = a.At.Sub(o.Sent.At)
	n := Normalize(a.Data, r.states[target].rep.ServerID, ex.Request.ClientID)
	o.Normalized = &n
}

// learn takes the target's DUID from an Advertise or Reply when it does
// not know it yet.
func (r *runner) learn(target int, answer []byte, from string) {
	rep := r.states[target].rep
	if rep.ServerID != nil {
		return
	}
	_, msg, err := decodeReply(answer)
	if err != nil || len(msg) < 4 {
		return
	}
	if t := dhcpv6.MessageType(msg[0]); t != dhcpv6.MessageTypeAdvertise && t != dhcpv6.MessageTypeReply {
		return
	}
	w := relay.WalkOptions(msg[4:])
	for w.Next() {
		if data := w.Data(); w.Code() == optServerID && rep.ServerID == nil && len(data) > 0 {
			rep.ServerID = bytes.Clone(data)
			rep.ServerIDFrom = from
		}
	}
}

// expire times out what waited past its deadline.
func (r *runner) expire(now time.Time) {
	var settled []int
	defer func() {
		for _, x := range settled {
			r.checkDone(x)
		}
	}()
	for i, s := range r.states {
		for key, ws := range s.waiting {
			kept := ws[:0]
			for _, w := range ws {
				if now.Before(w.deadline) {
					kept = append(kept, w)
					continue
				}
				s.expired[key]++
				if w.x < 0 {
					s.discovery = nil
					s.rep.DiscoveryFailed = true
					continue
				}
				r.res.Exchanges[w.x].Outcomes[i].done = true
				settled = append(settled, w.x)
			}
			if len(kept) == 0 {
				delete(s.waiting, key)
			} else {
				s.waiting[key] = kept
			}
		}
	}
}

func (r *runner) earliestDeadline() time.Time {
	var t time.Time
	for _, s := range r.states {
		for _, ws := range s.waiting {
			for _, w := range ws {
				if t.IsZero() || w.deadline.Before(t) {
					t = w.deadline
				}
			}
		}
	}
	return t
}

// checkDone is called when an outcome of exchange x has settled. When
// every target's has, the exchange is no longer in flight, and the
// settled exchanges go to Options.Done in request order.
func (r *runner) checkDone(x int) {
	ex := r.res.Exchanges[x]
	if ex.settled || !r.settled(x) {
		return
	}
	ex.settled = true
	r.inFlight--
	for r.flushed < len(r.res.Exchanges) && r.settled(r.flushed) {
		if r.opts.Done != nil {
			r.opts.Done(r.res.Exchanges[r.flushed])
		}
		r.flushed++
	}
}

func (r *runner) settled(x int) bool {
	for i := range r.res.Exchanges[x].Outcomes {
		if !r.res.Exchanges[x].Outcomes[i].done {
			return false
		}
	}
	return true
}
