package leasequery

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

var (
	requestor = []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1}
	xid       = dhcpv6.TransactionID{0, 0x12, 0x34}
	link      = netip.MustParseAddr("2001:db8:1::1")
)

// The query of every type survives encoding and decoding, and the bytes
// are what RFC 5007 and 5460 lay out.
func TestQueryRoundTrip(t *testing.T) {
	for _, q := range []Query{
		{Type: ByAddress, LinkAddress: netip.IPv6Unspecified(), Address: netip.MustParseAddr("2001:db8:200:30::1")},
		{Type: ByAddress, LinkAddress: link, Address: netip.MustParseAddr("2001:db8:200:30::")},
		{Type: ByClientID, LinkAddress: netip.IPv6Unspecified(), ClientID: []byte{0, 1, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{Type: ByRelayID, LinkAddress: netip.IPv6Unspecified(), RelayID: []byte{0, 2, 0, 0, 0x0a, 0x4c, 1, 2}},
		{Type: ByLinkAddress, LinkAddress: link},
		{Type: ByRemoteID, LinkAddress: netip.IPv6Unspecified(), RemoteID: []byte{0, 0, 0x0a, 0x4c, 6, 0x32, 0xb2, 0, 4, 0x79}},
	} {
		t.Run(q.Type.String(), func(t *testing.T) {
			b := NewQueryMessage(xid, requestor, q).ToBytes()
			m, err := DecodeMessage(b)
			if err != nil {
				t.Fatal(err)
			}
			if m.MessageType != dhcpv6.MessageTypeLeaseQuery || m.TransactionID != xid {
				t.Errorf("header %s %x", m.MessageType, m.TransactionID)
			}
			got, err := DecodeQuery(m)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, q) {
				t.Errorf("decoded %+v, want %+v", got, q)
			}
			// OPTION_LQ_QUERY: type, then the 16-byte link-address.
			data, ok := findOption(b[4:], 44)
			if !ok || data[0] != byte(q.Type) || !bytes.Equal(data[1:17], q.LinkAddress.AsSlice()) {
				t.Errorf("OPTION_LQ_QUERY = %x", data)
			}
		})
	}
}

func findOption(b []byte, code uint16) ([]byte, bool) {
	for len(b) >= 4 {
		c, n := uint16(b[0])<<8|uint16(b[1]), int(b[2])<<8|int(b[3])
		if len(b) < 4+n {
			return nil, false
		}
		if c == code {
			return b[4 : 4+n], true
		}
		b = b[4+n:]
	}
	return nil, false
}

// Every way a query can be wrong gets its status: UnknownQueryType or
// MalformedQuery.
func TestDecodeQueryStatus(t *testing.T) {
	lq := func(typ QueryType, linkAddr netip.Addr, opts ...dhcpv6.Option) *dhcpv6.Message {
		m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeLeaseQuery, TransactionID: xid}
		m.AddOption(&OptLQQuery{Type: typ, LinkAddress: linkAddr, Options: opts})
		return m
	}
	any := netip.IPv6Unspecified()
	twice := lq(ByLinkAddress, link)
	twice.AddOption(&OptLQQuery{Type: ByLinkAddress, LinkAddress: link})
	for _, tc := range []struct {
		name string
		m    *dhcpv6.Message
		want iana.StatusCode
	}{
		{"no query", &dhcpv6.Message{MessageType: dhcpv6.MessageTypeLeaseQuery}, StatusMalformedQuery},
		{"two queries", twice, StatusMalformedQuery},
		{"unknown type", lq(9, any), StatusUnknownQueryType},
		{"type 0", lq(0, any), StatusUnknownQueryType},
		{"by address without IAADDR", lq(ByAddress, any), StatusMalformedQuery},
		{"by address of ::", lq(ByAddress, any, &dhcpv6.OptIAAddress{IPv6Addr: net.IPv6zero}), StatusMalformedQuery},
		{"by client-id without one", lq(ByClientID, any), StatusMalformedQuery},
		{"by relay-id without one", lq(ByRelayID, any), StatusMalformedQuery},
		{"by link-address ::", lq(ByLinkAddress, any), StatusMalformedQuery},
		{"by remote-id too short", lq(ByRemoteID, any, &OptBytes{OptionCode: dhcpv6.OptionRemoteID, Data: []byte{0, 0, 0, 9}}), StatusMalformedQuery},
		{"multicast link-address", lq(ByLinkAddress, netip.MustParseAddr("ff02::1:2")), StatusMalformedQuery},
		{"loopback link-address", lq(ByAddress, netip.IPv6Loopback(), &dhcpv6.OptIAAddress{IPv6Addr: net.ParseIP("2001:db8::1")}), StatusMalformedQuery},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Through the bytes, as a server gets it.
			m, err := DecodeMessage(tc.m.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			_, err = DecodeQuery(m)
			qe, ok := IsQueryError(err)
			if !ok || qe.Status != tc.want {
				t.Errorf("DecodeQuery = %v, want status %s", err, tc.want)
			}
		})
	}
}

// An option too short for its format does not decode, and neither does
// the message holding it.
func TestDecodeMessageMalformed(t *testing.T) {
	for name, b := range map[string][]byte{
		"short header":    {14, 0, 0},
		"lq-query 16":     append([]byte{14, 0, 0, 1, 0, 44, 0, 16}, make([]byte, 16)...),
		"clt-time 3":      {15, 0, 0, 1, 0, 46, 0, 3, 0, 0, 1},
		"relay-data 15":   append([]byte{15, 0, 0, 1, 0, 47, 0, 15}, make([]byte, 15)...),
		"client-link 17":  append([]byte{15, 0, 0, 1, 0, 48, 0, 17}, make([]byte, 17)...),
		"option past end": {14, 0, 0, 1, 0, 44, 0, 40, 1},
		"relay-forward":   append([]byte{12, 0}, make([]byte, 32)...),
		"client data bad": {15, 0, 0, 1, 0, 45, 0, 7, 0, 46, 0, 3, 0, 0, 0},
	} {
		if _, err := DecodeMessage(b); err == nil {
			t.Errorf("%s: %x decoded", name, b)
		}
	}
}

// A lease survives OPTION_CLIENT_DATA and OPTION_LQ_RELAY_DATA both ways.
func TestLeaseRoundTrip(t *testing.T) {
	l := Lease{
		ClientID: []byte{0, 3, 0, 1, 6, 0x32, 0xb2, 0, 4, 0x79},
		Prefixes: []Prefix{{Prefix: netip.MustParsePrefix("2001:db8:200:30::/60"), Preferred: 86300, Valid: 172700}},
		CLT:      100 * time.Second,
		Relay: &Relay{Source: netip.MustParseAddr("2001:db8:ffff::1"), LinkAddress: link, PeerAddress: netip.MustParseAddr("fe80::432:b2ff:fe00:479"),
			InterfaceID: []byte("VLAN2701"), RemoteID: []byte{0, 0, 0x0a, 0x4c, 6, 0x32, 0xb2, 0, 4, 0x79}, RelayID: []byte{0, 2, 0, 0, 0x0a, 0x4c, 1}},
	}
	m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeLeaseQueryData, TransactionID: xid}
	m.AddOption(l.ClientData(true))
	back, err := DecodeMessage(m.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	var a Answer
	if err := a.Add(back, false); err != nil {
		t.Fatal(err)
	}
	if len(a.Leases) != 1 || !reflect.DeepEqual(a.Leases[0], l) {
		t.Errorf("got %+v, want %+v", a.Leases, l)
	}
	// Over UDP the relay data sits beside the client data.
	m = &dhcpv6.Message{MessageType: dhcpv6.MessageTypeLeaseQueryReply, TransactionID: xid}
	m.AddOption(l.ClientData(false))
	m.AddOption(l.Relay.Option())
	back, _ = DecodeMessage(m.ToBytes())
	a = Answer{}
	if err := a.Add(back, true); err != nil {
		t.Fatal(err)
	}
	if len(a.Leases) != 1 || !reflect.DeepEqual(a.Leases[0], l) {
		t.Errorf("UDP: got %+v, want %+v", a.Leases, l)
	}
	// The relay message is a Relay-Forward header and the relay's options,
	// without a Relay Message option.
	rm := l.Relay.Option().RelayMessage
	if rm[0] != 12 || !bytes.Equal(rm[2:18], link.AsSlice()) {
		t.Errorf("relay message %x", rm)
	}
	if _, ok := findOption(rm[34:], 9); ok {
		t.Errorf("relay message carries a client message: %x", rm)
	}
}

func TestFrames(t *testing.T) {
	var stream []byte
	msgs := [][]byte{{14, 1, 2, 3}, bytes.Repeat([]byte{7}, 300), {16, 0, 0, 1}}
	for _, m := range msgs {
		var err error
		if stream, err = AppendFrame(stream, m); err != nil {
			t.Fatal(err)
		}
	}
	fr := NewFrameReader(bytes.NewReader(stream), 0)
	for _, want := range msgs {
		got, err := fr.Next()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Next = %x, %v; want %x", got, err, want)
		}
	}
	if _, err := fr.Next(); err != io.EOF {
		t.Errorf("at the end: %v, want io.EOF", err)
	}
	if _, err := AppendFrame(nil, make([]byte, MaxMessage+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("AppendFrame of 65536 bytes: %v", err)
	}
	for name, tc := range map[string]struct {
		b   []byte
		max int
		err error
	}{
		"half a length": {[]byte{0}, 100, ErrFrameTruncated},
		"short message": {[]byte{0, 5, 1, 2}, 100, ErrFrameTruncated},
		"too large":     {[]byte{0, 200, 1}, 100, ErrFrameTooLarge},
		"empty":         {[]byte{0, 0}, 100, ErrEmptyFrame},
	} {
		if _, err := NewFrameReader(bytes.NewReader(tc.b), tc.max).Next(); !errors.Is(err, tc.err) {
			t.Errorf("%s: Next = %v, want %v", name, err, tc.err)
		}
		if _, _, err := SplitFrame(tc.b, tc.max); !errors.Is(err, tc.err) {
			t.Errorf("%s: SplitFrame = %v, want %v", name, err, tc.err)
		}
	}
}
