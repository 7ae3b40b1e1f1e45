package corpus

import (
	"encoding/binary"
	"net/netip"

	"github.com/gopacket/gopacket/layers"
	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

var (
	router547 = netip.AddrPortFrom(RouterAddr, 547)
	server547 = netip.AddrPortFrom(ServerAddr, 547)
	hint      = netip.MustParsePrefix("::/60")
)

// relayed adds, as captured on the server's link, a Relay-Forward from the
// router to the server.
func (b *builder) relayed(what string, pkt []byte) {
	b.add(what, ethernet(RouterMAC, ServerMAC, nil, udp6(router547, server547, pkt)))
}

// answered adds the old server's Relay-Reply to the router.
func (b *builder) answered(what string, pkt []byte) {
	b.add(what, ethernet(ServerMAC, RouterMAC, nil, udp6(server547, router547, pkt)))
}

// juniperRelay is a capture on the server's NIC (or a port mirror of it)
// while a Junos MX relayed its VMs' requests to the old Kea.
func juniperRelay() (Capture, error) {
	c := Capture{Name: "juniper-relay.pcap",
		About: "Relay-Forwards from a Junos MX to the old Kea, captured on the server's link (Ethernet, pcap), with two of Kea's " +
			"Relay-Replies; every message type, both pools, unknown and misplaced MACs, foreign VLANs, the relay variants " +
			"Kea 2.2 handles differently, nested relays, malformed packets"}
	b := newBuilder(Start, 0x100000)
	a := junos(PodA, VMA)

	// vm-a: a lease's whole life.
	x := b.nextXID()
	sol := relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, x, clientID(VMA), iaPD(hint)), a)
	b.relayed("vm-a Solicit, IA_PD with a /60 hint", sol)
	b.answered("Kea's Relay-Reply (Advertise) to it: a server's answer, skipped", oldReply(sol, dhcpv6.MessageTypeAdvertise, VMA, VMA.Prefix))
	req := relay.Encapsulate(msg(dhcpv6.MessageTypeRequest, b.nextXID(), clientID(VMA), serverID(OldServerDUID), iaPD(VMA.Prefix)), a)
	b.relayed("vm-a Request for its prefix, naming the old Kea (server id rewritten)", req)
	b.answered("Kea's Relay-Reply (Reply) to it: skipped", oldReply(req, dhcpv6.MessageTypeReply, VMA, VMA.Prefix))
	b.relayed("vm-a Renew, naming the old Kea",
		relay.Encapsulate(msg(dhcpv6.MessageTypeRenew, b.nextXID(), clientID(VMA), serverID(OldServerDUID), iaPD(VMA.Prefix)), a))
	b.relayed("vm-a Rebind",
		relay.Encapsulate(msg(dhcpv6.MessageTypeRebind, b.nextXID(), clientID(VMA), iaPD(VMA.Prefix)), a))
	b.relayed("vm-a Information-request without IA",
		relay.Encapsulate(msg(dhcpv6.MessageTypeInformationRequest, b.nextXID(), clientID(VMA)), a))
	b.relayed("vm-a Solicit with Rapid Commit (rapid commit is off in both servers: Advertise)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMA),
			&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}, iaPD()), a))

	// vm-b: the second pool, and a retransmission.
	bb := junos(PodB, VMB)
	x = b.nextXID()
	b.relayed("vm-b Solicit on VLAN2702 (the /56 pool)", relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, x, clientID(VMB), iaPD()), bb))
	retrans := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeSolicit, TransactionID: x}
	retrans.AddOption(clientID(VMB))
	retrans.AddOption(iaPD())
	retrans.AddOption(dhcpv6.OptElapsedTime(1e9))
	retrans.AddOption(dhcpv6.OptRequestedOption(dhcpv6.OptionDNSRecursiveNameServer))
	b.relayed("vm-b Solicit retransmitted (same transaction id, elapsed time 1s)", relay.Encapsulate(retrans.ToBytes(), bb))
	b.relayed("vm-b Request, naming the old Kea",
		relay.Encapsulate(msg(dhcpv6.MessageTypeRequest, b.nextXID(), clientID(VMB), serverID(OldServerDUID), iaPD(VMB.Prefix)), bb))

	// vm-c: addresses asked for too, then a Decline.
	cc := junos(PodA, VMC)
	b.relayed("vm-c Solicit with IA_NA and IA_PD (no addresses: NoAddrsAvail in the IA_NA)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMC), iaNA(), iaPD()), cc))
	b.relayed("vm-c Request with IA_NA and IA_PD, naming the old Kea",
		relay.Encapsulate(msg(dhcpv6.MessageTypeRequest, b.nextXID(), clientID(VMC), serverID(OldServerDUID), iaNA(), iaPD(VMC.Prefix)), cc))
	b.relayed("vm-c Decline of its prefix, naming the old Kea",
		relay.Encapsulate(msg(dhcpv6.MessageTypeDecline, b.nextXID(), clientID(VMC), serverID(OldServerDUID), iaPD(VMC.Prefix)), cc))
	b.relayed("vm-a Release of its prefix, naming the old Kea",
		relay.Encapsulate(msg(dhcpv6.MessageTypeRelease, b.nextXID(), clientID(VMA), serverID(OldServerDUID), iaPD(VMA.Prefix)), a))

	// A MAC without reservation.
	u := junos(PodA, Unknown)
	stale := netip.MustParsePrefix("2001:db8:200:f0::/60")
	b.relayed("unknown MAC Solicit (NoPrefixAvail)", relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(Unknown), iaPD()), u))
	b.relayed("unknown MAC Request, naming the old Kea",
		relay.Encapsulate(msg(dhcpv6.MessageTypeRequest, b.nextXID(), clientID(Unknown), serverID(OldServerDUID), iaPD()), u))
	b.relayed("unknown MAC Renew of a prefix it no longer has, naming the old Kea (withdrawn with lifetimes 0)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeRenew, b.nextXID(), clientID(Unknown), serverID(OldServerDUID), iaPD(stale)), u))
	b.relayed("unknown MAC Rebind naming no prefix (NoBinding)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeRebind, b.nextXID(), clientID(Unknown), iaPD()), u))

	// Misplaced MACs and foreign VLANs.
	b.relayed("vm-b's MAC on VLAN2701: its prefix is in pod-b (NoPrefixAvail)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMB), iaPD()), junos(PodA, VMB)))
	foreign := a
	foreign.InterfaceID = []byte("VLAN999")
	foreign.LinkAddr = netip.MustParseAddr("2001:db8:999::1")
	b.relayed("vm-a on a foreign VLAN: interface-id VLAN999, link-address in no subnet (NoPrefixAvail)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMA), iaPD()), foreign))
	foreign.LinkAddr = PodA.Router
	b.relayed("vm-a with interface-id VLAN999 and VLAN2701's link-address (Kea falls back to the link-address, as cloudstack-pd does)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMA), iaPD()), foreign))
	noIID := a
	noIID.InterfaceID = nil
	b.relayed("vm-a without interface-id, VLAN2701's link-address (Kea and cloudstack-pd select by link-address)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMA), iaPD()), noIID))

	// Relay variants.
	l2 := a
	l2.LinkAddr = netip.IPv6Unspecified()
	b.relayed("vm-a through an L2 relay: link-address :: (Kea 2.2 ignores the interface-id)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMA), iaPD()), l2))
	ll := cc
	ll.LinkAddr = netip.MustParseAddr("fe80::1")
	b.relayed("vm-c with a link-local link-address (Kea 2.2 ignores the interface-id)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMC), iaPD()), ll))
	text := a
	text.RemoteID = append(relay.JuniperRemoteID(nil), []byte(VMA.MAC.String())...)
	b.relayed("vm-a with its MAC written as text in the remote-id (Kea reads the text as bytes)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMA), iaPD()), text))
	outer := relay.Forward{HopCount: 1, LinkAddr: PodA.Router, PeerAddr: AccessSwitchAddr, InterfaceID: []byte("ge-0/0/1.0")}
	inner := junos(PodA, VMD)
	inner.LinkAddr = netip.IPv6Unspecified()
	b.relayed("vm-d behind two relays: an access switch (interface-id VLAN2701, remote-id, link-address ::) inside the MX (hop-count 1)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMD), iaPD()), outer, inner))
	b.relayed("vm-d Request behind the two relays, naming the old Kea",
		relay.Encapsulate(msg(dhcpv6.MessageTypeRequest, b.nextXID(), clientID(VMD), serverID(OldServerDUID), iaPD(VMD.Prefix)), outer, inner))

	// Requests a server must not serve, or answers without IA.
	b.relayed("vm-a Solicit without IA (top-level NoPrefixAvail)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMA)), a))
	b.relayed("vm-a Information-request with an IA_PD (RFC 8415: discard; Kea 2.2 answers)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeInformationRequest, b.nextXID(), clientID(VMA), iaPD()), a))
	b.relayed("vm-a Confirm of an address (no addresses here: no answer)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeConfirm, b.nextXID(), clientID(VMA), iaNA(netip.MustParseAddr("2001:db8:100::abcd"))), a))
	b.relayed("vm-a Solicit naming a server (RFC 8415: discard)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMA), serverID(OldServerDUID), iaPD()), a))
	b.relayed("vm-a Request naming no server (RFC 8415: discard)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeRequest, b.nextXID(), clientID(VMA), iaPD(VMA.Prefix)), a))

	// Malformed packets.
	short := cc
	short.RemoteID = []byte{0x0a, 0x4c}
	b.relayed("malformed: vm-c with a remote-id of 2 bytes (no room for the enterprise number)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMC), iaPD()), short))
	good := relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMA), iaPD()), a)
	b.relayed("malformed: the relay message option is 16 bytes longer than the packet", stretchRelayMsg(good, 16))
	noMsg := relayHeader(0, PodA.Router, relay.EUI64LinkLocal(VMA.MAC))
	noMsg = appendOption(noMsg, relay.OptInterfaceID, []byte(PodA.InterfaceID))
	noMsg = appendOption(noMsg, relay.OptRemoteID, relay.JuniperRemoteID(VMA.MAC))
	b.relayed("malformed: a Relay-Forward without relay message option", noMsg)
	levels := make([]relay.Forward, relay.MaxLevels+1)
	for i := range levels {
		levels[i] = relay.Forward{HopCount: uint8(relay.MaxLevels - i), LinkAddr: PodA.Router, PeerAddr: AccessSwitchAddr}
	}
	levels[len(levels)-1] = a
	b.relayed("malformed: 33 nested Relay-Forwards (RFC 8415 allows 32)",
		relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMA), iaPD()), levels...))
	cut := msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMA))
	cut = append(cut, 0, byte(dhcpv6.OptionIAPD), 0, 32, 0, 0, 0, 1) // an IA_PD of 32 bytes, 4 present
	b.relayed("malformed: a Solicit whose IA_PD option runs past the message", relay.Encapsulate(cut, a))
	whole := ethernet(RouterMAC, ServerMAC, nil, udp6(router547, server547,
		relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VMA), iaPD()), a)))
	b.add("malformed frame: cut by the snap length inside the DHCPv6 message (capture.Read skips it)", whole[:96])
	b.frames[len(b.frames)-1].length = len(whole)

	data, err := pcapFile(layers.LinkTypeEthernet, b.frames)
	c.Frames, c.Data = b.what, data
	return c, err
}

// tcpdumpAny is `tcpdump -i any -w` on the server (pcapng, Linux cooked v2).
func tcpdumpAny() (Capture, error) {
	c := Capture{Name: "tcpdump-any.pcapng",
		About: "`tcpdump -i any` on the server (pcapng, Linux cooked v2): vm-e's Solicit, Request and Renew with the old Kea's " +
			"answers (outgoing), and a frame that is not DHCPv6"}
	b := newBuilder(Start, 0x200000)
	e := junos(PodA, VME)
	in := func(what string, pkt []byte) {
		b.add(what, sll2(sllHost, 2, RouterMAC, udp6(router547, server547, pkt)))
	}
	out := func(what string, pkt []byte) {
		b.add(what, sll2(sllOutgoing, 2, ServerMAC, udp6(server547, router547, pkt)))
	}

	b.add("ICMPv6 echo request from the router: not DHCPv6", sll2(sllHost, 2, RouterMAC, icmp6(RouterAddr, ServerAddr)))
	sol := relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, b.nextXID(), clientID(VME), iaPD()), e)
	in("vm-e Solicit", sol)
	out("Kea's Relay-Reply (Advertise), outgoing: skipped", oldReply(sol, dhcpv6.MessageTypeAdvertise, VME, VME.Prefix))
	req := relay.Encapsulate(msg(dhcpv6.MessageTypeRequest, b.nextXID(), clientID(VME), serverID(OldServerDUID), iaPD(VME.Prefix)), e)
	in("vm-e Request, naming the old Kea", req)
	out("Kea's Relay-Reply (Reply), outgoing: skipped", oldReply(req, dhcpv6.MessageTypeReply, VME, VME.Prefix))
	in("vm-e Renew, naming the old Kea",
		relay.Encapsulate(msg(dhcpv6.MessageTypeRenew, b.nextXID(), clientID(VME), serverID(OldServerDUID), iaPD(VME.Prefix)), e))

	data, err := pcapngFile(layers.LinkTypeLinuxSLL2, b.frames)
	c.Frames, c.Data = b.what, data
	return c, err
}

// unrelayedTrunk is a port mirror of the VMs' VLAN trunk, before any relay:
// client messages to ff02::1:2 and the router's answers, 802.1Q-tagged
// with VLAN 2701, one frame double-tagged (802.1ad outer tag 100).
func unrelayedTrunk() (Capture, error) {
	c := Capture{Name: "unrelayed-trunk.pcap",
		About: "a mirror of the VMs' 802.1Q trunk (VLAN 2701; one frame 802.1ad double-tagged), before the relay: vm-f's " +
			"Solicit, Request, Renew and Release sent to ff02::1:2 and the answers it got; replayed with --wrap",
		WrapInterfaceID: PodA.InterfaceID, WrapLinkAddress: PodA.Router.String()}
	b := newBuilder(Start, 0x300000)
	client := netip.AddrPortFrom(relay.EUI64LinkLocal(VMF.MAC), 546)
	servers := netip.AddrPortFrom(netip.MustParseAddr("ff02::1:2"), 547)
	routerLL := netip.AddrPortFrom(relay.EUI64LinkLocal(RouterMAC), 547)
	allServers := []byte{0x33, 0x33, 0x00, 0x01, 0x00, 0x02}
	tag := []vlanTag{{0x8100, 2701}}
	send := func(what string, m []byte, tags []vlanTag) {
		b.add(what, ethernet(VMF.MAC, allServers, tags, udp6(client, servers, m)))
	}
	answer := func(what string, t dhcpv6.MessageType, xid dhcpv6.TransactionID) {
		ans := &dhcpv6.Message{MessageType: t, TransactionID: xid}
		ans.AddOption(serverID(OldServerDUID))
		ans.AddOption(clientID(VMF))
		ans.AddOption(iaPD(VMF.Prefix))
		b.add(what, ethernet(RouterMAC, VMF.MAC, tag, udp6(routerLL, client, ans.ToBytes())))
	}
	x := b.nextXID()
	send("vm-f Solicit to ff02::1:2 (wrapped on replay)", msg(dhcpv6.MessageTypeSolicit, x, clientID(VMF), iaPD()), tag)
	answer("the Advertise it got, to port 546: skipped", dhcpv6.MessageTypeAdvertise, x)
	x = b.nextXID()
	send("vm-f Request, naming the old Kea", msg(dhcpv6.MessageTypeRequest, x, clientID(VMF), serverID(OldServerDUID), iaPD(VMF.Prefix)), tag)
	answer("the Reply it got: skipped", dhcpv6.MessageTypeReply, x)
	x = b.nextXID()
	send("vm-f Renew, naming the old Kea, double-tagged (802.1ad 100, 802.1Q 2701)",
		msg(dhcpv6.MessageTypeRenew, x, clientID(VMF), serverID(OldServerDUID), iaPD(VMF.Prefix)), []vlanTag{{0x88a8, 100}, {0x8100, 2701}})
	answer("the Reply it got: skipped", dhcpv6.MessageTypeReply, x)
	send("vm-f Release, naming the old Kea", msg(dhcpv6.MessageTypeRelease, b.nextXID(), clientID(VMF), serverID(OldServerDUID), iaPD(VMF.Prefix)), tag)

	data, err := pcapFile(layers.LinkTypeEthernet, b.frames)
	c.Frames, c.Data = b.what, data
	return c, err
}

// relayHeader is a Relay-Forward's fixed header.
func relayHeader(hop uint8, link, peer netip.Addr) []byte {
	l, p := link.As16(), peer.As16()
	b := []byte{relay.MsgRelayForward, hop}
	b = append(b, l[:]...)
	return append(b, p[:]...)
}

func appendOption(b []byte, code uint16, data []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, code)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

// stretchRelayMsg makes the outermost relay message option of a
// Relay-Forward claim n more bytes than the packet holds.
func stretchRelayMsg(pkt []byte, n int) []byte {
	out := append([]byte(nil), pkt...)
	w := relay.WalkOptions(out[relay.HeaderLen:])
	for w.Next() {
		if w.Code() == relay.OptRelayMsg {
			// Option is a slice of out: its length field is out's.
			binary.BigEndian.PutUint16(w.Option()[2:], uint16(len(w.Data())+n))
			return out
		}
	}
	panic("no relay message option")
}
