package bench

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// TestParseBenchAnswer checks bench's answer parsing (relay.DecodeReply
// and the option walker) against the library (verifyBenchAnswer), and that
// it does not allocate into a reused chain: bench runs it on every answer.
func TestParseBenchAnswer(t *testing.T) {
	sid := []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1}
	prefix := netip.MustParsePrefix("2001:db8:100:10::/60")
	peer := netip.MustParseAddr("fe80::1")
	m, err := dhcpv6.NewMessage()
	if err != nil {
		t.Fatal(err)
	}
	m.MessageType = dhcpv6.MessageTypeReply
	m.TransactionID = dhcpv6.TransactionID{1, 2, 3}
	m.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionServerID, OptionData: sid})
	withdrawn := &dhcpv6.OptIAPrefix{Prefix: &net.IPNet{IP: net.ParseIP("2001:db8::"), Mask: net.CIDRMask(60, 128)}}
	given := &dhcpv6.OptIAPrefix{PreferredLifetime: time.Hour, ValidLifetime: 2 * time.Hour,
		Prefix: &net.IPNet{IP: net.IP(prefix.Addr().AsSlice()), Mask: net.CIDRMask(60, 128)}}
	m.AddOption(&dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, 1}, Options: dhcpv6.PDOptions{Options: dhcpv6.Options{withdrawn, given}}})
	chain := &relay.Chain{Levels: []relay.Level{{LinkAddr: netip.MustParseAddr("2001:db8::1"), PeerAddr: peer, InterfaceID: []byte("VLAN2701")}}}
	reply := chain.Reply(m)

	a, ok := parseBenchAnswer(reply)
	if !ok {
		t.Fatal("answer not parsed")
	}
	var want [17]byte
	copy(want[:], prefix.Addr().AsSlice())
	want[16] = 60
	if a.typ != uint8(dhcpv6.MessageTypeReply) || a.xid != 0x010203 || a.peer != peer.As16() ||
		string(a.serverID) != string(sid) || !a.hasPrefix || a.prefix != want {
		t.Errorf("parsed %+v", a)
	}
	if !verifyBenchAnswer(reply, a) {
		t.Error("the library reads the answer otherwise")
	}
	var c relay.Chain
	if allocs := testing.AllocsPerRun(100, func() { parseBenchAnswerInto(&c, reply) }); allocs != 0 {
		t.Errorf("%v allocations per answer, want 0", allocs)
	}
	for _, bad := range [][]byte{nil, reply[:relay.HeaderLen], reply[:len(reply)-3], append([]byte{relay.MsgRelayForward}, reply[1:]...)} {
		if _, ok := parseBenchAnswer(bad); ok {
			t.Errorf("%x parsed", bad)
		}
	}
}
