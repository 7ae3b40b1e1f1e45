package relay

import (
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// FuzzDecode feeds arbitrary bytes to Decode. Whatever decodes must also
// give a Relay-Reply that decodes with as many levels, with each level's
// header copied; nothing may panic.
func FuzzDecode(f *testing.F) {
	// A Juniper-shaped single relay around a Solicit.
	f.Add(Encapsulate(solicit, juniper("VLAN2701")))
	// Two levels, relay source port on the outer one.
	f.Add(Encapsulate(solicit, Forward{HopCount: 1, LinkAddr: linkAddr, HasSourcePort: true, SourcePort: 547}, juniper("VLAN2702")))
	// Malformed remote-id (3 bytes) that the library would reject whole.
	f.Add(Encapsulate(solicit, Forward{LinkAddr: linkAddr, Extra: []dhcpv6.Option{&dhcpv6.OptionGeneric{OptionCode: 37, OptionData: []byte{1, 2, 3}}}}))
	// Truncated header and option.
	f.Add([]byte{12, 0, 1, 2, 3})
	f.Add(append(Encapsulate(solicit, juniper("x"))[:40], 0xff, 0xff))
	// Relay-Reply nested in a Relay-Forward.
	f.Add(Encapsulate([]byte{13, 0}, Forward{PeerAddr: netip.IPv6Loopback()}))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		c, err := Decode(pkt)
		if err != nil {
			return
		}
		if len(c.Levels) == 0 || len(c.Levels) > MaxLevels || len(c.Message) == 0 {
			t.Fatalf("decoded %d levels, message %d bytes", len(c.Levels), len(c.Message))
		}
		_, _, _ = c.MAC([]MACSource{SourceRemoteID, SourceClientLinkAddr, SourceDUID, SourceIPv6LinkLocal}, c.Message)
		reply := c.Reply(&dhcpv6.Message{MessageType: dhcpv6.MessageTypeReply})
		m, err := dhcpv6.FromBytes(reply)
		if err != nil {
			t.Fatalf("reply does not decode: %v", err)
		}
		for i := range c.Levels {
			rr, ok := m.(*dhcpv6.RelayMessage)
			if !ok || rr.HopCount != c.Levels[i].HopCount {
				t.Fatalf("reply level %d: %v", i, m)
			}
			m = rr.Options.RelayMessage()
		}
		if m == nil || m.IsRelay() {
			t.Fatalf("reply has more levels than the request")
		}
	})
}
