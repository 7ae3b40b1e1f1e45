package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// Difference is one way two servers' answers to a request differ.
type Difference struct {
	// Field is what differs: "answer" (one answered, the other not),
	// "type", "status", "ias[IA_PD 00000001].t1",
	// "ias[IA_PD 00000001].prefixes[2001:db8::/60]", "relay[0].interface-id" ...
	Field string
	// Server and Compare are the two servers' values; "(absent)" when one
	// has no such field.
	Server, Compare string
	// Expected is the rule that expects this difference; nil when none does.
	Expected *Rule
}

// Class is the kind of field: answer, type, status, ia or relay.
func (d *Difference) Class() string { return fieldClass(d.Field) }

func fieldClass(path string) string {
	switch {
	case strings.HasPrefix(path, "ias["):
		return "ia"
	case strings.HasPrefix(path, "relay"):
		return "relay"
	}
	return path
}

// noAnswer is the value of a server that did not answer.
const noAnswer = "(no answer)"

// CompareAnswers lists the differences between two servers' answers to
// one request (nil when a server did not answer) in prefixes, lifetimes,
// timers, status codes and relay echo, and marks those a rule expects.
// The server identifiers, other options and status messages are not
// compared: they differ between any two servers.
func CompareAnswers(r *Request, server, compare *Answer, rules []Rule) []Difference {
	var ds []Difference
	switch {
	case server == nil && compare == nil:
		return nil
	case server == nil || compare == nil:
		d := Difference{Field: "answer", Server: noAnswer, Compare: noAnswer}
		if server != nil {
			d.Server = server.Type + " " + server.Result()
		} else {
			d.Compare = compare.Type + " " + compare.Result()
		}
		ds = append(ds, d)
	default:
		for _, c := range diffFields(server.fields(false), compare.fields(false)) {
			ds = append(ds, Difference{Field: c.path, Server: shown(c.old, c.oldHas), Compare: shown(c.new, c.newHas)})
		}
	}
	for i := range ds {
		for j := range rules {
			if rules[j].matches(r, server, compare, &ds[i]) {
				ds[i].Expected = &rules[j]
				break
			}
		}
	}
	return ds
}

// Rule marks differences between two servers as expected: those in
// Fields, for requests that meet When.
type Rule struct {
	// Name is a short name shown with each difference it expects.
	Name string `json:"name"`
	// Why explains the difference.
	Why string `json:"why"`
	// When selects the requests (every condition set must hold).
	When Condition `json:"when"`
	// Fields lists the kinds of difference expected: "answer" (one server
	// answers, the other not), "type", "status" (top level), "ia" (any
	// field of an IA), "relay" (the relay echo), or the start of a field
	// path, in which * stands for any text: "ias[IA_PD 00000001].t1",
	// "ias[IA_NA *].addresses[". Empty: any difference.
	Fields []string `json:"fields,omitempty"`
	// ServerValue and CompareValue, when set, are the values the first and
	// the compared server must have in the difference, as replay prints
	// them: "preferred 0 valid 0", "NoPrefixAvail", "(absent)", "\"\"" ...
	ServerValue  string `json:"server-value,omitempty"`
	CompareValue string `json:"compare-value,omitempty"`
}

// Condition selects requests. Every condition that is set must hold; a
// list holds when one of its values does.
type Condition struct {
	// Frames are frame numbers.
	Frames []int `json:"frames,omitempty"`
	// Types are client message types as replay prints them (SOLICIT, RELEASE ...).
	Types []string `json:"types,omitempty"`
	// InterfaceIDs are the innermost relay's interface-id (as text, or 0x and hex).
	InterfaceIDs []string `json:"interface-ids,omitempty"`
	// MACs are client MACs as the innermost relay names them.
	MACs []string `json:"macs,omitempty"`
	// LinkAddress is "unspecified-or-link-local" (every relay level's
	// link-address is :: or link-local), "global" (some level's is
	// neither), or an address that some level's link-address equals.
	LinkAddress string `json:"link-address,omitempty"`
	// HasIA: the client message carries an IA (true) or none (false).
	HasIA *bool `json:"has-ia,omitempty"`
	// RemoteID is "text-mac" (the innermost remote-id spells a MAC in
	// text), "malformed" (shorter than its enterprise number and one
	// byte) or "absent".
	RemoteID string `json:"remote-id,omitempty"`
	// Nested: the request has more than one relay level (true) or one (false).
	Nested *bool `json:"nested,omitempty"`
	// MalformedMessage: the client message inside the relays does not
	// decode (true) or does (false).
	MalformedMessage *bool `json:"malformed-message,omitempty"`
	// Server and Compare are what each server answered: "prefix" (some
	// IA_PD got a prefix), "no-prefix" (an answer without one), "answer"
	// or "none" (no answer).
	Server  string `json:"server,omitempty"`
	Compare string `json:"compare,omitempty"`
}

func (r *Rule) matches(req *Request, server, compare *Answer, d *Difference) bool {
	if len(r.Fields) > 0 && !slices.ContainsFunc(r.Fields, func(f string) bool {
		return f == d.Class() || globPrefix(f, d.Field)
	}) {
		return false
	}
	if (r.ServerValue != "" && r.ServerValue != d.Server) || (r.CompareValue != "" && r.CompareValue != d.Compare) {
		return false
	}
	return r.When.holds(req, server, compare)
}

// globPrefix reports whether s starts with pattern, in which * stands for
// any text.
func globPrefix(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1:] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return true
}

func (c *Condition) holds(req *Request, server, compare *Answer) bool {
	if len(c.Frames) > 0 && !slices.Contains(c.Frames, req.Frame) {
		return false
	}
	if len(c.Types) > 0 && !slices.ContainsFunc(c.Types, func(t string) bool { return strings.EqualFold(t, req.Type.String()) }) {
		return false
	}
	if len(c.InterfaceIDs) > 0 && (req.Chain == nil || !slices.Contains(c.InterfaceIDs, relay.Printable(req.InterfaceID()))) {
		return false
	}
	if len(c.MACs) > 0 && !slices.ContainsFunc(c.MACs, func(m string) bool {
		mac, err := net.ParseMAC(m)
		return err == nil && bytes.Equal(mac, req.MAC)
	}) {
		return false
	}
	if c.HasIA != nil && *c.HasIA != req.HasIA {
		return false
	}
	if c.LinkAddress != "" && !linkAddressHolds(c.LinkAddress, req) {
		return false
	}
	if c.RemoteID != "" && remoteIDKind(req) != c.RemoteID {
		return false
	}
	if c.Nested != nil && (req.Chain == nil || (len(req.Chain.Levels) > 1) != *c.Nested) {
		return false
	}
	if c.MalformedMessage != nil && (req.Chain == nil || (req.MessageErr != nil) != *c.MalformedMessage) {
		return false
	}
	if c.Server != "" && answerKind(server) != c.Server && !(c.Server == "answer" && server != nil) {
		return false
	}
	if c.Compare != "" && answerKind(compare) != c.Compare && !(c.Compare == "answer" && compare != nil) {
		return false
	}
	return true
}

func linkAddressHolds(want string, req *Request) bool {
	if req.Chain == nil {
		return false
	}
	global := false
	for _, l := range req.Chain.Levels {
		if !l.LinkAddr.IsUnspecified() && !l.LinkAddr.IsLinkLocalUnicast() {
			global = true
		}
		if l.LinkAddr.String() == want {
			return true
		}
	}
	switch want {
	case "unspecified-or-link-local":
		return !global
	case "global":
		return global
	}
	return false
}

func remoteIDKind(req *Request) string {
	if req.Chain == nil {
		return ""
	}
	in := req.Chain.Innermost()
	for _, m := range in.Malformed {
		if m.Code == relay.OptRemoteID {
			return "malformed"
		}
	}
	if in.RemoteID == nil {
		return "absent"
	}
	id := in.RemoteID[4:]
	if mac, err := relay.RemoteIDMAC(in.RemoteID); err == nil && len(mac) == 6 && len(id) != 6 {
		return "text-mac"
	}
	return "binary"
}

func answerKind(a *Answer) string {
	if a == nil {
		return "none"
	}
	if a.Kind() == "prefix" {
		return "prefix"
	}
	return "no-prefix"
}

// Kea22Rules are the known differences of ISC Kea 2.2 from cloudstack-pd
// (and, where it is the RFC's, from RFC 8415), for --compare with Kea as
// the compared server. docs/replay.md lists them.
var Kea22Rules = []Rule{
	{
		Name: "kea-l2-relay",
		Why: "Kea 2.2 selects the subnet by interface-id only when some relay's link-address is neither :: nor link-local " +
			"(fixed in Kea 3.2), so it finds no subnet and gives no prefix; cloudstack-pd selects by interface-id " +
			"whatever the link-address. Only a Kea answer without a prefix where cloudstack-pd gave one is expected",
		When:   Condition{LinkAddress: "unspecified-or-link-local", Server: "prefix", Compare: "no-prefix"},
		Fields: []string{"status", "ia"},
	},
	{
		Name:   "kea-information-request-with-ia",
		Why:    "Kea 2.2 answers an Information-request that carries an IA; RFC 8415 section 16.12 says discard it",
		When:   Condition{Types: []string{"INFORMATION-REQUEST"}, HasIA: ptr(true)},
		Fields: []string{"answer", "status", "ia"},
	},
	{
		Name: "kea-release-status",
		Why: "Kea 2.2 answers a Release with a status in every IA and, when it has no binding, NoBinding at the top " +
			"level; RFC 8415 section 18.3.7 says top-level Success and NoBinding only inside each IA the server has no binding for",
		When:   Condition{Types: []string{"RELEASE"}},
		Fields: []string{"status", "ia"},
	},
	{
		Name: "kea-decline-status",
		Why: "Kea 2.2 answers a Decline of a prefix with a Reply without status; RFC 8415 section 18.3.8 says " +
			"top-level Success",
		When:   Condition{Types: []string{"DECLINE"}},
		Fields: []string{"status", "ia"},
	},
	{
		Name: "kea-text-remote-id",
		Why: "Kea reads the remote-id's bytes after the enterprise number as the hardware address, so a MAC written " +
			"as text is not found and it gives no prefix; cloudstack-pd also reads a MAC written as text (Junos can " +
			"put text there). Only a Kea answer without a prefix where cloudstack-pd gave one is expected",
		When:   Condition{RemoteID: "text-mac", Server: "prefix", Compare: "no-prefix"},
		Fields: []string{"status", "ia"},
	},
}

func ptr[T any](v T) *T { return &v }

// ExpectedFile is the --expected-differences file: JSON.
type ExpectedFile struct {
	// Builtin, true when absent, also applies Kea22Rules.
	Builtin *bool `json:"builtin,omitempty"`
	// Rules are the site's own expected differences, tried before the
	// built-in ones.
	Rules []Rule `json:"rules"`
}

// LoadRules reads an --expected-differences file and returns its rules,
// followed by Kea22Rules unless it says "builtin": false. Its errors name
// the file and the rule at fault.
func LoadRules(path string) ([]Rule, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("expected differences: %w", err)
	}
	var f ExpectedFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("expected differences %s: %w", path, err)
	}
	for i, r := range f.Rules {
		if r.Name == "" || r.Why == "" {
			return nil, fmt.Errorf("expected differences %s: rules[%d]: needs a name and a why", path, i)
		}
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("expected differences %s: rules[%d] (%s): %w", path, i, r.Name, err)
		}
	}
	rules := f.Rules
	if f.Builtin == nil || *f.Builtin {
		rules = append(rules, Kea22Rules...)
	}
	return rules, nil
}

func (r *Rule) check() error {
	c := &r.When
	switch c.LinkAddress {
	case "", "unspecified-or-link-local", "global":
	default:
		if ip := net.ParseIP(c.LinkAddress); ip == nil || ip.To4() != nil {
			return fmt.Errorf("when.link-address %q: want unspecified-or-link-local, global or an IPv6 address", c.LinkAddress)
		}
	}
	switch c.RemoteID {
	case "", "text-mac", "malformed", "absent", "binary":
	default:
		return fmt.Errorf("when.remote-id %q: want text-mac, malformed, absent or binary", c.RemoteID)
	}
	for _, k := range []string{c.Server, c.Compare} {
		switch k {
		case "", "prefix", "no-prefix", "answer", "none":
		default:
			return fmt.Errorf("when.server/compare %q: want prefix, no-prefix, answer or none", k)
		}
	}
	for _, m := range c.MACs {
		if _, err := net.ParseMAC(m); err != nil {
			return fmt.Errorf("when.macs: %w", err)
		}
	}
	for _, f := range r.Fields {
		switch {
		case f == "answer", f == "type", f == "status", f == "ia", f == "relay",
			strings.HasPrefix(f, "ias["), strings.HasPrefix(f, "relay["):
		default:
			return fmt.Errorf("fields: %q: want answer, type, status, ia, relay or a field path", f)
		}
	}
	return nil
}
