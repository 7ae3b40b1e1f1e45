package replay

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/capture"
)

// Exit statuses of a session that ran but did not pass (ExitError), besides
// 0 (all answered, as expected) and 1 (an error).
const (
	ExitNoAnswer    = 2
	ExitDifferences = 3
)

// ExitError is a session's outcome when the replay ran but did not pass.
type ExitError struct {
	Code int
	Msg  string
}

func (e *ExitError) Error() string { return e.Msg }

// ExitCode is the exit status the replay command ends with.
func (e *ExitError) ExitCode() int { return e.Code }

// Session is one replay of a capture as the replay command runs it, its
// flags parsed and checked.
type Session struct {
	// Capture is the capture file (--pcap).
	Capture string
	// Offline, when set, is the in-process handler replayed to
	// (--offline), built from Config; OfflineNote, when not empty, is
	// printed before the replay.
	Offline     Target
	OfflineNote string
	Config      string
	// Server is the server replayed to when Offline is nil (--server).
	Server netip.AddrPort
	// Compare, when valid, is a second server whose answers are compared
	// (--compare) by Kea22Rules or the rules in ExpectedDifferences.
	Compare             netip.AddrPort
	ExpectedDifferences string
	// Wrap wraps unrelayed client messages (--wrap).
	Wrap *Wrap
	// ServerID replaces the server identifier of the requests (--server-id);
	// KeepServerID keeps the captured one.
	ServerID     []byte
	KeepServerID bool
	Rate         float64
	Timeout      time.Duration
	// AllowDrops accepts unanswered requests.
	AllowDrops bool
	// Record and WriteAnswers are files to write the answers to (golden,
	// pcap); Expect a golden file the answers must match.
	Record, WriteAnswers, Expect string
	Quiet                        bool
}

// RunSession replays s, printing to out. It returns an *ExitError when the
// replay ran but did not pass.
func RunSession(ctx context.Context, out io.Writer, s Session) error {
	var (
		want  *Golden
		rules []Rule
		err   error
	)
	if s.Expect != "" {
		if want, err = ReadGolden(s.Expect); err != nil {
			return err
		}
	}
	if s.Compare.IsValid() {
		rules = Kea22Rules
		if s.ExpectedDifferences != "" {
			if rules, err = LoadRules(s.ExpectedDifferences); err != nil {
				return err
			}
		}
	}

	pkts, stats, err := capture.ReadFile(s.Capture)
	if err != nil {
		return err
	}
	reqs, skipped := Extract(pkts, ExtractOptions{Wrap: s.Wrap})
	if len(reqs) == 0 {
		hint := ""
		if skipped.Unrelayed > 0 {
			hint = fmt.Sprintf(" (%d client messages were sent unrelayed: --wrap --interface-id ID replays them)", skipped.Unrelayed)
		}
		return fmt.Errorf("%s: no request to replay: %d frames, %d DHCPv6 messages, none a Relay-Forward sent to port 547%s",
			s.Capture, stats.Frames, stats.Packets, hint)
	}

	var targets []Target
	defer func() {
		for _, t := range targets {
			t.Close()
		}
	}()
	mode := "one request at a time"
	if s.Rate > 0 {
		mode = fmt.Sprintf("%g requests per second", s.Rate)
	}
	if s.Offline != nil {
		fmt.Fprintf(out, "replaying %s to the handler in-process (--offline, config %s), %s\n", s.Capture, s.Config, mode)
		if s.OfflineNote != "" {
			fmt.Fprintln(out, s.OfflineNote)
		}
		targets = append(targets, s.Offline)
	} else {
		ap := s.Server
		u, err := DialUDP(ap)
		if err != nil {
			return err
		}
		targets = append(targets, u)
		fmt.Fprintf(out, "replaying %s to %s from %s, %s, timeout %s\n", s.Capture, ap, u.Local(), mode, s.Timeout)
	}
	labels := []string{"server"}
	if s.Compare.IsValid() {
		ap := s.Compare
		u, err := DialUDP(ap)
		if err != nil {
			return err
		}
		targets = append(targets, u)
		labels = append(labels, "compare")
		fmt.Fprintf(out, "comparing with %s from %s\n", ap, u.Local())
	}
	fmt.Fprintln(out)

	rep := &Report{W: out, Timeout: s.Timeout, Rules: rules, Quiet: s.Quiet, Labels: labels}
	if want != nil {
		rep.Unanswered = func(frame int) bool {
			answered, known := want.Expects(frame)
			return known && !answered
		}
	}
	res, runErr := Run(ctx, reqs, targets, Options{
		Rate: s.Rate, Timeout: s.Timeout, ServerIDs: [][]byte{s.ServerID}, KeepServerID: s.KeepServerID, Done: rep.Exchange,
	})
	if res == nil {
		return runErr
	}
	rep.Summary(Input{Capture: s.Capture, Stats: stats, Skipped: skipped, Reqs: reqs, Wrap: s.Wrap}, res)

	got := NewGolden(filepath.Base(s.Capture), s.Wrap, res.Exchanges, 0)
	if s.Record != "" {
		if err := got.WriteFile(s.Record); err != nil {
			return err
		}
		fmt.Fprintf(out, "answers recorded in %s\n", s.Record)
	}
	if s.WriteAnswers != "" {
		if err := writeAnswers(s.WriteAnswers, res.Exchanges); err != nil {
			return err
		}
		fmt.Fprintf(out, "requests and answers written to %s\n", s.WriteAnswers)
	}
	if runErr != nil {
		return fmt.Errorf("replay stopped after %d of %d requests: %w", len(res.Exchanges), len(reqs), runErr)
	}

	var fails []string
	code := 0
	if want != nil {
		if d := Diff(want, got); d != "" {
			fmt.Fprintf(out, "\nthe answers differ from %s:\n%s", s.Expect, d)
			fails = append(fails, "the answers differ from "+s.Expect)
			code = ExitDifferences
		} else {
			fmt.Fprintf(out, "the answers match %s (%d exchanges)\n", s.Expect, len(want.Exchanges))
		}
	}
	if n := rep.Unexpected(); n > 0 {
		fails = append(fails, fmt.Sprintf("%d unexpected differences between %s and %s", n, targets[0].Name(), targets[1].Name()))
		code = ExitDifferences
	}
	if _, n := rep.NoAnswer(); n > 0 && !s.AllowDrops {
		fails = append(fails, fmt.Sprintf("%d requests got no answer (--allow-drops accepts that)", n))
		if code == 0 {
			code = ExitNoAnswer
		}
	}
	if code != 0 {
		return &ExitError{Code: code, Msg: strings.Join(fails, "; ")}
	}
	return nil
}

func writeAnswers(path string, exs []*Exchange) error {
	fh, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--write-answers: %w", err)
	}
	if err := WriteCapture(fh, exs); err != nil {
		fh.Close()
		return fmt.Errorf("--write-answers %s: %w", path, err)
	}
	return fh.Close()
}
