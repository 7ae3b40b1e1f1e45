package relay

import (
	"bytes"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// Reply wraps answer (the server's message to the client) in one
// Relay-Reply per level of the chain, innermost first, and encodes it.
//
// Each level copies its Relay-Forward's hop-count, link-address and
// peer-address (RFC 8415 section 19.3) and echoes its interface-id and relay
// source port options, as Kea does. The remote-id is not echoed (Kea does
// not either). The library's NewRelayReplFromRelayForw is not used because
// it renumbers hop-counts.
func (c *Chain) Reply(answer dhcpv6.DHCPv6) []byte {
	msg := answer
	for i := len(c.Levels) - 1; i >= 0; i-- {
		lvl := &c.Levels[i]
		rr := &dhcpv6.RelayMessage{
			MessageType: dhcpv6.MessageTypeRelayReply,
			HopCount:    lvl.HopCount,
			LinkAddr:    net.IP(lvl.LinkAddr.AsSlice()),
			PeerAddr:    net.IP(lvl.PeerAddr.AsSlice()),
		}
		if lvl.InterfaceID != nil {
			rr.Options.Add(dhcpv6.OptInterfaceID(bytes.Clone(lvl.InterfaceID)))
		}
		if lvl.HasSourcePort {
			rr.Options.Add(dhcpv6.OptRelayPort(lvl.SourcePort))
		}
		rr.Options.Add(dhcpv6.OptRelayMessage(msg))
		msg = rr
	}
	return msg.ToBytes()
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
