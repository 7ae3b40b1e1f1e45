package leasequery

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// The options of RFC 5007 and RFC 5460 that github.com/insomniacslk/dhcp
// numbers but parses as generic bytes: this file is the one place that
// gives them types. Each implements dhcpv6.Option, so that a message built
// with the library's types carries them, and ParseOption reads them back
// (DecodeMessage uses it for every option of a message, the library's own
// parser for the rest).

// OptLQQuery is OPTION_LQ_QUERY (44): the query type, the link it is
// about (:: for any) and the query's own options (an IAADDR, a Client ID,
// a Relay ID, a Remote ID).
type OptLQQuery struct {
	Type        QueryType
	LinkAddress netip.Addr
	Options     dhcpv6.Options
}

// Code implements dhcpv6.Option.
func (*OptLQQuery) Code() dhcpv6.OptionCode { return dhcpv6.OptionLQQuery }

// ToBytes implements dhcpv6.Option.
func (o *OptLQQuery) ToBytes() []byte {
	b := make([]byte, 0, 17)
	b = append(b, byte(o.Type))
	b = appendAddr(b, o.LinkAddress)
	return append(b, o.Options.ToBytes()...)
}

// FromBytes implements dhcpv6.Option. The query options are parsed with
// ParseOption; a Client ID among them is kept as its raw bytes.
func (o *OptLQQuery) FromBytes(data []byte) error {
	if len(data) < 17 {
		return fmt.Errorf("OPTION_LQ_QUERY of %d bytes, at least 17 expected: %w", len(data), ErrMalformedOption)
	}
	o.Type = QueryType(data[0])
	o.LinkAddress = netip.AddrFrom16([16]byte(data[1:17]))
	o.Options = nil
	if err := o.Options.FromBytesWithParser(data[17:], ParseOption); err != nil {
		return fmt.Errorf("OPTION_LQ_QUERY options: %w", err)
	}
	return nil
}

func (o *OptLQQuery) String() string {
	return fmt.Sprintf("%s: {Type=%s, LinkAddress=%s, Options=%v}", o.Code(), o.Type, o.LinkAddress, o.Options)
}

// OptClientData is OPTION_CLIENT_DATA (45): what the server knows of one
// client, as options (Client ID, IAPREFIX, CLT_TIME, and in bulk answers
// LQ_RELAY_DATA).
type OptClientData struct {
	Options dhcpv6.Options
}

// Code implements dhcpv6.Option.
func (*OptClientData) Code() dhcpv6.OptionCode { return dhcpv6.OptionClientData }

// ToBytes implements dhcpv6.Option.
func (o *OptClientData) ToBytes() []byte { return o.Options.ToBytes() }

// FromBytes implements dhcpv6.Option.
func (o *OptClientData) FromBytes(data []byte) error {
	o.Options = nil
	if err := o.Options.FromBytesWithParser(data, ParseOption); err != nil {
		return fmt.Errorf("OPTION_CLIENT_DATA options: %w", err)
	}
	return nil
}

func (o *OptClientData) String() string {
	return fmt.Sprintf("%s: %v", o.Code(), o.Options)
}

// OptCLTTime is OPTION_CLT_TIME (46): seconds since the server last
// heard from the client.
type OptCLTTime struct {
	Seconds uint32
}

// Code implements dhcpv6.Option.
func (*OptCLTTime) Code() dhcpv6.OptionCode { return dhcpv6.OptionCLTTime }

// ToBytes implements dhcpv6.Option.
func (o *OptCLTTime) ToBytes() []byte { return binary.BigEndian.AppendUint32(nil, o.Seconds) }

// FromBytes implements dhcpv6.Option.
func (o *OptCLTTime) FromBytes(data []byte) error {
	if len(data) != 4 {
		return fmt.Errorf("OPTION_CLT_TIME of %d bytes, 4 expected: %w", len(data), ErrMalformedOption)
	}
	o.Seconds = binary.BigEndian.Uint32(data)
	return nil
}

func (o *OptCLTTime) String() string { return fmt.Sprintf("%s: %ds", o.Code(), o.Seconds) }

// OptLQRelayData is OPTION_LQ_RELAY_DATA (47): the address of the relay
// the client's last message came from, and that relay's Relay-Forward
// without the client's message.
type OptLQRelayData struct {
	PeerAddress  netip.Addr
	RelayMessage []byte
}

// Code implements dhcpv6.Option.
func (*OptLQRelayData) Code() dhcpv6.OptionCode { return dhcpv6.OptionLQRelayData }

// ToBytes implements dhcpv6.Option.
func (o *OptLQRelayData) ToBytes() []byte {
	return append(appendAddr(make([]byte, 0, 16+len(o.RelayMessage)), o.PeerAddress), o.RelayMessage...)
}

// FromBytes implements dhcpv6.Option.
func (o *OptLQRelayData) FromBytes(data []byte) error {
	if len(data) < 16 {
		return fmt.Errorf("OPTION_LQ_RELAY_DATA of %d bytes, at least 16 expected: %w", len(data), ErrMalformedOption)
	}
	o.PeerAddress = netip.AddrFrom16([16]byte(data[:16]))
	o.RelayMessage = append([]byte(nil), data[16:]...)
	return nil
}

func (o *OptLQRelayData) String() string {
	return fmt.Sprintf("%s: {PeerAddress=%s, RelayMessage=%x}", o.Code(), o.PeerAddress, o.RelayMessage)
}

// OptLQClientLink is OPTION_LQ_CLIENT_LINK (48): the links a client has
// bindings on, answered instead of the bindings when a query names no
// link and the client is on several.
type OptLQClientLink struct {
	Links []netip.Addr
}

// Code implements dhcpv6.Option.
func (*OptLQClientLink) Code() dhcpv6.OptionCode { return dhcpv6.OptionLQClientLink }

// ToBytes implements dhcpv6.Option.
func (o *OptLQClientLink) ToBytes() []byte {
	b := make([]byte, 0, 16*len(o.Links))
	for _, a := range o.Links {
		b = appendAddr(b, a)
	}
	return b
}

// FromBytes implements dhcpv6.Option.
func (o *OptLQClientLink) FromBytes(data []byte) error {
	if len(data)%16 != 0 {
		return fmt.Errorf("OPTION_LQ_CLIENT_LINK of %d bytes, a multiple of 16 expected: %w", len(data), ErrMalformedOption)
	}
	o.Links = nil
	for i := 0; i < len(data); i += 16 {
		o.Links = append(o.Links, netip.AddrFrom16([16]byte(data[i:i+16])))
	}
	return nil
}

func (o *OptLQClientLink) String() string {
	s := make([]string, len(o.Links))
	for i, a := range o.Links {
		s[i] = a.String()
	}
	return fmt.Sprintf("%s: [%s]", o.Code(), strings.Join(s, ", "))
}

// OptBytes is an option kept as its raw bytes: a Client ID or Relay ID
// (a DUID), a Remote ID (enterprise number and the id), whatever the
// bytes are. The library would parse a DUID and refuse one it does not
// know; a query matches bytes, so they are kept as sent.
type OptBytes struct {
	OptionCode dhcpv6.OptionCode
	Data       []byte
}

// Code implements dhcpv6.Option.
func (o *OptBytes) Code() dhcpv6.OptionCode { return o.OptionCode }

// ToBytes implements dhcpv6.Option.
func (o *OptBytes) ToBytes() []byte { return o.Data }

// FromBytes implements dhcpv6.Option.
func (o *OptBytes) FromBytes(data []byte) error {
	o.Data = append([]byte(nil), data...)
	return nil
}

func (o *OptBytes) String() string { return fmt.Sprintf("%s: %x", o.OptionCode, o.Data) }

// ErrMalformedOption is returned (wrapped) when an option's length does
// not fit its format.
var ErrMalformedOption = errors.New("malformed option")

// ParseOption parses one option as the library's dhcpv6.ParseOption does,
// with the Leasequery options typed (OptLQQuery, OptClientData,
// OptCLTTime, OptLQRelayData, OptLQClientLink) and the Client ID, Relay
// ID and Remote ID kept as raw bytes (OptBytes). It is a
// dhcpv6.OptionParser.
func ParseOption(code dhcpv6.OptionCode, data []byte) (dhcpv6.Option, error) {
	var o dhcpv6.Option
	switch code {
	case dhcpv6.OptionLQQuery:
		o = &OptLQQuery{}
	case dhcpv6.OptionClientData:
		o = &OptClientData{}
	case dhcpv6.OptionCLTTime:
		o = &OptCLTTime{}
	case dhcpv6.OptionLQRelayData:
		o = &OptLQRelayData{}
	case dhcpv6.OptionLQClientLink:
		o = &OptLQClientLink{}
	case dhcpv6.OptionClientID, dhcpv6.OptionRelayID, dhcpv6.OptionRemoteID:
		o = &OptBytes{OptionCode: code}
	default:
		return dhcpv6.ParseOption(code, data)
	}
	if err := o.FromBytes(data); err != nil {
		return nil, err
	}
	return o, nil
}

// DecodeMessage decodes a Leasequery message (LEASEQUERY, -REPLY, -DATA,
// -DONE: a client-server message header and options) with ParseOption.
func DecodeMessage(b []byte) (*dhcpv6.Message, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("message of %d bytes, at least 4 expected: %w", len(b), ErrMalformedOption)
	}
	t := dhcpv6.MessageType(b[0])
	if t == dhcpv6.MessageTypeRelayForward || t == dhcpv6.MessageTypeRelayReply {
		return nil, fmt.Errorf("%s is not a leasequery message", t)
	}
	m := &dhcpv6.Message{MessageType: t, TransactionID: dhcpv6.TransactionID(b[1:4])}
	if err := m.Options.FromBytesWithParser(b[4:], ParseOption); err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	return m, nil
}

// optionBytes returns the data of the first option of m with code, as
// ParseOption keeps it (OptBytes), or as any option gives its bytes.
func optionBytes(opts dhcpv6.Options, code dhcpv6.OptionCode) ([]byte, bool) {
	o := opts.GetOne(code)
	if o == nil {
		return nil, false
	}
	return o.ToBytes(), true
}

func appendAddr(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		a = netip.IPv6Unspecified()
	}
	a16 := a.As16()
	return append(b, a16[:]...)
}
