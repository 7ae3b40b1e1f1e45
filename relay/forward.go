package relay

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// JuniperEnterprise is Juniper Networks' IANA enterprise number, which a
// Junos relay puts first in the remote-id.
const JuniperEnterprise = 2636

// Forward describes one Relay-Forward level to build.
type Forward struct {
	HopCount uint8
	LinkAddr netip.Addr
	PeerAddr netip.Addr
	// InterfaceID, RemoteID (enterprise number first) and RelayID are
	// added when not nil.
	InterfaceID []byte
	RemoteID    []byte
	RelayID     []byte
	// SourcePort, when HasSourcePort, adds a relay source port option
	// (RFC 8357) so that the Relay-Reply comes back to the sender's port.
	SourcePort    uint16
	HasSourcePort bool
	// Extra options, added after the others.
	Extra []dhcpv6.Option
}

// Encapsulate wraps a client message in Relay-Forward levels, given
// outermost first as in Chain.Levels, and encodes the result.
func Encapsulate(msg []byte, levels ...Forward) []byte {
	inner := msg
	for i := len(levels) - 1; i >= 0; i-- {
		f := &levels[i]
		rf := &dhcpv6.RelayMessage{
			MessageType: dhcpv6.MessageTypeRelayForward,
			HopCount:    f.HopCount,
			LinkAddr:    ip16(f.LinkAddr),
			PeerAddr:    ip16(f.PeerAddr),
		}
		if f.InterfaceID != nil {
			rf.Options.Add(dhcpv6.OptInterfaceID(f.InterfaceID))
		}
		if f.RemoteID != nil {
			rf.Options.Add(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRemoteID, OptionData: f.RemoteID})
		}
		if f.RelayID != nil {
			rf.Options.Add(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRelayID, OptionData: f.RelayID})
		}
		if f.HasSourcePort {
			rf.Options.Add(dhcpv6.OptRelayPort(f.SourcePort))
		}
		for _, o := range f.Extra {
			rf.Options.Add(o)
		}
		rf.Options.Add(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRelayMsg, OptionData: inner})
		inner = rf.ToBytes()
	}
	return inner
}

// JuniperRemoteID returns remote-id option data as a Junos relay builds it
// to carry the client MAC: enterprise number 2636, then the MAC's bytes.
func JuniperRemoteID(mac net.HardwareAddr) []byte {
	b := make([]byte, 4+len(mac))
	binary.BigEndian.PutUint32(b, JuniperEnterprise)
	copy(b[4:], mac)
	return b
}

func ip16(a netip.Addr) net.IP {
	if !a.IsValid() {
		return net.IPv6zero
	}
	b := a.As16()
	return net.IP(b[:])
}
