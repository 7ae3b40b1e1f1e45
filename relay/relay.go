// Package relay decodes DHCPv6 Relay-Forward chains and builds the matching
// Relay-Reply, with pure functions from bytes to values and back: no
// sockets, no clock, no logging.
//
// Decode reads up to MaxLevels nested Relay-Forward levels and keeps, for
// each, the header (hop-count, link-address, peer-address) and the options
// a server needs: interface-id (18), remote-id (37), relay-id (53),
// client link-layer address (79) and relay source port (135). The client
// message inside is returned as bytes; the server decodes it. DecodeReply
// is its inverse for a Relay-Reply chain (what AppendReply writes), for
// the tools that read answers (replay, bench).
//
// The option format (code, length, data) is walked in one place, the
// OptionWalker (WalkOptions), which every package of the project that
// reads DHCPv6 options by hand uses; HeaderLen is a relay message's fixed
// header length.
//
// Why the relay layer is not decoded by github.com/insomniacslk/dhcp: that
// library rejects a whole message when a single option does not parse (a
// remote-id under 4 bytes, say; upstream issue 341), and its
// NewRelayReplFromRelayForw rewrites hop-counts instead of copying them.
// This package is the one place that works around both: it walks the
// relay's option TLVs itself, judges each option it uses on its own
// (recording, not failing on, a malformed one the server can do without),
// and writes each Relay-Reply level from the values it copied (AppendReply,
// checked byte for byte against the library's encoder). The client message
// inside is decoded and encoded with the library's types (see server/wire).
//
// The values a Chain holds point into the packet buffer passed to Decode:
// they are valid only as long as that buffer is. Copy what must outlive it.
package relay

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
)

// MaxLevels is the deepest relay nesting decoded. RFC 8415 limits relays to
// 32 hops (HOP_COUNT_LIMIT); a deeper chain is refused with ErrTooDeep.
const MaxLevels = 32

// DHCPv6 message types and option codes this package reads.
const (
	MsgRelayForward = 12
	MsgRelayReply   = 13

	OptRelayMsg          = 9
	OptInterfaceID       = 18
	OptRemoteID          = 37
	OptRelayID           = 53
	OptClientLinkLayer   = 79
	OptRelaySourcePort   = 135
	remoteIDEnterpriseSz = 4
)

// Errors returned by Decode. The wrapping error says where in the chain.
var (
	// ErrNotRelayForward is returned when the outermost message is not a Relay-Forward.
	ErrNotRelayForward = errors.New("not a Relay-Forward")
	// ErrTruncated is returned when a header or an option runs past the end of the data.
	ErrTruncated = errors.New("truncated")
	// ErrNoRelayMessage is returned when a relay level carries no Relay Message option (9).
	ErrNoRelayMessage = errors.New("no relay message option")
	// ErrDuplicateOption is returned when a level carries option 9 twice.
	ErrDuplicateOption = errors.New("option repeated")
	// ErrTooDeep is returned when relays nest deeper than MaxLevels.
	ErrTooDeep = errors.New("relays nested too deep")
	// ErrEmptyMessage is returned when the client message inside is empty.
	ErrEmptyMessage = errors.New("empty client message")
	// ErrRelayReplyInside is returned when a Relay-Reply is found inside a Relay-Forward.
	ErrRelayReplyInside = errors.New("relay-reply inside relay-forward")

	// ErrNotRelayReply is returned by DecodeReply when the outermost message is not a Relay-Reply.
	ErrNotRelayReply = errors.New("not a Relay-Reply")
	// ErrRelayForwardInside is returned by DecodeReply when a Relay-Forward is found inside a Relay-Reply.
	ErrRelayForwardInside = errors.New("relay-forward inside relay-reply")
)

// Level is one relay level of a chain: a Relay-Forward's (Decode) or a
// Relay-Reply's (DecodeReply).
type Level struct {
	HopCount uint8
	LinkAddr netip.Addr
	PeerAddr netip.Addr

	// InterfaceID is the interface-id option's data; nil when absent.
	InterfaceID []byte
	// RemoteID is the remote-id option's data, enterprise number included;
	// nil when absent or malformed (shorter than the 4-byte enterprise number).
	RemoteID []byte
	// RelayID is the relay-id option's data (a DUID); nil when absent.
	RelayID []byte
	// ClientLinkLayer is option 79's data (2-byte link-layer type, then the
	// address); nil when absent or malformed.
	ClientLinkLayer []byte
	// SourcePort is option 135's Downstream Source Port; HasSourcePort
	// says whether the option was present.
	SourcePort    uint16
	HasSourcePort bool

	// Malformed lists the options of this level that were dropped because
	// their value cannot be what the option says. The rest of the level is
	// kept: a bad remote-id costs the remote-id, not the packet.
	Malformed []MalformedOption

	// Options is the level's whole option area as received (relay message
	// included), for a caller that reads options this package does not
	// keep (walk it with WalkOptions). Nil in a Level built by hand.
	Options []byte
}

// MalformedOption records an option Decode dropped.
type MalformedOption struct {
	Code   uint16
	Len    int
	Reason string
}

func (m MalformedOption) String() string {
	return fmt.Sprintf("option %d (%d bytes): %s", m.Code, m.Len, m.Reason)
}

// Chain is a decoded Relay-Forward chain.
type Chain struct {
	// Levels are outermost first: Levels[0] is the relay that sent the
	// packet to the server, Levels[len-1] is the relay closest to the client.
	Levels []Level
	// Message is the client's message (never a relay message).
	Message []byte
}

// Innermost returns the relay level closest to the client.
func (c *Chain) Innermost() *Level { return &c.Levels[len(c.Levels)-1] }

// Outermost returns the relay level that sent the packet to the server.
func (c *Chain) Outermost() *Level { return &c.Levels[0] }

// InterfaceID returns the innermost relay's interface-id (nil when absent):
// the relay closest to the client names the client's VLAN. A server that
// takes identity from the chain reads Trusted's instead: the innermost
// level may have been written by the client itself.
func (c *Chain) InterfaceID() []byte { return c.Innermost().InterfaceID }

// Trusted returns the innermost trusted level of the chain: of the depth
// levels counted from the server (Levels[0:depth]), which the operator's own
// relays add, the one closest to the client. A chain of fewer levels than
// depth has its innermost level trusted; depth below 1 counts as 1. The
// levels below the trusted ones, if any, can be written by the client (a
// relay wraps a Relay-Forward it receives from a client like any other
// message): nothing that identifies the client may be read from them.
func (c *Chain) Trusted(depth int) *Level {
	return &c.Levels[min(max(depth, 1), len(c.Levels))-1]
}

// Printable renders an interface-id (or any option value) as text when
// every byte is printable ASCII, else as 0x and hex: for logs, the HTTP
// API and replay reports.
func Printable(b []byte) string {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return "0x" + hex.EncodeToString(b)
		}
	}
	return string(b)
}

// Decode decodes a Relay-Forward chain. The chain's slices point into b.
func Decode(b []byte) (*Chain, error) {
	c := &Chain{}
	if err := DecodeInto(c, b); err != nil {
		return nil, err
	}
	return c, nil
}

// DecodeInto is Decode into a caller-owned Chain, reusing its Levels slice
// so that a worker can decode packet after packet without allocating. On
// error, c.Levels holds the levels read so far, the one that failed last
// when its header was whole.
func DecodeInto(c *Chain, b []byte) error {
	return decodeChain(c, b, MsgRelayForward)
}

// decodeChain decodes nested relay messages of type typ (Relay-Forward or
// Relay-Reply) down to the message inside.
func decodeChain(c *Chain, b []byte, typ byte) error {
	c.Levels = c.Levels[:0]
	c.Message = nil
	if len(b) == 0 {
		return fmt.Errorf("relay: %w: empty packet", ErrTruncated)
	}
	if b[0] != typ {
		if typ == MsgRelayReply {
			return fmt.Errorf("relay: message type %d: %w", b[0], ErrNotRelayReply)
		}
		return fmt.Errorf("relay: message type %d: %w", b[0], ErrNotRelayForward)
	}
	for depth := 0; ; depth++ {
		if depth == MaxLevels {
			return fmt.Errorf("relay: more than %d levels: %w", MaxLevels, ErrTooDeep)
		}
		if len(b) < HeaderLen {
			return fmt.Errorf("relay: level %d: header needs %d bytes, have %d: %w", depth, HeaderLen, len(b), ErrTruncated)
		}
		c.Levels = append(c.Levels, Level{})
		lvl := &c.Levels[len(c.Levels)-1]
		lvl.HopCount = b[1]
		lvl.LinkAddr = netip.AddrFrom16([16]byte(b[2:18]))
		lvl.PeerAddr = netip.AddrFrom16([16]byte(b[18:HeaderLen]))
		lvl.Options = b[HeaderLen:]
		inner, err := decodeOptions(lvl, b[HeaderLen:])
		if err != nil {
			return fmt.Errorf("relay: level %d: %w", depth, err)
		}
		if len(inner) == 0 {
			return fmt.Errorf("relay: level %d: %w", depth, ErrEmptyMessage)
		}
		switch inner[0] {
		case typ:
			b = inner
			continue
		case MsgRelayReply:
			return fmt.Errorf("relay: level %d: %w", depth, ErrRelayReplyInside)
		case MsgRelayForward:
			return fmt.Errorf("relay: level %d: %w", depth, ErrRelayForwardInside)
		}
		c.Message = inner
		return nil
	}
}

// decodeOptions walks one level's options, fills lvl and returns the
// relay message option's data.
func decodeOptions(lvl *Level, b []byte) ([]byte, error) {
	var msg []byte
	haveMsg := false
	w := WalkOptions(b)
	for w.Next() {
		code, data := w.Code(), w.Data()
		n := len(data)
		switch code {
		case OptRelayMsg:
			if haveMsg {
				return nil, fmt.Errorf("option %d: %w", code, ErrDuplicateOption)
			}
			msg, haveMsg = data, true
		case OptInterfaceID:
			if lvl.InterfaceID == nil {
				lvl.InterfaceID = data
			}
		case OptRemoteID:
			if n <= remoteIDEnterpriseSz {
				lvl.Malformed = append(lvl.Malformed, MalformedOption{code, n, "remote-id needs a 4-byte enterprise number and at least one byte of id"})
			} else if lvl.RemoteID == nil {
				lvl.RemoteID = data
			}
		case OptRelayID:
			if n < 2 {
				lvl.Malformed = append(lvl.Malformed, MalformedOption{code, n, "relay-id needs a DUID of at least 2 bytes"})
			} else if lvl.RelayID == nil {
				lvl.RelayID = data
			}
		case OptClientLinkLayer:
			if n < 3 {
				lvl.Malformed = append(lvl.Malformed, MalformedOption{code, n, "client link-layer address needs a 2-byte type and an address"})
			} else if lvl.ClientLinkLayer == nil {
				lvl.ClientLinkLayer = data
			}
		case OptRelaySourcePort:
			if n != 2 {
				lvl.Malformed = append(lvl.Malformed, MalformedOption{code, n, "relay source port must be 2 bytes"})
			} else if !lvl.HasSourcePort {
				lvl.SourcePort, lvl.HasSourcePort = binary.BigEndian.Uint16(data), true
			}
		}
	}
	if err := w.Err(); err != nil {
		return nil, err
	}
	if !haveMsg {
		return nil, ErrNoRelayMessage
	}
	return msg, nil
}
