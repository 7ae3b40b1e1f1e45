package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

var (
	mac      = net.HardwareAddr{0x06, 0x32, 0xb2, 0x00, 0x04, 0x79}
	duidLL   = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac}
	duidLLT  = &dhcpv6.DUIDLLT{HWType: iana.HWTypeEthernet, Time: 12345, LinkLayerAddr: mac}
	duidEN   = &dhcpv6.DUIDEN{EnterpriseNumber: 2636, EnterpriseIdentifier: []byte("mx")}
	duidUUID = &dhcpv6.DUIDUUID{UUID: [16]byte{1, 2, 3}}
	prefix   = &net.IPNet{IP: net.ParseIP("2001:db8:100:10::"), Mask: net.CIDRMask(60, 128)}
	prefix2  = &net.IPNet{IP: net.ParseIP("2001:db8:200::"), Mask: net.CIDRMask(56, 128)}
)

func iapd(id byte, prefixes ...dhcpv6.Option) *dhcpv6.OptIAPD {
	pd := &dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, id}, T1: time.Hour, T2: 90 * time.Minute}
	for _, p := range prefixes {
		pd.Options.Add(p)
	}
	return pd
}

func iaprefix(p *net.IPNet, opts ...dhcpv6.Option) *dhcpv6.OptIAPrefix {
	o := &dhcpv6.OptIAPrefix{PreferredLifetime: 2 * time.Hour, ValidLifetime: 3 * time.Hour, Prefix: p}
	for _, x := range opts {
		o.Options.Add(x)
	}
	return o
}

func message(t dhcpv6.MessageType, opts ...dhcpv6.Option) []byte {
	m := &dhcpv6.Message{MessageType: t, TransactionID: dhcpv6.TransactionID{0xa1, 0xb2, 0xc3}}
	for _, o := range opts {
		m.AddOption(o)
	}
	return m.ToBytes()
}

// opt encodes one raw option.
func opt(code dhcpv6.OptionCode, data ...byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(code))
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

// raw is a message with raw options appended: for what the library's
// types cannot build.
func raw(t dhcpv6.MessageType, opts ...[]byte) []byte {
	b := []byte{byte(t), 0xa1, 0xb2, 0xc3}
	for _, o := range opts {
		b = append(b, o...)
	}
	return b
}

var decodeCases = []struct {
	name string
	b    []byte
}{
	{"solicit dhclient", message(dhcpv6.MessageTypeSolicit, dhcpv6.OptClientID(duidLLT),
		dhcpv6.OptElapsedTime(120*time.Millisecond), dhcpv6.OptRequestedOption(dhcpv6.OptionDNSRecursiveNameServer, dhcpv6.OptionDomainSearchList), iapd(1))},
	{"solicit rapid commit reconfigure", message(dhcpv6.MessageTypeSolicit, dhcpv6.OptClientID(duidLL),
		&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}, &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionReconfAccept}, iapd(7))},
	{"request hint", message(dhcpv6.MessageTypeRequest, dhcpv6.OptClientID(duidLL), dhcpv6.OptServerID(duidLLT), iapd(1, iaprefix(prefix)))},
	{"renew two IAs two prefixes", message(dhcpv6.MessageTypeRenew, dhcpv6.OptClientID(duidEN), dhcpv6.OptServerID(duidUUID),
		iapd(1, iaprefix(prefix), iaprefix(prefix2)), iapd(2, iaprefix(nil)))},
	{"five IA_PDs (past the reused memory)", message(dhcpv6.MessageTypeSolicit, dhcpv6.OptClientID(duidLL),
		iapd(1, iaprefix(prefix)), iapd(2, iaprefix(prefix)), iapd(3, iaprefix(prefix)), iapd(4, iaprefix(prefix)), iapd(5, iaprefix(prefix)))},
	{"IA_PD with five prefixes", message(dhcpv6.MessageTypeSolicit, dhcpv6.OptClientID(duidLL),
		iapd(1, iaprefix(prefix), iaprefix(prefix), iaprefix(prefix), iaprefix(prefix), iaprefix(prefix2)))},
	{"IA_PD with a status code", message(dhcpv6.MessageTypeRenew, dhcpv6.OptClientID(duidLL),
		iapd(1, iaprefix(prefix), &dhcpv6.OptStatusCode{StatusCode: iana.StatusNoBinding, StatusMessage: "x"}))},
	{"IA Prefix with options", message(dhcpv6.MessageTypeRenew, dhcpv6.OptClientID(duidLL),
		iapd(1, iaprefix(prefix, &dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess})))},
	{"IA_NA IA_TA FQDN vendor class", message(dhcpv6.MessageTypeSolicit, dhcpv6.OptClientID(duidLL),
		&dhcpv6.OptIANA{IaId: [4]byte{9}}, &dhcpv6.OptIATA{IaId: [4]byte{8}},
		&dhcpv6.OptVendorClass{EnterpriseNumber: 311, Data: [][]byte{[]byte("MSFT 5.0")}}, iapd(1))},
	{"no options", message(dhcpv6.MessageTypeInformationRequest)},
	{"opaque DUID", raw(dhcpv6.MessageTypeSolicit, opt(dhcpv6.OptionClientID, 0, 9, 1, 2, 3))},
	{"prefix length over 128", raw(dhcpv6.MessageTypeRenew, opt(dhcpv6.OptionIAPD, append(make([]byte, 12),
		opt(dhcpv6.OptionIAPrefix, append([]byte{0, 0, 0, 1, 0, 0, 0, 2, 200}, make([]byte, 16)...)...)...)...))},
	{"client ID of 130 bytes", raw(dhcpv6.MessageTypeSolicit, opt(dhcpv6.OptionClientID, append([]byte{0, 2, 0, 0, 0x0a, 0x4c}, make([]byte, 124)...)...))},
	{"prefix length 128", raw(dhcpv6.MessageTypeRenew, opt(dhcpv6.OptionIAPD, append(make([]byte, 12),
		opt(dhcpv6.OptionIAPrefix, append([]byte{0, 0, 0, 1, 0, 0, 0, 2, 128}, make([]byte, 16)...)...)...)...))},
	// Deliberate differences: the library decodes these, Decode refuses them.
	{"client ID of 131 bytes", raw(dhcpv6.MessageTypeSolicit, opt(dhcpv6.OptionClientID, append([]byte{0, 2, 0, 0, 0x0a, 0x4c}, make([]byte, 125)...)...))},
	{"server ID of 200 bytes", raw(dhcpv6.MessageTypeRequest, opt(dhcpv6.OptionClientID, 0, 3, 0, 1, 1, 2, 3, 4, 5, 6),
		opt(dhcpv6.OptionServerID, append([]byte{0, 9}, make([]byte, 198)...)...))},
	{"prefix length 129 after a good prefix", raw(dhcpv6.MessageTypeRenew, opt(dhcpv6.OptionIAPD, append(append(make([]byte, 12),
		opt(dhcpv6.OptionIAPrefix, append([]byte{0, 0, 0, 1, 0, 0, 0, 2, 60}, make([]byte, 16)...)...)...),
		opt(dhcpv6.OptionIAPrefix, append([]byte{0, 0, 0, 1, 0, 0, 0, 2, 129}, make([]byte, 16)...)...)...)...))},
	{"prefix length 255 in an IA Prefix with options", raw(dhcpv6.MessageTypeRenew, opt(dhcpv6.OptionIAPD, append(make([]byte, 12),
		opt(dhcpv6.OptionIAPrefix, append(append([]byte{0, 0, 0, 1, 0, 0, 0, 2, 255}, make([]byte, 16)...), opt(dhcpv6.OptionStatusCode, 0, 0)...)...)...)...))},
	{"two client IDs", message(dhcpv6.MessageTypeSolicit, dhcpv6.OptClientID(duidLL), dhcpv6.OptClientID(duidLLT), iapd(1))},

	// Malformed: the library fails on each, so must Decode.
	{"short header", []byte{1, 2, 3}},
	{"truncated option", append(message(dhcpv6.MessageTypeSolicit, dhcpv6.OptClientID(duidLL)), 0, 25, 0, 40, 1)},
	{"trailing bytes", append(message(dhcpv6.MessageTypeSolicit, dhcpv6.OptClientID(duidLL)), 0, 1)},
	{"client ID of 1 byte", raw(dhcpv6.MessageTypeSolicit, opt(dhcpv6.OptionClientID, 0))},
	{"DUID-LLT short", raw(dhcpv6.MessageTypeSolicit, opt(dhcpv6.OptionClientID, 0, 1, 0, 1, 0, 0, 0))},
	{"DUID-LL short", raw(dhcpv6.MessageTypeSolicit, opt(dhcpv6.OptionClientID, 0, 3, 0))},
	{"DUID-EN short", raw(dhcpv6.MessageTypeSolicit, opt(dhcpv6.OptionServerID, 0, 2, 0, 0, 0))},
	{"DUID-UUID 17 bytes", raw(dhcpv6.MessageTypeSolicit, opt(dhcpv6.OptionServerID, append([]byte{0, 4}, make([]byte, 15)...)...))},
	{"ORO odd", raw(dhcpv6.MessageTypeSolicit, opt(dhcpv6.OptionORO, 0, 23, 0))},
	{"elapsed time 3 bytes", raw(dhcpv6.MessageTypeSolicit, opt(dhcpv6.OptionElapsedTime, 0, 0, 0))},
	{"elapsed time empty", raw(dhcpv6.MessageTypeSolicit, opt(dhcpv6.OptionElapsedTime))},
	{"IA_PD of 11 bytes", raw(dhcpv6.MessageTypeSolicit, opt(dhcpv6.OptionIAPD, make([]byte, 11)...))},
	{"IA Prefix of 24 bytes", raw(dhcpv6.MessageTypeSolicit, opt(dhcpv6.OptionIAPD, append(make([]byte, 12), opt(dhcpv6.OptionIAPrefix, make([]byte, 24)...)...)...))},
	{"IA_PD with trailing bytes", raw(dhcpv6.MessageTypeSolicit, opt(dhcpv6.OptionIAPD, append(make([]byte, 12), 0, 26)...))},
}

func TestDecodeMatchesLibrary(t *testing.T) {
	d := NewDecoder()
	for _, c := range decodeCases {
		t.Run(c.name, func(t *testing.T) {
			sameAsLibrary(t, d, c.b)
		})
	}
}

// sameAsLibrary decodes b with d and with dhcpv6.MessageFromBytes and
// fails unless both fail, or both give the same message: the same
// options in the same order, typed alike, except those Decode keeps as
// bytes, which must encode to what the library's typed option encodes.
//
// The deliberate differences (see the package comment) are checked too:
// where the library decodes a message that has a DUID or a prefix length
// out of bounds (found by stricter, below, walking the bytes on its own),
// Decode must fail with the matching error, and only there.
func sameAsLibrary(t *testing.T, d *Decoder, b []byte) {
	t.Helper()
	want, werr := dhcpv6.MessageFromBytes(b)
	var got dhcpv6.Message
	gerr := d.Decode(&got, b)
	if werr == nil {
		if strict := stricter(b); strict != nil {
			if !errors.Is(gerr, strict) {
				t.Fatalf("Decode error %v, want %v (the library decodes it), for %x", gerr, strict, b)
			}
			return
		}
	}
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("Decode error %v, library error %v, for %x", gerr, werr, b)
	}
	if werr != nil {
		return
	}
	if got.MessageType != want.MessageType || got.TransactionID != want.TransactionID {
		t.Fatalf("header %v %x, library %v %x", got.MessageType, got.TransactionID, want.MessageType, want.TransactionID)
	}
	if len(got.Options.Options) != len(want.Options.Options) {
		t.Fatalf("%d options, library %d: %v vs %v", len(got.Options.Options), len(want.Options.Options), got.Options, want.Options)
	}
	for i, g := range got.Options.Options {
		w := want.Options.Options[i]
		if g.Code() != w.Code() {
			t.Fatalf("option %d: %s, library %s", i, g.Code(), w.Code())
		}
		if gg, ok := g.(*dhcpv6.OptionGeneric); ok {
			if _, lib := w.(*dhcpv6.OptionGeneric); !lib && !bytes.Equal(gg.ToBytes(), w.ToBytes()) {
				t.Fatalf("option %d (%s): bytes %x, library's typed option encodes %x", i, g.Code(), gg.ToBytes(), w.ToBytes())
			}
		}
		if _, ok := g.(*dhcpv6.OptionGeneric); !ok || reflect.TypeOf(g) == reflect.TypeOf(w) {
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("option %d: %#v, library %#v", i, g, w)
			}
		}
	}
	for _, c := range []struct {
		code dhcpv6.OptionCode
		got  []byte
	}{{dhcpv6.OptionClientID, d.ClientID()}, {dhcpv6.OptionServerID, d.ServerID()}} {
		var first []byte
		if o := want.GetOneOption(c.code); o != nil {
			first = o.ToBytes()
		}
		if !bytes.Equal(c.got, first) || (c.got == nil) != (first == nil) {
			t.Fatalf("first %s %x, library %x", c.code, c.got, first)
		}
	}
	// Whatever decodes re-encodes as the library encodes it.
	if a, l := AppendMessage(nil, &got), want.ToBytes(); !bytes.Equal(a, l) {
		t.Fatalf("AppendMessage %x, library %x", a, l)
	}
}

// stricter returns the error Decode gives, beyond the library, for a
// message the library decodes: the first Client or Server Identifier
// longer than MaxDUIDLen or IA Prefix in an IA_PD with a length above 128,
// in the order of the options; nil when there is none. It walks the
// bytes itself, so as not to share Decode's code.
func stricter(b []byte) error {
	if len(b) < 4 {
		return nil
	}
	type tlv struct {
		code int
		v    []byte
	}
	walk := func(b []byte) (out []tlv) {
		for len(b) >= 4 {
			c, n := int(b[0])<<8|int(b[1]), int(b[2])<<8|int(b[3])
			if len(b)-4 < n {
				return out
			}
			out = append(out, tlv{c, b[4 : 4+n]})
			b = b[4+n:]
		}
		return out
	}
	for _, o := range walk(b[4:]) {
		switch o.code {
		case int(dhcpv6.OptionClientID), int(dhcpv6.OptionServerID):
			if len(o.v) > 130 {
				return ErrDUIDTooLong
			}
		case int(dhcpv6.OptionIAPD):
			if len(o.v) < 12 {
				continue
			}
			for _, p := range walk(o.v[12:]) {
				if p.code == int(dhcpv6.OptionIAPrefix) && len(p.v) >= 25 && p.v[8] > 128 {
					return ErrPrefixLength
				}
			}
		}
	}
	return nil
}

// TestDecodeReusesMemory checks that a second message does not change the
// options of one decoded by another Decoder, and that Reset drops the
// references to the bytes.
func TestDecodeReusesMemory(t *testing.T) {
	d := NewDecoder()
	var m dhcpv6.Message
	b := decodeCases[3].b
	if err := d.Decode(&m, b); err != nil {
		t.Fatal(err)
	}
	if got := len(m.Options.IAPD()); got != 2 {
		t.Fatalf("%d IA_PDs, want 2", got)
	}
	d.Reset()
	if d.ClientID() != nil || d.ServerID() != nil {
		t.Fatal("Reset kept the identifiers")
	}
	for i := range d.ng {
		if d.generics[i].OptionData != nil {
			t.Fatal("Reset kept an option's bytes")
		}
	}
	// Decoding into the same Decoder again gives the same message.
	var m2 dhcpv6.Message
	if err := d.Decode(&m2, b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(AppendMessage(nil, &m2), b) {
		t.Fatal("second decode differs")
	}
}

// The path this package exists for: a dhclient Solicit decodes with the
// one allocation of the library's option walk, and an answer encodes into
// a buffer with room without any.
func TestAllocations(t *testing.T) {
	d := NewDecoder()
	var m dhcpv6.Message
	for _, c := range decodeCases[:4] {
		if n := testing.AllocsPerRun(50, func() { _ = d.Decode(&m, c.b) }); n > 1 {
			t.Errorf("Decode %s: %.0f allocations, want at most 1", c.name, n)
		}
	}
	ans := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeReply}
	ans.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionServerID, OptionData: []byte{0, 3, 0, 1, 1, 2, 3, 4, 5, 6}})
	ans.AddOption(iapd(1, iaprefix(prefix), iaprefix(prefix2)))
	ans.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess, StatusMessage: "ok"})
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(50, func() { buf = AppendMessage(buf[:0], ans) }); n != 0 {
		t.Errorf("AppendMessage: %.0f allocations, want 0", n)
	}
}

func TestAppendMatchesLibrary(t *testing.T) {
	cases := []*dhcpv6.Message{
		{MessageType: dhcpv6.MessageTypeAdvertise},
		{MessageType: dhcpv6.MessageTypeReply, Options: dhcpv6.MessageOptions{Options: dhcpv6.Options{
			dhcpv6.OptServerID(duidLLT), dhcpv6.OptClientID(duidLL),
			iapd(1, iaprefix(prefix), &dhcpv6.OptIAPrefix{Prefix: prefix2}),
			&dhcpv6.OptIAPD{IaId: [4]byte{2}, Options: dhcpv6.PDOptions{Options: dhcpv6.Options{
				&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoPrefixAvail, StatusMessage: "no prefix reserved"}}}},
			&dhcpv6.OptIANA{IaId: [4]byte{3}, T1: 1500 * time.Millisecond, Options: dhcpv6.IdentityOptions{Options: dhcpv6.Options{
				&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoAddrsAvail}}}},
			&dhcpv6.OptIATA{IaId: [4]byte{4}},
			&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit},
			dhcpv6.OptDNS(net.ParseIP("2001:db8::53")),
			// A prefix without a mask, an IPv4 "prefix", no prefix.
			iapd(5, &dhcpv6.OptIAPrefix{Prefix: &net.IPNet{IP: net.ParseIP("2001:db8::")}},
				&dhcpv6.OptIAPrefix{Prefix: &net.IPNet{IP: net.IPv4(192, 0, 2, 0), Mask: net.CIDRMask(24, 32)}},
				&dhcpv6.OptIAPrefix{}),
			// Negative and fractional durations round as the library's.
			&dhcpv6.OptIAPD{IaId: [4]byte{6}, T1: -time.Second, T2: 2500 * time.Millisecond},
		}}},
	}
	for i, m := range cases {
		if got, want := AppendMessage([]byte{0xff}, m), m.ToBytes(); !bytes.Equal(got[1:], want) || got[0] != 0xff {
			t.Errorf("case %d: AppendMessage\n%x\nlibrary\n%x", i, got, want)
		}
	}
}

func TestMask(t *testing.T) {
	for _, bits := range []int{-1, 0, 1, 60, 64, 128, 129} {
		if got, want := Mask(bits), net.CIDRMask(bits, 128); !bytes.Equal(got, want) || (got == nil) != (want == nil) {
			t.Errorf("Mask(%d) = %v, want %v", bits, got, want)
		}
	}
}
