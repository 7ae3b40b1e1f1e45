package replay

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// Golden is the normalized record of a replay: for each request of a
// capture, what the server answered. Written with --record and checked
// with --expect, it is deterministic: the same capture replayed to a
// server that answers the same gives the same bytes.
type Golden struct {
	// Capture is the capture's file name (without its folder).
	Capture string `json:"capture"`
	// Wrap says how unrelayed client messages were wrapped; nil: they were not.
	Wrap *GoldenWrap `json:"wrap,omitempty"`
	// Exchanges are in capture order.
	Exchanges []GoldenExchange `json:"exchanges"`
}

// GoldenWrap records the --wrap settings.
type GoldenWrap struct {
	InterfaceID string `json:"interface-id"`
	LinkAddress string `json:"link-address"`
}

// GoldenExchange is one request and its normalized answer.
type GoldenExchange struct {
	Frame int `json:"frame"`
	// Request is the client message's type.
	Request string `json:"request"`
	// XID is its transaction id in hex.
	XID string `json:"xid,omitempty"`
	// MAC is the client MAC the innermost relay names.
	MAC string `json:"mac,omitempty"`
	// InterfaceID is the innermost relay's interface-id (see Printable).
	InterfaceID string `json:"interface-id,omitempty"`
	// Notes say how the request sent differs from the one captured
	// ("wrapped", "relay-source-port-added", "server-id-rewritten") and
	// why it may be malformed ("malformed: ...").
	Notes []string `json:"notes,omitempty"`
	// Latency is PlaceholderLatency when there is an answer.
	Latency string `json:"latency,omitempty"`
	// Answer is the normalized answer; null when there was none.
	Answer *Answer `json:"answer"`
}

// Notes of a golden exchange.
const (
	NoteWrapped           = "wrapped"
	NoteSourcePortAdded   = "relay-source-port-added"
	NoteServerIDRewritten = "server-id-rewritten"
)

// NewGolden records the answers of target (an index into the targets Run
// was given) to the exchanges of a capture.
func NewGolden(capture string, wrap *Wrap, exs []*Exchange, target int) *Golden {
	g := &Golden{Capture: capture, Exchanges: []GoldenExchange{}}
	if wrap != nil {
		link := "::"
		if wrap.LinkAddr.IsValid() {
			link = wrap.LinkAddr.String()
		}
		g.Wrap = &GoldenWrap{InterfaceID: relay.Printable(wrap.InterfaceID), LinkAddress: link}
	}
	for _, ex := range exs {
		o := &ex.Outcomes[target]
		g.Exchanges = append(g.Exchanges, goldenExchange(ex.Request, o))
	}
	return g
}

func goldenExchange(r *Request, o *Outcome) GoldenExchange {
	ge := GoldenExchange{Frame: r.Frame, Request: r.Type.String(), InterfaceID: relay.Printable(r.InterfaceID())}
	if r.HasXID {
		ge.XID = hex.EncodeToString(r.XID[:])
	}
	if r.MAC != nil {
		ge.MAC = r.MAC.String()
	}
	if r.Wrapped {
		ge.Notes = append(ge.Notes, NoteWrapped)
	}
	if r.SourcePortAdded {
		ge.Notes = append(ge.Notes, NoteSourcePortAdded)
	}
	if o.Rewritten {
		ge.Notes = append(ge.Notes, NoteServerIDRewritten)
	}
	if r.ChainErr != nil {
		ge.Notes = append(ge.Notes, "malformed: "+r.ChainErr.Error())
	}
	if o.Normalized != nil {
		a := *o.Normalized
		ge.Answer = &a
		ge.Latency = PlaceholderLatency
	}
	return ge
}

// Marshal encodes the golden file: indented JSON, one trailing newline.
func (g *Golden) Marshal() ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(g); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// WriteFile writes the golden file to path.
func (g *Golden) WriteFile(path string) error {
	b, err := g.Marshal()
	if err != nil {
		return fmt.Errorf("golden file %s: %w", path, err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("golden file: %w", err)
	}
	return nil
}

// ReadGolden reads a golden file. Its errors name the file.
func ReadGolden(path string) (*Golden, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("golden file: %w", err)
	}
	var g Golden
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&g); err != nil {
		return nil, fmt.Errorf("golden file %s: %w", path, err)
	}
	return &g, nil
}

// Expects reports whether the golden file records frame as unanswered:
// a replay against it accepts that request going without answer.
func (g *Golden) Expects(frame int) (answered, known bool) {
	for _, e := range g.Exchanges {
		if e.Frame == frame {
			return e.Answer != nil, true
		}
	}
	return false, false
}

// field is one flattened value of an exchange or an answer.
type field struct {
	path, value string
}

// fields flattens an exchange into path = value lines, with paths that
// name IAs by kind and IAID and prefixes by prefix, so that a change
// shows as one changed line.
func (e *GoldenExchange) fields() []field {
	f := []field{
		{"request", e.Request},
		{"xid", e.XID},
		{"mac", e.MAC},
		{"interface-id", e.InterfaceID},
		{"notes", strings.Join(e.Notes, ", ")},
		{"latency", e.Latency},
	}
	if e.Answer == nil {
		return append(f, field{"answer", noAnswer})
	}
	f = append(f, field{"answer", e.Answer.Type + " " + e.Answer.Result()})
	for _, a := range e.Answer.fields(true) {
		f = append(f, field{"answer." + a.path, a.value})
	}
	return f
}

// fields flattens an answer. Without all, only what two servers are
// compared on: type, status, IAs, relay echo.
func (a *Answer) fields(all bool) []field {
	f := []field{{"type", a.Type}, {"status", a.Status}}
	if all {
		f = append(f,
			field{"server-id", a.ServerID},
			field{"client-id", a.ClientID},
			field{"rapid-commit", fmt.Sprint(a.RapidCommit)},
			field{"other-options", fmt.Sprint(a.OtherOptions)},
			field{"error", a.Error})
	}
	seen := map[string]int{}
	for _, ia := range a.IAs {
		name := ia.Kind + " " + ia.IAID
		seen[name]++
		if n := seen[name]; n > 1 {
			name += fmt.Sprintf(" #%d", n)
		}
		p := "ias[" + name + "]"
		f = append(f, field{p, "present"}, field{p + ".t1", fmt.Sprint(ia.T1)}, field{p + ".t2", fmt.Sprint(ia.T2)},
			field{p + ".status", ia.Status})
		for _, l := range slices.Concat(ia.Prefixes, ia.Addresses) {
			v := fmt.Sprintf("preferred %d valid %d", l.Preferred, l.Valid)
			if l.Status != "" {
				v += " status " + l.Status
			}
			kind := "prefixes"
			if l.Address != "" {
				kind = "addresses"
			}
			f = append(f, field{p + "." + kind + "[" + l.name() + "]", v})
		}
	}
	f = append(f, field{"relay.levels", fmt.Sprint(len(a.Relay))})
	for i, l := range a.Relay {
		p := fmt.Sprintf("relay[%d].", i)
		port := ""
		if l.RelaySourcePort != nil {
			port = fmt.Sprint(*l.RelaySourcePort)
		}
		f = append(f,
			field{p + "hop-count", fmt.Sprint(l.HopCount)},
			field{p + "link-address", l.LinkAddress},
			field{p + "peer-address", l.PeerAddress},
			field{p + "interface-id", l.InterfaceID},
			field{p + "relay-source-port", port})
		if all {
			f = append(f, field{p + "other-options", fmt.Sprint(l.OtherOptions)})
		}
	}
	return f
}

// fieldChange is one path whose value differs.
type fieldChange struct {
	path           string
	old, new       string
	oldHas, newHas bool
}

// diffFields compares two flattened lists and returns the changed paths
// in the order they appear (old's order, then new's extra paths).
func diffFields(old, new []field) []fieldChange {
	om := map[string]string{}
	for _, f := range old {
		om[f.path] = f.value
	}
	nm := map[string]string{}
	for _, f := range new {
		nm[f.path] = f.value
	}
	var out []fieldChange
	for _, f := range old {
		nv, ok := nm[f.path]
		if ok && nv == f.value {
			continue
		}
		if !ok && f.value == "" {
			continue
		}
		out = append(out, fieldChange{path: f.path, old: f.value, new: nv, oldHas: true, newHas: ok})
	}
	for _, f := range new {
		if _, ok := om[f.path]; ok || f.value == "" {
			continue
		}
		out = append(out, fieldChange{path: f.path, new: f.value, newHas: true})
	}
	return out
}

func shown(v string, has bool) string {
	switch {
	case !has:
		return "(absent)"
	case v == "":
		return `""`
	}
	return v
}

// Diff compares a replay (got) with a golden file (want) and returns a
// readable report, empty when they agree. Exchanges are matched by frame
// number; within one, each changed field is shown with the expected and
// the actual value.
func Diff(want, got *Golden) string {
	var b strings.Builder
	if want.Capture != got.Capture {
		fmt.Fprintf(&b, "capture: expected %s, got %s\n", want.Capture, got.Capture)
	}
	ww, gw := fmt.Sprint(want.Wrap), fmt.Sprint(got.Wrap)
	if want.Wrap != nil {
		ww = fmt.Sprintf("%+v", *want.Wrap)
	}
	if got.Wrap != nil {
		gw = fmt.Sprintf("%+v", *got.Wrap)
	}
	if ww != gw {
		fmt.Fprintf(&b, "wrap: expected %s, got %s\n", ww, gw)
	}
	gotByFrame := map[int]*GoldenExchange{}
	for i := range got.Exchanges {
		gotByFrame[got.Exchanges[i].Frame] = &got.Exchanges[i]
	}
	wantFrames := map[int]bool{}
	for i := range want.Exchanges {
		w := &want.Exchanges[i]
		wantFrames[w.Frame] = true
		g, ok := gotByFrame[w.Frame]
		if !ok {
			fmt.Fprintf(&b, "frame %d (%s): expected in the replay, not sent\n", w.Frame, w.title())
			continue
		}
		changes := diffFields(w.fields(), g.fields())
		if (w.Answer == nil) != (g.Answer == nil) {
			// One answer is missing: its summary says it all.
			changes = slices.DeleteFunc(changes, func(c fieldChange) bool { return strings.HasPrefix(c.path, "answer.") })
		}
		if len(changes) == 0 {
			continue
		}
		fmt.Fprintf(&b, "frame %d (%s):\n", w.Frame, w.title())
		for _, c := range changes {
			fmt.Fprintf(&b, "  %s\n    expected: %s\n    got:      %s\n", c.path, shown(c.old, c.oldHas), shown(c.new, c.newHas))
		}
	}
	for i := range got.Exchanges {
		g := &got.Exchanges[i]
		if !wantFrames[g.Frame] {
			fmt.Fprintf(&b, "frame %d (%s): sent, but not in the golden file\n", g.Frame, g.title())
		}
	}
	return b.String()
}

func (e *GoldenExchange) title() string {
	s := e.Request
	if e.XID != "" {
		s += " xid " + e.XID
	}
	if e.MAC != "" {
		s += " mac " + e.MAC
	}
	if e.InterfaceID != "" {
		s += " on " + e.InterfaceID
	}
	return s
}
