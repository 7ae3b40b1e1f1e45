package relay

import (
	"encoding/binary"
	"slices"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// AppendReply appends to dst the Relay-Reply that carries answer (the
// server's message to the client, encoded) back down the chain: one
// Relay-Reply per level, the outermost first.
//
// Each level copies its Relay-Forward's hop-count, link-address and
// peer-address (RFC 8415 section 19.3) and echoes its interface-id and relay
// source port options, in that order, before the relay message, as Kea
// does. The remote-id is not echoed (Kea does not either). The library's
// NewRelayReplFromRelayForw is not used because it renumbers hop-counts, nor
// its encoder, which allocates a buffer per level and per option: the
// headers are written here, straight into dst, which grows at most once. TestAppendReplyMatchesLibrary checks the bytes against the
// library's RelayMessage.ToBytes.
func (c *Chain) AppendReply(dst, answer []byte) []byte {
	// size[i] is the encoded length of level i and everything inside it.
	var size [MaxLevels + 1]int
	n := len(c.Levels)
	size[n] = len(answer)
	for i := n - 1; i >= 0; i-- {
		size[i] = HeaderLen + c.Levels[i].optionsLen() + optionHeaderLen + size[i+1]
	}
	dst = slices.Grow(dst, size[0])
	for i := range c.Levels {
		lvl := &c.Levels[i]
		dst = append(dst, MsgRelayReply, lvl.HopCount)
		link, peer := lvl.LinkAddr.As16(), lvl.PeerAddr.As16()
		dst = append(dst, link[:]...)
		dst = append(dst, peer[:]...)
		if lvl.InterfaceID != nil {
			dst = appendOption(dst, OptInterfaceID, len(lvl.InterfaceID))
			dst = append(dst, lvl.InterfaceID...)
		}
		if lvl.HasSourcePort {
			dst = appendOption(dst, OptRelaySourcePort, 2)
			dst = binary.BigEndian.AppendUint16(dst, lvl.SourcePort)
		}
		// As the library, a value over 65535 bytes gets its length truncated.
		dst = appendOption(dst, OptRelayMsg, size[i+1])
	}
	return append(dst, answer...)
}

// optionsLen is the length of the options a Relay-Reply level echoes.
func (l *Level) optionsLen() int {
	n := 0
	if l.InterfaceID != nil {
		n += 4 + len(l.InterfaceID)
	}
	if l.HasSourcePort {
		n += 4 + 2
	}
	return n
}

func appendOption(b []byte, code uint16, n int) []byte {
	b = binary.BigEndian.AppendUint16(b, code)
	return binary.BigEndian.AppendUint16(b, uint16(n))
}

// DecodeReply decodes a Relay-Reply chain, the inverse of AppendReply: the
// levels outermost first, each with its header (hop-count, link-address,
// peer-address) and the options Decode keeps (the echoed interface-id and
// relay source port; a remote-id, relay-id or client link-layer address
// when a server sent one), and the message inside. The checks are
// Decode's, with Relay-Reply and Relay-Forward swapped. The chain's slices
// point into b.
func DecodeReply(b []byte) (*Chain, error) {
	c := &Chain{}
	if err := DecodeReplyInto(c, b); err != nil {
		return nil, err
	}
	return c, nil
}

// DecodeReplyInto is DecodeReply into a caller-owned Chain, reusing its
// Levels slice. On error, c.Levels holds the levels read so far, the one
// that failed last when its header was whole.
func DecodeReplyInto(c *Chain, b []byte) error {
	return decodeChain(c, b, MsgRelayReply)
}

// Reply is AppendReply of the answer encoded by the library, into a new
// slice: for callers off the packet path.
func (c *Chain) Reply(answer dhcpv6.DHCPv6) []byte {
	return c.AppendReply(nil, answer.ToBytes())
}

// ReplyPort is the UDP port a Relay-Reply goes to: the Relay-Forward's source
// port when the outermost relay sent a relay source port option (RFC 8357
// section 5.2: such a relay listens on a port other than 547), else 547.
// The option's own value is the port of the relay below it, not of the
// sender, so it is not used as the destination.
func (c *Chain) ReplyPort(srcPort uint16) uint16 {
	if c.Outermost().HasSourcePort {
		return srcPort
	}
	return 547
}
