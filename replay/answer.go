package replay

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// Placeholders of the normalized answers: values that differ between runs
// or between servers for no fault of either.
const (
	// PlaceholderServerID stands for the target's own DUID in a Server
	// Identifier. Another DUID is kept, in hex.
	PlaceholderServerID = "<server-duid>"
	// PlaceholderLatency stands for an answer's latency.
	PlaceholderLatency = "<latency>"
	// ClientIDEchoed is the Client Identifier that echoes the request's.
	ClientIDEchoed = "echoed"
)

// Answer is a server's answer, normalized: what a golden file holds and
// what two servers' answers are compared on.
type Answer struct {
	// Type is the client message's type: ADVERTISE, REPLY ...
	Type string `json:"type"`
	// ServerID is PlaceholderServerID for the target's DUID, else the DUID
	// in hex, or "" when the answer names no server.
	ServerID string `json:"server-id,omitempty"`
	// ClientID is ClientIDEchoed when the answer echoes the request's
	// Client Identifier, else its hex, or "" when it has none.
	ClientID string `json:"client-id,omitempty"`
	// Status is the top-level status code's name ("" without one).
	Status string `json:"status,omitempty"`
	// RapidCommit says the answer carries a Rapid Commit option (14).
	RapidCommit bool `json:"rapid-commit,omitempty"`
	// IAs are the answer's IA_NA, IA_TA and IA_PD, in the answer's order.
	IAs []IA `json:"ias,omitempty"`
	// OtherOptions lists the codes of the other top-level options, sorted.
	OtherOptions []int `json:"other-options,omitempty"`
	// Relay is the Relay-Reply chain, outermost level first.
	Relay []Echo `json:"relay"`
	// Error says why the answer, or part of it, does not decode.
	Error string `json:"error,omitempty"`
}

// IA is one identity association of an answer.
type IA struct {
	// Kind is IA_NA, IA_TA or IA_PD.
	Kind string `json:"kind"`
	// IAID is the IA's identifier in hex.
	IAID string `json:"iaid"`
	// T1 and T2 are the timers in seconds (none for IA_TA).
	T1 uint32 `json:"t1"`
	T2 uint32 `json:"t2"`
	// Status is the IA's status code name ("" without one).
	Status string `json:"status,omitempty"`
	// Prefixes are the IA_PD's prefixes, Addresses the IA_NA's or
	// IA_TA's addresses, in the answer's order.
	Prefixes  []Lease `json:"prefixes,omitempty"`
	Addresses []Lease `json:"addresses,omitempty"`
}

// Lease is a delegated prefix or an assigned address with its lifetimes in
// seconds. Zero lifetimes withdraw it.
type Lease struct {
	Prefix    string `json:"prefix,omitempty"`
	Address   string `json:"address,omitempty"`
	Preferred uint32 `json:"preferred"`
	Valid     uint32 `json:"valid"`
	// Status is the status code inside the prefix or address, if any.
	Status string `json:"status,omitempty"`
}

func (l Lease) name() string {
	if l.Prefix != "" {
		return l.Prefix
	}
	return l.Address
}

// Echo is one Relay-Reply level: what it copies and echoes from its
// Relay-Forward level.
type Echo struct {
	HopCount    uint8  `json:"hop-count"`
	LinkAddress string `json:"link-address"`
	PeerAddress string `json:"peer-address"`
	// InterfaceID is the echoed interface-id as text when it is printable,
	// else 0x and hex; "" when absent.
	InterfaceID string `json:"interface-id,omitempty"`
	// RelaySourcePort is the echoed relay source port option's value; nil
	// when absent.
	RelaySourcePort *uint16 `json:"relay-source-port,omitempty"`
	// OtherOptions lists the codes of the level's other options (not the
	// relay message), sorted.
	OtherOptions []int `json:"other-options,omitempty"`
}

// replyLevel is a decoded Relay-Reply level.
type replyLevel struct {
	levelHeader
	echo Echo
}

// decodeReply decodes a Relay-Reply chain down to the client message
// (relay.DecodeReply). On error it returns the levels read so far.
func decodeReply(b []byte) ([]replyLevel, []byte, error) {
	var c relay.Chain
	err := relay.DecodeReplyInto(&c, b)
	levels := make([]replyLevel, len(c.Levels))
	for i := range c.Levels {
		levels[i] = replyEcho(&c.Levels[i])
	}
	if err != nil {
		return levels, nil, err
	}
	return levels, c.Message, nil
}

// replyEcho reads what a Relay-Reply level echoes: its header, and of its
// options (as far as they are well formed) the interface-id, the relay
// source port and the codes of the others.
func replyEcho(lvl *relay.Level) replyLevel {
	l := replyLevel{levelHeader: levelHeader{hop: lvl.HopCount, link: lvl.LinkAddr, peer: lvl.PeerAddr}}
	l.echo = Echo{HopCount: l.hop, LinkAddress: l.link.String(), PeerAddress: l.peer.String()}
	w := relay.WalkOptions(lvl.Options)
	for w.Next() {
		code, data := w.Code(), w.Data()
		switch code {
		case relay.OptRelayMsg:
		case relay.OptInterfaceID:
			l.echo.InterfaceID = relay.Printable(data)
		case relay.OptRelaySourcePort:
			if len(data) == 2 {
				p := binary.BigEndian.Uint16(data)
				l.echo.RelaySourcePort = &p
			} else {
				l.echo.OtherOptions = append(l.echo.OtherOptions, int(code))
			}
		default:
			l.echo.OtherOptions = append(l.echo.OtherOptions, int(code))
		}
	}
	slices.Sort(l.echo.OtherOptions)
	return l
}

// answerKey is the key of an answer, to match it with Request.Key.
func answerKey(b []byte) (string, bool) {
	levels, msg, err := decodeReply(b)
	if err != nil || len(msg) < 4 {
		return "", false
	}
	shape := make([]levelHeader, len(levels))
	for i, l := range levels {
		shape[i] = l.levelHeader
	}
	return matchKey(dhcpv6.TransactionID(msg[1:4]), shape), true
}

// Normalize decodes an answer into an Answer. serverID is the target's
// DUID (nil when not known), clientID the request's Client Identifier
// (nil when it had none). It never fails: what does not decode is said in
// Answer.Error.
func Normalize(b []byte, serverID, clientID []byte) Answer {
	levels, msg, err := decodeReply(b)
	var a Answer
	for _, l := range levels {
		a.Relay = append(a.Relay, l.echo)
	}
	if a.Relay == nil {
		a.Relay = []Echo{}
	}
	if err != nil {
		a.Error = err.Error()
		if errors.Is(err, relay.ErrNotRelayReply) && len(b) > 0 {
			a.Type = dhcpv6.MessageType(b[0]).String()
		}
		return a
	}
	if len(msg) < 4 {
		a.Error = fmt.Sprintf("client message of %d bytes", len(msg))
		return a
	}
	a.Type = dhcpv6.MessageType(msg[0]).String()
	var errs []string
	other := map[int]bool{}
	w := relay.WalkOptions(msg[4:])
	for w.Next() {
		code, data := w.Code(), w.Data()
		switch dhcpv6.OptionCode(code) {
		case dhcpv6.OptionServerID:
			if serverID != nil && bytes.Equal(data, serverID) {
				a.ServerID = PlaceholderServerID
			} else {
				a.ServerID = hex.EncodeToString(data)
			}
		case dhcpv6.OptionClientID:
			if clientID != nil && bytes.Equal(data, clientID) {
				a.ClientID = ClientIDEchoed
			} else {
				a.ClientID = hex.EncodeToString(data)
			}
		case dhcpv6.OptionStatusCode:
			a.Status = statusName(data)
		case dhcpv6.OptionRapidCommit:
			a.RapidCommit = true
		case dhcpv6.OptionIANA, dhcpv6.OptionIATA, dhcpv6.OptionIAPD:
			ia, err := decodeIA(dhcpv6.OptionCode(code), data)
			if err != nil {
				errs = append(errs, err.Error())
			}
			a.IAs = append(a.IAs, ia)
		default:
			other[int(code)] = true
		}
	}
	if err := w.Err(); err != nil {
		errs = append(errs, err.Error())
	}
	for c := range other {
		a.OtherOptions = append(a.OtherOptions, c)
	}
	slices.Sort(a.OtherOptions)
	a.Error = strings.Join(errs, "; ")
	return a
}

// statusName names a Status Code option's code (its message is not kept:
// it is free text, different in every server).
func statusName(data []byte) string {
	if len(data) < 2 {
		return fmt.Sprintf("malformed status code (%d bytes)", len(data))
	}
	c := iana.StatusCode(binary.BigEndian.Uint16(data))
	if s := c.String(); !strings.HasPrefix(s, "Unknown") {
		return s
	}
	return fmt.Sprintf("status %d", uint16(c))
}

// leaseStatus is the name of the last Status Code among the options of an
// IA Prefix or IA Address ("" for none), read as far as they are well formed.
func leaseStatus(opts []byte) string {
	status := ""
	w := relay.WalkOptions(opts)
	for w.Next() {
		if dhcpv6.OptionCode(w.Code()) == dhcpv6.OptionStatusCode {
			status = statusName(w.Data())
		}
	}
	return status
}

func decodeIA(code dhcpv6.OptionCode, data []byte) (IA, error) {
	ia := IA{}
	head := 12
	switch code {
	case dhcpv6.OptionIANA:
		ia.Kind = "IA_NA"
	case dhcpv6.OptionIATA:
		ia.Kind, head = "IA_TA", 4
	default:
		ia.Kind = "IA_PD"
	}
	if len(data) < head {
		return ia, fmt.Errorf("%s of %d bytes", ia.Kind, len(data))
	}
	ia.IAID = hex.EncodeToString(data[:4])
	if head == 12 {
		ia.T1 = binary.BigEndian.Uint32(data[4:])
		ia.T2 = binary.BigEndian.Uint32(data[8:])
	}
	var errs []string
	w := relay.WalkOptions(data[head:])
	for w.Next() {
		c, d := w.Code(), w.Data()
		switch dhcpv6.OptionCode(c) {
		case dhcpv6.OptionStatusCode:
			ia.Status = statusName(d)
		case dhcpv6.OptionIAPrefix:
			if len(d) < 25 {
				errs = append(errs, fmt.Sprintf("%s %s: IAPREFIX of %d bytes", ia.Kind, ia.IAID, len(d)))
				continue
			}
			p := netip.PrefixFrom(netip.AddrFrom16([16]byte(d[9:25])), int(d[8]))
			l := Lease{Prefix: p.String(), Preferred: binary.BigEndian.Uint32(d), Valid: binary.BigEndian.Uint32(d[4:])}
			l.Status = leaseStatus(d[25:])
			ia.Prefixes = append(ia.Prefixes, l)
		case dhcpv6.OptionIAAddr:
			if len(d) < 24 {
				errs = append(errs, fmt.Sprintf("%s %s: IAADDR of %d bytes", ia.Kind, ia.IAID, len(d)))
				continue
			}
			l := Lease{Address: netip.AddrFrom16([16]byte(d[:16])).String(),
				Preferred: binary.BigEndian.Uint32(d[16:]), Valid: binary.BigEndian.Uint32(d[20:])}
			l.Status = leaseStatus(d[24:])
			ia.Addresses = append(ia.Addresses, l)
		}
	}
	if err := w.Err(); err != nil {
		errs = append(errs, fmt.Sprintf("%s %s: %v", ia.Kind, ia.IAID, err))
	}
	if len(errs) > 0 {
		return ia, errors.New(strings.Join(errs, "; "))
	}
	return ia, nil
}

// Kind classifies an answer for the summary: "prefix" when an IA_PD got
// a prefix with a non-zero valid lifetime, else the first status code of
// an IA, else "withdrawn" when an IA_PD names prefixes (all with valid
// lifetime 0), else the top-level status, else "no IA".
func (a *Answer) Kind() string {
	for _, ia := range a.IAs {
		for _, p := range ia.Prefixes {
			if p.Valid > 0 {
				return "prefix"
			}
		}
	}
	for _, ia := range a.IAs {
		if ia.Status != "" && ia.Status != "Success" {
			return ia.Status
		}
	}
	for _, ia := range a.IAs {
		if len(ia.Prefixes) > 0 {
			return "withdrawn"
		}
	}
	if a.Status != "" {
		return a.Status
	}
	if a.Error != "" {
		return "undecodable"
	}
	return "no IA"
}

// Result says in a few words what the answer gives: its prefixes (a
// withdrawn one with a leading minus), addresses, and status codes.
func (a *Answer) Result() string {
	var parts []string
	if a.Status != "" {
		parts = append(parts, a.Status)
	}
	for _, ia := range a.IAs {
		var got []string
		for _, l := range slices.Concat(ia.Prefixes, ia.Addresses) {
			s := l.name()
			if l.Valid == 0 {
				s = "-" + s + " (withdrawn)"
			}
			if l.Status != "" {
				s += " " + l.Status
			}
			got = append(got, s)
		}
		if ia.Status != "" {
			got = append(got, ia.Status)
		}
		if len(got) == 0 {
			got = append(got, "empty")
		}
		s := strings.Join(got, " ")
		if ia.Kind != "IA_PD" {
			s = ia.Kind + " " + s
		}
		parts = append(parts, s)
	}
	if a.RapidCommit {
		parts = append(parts, "rapid-commit")
	}
	if a.Error != "" {
		parts = append(parts, "undecodable: "+a.Error)
	}
	if len(parts) == 0 {
		return "(no IA, no status)"
	}
	return strings.Join(parts, ", ")
}
