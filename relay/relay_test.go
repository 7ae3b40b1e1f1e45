package relay

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

var (
	vmMAC    = net.HardwareAddr{0x06, 0x32, 0xb2, 0x00, 0x04, 0x79}
	linkAddr = netip.MustParseAddr("2001:db8:100::1")
	peerAddr = netip.MustParseAddr("fe80::432:b2ff:fe00:479")
	// solicit is a minimal client message: type 1, transaction id, Client ID.
	solicit = []byte{1, 0xaa, 0xbb, 0xcc, 0, 1, 0, 10, 0, 3, 0, 1, 0x06, 0x32, 0xb2, 0x00, 0x04, 0x79}
)

func juniper(iid string) Forward {
	return Forward{
		LinkAddr: linkAddr, PeerAddr: peerAddr,
		InterfaceID: []byte(iid), RemoteID: JuniperRemoteID(vmMAC),
	}
}

func TestDecode(t *testing.T) {
	deep := func(n int) []byte {
		lv := make([]Forward, n)
		for i := range lv {
			lv[i] = Forward{HopCount: uint8(n - 1 - i), LinkAddr: linkAddr, PeerAddr: peerAddr}
		}
		return Encapsulate(solicit, lv...)
	}
	single := Encapsulate(solicit, juniper("VLAN2701"))
	tests := []struct {
		name    string
		pkt     []byte
		levels  int
		iid     string
		wantErr error
	}{
		{name: "single juniper relay", pkt: single, levels: 1, iid: "VLAN2701"},
		{name: "nested: innermost interface-id wins", pkt: Encapsulate(solicit,
			Forward{HopCount: 1, LinkAddr: netip.IPv6Unspecified(), PeerAddr: linkAddr, InterfaceID: []byte("outer")},
			juniper("VLAN2701")), levels: 2, iid: "VLAN2701"},
		{name: "32 levels", pkt: deep(32), levels: 32},
		{name: "33 levels", pkt: deep(33), wantErr: ErrTooDeep},
		{name: "empty", pkt: nil, wantErr: ErrTruncated},
		{name: "client message", pkt: solicit, wantErr: ErrNotRelayForward},
		{name: "truncated header", pkt: single[:20], wantErr: ErrTruncated},
		{name: "truncated option", pkt: single[:len(single)-3], wantErr: ErrTruncated},
		{name: "option header cut", pkt: append(bytes.Clone(single[:HeaderLen]), 0, 18), wantErr: ErrTruncated},
		{name: "no relay message", pkt: single[:HeaderLen], wantErr: ErrNoRelayMessage},
		{name: "relay message twice", pkt: Encapsulate(solicit, Forward{LinkAddr: linkAddr, PeerAddr: peerAddr,
			Extra: []dhcpv6.Option{&dhcpv6.OptionGeneric{OptionCode: OptRelayMsg, OptionData: solicit}}}), wantErr: ErrDuplicateOption},
		{name: "empty client message", pkt: Encapsulate(nil, juniper("x")), wantErr: ErrEmptyMessage},
		{name: "relay-reply inside", pkt: Encapsulate([]byte{13, 0}, juniper("x")), wantErr: ErrRelayReplyInside},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Decode(tt.pkt)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Decode error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if len(c.Levels) != tt.levels {
				t.Errorf("levels = %d, want %d", len(c.Levels), tt.levels)
			}
			if got := string(c.InterfaceID()); got != tt.iid {
				t.Errorf("interface-id = %q, want %q", got, tt.iid)
			}
			if !bytes.Equal(c.Message, solicit) {
				t.Errorf("message = %x, want %x", c.Message, solicit)
			}
		})
	}
}

func TestDecodeHeaderFields(t *testing.T) {
	pkt := Encapsulate(solicit,
		Forward{HopCount: 7, LinkAddr: netip.MustParseAddr("2001:db8::7"), PeerAddr: netip.MustParseAddr("2001:db8::8"),
			RelayID: []byte{0, 3, 0, 1, 1, 2, 3, 4, 5, 6}, HasSourcePort: true, SourcePort: 4000},
		Forward{HopCount: 3, LinkAddr: linkAddr, PeerAddr: peerAddr, InterfaceID: []byte{0, 0, 0, 5}, RemoteID: JuniperRemoteID(vmMAC),
			Extra: []dhcpv6.Option{&dhcpv6.OptionGeneric{OptionCode: OptClientLinkLayer, OptionData: append([]byte{0, 1}, vmMAC...)}}},
	)
	c, err := Decode(pkt)
	if err != nil {
		t.Fatal(err)
	}
	out, in := c.Outermost(), c.Innermost()
	if out.HopCount != 7 || out.LinkAddr != netip.MustParseAddr("2001:db8::7") || out.PeerAddr != netip.MustParseAddr("2001:db8::8") {
		t.Errorf("outer header = %d %s %s", out.HopCount, out.LinkAddr, out.PeerAddr)
	}
	if !out.HasSourcePort || out.SourcePort != 4000 {
		t.Errorf("outer source port = %v %d", out.HasSourcePort, out.SourcePort)
	}
	if hex.EncodeToString(out.RelayID) != "00030001010203040506" {
		t.Errorf("relay-id = %x", out.RelayID)
	}
	if in.HopCount != 3 || in.LinkAddr != linkAddr || in.PeerAddr != peerAddr {
		t.Errorf("inner header = %d %s %s", in.HopCount, in.LinkAddr, in.PeerAddr)
	}
	if !bytes.Equal(in.InterfaceID, []byte{0, 0, 0, 5}) || RemoteIDEnterprise(in.RemoteID) != JuniperEnterprise {
		t.Errorf("inner options: iid %x remote-id %x", in.InterfaceID, in.RemoteID)
	}
	if in.HasSourcePort {
		t.Error("inner level has no source port option")
	}
}

func TestDecodeMalformedOptionsAreDroppedNotFatal(t *testing.T) {
	bad := []dhcpv6.Option{
		&dhcpv6.OptionGeneric{OptionCode: OptRemoteID, OptionData: []byte{0, 0, 0x0a}},       // under 4 bytes
		&dhcpv6.OptionGeneric{OptionCode: OptRemoteID, OptionData: []byte{0, 0, 0x0a, 0x4c}}, // enterprise only
		&dhcpv6.OptionGeneric{OptionCode: OptRelaySourcePort, OptionData: []byte{1, 2, 3}},   // not 2 bytes
		&dhcpv6.OptionGeneric{OptionCode: OptClientLinkLayer, OptionData: []byte{0, 1}},      // type only
		&dhcpv6.OptionGeneric{OptionCode: OptRelayID, OptionData: []byte{0}},                 // 1 byte
		&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionIAPD, OptionData: []byte{1, 2, 3, 4}}, // ignored at relay level
	}
	pkt := Encapsulate(solicit, Forward{LinkAddr: linkAddr, PeerAddr: peerAddr, InterfaceID: []byte("VLAN2701"), Extra: bad})
	c, err := Decode(pkt)
	if err != nil {
		t.Fatalf("a malformed option must not reject the packet: %v", err)
	}
	in := c.Innermost()
	if in.RemoteID != nil || in.HasSourcePort || in.ClientLinkLayer != nil || in.RelayID != nil {
		t.Errorf("malformed options kept: %+v", in)
	}
	if len(in.Malformed) != 5 {
		t.Errorf("malformed = %v, want 5 entries", in.Malformed)
	}
	if string(c.InterfaceID()) != "VLAN2701" {
		t.Errorf("interface-id lost: %q", c.InterfaceID())
	}
	if _, _, err := c.MAC([]MACSource{SourceRemoteID}, nil); !errors.Is(err, ErrNoMAC) {
		t.Errorf("MAC from malformed remote-id: err = %v", err)
	}
}

func TestDecodeIntoReusesLevels(t *testing.T) {
	var c Chain
	pkt := Encapsulate(solicit, juniper("a"), juniper("b"))
	if err := DecodeInto(&c, pkt); err != nil {
		t.Fatal(err)
	}
	first := &c.Levels[0]
	if err := DecodeInto(&c, Encapsulate(solicit, juniper("c"))); err != nil {
		t.Fatal(err)
	}
	if len(c.Levels) != 1 || &c.Levels[0] != first || string(c.InterfaceID()) != "c" {
		t.Errorf("levels not reused or stale: %d levels, iid %q", len(c.Levels), c.InterfaceID())
	}
	if n := testing.AllocsPerRun(100, func() { _ = DecodeInto(&c, pkt) }); n != 0 {
		t.Errorf("DecodeInto allocates %.0f times per packet, want 0", n)
	}
}

func TestReply(t *testing.T) {
	// Hop counts 5 and 2 are not what a library renumbering from 0 would
	// write: the reply must copy them.
	fwd := Encapsulate(solicit,
		Forward{HopCount: 5, LinkAddr: netip.MustParseAddr("2001:db8::1"), PeerAddr: netip.MustParseAddr("2001:db8::2"),
			InterfaceID: []byte("uplink"), HasSourcePort: true, SourcePort: 0},
		Forward{HopCount: 2, LinkAddr: linkAddr, PeerAddr: peerAddr, InterfaceID: []byte("VLAN2701"),
			RemoteID: JuniperRemoteID(vmMAC), RelayID: []byte{0, 3, 0, 1, 1, 2, 3, 4, 5, 6}},
	)
	c, err := Decode(fwd)
	if err != nil {
		t.Fatal(err)
	}
	adv := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeAdvertise, TransactionID: dhcpv6.TransactionID{0xaa, 0xbb, 0xcc}}
	out := c.Reply(adv)

	golden(t, "reply-nested.hex", []byte(hex.Dump(out)))

	m, err := dhcpv6.FromBytes(out)
	if err != nil {
		t.Fatalf("reply does not decode: %v", err)
	}
	levels := 0
	for m.IsRelay() {
		rr := m.(*dhcpv6.RelayMessage)
		want := c.Levels[levels]
		if rr.MessageType != dhcpv6.MessageTypeRelayReply {
			t.Errorf("level %d type %s", levels, rr.MessageType)
		}
		if rr.HopCount != want.HopCount || !rr.LinkAddr.Equal(ip16(want.LinkAddr)) || !rr.PeerAddr.Equal(ip16(want.PeerAddr)) {
			t.Errorf("level %d header = %d %s %s, want copy of %d %s %s", levels, rr.HopCount, rr.LinkAddr, rr.PeerAddr,
				want.HopCount, want.LinkAddr, want.PeerAddr)
		}
		if got := rr.Options.InterfaceID(); !bytes.Equal(got, want.InterfaceID) {
			t.Errorf("level %d interface-id = %q, want echo %q", levels, got, want.InterfaceID)
		}
		if (rr.Options.RelayPort() != nil) != want.HasSourcePort {
			t.Errorf("level %d relay source port echoed = %v, want %v", levels, rr.Options.RelayPort() != nil, want.HasSourcePort)
		}
		if rr.GetOneOption(dhcpv6.OptionRemoteID) != nil {
			t.Errorf("level %d echoes remote-id; Kea does not", levels)
		}
		m = rr.Options.RelayMessage()
		levels++
	}
	if levels != 2 {
		t.Fatalf("reply has %d levels, want 2", levels)
	}
	if m.(*dhcpv6.Message).MessageType != dhcpv6.MessageTypeAdvertise {
		t.Errorf("inner = %s", m.Type())
	}
}

func TestReplyPort(t *testing.T) {
	plain, _ := Decode(Encapsulate(solicit, juniper("x")))
	if p := plain.ReplyPort(40000); p != 547 {
		t.Errorf("without option 135: port %d, want 547", p)
	}
	withPort, _ := Decode(Encapsulate(solicit, Forward{LinkAddr: linkAddr, PeerAddr: peerAddr, HasSourcePort: true}))
	if p := withPort.ReplyPort(40000); p != 40000 {
		t.Errorf("with option 135: port %d, want the relay's source port 40000", p)
	}
}

// TestAppendReplyMatchesLibrary builds the same Relay-Reply chain with the
// library's RelayMessage encoder, level by level from the inside out, and
// requires the same bytes from AppendReply, appended after what dst held.
func TestAppendReplyMatchesLibrary(t *testing.T) {
	answer := (&dhcpv6.Message{MessageType: dhcpv6.MessageTypeReply, TransactionID: dhcpv6.TransactionID{1, 2, 3}}).ToBytes()
	cases := map[string][]Forward{
		"juniper":            {{HopCount: 0, LinkAddr: linkAddr, PeerAddr: peerAddr, InterfaceID: []byte("VLAN2701"), RemoteID: JuniperRemoteID(vmMAC)}},
		"bare":               {{}},
		"empty interface-id": {{InterfaceID: []byte{}}},
		"nested with port": {
			{HopCount: 7, LinkAddr: netip.MustParseAddr("2001:db8::1"), HasSourcePort: true, SourcePort: 33000},
			{HopCount: 3, LinkAddr: linkAddr, PeerAddr: peerAddr, InterfaceID: []byte("ge-0/0/1.2701"), HasSourcePort: true, SourcePort: 547},
			{HopCount: 0, PeerAddr: peerAddr, InterfaceID: []byte{0, 1, 0xff}},
		},
	}
	for name, fwds := range cases {
		c, err := Decode(Encapsulate(solicit, fwds...))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := answer
		for i := len(c.Levels) - 1; i >= 0; i-- {
			l := c.Levels[i]
			rr := &dhcpv6.RelayMessage{MessageType: dhcpv6.MessageTypeRelayReply, HopCount: l.HopCount,
				LinkAddr: ip16(l.LinkAddr), PeerAddr: ip16(l.PeerAddr)}
			if l.InterfaceID != nil {
				rr.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionInterfaceID, OptionData: l.InterfaceID})
			}
			if l.HasSourcePort {
				rr.AddOption(dhcpv6.OptRelayPort(l.SourcePort))
			}
			rr.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRelayMsg, OptionData: want})
			want = rr.ToBytes()
		}
		got := c.AppendReply([]byte("dst"), answer)
		if !bytes.HasPrefix(got, []byte("dst")) || !bytes.Equal(got[3:], want) {
			t.Errorf("%s: AppendReply\n%x\nlibrary\n%x", name, got, want)
		}
		buf := make([]byte, 0, 1024)
		if n := testing.AllocsPerRun(20, func() { buf = c.AppendReply(buf[:0], answer) }); n != 0 {
			t.Errorf("%s: AppendReply into a buffer with room allocates %.0f times, want 0", name, n)
		}
	}
}

// TestTrusted: the innermost trusted level counts from the server; a chain
// shorter than the depth has its innermost level trusted; the MAC is read
// from the level asked, not from the innermost.
func TestTrusted(t *testing.T) {
	vm := net.HardwareAddr{0x06, 0x32, 0xb2, 0x00, 0x04, 0x79}
	victim := net.HardwareAddr{0x06, 0x32, 0xb2, 0x00, 0x04, 0x80}
	msg := []byte{1, 0, 0, 1}
	b := Encapsulate(msg,
		Forward{HopCount: 2, InterfaceID: []byte("core")},
		Forward{HopCount: 1, InterfaceID: []byte("VLAN2702"), RemoteID: JuniperRemoteID(vm)},
		Forward{InterfaceID: []byte("VLAN2701"), RemoteID: JuniperRemoteID(victim)})
	c, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		depth int
		iid   string
	}{{0, "core"}, {1, "core"}, {2, "VLAN2702"}, {3, "VLAN2701"}, {32, "VLAN2701"}} {
		if got := string(c.Trusted(tc.depth).InterfaceID); got != tc.iid {
			t.Errorf("Trusted(%d) = level with interface-id %q, want %q", tc.depth, got, tc.iid)
		}
	}
	mac, src, err := c.Trusted(2).MAC([]MACSource{SourceRemoteID}, nil)
	if err != nil || src != SourceRemoteID || mac.String() != vm.String() {
		t.Errorf("Trusted(2).MAC = %s, %s, %v; want %s", mac, src, err, vm)
	}
	if mac, _, _ := c.MAC([]MACSource{SourceRemoteID}, nil); mac.String() != victim.String() {
		t.Errorf("Chain.MAC reads the innermost level: %s, want %s", mac, victim)
	}
	if _, _, err := c.Trusted(1).MAC([]MACSource{SourceRemoteID}, nil); err == nil {
		t.Errorf("a level without remote-id yields a MAC")
	}
}
