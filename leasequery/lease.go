package leasequery

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// Lease is what an answer says of one client's bindings on one link: the
// content of one OPTION_CLIENT_DATA.
type Lease struct {
	// ClientID is the client's DUID.
	ClientID []byte
	// Prefixes are the delegated prefixes with their remaining lifetimes.
	Prefixes []Prefix
	// CLT is the time since the server last heard from the client.
	CLT time.Duration
	// Relay is the relay level recorded at the last exchange; nil when
	// none was recorded.
	Relay *Relay
}

// Prefix is one IAPREFIX of an answer: lifetimes are what remains of
// them, in seconds.
type Prefix struct {
	Prefix           netip.Prefix
	Preferred, Valid uint32
}

// Relay is the relay level of a client's last exchange, as
// OPTION_LQ_RELAY_DATA carries it: the address the server received the
// Relay-Forward from (its peer-address), and the Relay-Forward's header and
// options without the client's message.
type Relay struct {
	Source      netip.Addr
	HopCount    uint8
	LinkAddress netip.Addr
	PeerAddress netip.Addr
	InterfaceID []byte
	RemoteID    []byte
	RelayID     []byte
}

// Option returns r as OPTION_LQ_RELAY_DATA: the relay message is a
// Relay-Forward with r's header, interface-id, remote-id and relay-id, and
// no Relay Message option (RFC 5007: the client's message is not part of
// it).
func (r *Relay) Option() *OptLQRelayData {
	b := make([]byte, 0, relay.HeaderLen+12+len(r.InterfaceID)+len(r.RemoteID)+len(r.RelayID))
	b = append(b, relay.MsgRelayForward, r.HopCount)
	b = appendAddr(b, r.LinkAddress)
	b = appendAddr(b, r.PeerAddress)
	for _, o := range []struct {
		code uint16
		data []byte
	}{{relay.OptInterfaceID, r.InterfaceID}, {relay.OptRemoteID, r.RemoteID}, {relay.OptRelayID, r.RelayID}} {
		if o.data == nil {
			continue
		}
		b = binary.BigEndian.AppendUint16(b, o.code)
		b = binary.BigEndian.AppendUint16(b, uint16(len(o.data)))
		b = append(b, o.data...)
	}
	return &OptLQRelayData{PeerAddress: r.Source, RelayMessage: b}
}

// ParseRelay reads OPTION_LQ_RELAY_DATA back into a Relay: the outermost
// Relay-Forward level of its relay message.
func ParseRelay(o *OptLQRelayData) (*Relay, error) {
	m := o.RelayMessage
	if len(m) < relay.HeaderLen || m[0] != relay.MsgRelayForward {
		return nil, fmt.Errorf("OPTION_LQ_RELAY_DATA: relay message of %d bytes is not a Relay-Forward: %w", len(m), ErrMalformedOption)
	}
	r := &Relay{Source: o.PeerAddress, HopCount: m[1],
		LinkAddress: netip.AddrFrom16([16]byte(m[2:18])), PeerAddress: netip.AddrFrom16([16]byte(m[18:34]))}
	w := relay.WalkOptions(m[relay.HeaderLen:])
	for w.Next() {
		d := append([]byte(nil), w.Data()...)
		switch w.Code() {
		case relay.OptInterfaceID:
			r.InterfaceID = d
		case relay.OptRemoteID:
			r.RemoteID = d
		case relay.OptRelayID:
			r.RelayID = d
		}
	}
	if err := w.Err(); err != nil {
		return nil, fmt.Errorf("OPTION_LQ_RELAY_DATA: %w", err)
	}
	return r, nil
}

// ClientData returns l as OPTION_CLIENT_DATA: Client ID, an IAPREFIX per
// prefix, CLT_TIME, and, with relayInside (bulk answers, RFC 5460), the
// LQ_RELAY_DATA.
func (l *Lease) ClientData(relayInside bool) *OptClientData {
	cd := &OptClientData{}
	cd.Options.Add(&OptBytes{OptionCode: dhcpv6.OptionClientID, Data: l.ClientID})
	for _, p := range l.Prefixes {
		cd.Options.Add(&dhcpv6.OptIAPrefix{
			PreferredLifetime: time.Duration(p.Preferred) * time.Second,
			ValidLifetime:     time.Duration(p.Valid) * time.Second,
			Prefix:            &net.IPNet{IP: net.IP(p.Prefix.Addr().AsSlice()), Mask: net.CIDRMask(p.Prefix.Bits(), 128)},
		})
	}
	cd.Options.Add(&OptCLTTime{Seconds: uint32(l.CLT / time.Second)})
	if relayInside && l.Relay != nil {
		cd.Options.Add(l.Relay.Option())
	}
	return cd
}

// ParseClientData reads OPTION_CLIENT_DATA back into a Lease (and its
// relay, when it carries LQ_RELAY_DATA).
func ParseClientData(cd *OptClientData) (Lease, error) {
	var l Lease
	for _, o := range cd.Options {
		switch v := o.(type) {
		case *OptBytes:
			if v.OptionCode == dhcpv6.OptionClientID {
				l.ClientID = v.Data
			}
		case *dhcpv6.OptIAPrefix:
			if v.Prefix == nil {
				continue
			}
			a, ok := netip.AddrFromSlice(v.Prefix.IP.To16())
			if !ok {
				continue
			}
			bits, _ := v.Prefix.Mask.Size()
			l.Prefixes = append(l.Prefixes, Prefix{Prefix: netip.PrefixFrom(a, bits),
				Preferred: uint32(v.PreferredLifetime / time.Second), Valid: uint32(v.ValidLifetime / time.Second)})
		case *OptCLTTime:
			l.CLT = time.Duration(v.Seconds) * time.Second
		case *OptLQRelayData:
			r, err := ParseRelay(v)
			if err != nil {
				return l, err
			}
			l.Relay = r
		}
	}
	return l, nil
}
