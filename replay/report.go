package replay

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/capture"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// Report prints a replay as it goes, one line per exchange (and per
// compared server, and per difference), and its summary at the end.
type Report struct {
	// W receives the lines.
	W io.Writer
	// Timeout is the answer timeout, for "no answer within" lines.
	Timeout time.Duration
	// Rules mark differences between the first target and the others
	// as expected.
	Rules []Rule
	// Unanswered, when not nil, says whether a request may go without
	// answer from the first target (a golden file records it so);
	// otherwise none may.
	Unanswered func(frame int) bool
	// Quiet prints no exchange lines, only the summary.
	Quiet bool
	// Labels name the targets in exchange lines, index by index; the
	// default is "server", then "compared".
	Labels []string

	targets []targetStats
	diffs   []Difference // of all exchanges, in order
}

type targetStats struct {
	sent, answered, noAnswer, dropped, sendErrs int
	allowedNoAnswer                             int
	kinds                                       map[string]int
	latencies                                   []time.Duration
}

// Exchange prints one settled exchange and counts it.
func (r *Report) Exchange(x *Exchange) {
	for len(r.targets) < len(x.Outcomes) {
		r.targets = append(r.targets, targetStats{kinds: map[string]int{}})
	}
	req := x.Request
	for i := range x.Outcomes {
		o := &x.Outcomes[i]
		st := &r.targets[i]
		if o.Err != nil {
			st.sendErrs++
		} else {
			st.sent++
		}
		switch {
		case o.Answered():
			st.answered++
			st.latencies = append(st.latencies, o.Latency)
			st.kinds[o.Normalized.Type+" "+o.Normalized.Kind()]++
		case o.Err == nil:
			st.noAnswer++
			if o.Dropped != nil {
				st.dropped++
			}
			if i == 0 && r.Unanswered != nil && r.Unanswered(req.Frame) {
				st.allowedNoAnswer++
			}
		}
	}
	var ds []Difference
	for i := 1; i < len(x.Outcomes); i++ {
		ds = append(ds, CompareAnswers(req, x.Outcomes[0].Normalized, x.Outcomes[i].Normalized, r.Rules)...)
	}
	r.diffs = append(r.diffs, ds...)
	if r.Quiet {
		return
	}
	mac := "-"
	if req.MAC != nil {
		mac = req.MAC.String()
	}
	fmt.Fprintf(r.W, "frame %5d  %-17s  %-19s %s\n", req.Frame, mac, req.Type, r.outcome(req, &x.Outcomes[0]))
	for i := 1; i < len(x.Outcomes); i++ {
		fmt.Fprintf(r.W, "             %-38s %s\n", r.label(i), r.outcome(req, &x.Outcomes[i]))
	}
	for _, d := range ds {
		exp := "UNEXPECTED"
		if d.Expected != nil {
			exp = "expected: " + d.Expected.Name
		}
		fmt.Fprintf(r.W, "             differs %s: %s %s, %s %s (%s)\n", d.Field, r.label(0), d.Server, r.label(1), d.Compare, exp)
	}
}

func (r *Report) label(i int) string {
	if i < len(r.Labels) {
		return r.Labels[i]
	}
	if i == 0 {
		return "server"
	}
	return "compared"
}

// outcome is the part of an exchange line after the request type.
func (r *Report) outcome(req *Request, o *Outcome) string {
	var s string
	switch {
	case o.Err != nil:
		s = "-> not sent: " + o.Err.Error()
	case o.Answered():
		a := o.Normalized
		s = fmt.Sprintf("-> %-9s  %s  %s", a.Type, a.Result(), o.Latency.Round(time.Microsecond))
	case o.Dropped != nil:
		s = "-> no answer (" + o.Dropped.Error() + ")"
	default:
		s = fmt.Sprintf("-> no answer within %s", r.Timeout)
	}
	var notes []string
	if o.Rewritten {
		notes = append(notes, "server-id rewritten")
	}
	if req.ChainErr != nil {
		notes = append(notes, "malformed: "+req.ChainErr.Error())
	}
	if len(notes) > 0 {
		s += "  [" + strings.Join(notes, "; ") + "]"
	}
	return s
}

// Differences returns the differences between the first target and the
// others, over every exchange reported.
func (r *Report) Differences() []Difference { return r.diffs }

// Unexpected counts the differences no rule expects.
func (r *Report) Unexpected() int {
	n := 0
	for _, d := range r.diffs {
		if d.Expected == nil {
			n++
		}
	}
	return n
}

// NoAnswer counts the requests the first target did not answer and,
// of those, the ones no golden file allows to go unanswered.
func (r *Report) NoAnswer() (all, unexpected int) {
	if len(r.targets) == 0 {
		return 0, 0
	}
	t := &r.targets[0]
	return t.noAnswer, t.noAnswer - t.allowedNoAnswer
}

// Input describes where the requests came from, for the summary.
type Input struct {
	Capture string
	Stats   capture.Stats
	Skipped Skipped
	Reqs    []Request
	Wrap    *Wrap
}

// Summary prints the totals of the run.
func (r *Report) Summary(in Input, res *Result) {
	w := r.W
	fmt.Fprintf(w, "\n%s: %d frames, %d DHCPv6 messages, %d requests replayed", in.Capture, in.Stats.Frames, in.Stats.Packets, len(in.Reqs))
	if res != nil {
		fmt.Fprintf(w, " in %s", res.Elapsed.Round(time.Millisecond))
	}
	fmt.Fprintln(w)
	if n := in.Skipped.Total(); n > 0 {
		var why []string
		if in.Skipped.ServerMessages > 0 {
			why = append(why, fmt.Sprintf("%d servers' answers", in.Skipped.ServerMessages))
		}
		if in.Skipped.NotToServer > 0 {
			why = append(why, fmt.Sprintf("%d sent to clients", in.Skipped.NotToServer))
		}
		if in.Skipped.Unrelayed > 0 {
			why = append(why, fmt.Sprintf("%d unrelayed client messages (--wrap replays them)", in.Skipped.Unrelayed))
		}
		fmt.Fprintf(w, "  skipped %d messages: %s\n", n, strings.Join(why, ", "))
	}
	if in.Stats.Skipped > 0 {
		fmt.Fprintf(w, "  %d frames hold no DHCPv6 over IPv6\n", in.Stats.Skipped)
	}
	if in.Stats.Malformed > 0 {
		fmt.Fprintf(w, "  %d malformed frames not replayed:\n", in.Stats.Malformed)
		for _, e := range in.Stats.Errors {
			fmt.Fprintf(w, "    %s\n", e.Error())
		}
	}
	var wrapped, noMAC, added, noPort int
	for i := range in.Reqs {
		switch {
		case in.Reqs[i].Wrapped:
			wrapped++
			if len(in.Reqs[i].SrcMAC) == 0 {
				noMAC++
			}
		case in.Reqs[i].SourcePortAdded:
			added++
		case in.Reqs[i].NoSourcePort:
			noPort++
		}
	}
	if wrapped > 0 {
		link := "::"
		if in.Wrap.LinkAddr.IsValid() {
			link = in.Wrap.LinkAddr.String()
		}
		fmt.Fprintf(w, "  wrapped %d unrelayed client messages as a Junos relay does: interface-id %q, link-address %s, remote-id 2636 + the frame's source MAC, relay source port option\n",
			wrapped, relay.Printable(in.Wrap.InterfaceID), link)
		if noMAC > 0 {
			fmt.Fprintf(w, "  %d of them were captured on a link without MAC addresses: sent without remote-id\n", noMAC)
		}
	}
	if added > 0 {
		fmt.Fprintf(w, "  added a relay source port option (135) to %d captured Relay-Forwards that had none, so that the answers come to replay's port instead of port 547\n", added)
	}
	if noPort > 0 {
		fmt.Fprintf(w, "  %d malformed Relay-Forwards sent as captured, without relay source port option: an answer to them would go to port 547\n", noPort)
	}
	if res == nil {
		return
	}
	for i, t := range res.Targets {
		fmt.Fprintf(w, "%s (%s):\n", r.label(i), t.Name)
		var st targetStats
		if i < len(r.targets) {
			st = r.targets[i]
		}
		line := fmt.Sprintf("  sent %d, answered %d, no answer %d", st.sent, st.answered, st.noAnswer)
		if st.dropped > 0 {
			line += fmt.Sprintf(" (%d dropped by the handler)", st.dropped)
		}
		if st.allowedNoAnswer > 0 {
			line += fmt.Sprintf(" (%d of them expected by the golden file)", st.allowedNoAnswer)
		}
		if st.sendErrs > 0 {
			line += fmt.Sprintf(", %d not sent (errors)", st.sendErrs)
		}
		fmt.Fprintln(w, line)
		if len(st.kinds) > 0 {
			var ks []string
			for k, n := range st.kinds {
				ks = append(ks, fmt.Sprintf("%s %d", k, n))
			}
			slices.Sort(ks)
			fmt.Fprintf(w, "  answers: %s\n", strings.Join(ks, ", "))
		}
		if len(st.latencies) > 0 {
			l := slices.Clone(st.latencies)
			slices.Sort(l)
			fmt.Fprintf(w, "  latency: p50 %s, p99 %s, max %s\n", percentile(l, 0.50), percentile(l, 0.99), l[len(l)-1].Round(time.Microsecond))
		}
		switch {
		case t.ServerID != nil:
			fmt.Fprintf(w, "  server id %x (%s)", t.ServerID, t.ServerIDFrom)
			if t.Rewritten > 0 {
				fmt.Fprintf(w, ": rewritten into %d requests that named another server", t.Rewritten)
			}
			fmt.Fprintln(w)
		case t.DiscoveryFailed:
			fmt.Fprintln(w, "  server id unknown (no answer to an Information-request sent to learn it): requests naming a server were sent as captured")
		}
		if t.Late > 0 || t.Unmatched > 0 {
			fmt.Fprintf(w, "  %d answers came after their request timed out, %d answered no request sent\n", t.Late, t.Unmatched)
		}
	}
	if len(res.Targets) > 1 {
		exp := len(r.diffs) - r.Unexpected()
		fmt.Fprintf(w, "differences: %d (%d expected, %d unexpected)\n", len(r.diffs), exp, r.Unexpected())
		byRule := map[string]int{}
		for _, d := range r.diffs {
			if d.Expected != nil {
				byRule[d.Expected.Name]++
			}
		}
		var names []string
		for n := range byRule {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			for _, rule := range r.Rules {
				if rule.Name == n {
					fmt.Fprintf(w, "  %s (%d): %s\n", n, byRule[n], rule.Why)
					break
				}
			}
		}
	}
	if all, unexpected := r.NoAnswer(); all > 0 {
		switch {
		case unexpected == 0:
			fmt.Fprintf(w, "%d requests got no answer, as the golden file expects\n", all)
		default:
			fmt.Fprintf(w, "%d requests got no answer: a server rightly leaves some unanswered (Confirm, Information-request with an IA, malformed packets, a request naming another server), but replay cannot tell those from lost ones\n", unexpected)
		}
	}
}

// percentile returns the nearest-rank q-quantile of sorted durations.
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	i = min(max(i, 0), len(sorted)-1)
	return sorted[i].Round(time.Microsecond)
}
