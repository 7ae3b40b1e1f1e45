package replay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/capture"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// optServerID is the Server Identifier option (RFC 8415 section 21.3).
const optServerID = 2

// Request is one message of a capture to send to a server.
type Request struct {
	// Frame is the frame's number in the capture, from 1.
	Frame int
	// Time is when the frame was captured.
	Time time.Time
	// Src and Dst are the captured addresses and ports.
	Src, Dst netip.AddrPort
	// SrcMAC is the frame's source hardware address; nil when the link has none.
	SrcMAC net.HardwareAddr
	// Payload is what is sent, before any Server Identifier rewrite: the
	// captured Relay-Forward (with a relay source port option added when
	// SourcePortAdded), or the captured client message wrapped (Wrapped).
	Payload []byte
	// Wrapped says the captured message was a client message, wrapped in
	// a Relay-Forward by Extract.
	Wrapped bool
	// SourcePortAdded says a relay source port option (135) was added to
	// the outermost level of a captured Relay-Forward.
	SourcePortAdded bool
	// NoSourcePort says the captured Relay-Forward has no relay source port
	// option and none could be added because the relay chain does not
	// decode: a server that answers it answers at port 547.
	NoSourcePort bool

	// Type is the client message's type (inside the relays).
	Type dhcpv6.MessageType
	// XID is the client message's transaction id; valid when HasXID.
	XID    dhcpv6.TransactionID
	HasXID bool
	// Chain is the decoded relay chain of Payload; nil with ChainErr when
	// it does not decode (a malformed capture).
	Chain    *relay.Chain
	ChainErr error
	// MAC is the client's MAC as the innermost relay names it (remote-id,
	// else option 79); nil when it names none.
	MAC net.HardwareAddr
	// NamesServer says the client message carries a Server Identifier.
	NamesServer bool
	// HasIA says the client message carries an IA_NA, IA_TA or IA_PD.
	HasIA bool
	// ClientID is the client message's first Client Identifier; nil without one.
	ClientID []byte
	// MessageErr says why the client message inside the relays does not
	// decode; nil when it does (or when the relays do not).
	MessageErr error
}

// Key is what matches an answer to its request: the client message's
// transaction id and the relay chain's shape.
func (r *Request) Key() (string, bool) {
	if !r.HasXID || r.Chain == nil {
		return "", false
	}
	shape := make([]levelHeader, len(r.Chain.Levels))
	for i, l := range r.Chain.Levels {
		shape[i] = levelHeader{l.HopCount, l.LinkAddr, l.PeerAddr}
	}
	return matchKey(r.XID, shape), true
}

// InterfaceID returns the innermost relay's interface-id; nil when the
// chain does not decode or has none.
func (r *Request) InterfaceID() []byte {
	if r.Chain == nil {
		return nil
	}
	return r.Chain.InterfaceID()
}

// Rewritable says the request is of a type whose Server Identifier names
// the server that must answer (Request, Renew, Release, Decline,
// Information-request), so that replay rewrites it to the target's.
// Solicit, Rebind and Confirm must name no server; one that does is sent
// as captured, for the server to drop.
func (r *Request) Rewritable() bool {
	if !r.NamesServer {
		return false
	}
	switch r.Type {
	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRelease,
		dhcpv6.MessageTypeDecline, dhcpv6.MessageTypeInformationRequest:
		return true
	}
	return false
}

// Wrap says how Extract wraps unrelayed client messages.
type Wrap struct {
	// InterfaceID is the interface-id (option 18) the relay names the
	// client's VLAN with.
	InterfaceID []byte
	// LinkAddr is the relay's link-address; the zero value means ::, as an
	// L2 relay sends it.
	LinkAddr netip.Addr
}

// ExtractOptions says which messages Extract picks and how.
type ExtractOptions struct {
	// Wrap, when not nil, wraps client messages that were sent straight to
	// a server; nil skips them.
	Wrap *Wrap
}

// Skipped counts the messages of a capture that Extract did not pick.
type Skipped struct {
	// NotToServer counts messages not sent to port 547: to a client.
	NotToServer int
	// ServerMessages counts messages only servers send (Advertise, Reply,
	// Reconfigure, Relay-Reply, Leasequery replies), sent to port 547:
	// a server's answers to relays.
	ServerMessages int
	// Unrelayed counts client messages sent straight to a server, skipped
	// because ExtractOptions.Wrap is nil.
	Unrelayed int
}

// Total is the number of messages skipped.
func (s Skipped) Total() int { return s.NotToServer + s.ServerMessages + s.Unrelayed }

// serverMessage reports whether t is a message only servers send.
func serverMessage(t dhcpv6.MessageType) bool {
	switch t {
	case dhcpv6.MessageTypeAdvertise, dhcpv6.MessageTypeReply, dhcpv6.MessageTypeReconfigure,
		dhcpv6.MessageTypeRelayReply, dhcpv6.MessageTypeLeaseQueryReply,
		dhcpv6.MessageTypeLeaseQueryDone, dhcpv6.MessageTypeLeaseQueryData:
		return true
	}
	return false
}

// Extract picks the requests to replay from the messages of a capture, in
// capture order: every message sent to port 547 that is a Relay-Forward,
// and with opts.Wrap every other client message sent there, wrapped.
// Messages only servers send are skipped, as are messages to clients.
//
// A Relay-Forward whose outermost level has no relay source port option
// gets one (value 0) appended to that level, and SourcePortAdded says so;
// one whose chain does not decode is left as captured (NoSourcePort).
func Extract(pkts []capture.Packet, opts ExtractOptions) ([]Request, Skipped) {
	var (
		reqs []Request
		sk   Skipped
	)
	for i := range pkts {
		p := &pkts[i]
		if !p.ToServer() || len(p.Payload) == 0 {
			sk.NotToServer++
			continue
		}
		t := dhcpv6.MessageType(p.Payload[0])
		if serverMessage(t) {
			sk.ServerMessages++
			continue
		}
		r := Request{Frame: p.Index, Time: p.Time, Src: p.Src, Dst: p.Dst, SrcMAC: p.SrcMAC}
		if t == dhcpv6.MessageTypeRelayForward {
			r.Payload = p.Payload
			if c, err := relay.Decode(p.Payload); err != nil {
				r.NoSourcePort = true
			} else if !c.Outermost().HasSourcePort {
				r.Payload = appendSourcePort(p.Payload)
				r.SourcePortAdded = true
			}
		} else {
			if opts.Wrap == nil {
				sk.Unrelayed++
				continue
			}
			r.Payload = WrapJunos(p.Payload, p.Src.Addr(), p.SrcMAC, *opts.Wrap)
			r.Wrapped = true
		}
		r.describe()
		reqs = append(reqs, r)
	}
	return reqs, sk
}

// WrapJunos wraps a client message in one Relay-Forward the way a Junos
// relay does: hop-count 0, the given link-address, the client's address
// as peer-address, the interface-id, a remote-id of enterprise 2636 and
// the client's MAC (left out when mac is nil), and a relay source port
// option (value 0, as a relay next to the client sends it) so that the
// answer comes back to the sender's port.
func WrapJunos(msg []byte, peer netip.Addr, mac net.HardwareAddr, w Wrap) []byte {
	link := w.LinkAddr
	if !link.IsValid() {
		link = netip.IPv6Unspecified()
	}
	f := relay.Forward{LinkAddr: link, PeerAddr: peer.Unmap().WithZone(""), InterfaceID: w.InterfaceID, HasSourcePort: true}
	if len(mac) > 0 {
		f.RemoteID = relay.JuniperRemoteID(mac)
	}
	return relay.Encapsulate(msg, f)
}

// appendSourcePort adds a relay source port option (135, value 0) to the
// outermost level of a Relay-Forward: its options run to the end of the
// packet, so the option goes at the end.
func appendSourcePort(pkt []byte) []byte {
	out := make([]byte, len(pkt), len(pkt)+6)
	copy(out, pkt)
	out = binary.BigEndian.AppendUint16(out, relay.OptRelaySourcePort)
	out = binary.BigEndian.AppendUint16(out, 2)
	return binary.BigEndian.AppendUint16(out, 0)
}

// describe fills the fields read from Payload.
func (r *Request) describe() {
	var inner []byte
	c, err := relay.Decode(r.Payload)
	if err != nil {
		r.ChainErr = err
		// Find the client message as far as the levels go, for its type.
		inner = innermostBytes(r.Payload)
	} else {
		r.Chain = c
		inner = c.Message
		if _, err := dhcpv6.MessageFromBytes(inner); err != nil {
			r.MessageErr = err
		}
		if in := c.Innermost(); in.RemoteID != nil {
			if mac, err := relay.RemoteIDMAC(in.RemoteID); err == nil {
				r.MAC = mac
			}
		} else if in.ClientLinkLayer != nil {
			r.MAC = net.HardwareAddr(in.ClientLinkLayer[2:])
		}
	}
	if len(inner) == 0 {
		r.Type = dhcpv6.MessageTypeRelayForward
		return
	}
	r.Type = dhcpv6.MessageType(inner[0])
	if len(inner) >= 4 {
		copy(r.XID[:], inner[1:4])
		r.HasXID = true
	}
	w := relay.WalkOptions(inner[min(4, len(inner)):])
	for w.Next() {
		code, data := w.Code(), w.Data()
		switch code {
		case uint16(dhcpv6.OptionClientID):
			if r.ClientID == nil {
				r.ClientID = data
			}
		case optServerID:
			r.NamesServer = true
		case uint16(dhcpv6.OptionIANA), uint16(dhcpv6.OptionIATA), uint16(dhcpv6.OptionIAPD):
			r.HasIA = true
		}
	}
}

// innermostBytes follows the relay message options of a chain that does
// not decode as far as they go, and returns the innermost message found
// (possibly a Relay-Forward cut short).
func innermostBytes(b []byte) []byte {
	for depth := 0; depth <= relay.MaxLevels && len(b) >= relay.HeaderLen && b[0] == relay.MsgRelayForward; depth++ {
		next, _ := relay.FindOption(b[relay.HeaderLen:], relay.OptRelayMsg)
		if len(next) == 0 {
			return b
		}
		b = next
	}
	return b
}

// levelHeader is what every Relay-Reply level copies from its
// Relay-Forward level (RFC 8415 section 19.3).
type levelHeader struct {
	hop  uint8
	link netip.Addr
	peer netip.Addr
}

func matchKey(xid dhcpv6.TransactionID, levels []levelHeader) string {
	b := make([]byte, 0, 3+len(levels)*33)
	b = append(b, xid[:]...)
	for _, l := range levels {
		link, peer := l.link.As16(), l.peer.As16()
		b = append(b, l.hop)
		b = append(b, link[:]...)
		b = append(b, peer[:]...)
	}
	return string(b)
}
