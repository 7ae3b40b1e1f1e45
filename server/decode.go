package server

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
	"github.com/cloudstack-pd/cloudstack-pd/server/wire"
)

// request is a decoded request: the first step of the packet path.
type request struct {
	src   netip.AddrPort
	chain relay.Chain
	// trusted is the chain's innermost trusted level (see trust.go): what
	// identifies the client is read from it only
	trusted *relay.Level
	// the client message, decoded by dec (which also keeps the bytes of
	// its first Client and Server Identifiers)
	msg dhcpv6.Message
	dec *wire.Decoder
}

// clientID is the bytes of the message's first Client Identifier; nil when
// it has none.
func (req *request) clientID() []byte { return req.dec.ClientID() }

// decode decodes pkt, received from src, into req: the relay chain, its
// trusted level and the client message, with the IA limits applied. A
// packet that cannot be answered whatever it asks is dropped here: sent
// without a relay or by an untrusted one, malformed, nested deeper than
// the trusted levels, or carrying too many IAs. It counts the message
// received.
func (req *request) decode(e *env, src netip.AddrPort, pkt []byte) error {
	req.src = src
	if len(pkt) == 0 {
		return drop(ReasonMalformed, errors.New("empty packet"))
	}
	if pkt[0] != relay.MsgRelayForward {
		e.metrics.countReceived(dhcpv6.MessageType(pkt[0]))
		return drop(ReasonUnrelayed, fmt.Errorf("%s sent straight to the server: its MAC cannot be trusted", dhcpv6.MessageType(pkt[0])))
	}
	if !trustedSource(e.opts, src) {
		e.metrics.countReceived(dhcpv6.MessageTypeRelayForward)
		return drop(ReasonUntrustedRelay, fmt.Errorf("relay %s is not in trusted-relays", src.Addr()))
	}
	// Received counts the client's message inside, when there is one.
	if err := relay.DecodeInto(&req.chain, pkt); err != nil {
		e.metrics.countReceived(dhcpv6.MessageTypeRelayForward)
		if errors.Is(err, relay.ErrTooDeep) {
			return drop(ReasonTooDeep, err)
		}
		return drop(ReasonMalformedRelay, err)
	}
	e.metrics.countReceived(dhcpv6.MessageType(req.chain.Message[0]))
	for i := range req.chain.Levels {
		for _, m := range req.chain.Levels[i].Malformed {
			e.metrics.MalformedOptions.WithLabelValues(fmt.Sprint(m.Code)).Inc()
			e.log.Debug("malformed relay option ignored", "relay", src, "level", i, "option", m.String())
		}
	}
	depth := e.opts.relayDepth()
	if n := len(req.chain.Levels); n > depth {
		return drop(ReasonUntrustedRelayLevel, fmt.Errorf("%d relay levels, server.relay-depth is %d: the levels below the trusted ones may be the client's own", n, depth))
	}
	req.trusted = req.chain.Trusted(depth)
	if err := req.dec.Decode(&req.msg, req.chain.Message); err != nil {
		return drop(ReasonMalformed, fmt.Errorf("client message: %w", err))
	}
	return req.limitIAs()
}

// trustedSource reports whether src may send Relay-Forwards.
func trustedSource(o *Options, src netip.AddrPort) bool {
	if len(o.TrustedRelays) == 0 {
		return true
	}
	a := src.Addr().Unmap()
	for _, p := range o.TrustedRelays {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
