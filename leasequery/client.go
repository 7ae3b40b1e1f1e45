package leasequery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// Options are a requestor's settings ('cloudstack-pd leasequery').
type Options struct {
	// Server is the server asked, at its DHCPv6 port (UDP, or TCP with
	// Bulk).
	Server netip.AddrPort
	// Query is what is asked.
	Query Query
	// Bulk asks over TCP (RFC 5460); any query type. Without it, over UDP
	// (RFC 5007): by address or client-id only.
	Bulk bool
	// Timeout bounds the wait for each answer (0: 5 s).
	Timeout time.Duration
	// Requestor is the DUID sent as the query's Client ID; nil: a
	// DUID-LL of a random locally administered MAC.
	Requestor []byte
	// JSON prints the Result as one JSON object instead of text.
	JSON bool
}

// ErrNoBinding is returned by Run when the server answered that no
// binding matches.
var ErrNoBinding = errors.New("no binding matches")

// Result is what a query got, as --json prints it.
type Result struct {
	Server    string `json:"server"`
	Transport string `json:"transport"`
	Query     string `json:"query"`
	// Status is the answer's top-level status ("Success" when it carries
	// none), with its message.
	Status   string        `json:"status"`
	Bindings []BindingJSON `json:"bindings"`
	// ClientLinks are the links a client has bindings on, when the server
	// answered those instead (a query by client-id naming no link).
	ClientLinks []string `json:"client_links,omitempty"`
	Error       string   `json:"error,omitempty"`
}

// BindingJSON is one OPTION_CLIENT_DATA of an answer.
type BindingJSON struct {
	ClientID string       `json:"client_id"`
	Prefixes []PrefixJSON `json:"prefixes"`
	CLT      uint32       `json:"clt_s"`
	Relay    *RelayJSON   `json:"relay,omitempty"`
}

// PrefixJSON is one delegated prefix with its remaining lifetimes.
type PrefixJSON struct {
	Prefix    string `json:"prefix"`
	Preferred uint32 `json:"preferred_s"`
	Valid     uint32 `json:"valid_s"`
}

// RelayJSON is the relay level of a binding's last exchange; byte strings
// in hex.
type RelayJSON struct {
	Source      string `json:"source"`
	LinkAddress string `json:"link_address"`
	PeerAddress string `json:"peer_address"`
	InterfaceID string `json:"interface_id,omitempty"`
	RemoteID    string `json:"remote_id,omitempty"`
	RelayID     string `json:"relay_id,omitempty"`
}

// Answer is a decoded answer: the top-level status, the leases and the
// client links.
type Answer struct {
	Status      iana.StatusCode
	StatusMsg   string
	Leases      []Lease
	ClientLinks []netip.Addr
}

// Run asks as o says and prints the bindings to out (or, with o.JSON,
// the Result). It returns ErrNoBinding when the server answered that no
// binding matches, a *QueryError when it refused the query, and an error
// naming the server when nothing answered.
func Run(ctx context.Context, out io.Writer, o Options) error {
	res := Result{Server: o.Server.String(), Transport: "udp", Query: describe(o.Query), Bindings: []BindingJSON{}}
	if o.Bulk {
		res.Transport = "tcp"
	}
	ans, err := Ask(ctx, o)
	if err == nil {
		res.Status = ans.Status.String()
		if ans.StatusMsg != "" {
			res.Status += ": " + ans.StatusMsg
		}
		for _, l := range ans.Leases {
			res.Bindings = append(res.Bindings, bindingJSON(l))
		}
		for _, a := range ans.ClientLinks {
			res.ClientLinks = append(res.ClientLinks, a.String())
		}
		switch {
		case ans.Status != iana.StatusSuccess:
			err = &QueryError{Status: ans.Status, Msg: ans.StatusMsg}
		case len(ans.Leases) == 0 && len(ans.ClientLinks) == 0:
			err = ErrNoBinding
		}
	}
	if err != nil {
		res.Error = err.Error()
	}
	if o.JSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(res); jerr != nil {
			return jerr
		}
		return err
	}
	printResult(out, &res)
	return err
}

func describe(q Query) string {
	switch q.Type {
	case ByAddress:
		return "address " + q.Address.String()
	case ByClientID:
		return "client-id " + hex.EncodeToString(q.ClientID)
	case ByRelayID:
		return "relay-id " + hex.EncodeToString(q.RelayID)
	case ByLinkAddress:
		return "link-address " + q.LinkAddress.String()
	case ByRemoteID:
		return "remote-id " + hex.EncodeToString(q.RemoteID)
	}
	return q.Type.String()
}

func bindingJSON(l Lease) BindingJSON {
	b := BindingJSON{ClientID: hex.EncodeToString(l.ClientID), Prefixes: []PrefixJSON{}, CLT: uint32(l.CLT / time.Second)}
	for _, p := range l.Prefixes {
		b.Prefixes = append(b.Prefixes, PrefixJSON{Prefix: p.Prefix.String(), Preferred: p.Preferred, Valid: p.Valid})
	}
	if r := l.Relay; r != nil {
		b.Relay = &RelayJSON{Source: r.Source.String(), LinkAddress: r.LinkAddress.String(), PeerAddress: r.PeerAddress.String(),
			InterfaceID: hex.EncodeToString(r.InterfaceID), RemoteID: hex.EncodeToString(r.RemoteID), RelayID: hex.EncodeToString(r.RelayID)}
	}
	return b
}

func printResult(out io.Writer, r *Result) {
	fmt.Fprintf(out, "%s over %s to %s: %s, %d binding(s)\n", r.Query, r.Transport, r.Server, r.Status, len(r.Bindings))
	for _, b := range r.Bindings {
		fmt.Fprintf(out, "client-id %s  last exchange %ds ago\n", b.ClientID, b.CLT)
		for _, p := range b.Prefixes {
			fmt.Fprintf(out, "  prefix %s  preferred %ds  valid %ds\n", p.Prefix, p.Preferred, p.Valid)
		}
		if rl := b.Relay; rl != nil {
			fmt.Fprintf(out, "  relay %s  link-address %s  peer-address %s", rl.Source, rl.LinkAddress, rl.PeerAddress)
			if rl.InterfaceID != "" {
				raw, _ := hex.DecodeString(rl.InterfaceID)
				fmt.Fprintf(out, "  interface-id %s", relay.Printable(raw))
			}
			if rl.RemoteID != "" {
				fmt.Fprintf(out, "  remote-id %s", rl.RemoteID)
			}
			if rl.RelayID != "" {
				fmt.Fprintf(out, "  relay-id %s", rl.RelayID)
			}
			fmt.Fprintln(out)
		}
	}
	if len(r.ClientLinks) > 0 {
		fmt.Fprintf(out, "the client has bindings on several links, ask again naming one: %s\n", strings.Join(r.ClientLinks, ", "))
	}
}

// Ask sends o's query and decodes the answer: over UDP one
// LEASEQUERY-REPLY, over TCP (o.Bulk) the REPLY, each DATA and the DONE.
func Ask(ctx context.Context, o Options) (*Answer, error) {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	requestor := o.Requestor
	if requestor == nil {
		requestor = randomDUID()
	}
	xid, err := dhcpv6.GenerateTransactionID()
	if err != nil {
		return nil, err
	}
	if o.Bulk {
		// RFC 5460: the first byte of a bulk transaction id is reserved;
		// tshark reads it so.
		xid[0] = 0
	}
	q := NewQueryMessage(xid, requestor, o.Query).ToBytes()
	if o.Bulk {
		return askTCP(ctx, o, xid, q)
	}
	return askUDP(ctx, o, xid, q)
}

func randomDUID() []byte {
	mac := make([]byte, 6)
	_, _ = rand.Read(mac)
	mac[0] = mac[0]&^1 | 2 // unicast, locally administered
	return append([]byte{0, 3, 0, 1}, mac...)
}

func askUDP(ctx context.Context, o Options, xid dhcpv6.TransactionID, q []byte) (*Answer, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp6", o.Server.String())
	if err != nil {
		return nil, fmt.Errorf("leasequery to %s: %w", o.Server, err)
	}
	defer c.Close()
	if _, err := c.Write(q); err != nil {
		return nil, fmt.Errorf("send LEASEQUERY to %s: %w", o.Server, err)
	}
	deadline := time.Now().Add(o.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetReadDeadline(deadline)
	buf := make([]byte, MaxMessage)
	for {
		n, err := c.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, fmt.Errorf("no answer from %s within %s (is this host in the server's server.leasequery.requestors?)", o.Server, o.Timeout)
			}
			return nil, fmt.Errorf("no answer from %s: %w", o.Server, err)
		}
		m, err := DecodeMessage(buf[:n])
		if err != nil || m.TransactionID != xid || m.MessageType != dhcpv6.MessageTypeLeaseQueryReply {
			continue // not ours
		}
		a := &Answer{}
		return a, a.Add(m, true)
	}
}

func askTCP(ctx context.Context, o Options, xid dhcpv6.TransactionID, q []byte) (*Answer, error) {
	d := net.Dialer{Timeout: o.Timeout}
	c, err := d.DialContext(ctx, "tcp6", o.Server.String())
	if err != nil {
		return nil, fmt.Errorf("bulk leasequery to %s: %w", o.Server, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	frame, err := AppendFrame(nil, q)
	if err != nil {
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Now().Add(o.Timeout))
	if _, err := c.Write(frame); err != nil {
		return nil, fmt.Errorf("send LEASEQUERY to %s: %w", o.Server, err)
	}
	fr := NewFrameReader(c, MaxMessage)
	a := &Answer{}
	for first := true; ; first = false {
		_ = c.SetReadDeadline(time.Now().Add(o.Timeout))
		b, err := fr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) && first {
				return nil, fmt.Errorf("%s closed the connection without answering (is this host in the server's server.leasequery.requestors?)", o.Server)
			}
			return nil, fmt.Errorf("bulk leasequery to %s: %w", o.Server, err)
		}
		m, err := DecodeMessage(b)
		if err != nil {
			return nil, fmt.Errorf("bulk leasequery to %s: %w", o.Server, err)
		}
		if m.TransactionID != xid {
			return nil, fmt.Errorf("bulk leasequery to %s: %s with transaction id %x, sent %x", o.Server, m.MessageType, m.TransactionID, xid)
		}
		switch {
		case first && m.MessageType == dhcpv6.MessageTypeLeaseQueryReply:
			if err := a.Add(m, false); err != nil {
				return a, err
			}
			if a.Status != iana.StatusSuccess || len(a.Leases) == 0 {
				return a, nil // no match or refused: a single REPLY, no DONE
			}
		case !first && m.MessageType == dhcpv6.MessageTypeLeaseQueryData:
			if err := a.Add(m, false); err != nil {
				return a, err
			}
		case !first && m.MessageType == dhcpv6.MessageTypeLeaseQueryDone:
			if st, ok := Status(m.Options.Options); ok && st.StatusCode != iana.StatusSuccess {
				a.Status, a.StatusMsg = st.StatusCode, st.StatusMessage
			}
			return a, nil
		default:
			return nil, fmt.Errorf("bulk leasequery to %s: unexpected %s", o.Server, m.MessageType)
		}
	}
}

// Add reads a REPLY or DATA message into a. With topRelay (UDP), the
// LQ_RELAY_DATA is read at the top level of the message, for its one
// CLIENT_DATA.
func (a *Answer) Add(m *dhcpv6.Message, topRelay bool) error {
	if st, ok := Status(m.Options.Options); ok {
		a.Status, a.StatusMsg = st.StatusCode, st.StatusMessage
	}
	var rel *Relay
	if topRelay {
		if o, ok := m.Options.GetOne(dhcpv6.OptionLQRelayData).(*OptLQRelayData); ok {
			r, err := ParseRelay(o)
			if err != nil {
				return err
			}
			rel = r
		}
	}
	for _, o := range m.Options.Get(dhcpv6.OptionClientData) {
		cd, ok := o.(*OptClientData)
		if !ok {
			continue
		}
		l, err := ParseClientData(cd)
		if err != nil {
			return err
		}
		if l.Relay == nil {
			l.Relay = rel
		}
		a.Leases = append(a.Leases, l)
	}
	if cl, ok := m.Options.GetOne(dhcpv6.OptionLQClientLink).(*OptLQClientLink); ok {
		a.ClientLinks = append(a.ClientLinks, cl.Links...)
	}
	return nil
}
