package server

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// FuzzHandle feeds arbitrary packets to the whole handler. It must never
// panic; every packet is either answered with a Relay-Reply that decodes,
// has as many levels as the request and is at most replyGrowth larger
// than it, or dropped with a named reason.
func FuzzHandle(f *testing.F) {
	// A Juniper-relayed Solicit, Request, Renew, Release for a known MAC.
	f.Add(juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1))))
	f.Add(juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeRequest, clientID(macA), serverID(serverDUID), iapd(1, prefixA))))
	f.Add(juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeRenew, clientID(macA), serverID(serverDUID), iapd(1, prefixStale))))
	f.Add(juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeRelease, clientID(macA), serverID(serverDUID), iapd(1, prefixA))))
	// IA_NA and IA_TA, rapid commit, an unknown MAC, a foreign VLAN.
	f.Add(juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeSolicit, clientID(macA), iana1, iata1, rapidCommit)))
	f.Add(juniper("VLAN9999", macUnknown, msg(dhcpv6.MessageTypeSolicit, clientID(macUnknown), iapd(1))))
	// Nested relays with a relay source port.
	f.Add(relay.Encapsulate(msg(dhcpv6.MessageTypeRebind, clientID(macA), iapd(1, prefixA)),
		relay.Forward{HopCount: 1, HasSourcePort: true},
		relay.Forward{LinkAddr: linkAddr, PeerAddr: vmPeer, InterfaceID: []byte("VLAN2701"), RemoteID: relay.JuniperRemoteID(macA)}))
	// 16 IA_NAs, each answered with a status: the largest growth there is.
	var nas []dhcpv6.Option
	for i := range 16 {
		nas = append(nas, &dhcpv6.OptIANA{IaId: [4]byte{byte(i)}})
	}
	f.Add(juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeSolicit, append([]dhcpv6.Option{clientID(macA)}, nas...)...)))
	// An unrelayed Solicit and a truncated relay.
	f.Add(msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1)))
	f.Add([]byte{12, 0, 0})
	h, _ := newTestHandler(f, Options{
		MACSources:        []relay.MACSource{relay.SourceRemoteID, relay.SourceClientLinkAddr, relay.SourceDUID, relay.SourceIPv6LinkLocal},
		RapidCommit:       true,
		RelayDepth:        2,
		PreferredLifetime: 86400, ValidLifetime: 172800, RenewTimer: 1000, RebindTimer: 2000,
	})
	src := netip.MustParseAddrPort("[2001:db8:ffff::1]:547")
	f.Fuzz(func(t *testing.T, pkt []byte) {
		r, err := h.Handle(src, pkt)
		if err != nil {
			var d *Drop
			if !errors.As(err, &d) || d.Reason == "" {
				t.Fatalf("error without a drop reason: %v", err)
			}
			return
		}
		req, err := relay.Decode(pkt)
		if err != nil {
			t.Fatalf("answered a packet that does not decode: %v", err)
		}
		if len(r.Data) > len(pkt)+replyGrowth(serverDUID) {
			t.Fatalf("reply of %d bytes to a request of %d: more than %d larger", len(r.Data), len(pkt), replyGrowth(serverDUID))
		}
		m, err := dhcpv6.FromBytes(r.Data)
		if err != nil {
			t.Fatalf("reply does not decode: %v", err)
		}
		for range req.Levels {
			rr, ok := m.(*dhcpv6.RelayMessage)
			if !ok || rr.MessageType != dhcpv6.MessageTypeRelayReply {
				t.Fatalf("reply level is %v", m)
			}
			m = rr.Options.RelayMessage()
		}
		ans, ok := m.(*dhcpv6.Message)
		if !ok || (ans.MessageType != dhcpv6.MessageTypeAdvertise && ans.MessageType != dhcpv6.MessageTypeReply) {
			t.Fatalf("answer is %v", m)
		}
	})
}
