package server

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// FuzzTrust wraps a client message of the attacker VM (macAttacker, on
// pod-b's VLAN2702) in the relay levels the operator's relays add (the
// Juniper relay, and with relay-depth 2 or 3 the LDRAs below it, all of
// which put the attacker's own VLAN and MAC), and under them levels the VM
// forged itself, with any interface-id, remote-id and link-address. Whatever
// the VM writes (levels, Client Identifier, the prefixes its IA_PDs name),
// the answer never carries a prefix that overlaps another MAC's allocation,
// no binding is recorded for anything but the attacker's own prefix, a
// chain deeper than relay-depth is dropped as untrusted-relay-level, and
// the reply is never more than replyGrowth larger than the request.
//
// The operator's relays add relay-depth levels: relay-depth must be the
// number of levels on every path (see docs/juniper-relay.md); a path with
// fewer would let a VM's own level pass for a trusted one.
//
// The arguments: kind picks the message type (low 3 bits) and the MAC of
// its Client Identifier (the rest); depth the relay-depth, 1 to 3; forged,
// three bytes a level, the forged levels' interface-id, remote-id MAC (and
// client link-layer address, peer-address) and link-address; named, a byte
// an IA_PD, its IAID (high 4 bits: repeats happen) and the prefix it names.
func FuzzTrust(f *testing.F) {
	// The attack of issue 10: a Solicit (rapid commit) with the victim's
	// interface-id, MAC and link ::, in one forged level, relay-depth 1.
	f.Add(byte(1), byte(0), []byte{0, 0, 0}, []byte{0x10})
	// The same Request naming the victim's prefix, with the victim's DUID.
	f.Add(byte(2|0<<3), byte(0), []byte{0, 0, 0}, []byte{0x11})
	// A Renew naming every prefix there is, no forged level: answered,
	// with none of the others' prefixes in it.
	f.Add(byte(3), byte(0), []byte{}, []byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa})
	// relay-depth 2 with an LDRA, a forged level below it naming the
	// victim's pool by link-address, without interface-id.
	f.Add(byte(2), byte(1), []byte{3, 0, 1}, []byte{0x15})
	// relay-depth 2, a rapid-commit Solicit with the victim's DUID and two
	// IA_PDs with one IAID, naming the attacker's and the victim's prefix.
	f.Add(byte(1|0<<3), byte(1), []byte{}, []byte{0x15, 0x11})
	// relay-depth 3, a Release and a Decline of the victim's prefix, under
	// two forged levels and under none.
	f.Add(byte(5), byte(2), []byte{0, 0, 0, 1, 1, 2}, []byte{0x11})
	f.Add(byte(6), byte(2), []byte{}, []byte{0x12, 0x13})

	iids := [][]byte{[]byte("VLAN2701"), []byte("VLAN2702"), []byte("VLAN9999"), nil}
	macs := []net.HardwareAddr{macA, macB, macGone, macQuar, macAttacker, macUnknown, nil}
	links := []netip.Addr{netip.IPv6Unspecified(), linkAddr, linkB, netip.MustParseAddr("fe80::1")}
	named := []netip.Prefix{{}, prefixA, prefixB, prefixGone, prefixQuar, prefixAtt, prefixStale,
		netip.MustParsePrefix("2001:db8:200::/56"), netip.MustParsePrefix("2001:db8:300::/44"),
		netip.MustParsePrefix("2001:db8:300:18::/64"), netip.MustParsePrefix("2001:db8:200:100::/56")}
	types := []dhcpv6.MessageType{dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRequest,
		dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind, dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline, dhcpv6.MessageTypeRequest}

	tbl := trustTable(f)
	others := []netip.Prefix{}
	for _, a := range tbl.Allocations() {
		if !bytes.Equal(a.MAC, macAttacker) {
			others = append(others, a.Prefix)
		}
	}
	handlers := make([]*Handler, 3)
	sinks := make([]*sinkRecorder, 3)
	for d := range handlers {
		o := testOptions
		o.RelayDepth = d + 1
		o.RapidCommit = true
		// Every MAC source that reads the trusted level.
		o.MACSources = []relay.MACSource{relay.SourceRemoteID, relay.SourceClientLinkAddr, relay.SourceIPv6LinkLocal}
		handlers[d], sinks[d] = newTrustHandler(f, o)
	}

	f.Fuzz(func(t *testing.T, kind, depthB byte, forgedB, namedB []byte) {
		depth := 1 + int(depthB%3)
		h, sink := handlers[depth-1], sinks[depth-1]
		sink.mu.Lock()
		sink.recorded = sink.recorded[:0]
		sink.mu.Unlock()

		// The client message.
		typ := types[kind&7]
		opts := []dhcpv6.Option{}
		if mac := macs[int(kind>>3)%len(macs)]; mac != nil {
			opts = append(opts, clientID(mac))
		} else {
			opts = append(opts, clientID(macAttacker))
		}
		switch typ {
		case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline:
			opts = append(opts, serverID(serverDUID))
		}
		if kind&7 == 1 {
			opts = append(opts, rapidCommit)
		}
		for i, b := range namedB {
			if i == 12 {
				break
			}
			var ps []netip.Prefix
			if p := named[int(b&0x0f)%len(named)]; p.IsValid() {
				ps = append(ps, p)
			}
			opts = append(opts, iapd(b>>4, ps...))
		}
		m := msg(typ, opts...)

		// The levels: the honest ones, then the forged ones.
		var levels []relay.Forward
		levels = append(levels, juniperB)
		for range depth - 1 {
			levels = append(levels, ldra("VLAN2702", macAttacker))
		}
		nforged := 0
		for i := 0; i+3 <= len(forgedB) && nforged < 4; i += 3 {
			fl := relay.Forward{LinkAddr: links[int(forgedB[i+2])%len(links)], PeerAddr: vmPeer,
				InterfaceID: iids[int(forgedB[i])%len(iids)]}
			if mac := macs[int(forgedB[i+1])%len(macs)]; mac != nil {
				fl.RemoteID = relay.JuniperRemoteID(mac)
				fl.PeerAddr = relay.EUI64LinkLocal(mac)
				fl.Extra = []dhcpv6.Option{&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionClientLinkLayerAddr,
					OptionData: append([]byte{0, 1}, mac...)}}
			}
			levels = append(levels, fl)
			nforged++
		}
		pkt := relay.Encapsulate(m, levels...)

		r, err := h.Handle(relayAddr, pkt)
		if len(levels) > depth {
			var d *Drop
			if !errors.As(err, &d) || d.Reason != ReasonUntrustedRelayLevel {
				t.Fatalf("%d levels, relay-depth %d: %v, want a drop as %s", len(levels), depth, err, ReasonUntrustedRelayLevel)
			}
			return
		}
		if err != nil {
			return // dropped for the message's own reasons
		}
		if len(r.Data) > len(pkt)+replyGrowth(serverDUID) {
			t.Errorf("reply of %d bytes to a request of %d", len(r.Data), len(pkt))
		}
		ans := innerAnswer(t, r.Data)
		for _, ia := range ans.Options.IAPD() {
			for _, p := range ia.Options.Prefixes() {
				got, ok := prefixOf(p)
				if !ok {
					continue
				}
				for _, o := range others {
					if got.Overlaps(o) {
						t.Fatalf("answer carries %s, which overlaps another MAC's %s:\n%s", got, o, ans.Summary())
					}
				}
			}
		}
		sink.mu.Lock()
		defer sink.mu.Unlock()
		for _, b := range sink.recorded {
			if !bytes.Equal(b.MAC, macAttacker) || b.Prefix != prefixAtt {
				t.Fatalf("binding recorded for %s %s", net.HardwareAddr(b.MAC), b.Prefix)
			}
		}
	})
}
