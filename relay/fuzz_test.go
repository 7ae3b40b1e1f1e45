package relay

import (
	"bytes"
	"encoding/binary"
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

// FuzzDecodeReply checks DecodeReply against AppendReply, its inverse:
// whatever Relay-Forward chain decodes, the Relay-Reply built for it
// decodes back to the same levels (header, echoed interface-id and relay
// source port) and the same answer. Arbitrary bytes given to DecodeReply
// itself must not panic.
func FuzzDecodeReply(f *testing.F) {
	// A Juniper-shaped single relay around a Solicit, with a Reply inside.
	f.Add(Encapsulate(solicit, juniper("VLAN2701")), []byte{7, 1, 2, 3})
	// Two levels, relay source port on the outer one, empty interface-id
	// on the inner.
	f.Add(Encapsulate(solicit, Forward{HopCount: 1, LinkAddr: linkAddr, HasSourcePort: true, SourcePort: 547}, Forward{InterfaceID: []byte{}}), []byte{2, 0, 0, 0, 0, 2, 0, 0})
	// A Relay-Reply given as the request, an answer that is a relay message.
	f.Add(new(Chain{Levels: []Level{{HopCount: 2, InterfaceID: []byte("x")}}}).AppendReply(nil, solicit), []byte{12})
	f.Fuzz(func(t *testing.T, pkt, answer []byte) {
		// The request bytes as a reply: anything goes but a panic.
		if c, err := DecodeReply(pkt); err == nil && (len(c.Levels) == 0 || len(c.Message) == 0) {
			t.Fatalf("decoded %d levels, message %d bytes", len(c.Levels), len(c.Message))
		}
		c, err := Decode(pkt)
		if err != nil || len(answer) == 0 || answer[0] == MsgRelayForward || answer[0] == MsgRelayReply {
			return
		}
		got, err := DecodeReply(c.AppendReply(nil, answer))
		if err != nil {
			t.Fatalf("reply does not decode: %v", err)
		}
		checkReplyLevels(t, c, got, answer)
	})
}

// FuzzWalkOptions checks the option walker on arbitrary bytes: the options
// it yields, each re-encoded from its code and data, put back together
// with the truncated tail, are the input; Err is set exactly when a tail
// is left.
func FuzzWalkOptions(f *testing.F) {
	f.Add([]byte{})
	f.Add(Encapsulate(solicit, juniper("VLAN2701"))[HeaderLen:])
	f.Add([]byte{0, 18, 0, 2, 'a', 'b', 0, 9, 0})       // header cut
	f.Add([]byte{0, 18, 0, 2, 'a', 'b', 0, 9, 0, 9, 1}) // data cut
	f.Fuzz(func(t *testing.T, b []byte) {
		var again []byte
		w := WalkOptions(b)
		for w.Next() {
			again = binary.BigEndian.AppendUint16(again, w.Code())
			again = binary.BigEndian.AppendUint16(again, uint16(len(w.Data())))
			again = append(again, w.Data()...)
			if !bytes.Equal(again[len(again)-len(w.Option()):], w.Option()) {
				t.Fatalf("option %x, re-encoded %x", w.Option(), again[len(again)-len(w.Option()):])
			}
		}
		if (w.Err() != nil) != (len(w.Rest()) > 0) {
			t.Fatalf("error %v with %d bytes left", w.Err(), len(w.Rest()))
		}
		if !bytes.Equal(append(again, w.Rest()...), b) {
			t.Fatalf("walked %x, input %x", again, b)
		}
	})
}
