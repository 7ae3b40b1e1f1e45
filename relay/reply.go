package relay

import (
	"encoding/binary"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// replyScratch is what Reply builds each Relay-Reply level in; a Chain
// keeps it, so that a worker reusing its Chain (DecodeInto) builds reply
// after reply without allocating anything of its own.
type replyScratch struct {
	levels []replyLevel
}

type replyLevel struct {
	rr      dhcpv6.RelayMessage
	opts    [3]dhcpv6.Option
	link    [16]byte
	peer    [16]byte
	port    [2]byte
	iid, sp dhcpv6.OptionGeneric
	msg     dhcpv6.OptionGeneric
}

// Reply wraps answer (the server's message to the client) in one
// Relay-Reply per level of the chain, innermost first, and encodes it.
//
// Each level copies its Relay-Forward's hop-count, link-address and
// peer-address (RFC 8415 section 19.3) and echoes its interface-id and relay
// source port options, as Kea does. The remote-id is not echoed (Kea does
// not either). The library's NewRelayReplFromRelayForw is not used because
// it renumbers hop-counts.
//
// The library encodes every level; the options whose value is opaque
// bytes (interface-id, the relay message encoded by the level below, the
// 2-byte port) are handed to it as OptionGeneric, which it writes as
// they are. Reply reuses the chain's scratch space: it is not safe to call
// it on one Chain from two goroutines at once.
func (c *Chain) Reply(answer dhcpv6.DHCPv6) []byte {
	if cap(c.scratch.levels) < len(c.Levels) {
		c.scratch.levels = make([]replyLevel, len(c.Levels))
	}
	sc := c.scratch.levels[:len(c.Levels)]
	msg := answer.ToBytes()
	for i := len(c.Levels) - 1; i >= 0; i-- {
		lvl, s := &c.Levels[i], &sc[i]
		s.link, s.peer = lvl.LinkAddr.As16(), lvl.PeerAddr.As16()
		s.rr = dhcpv6.RelayMessage{
			MessageType: dhcpv6.MessageTypeRelayReply,
			HopCount:    lvl.HopCount,
			LinkAddr:    net.IP(s.link[:]),
			PeerAddr:    net.IP(s.peer[:]),
		}
		opts := s.opts[:0]
		if lvl.InterfaceID != nil {
			s.iid = dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionInterfaceID, OptionData: lvl.InterfaceID}
			opts = append(opts, &s.iid)
		}
		if lvl.HasSourcePort {
			binary.BigEndian.PutUint16(s.port[:], lvl.SourcePort)
			s.sp = dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRelayPort, OptionData: s.port[:]}
			opts = append(opts, &s.sp)
		}
		s.msg = dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRelayMsg, OptionData: msg}
		opts = append(opts, &s.msg)
		s.rr.Options.Options = opts
		msg = s.rr.ToBytes()
	}
	// Drop the references to this packet's bytes.
	for i := range sc {
		sc[i].iid.OptionData, sc[i].msg.OptionData, sc[i].rr.Options.Options = nil, nil, nil
	}
	return msg
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
