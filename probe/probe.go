// Package probe plays a Junos DHCPv6 relay for one VM: a Solicit, then a
// Request, each in a Relay-Forward with the interface-id, a remote-id and
// a relay source port option, to a server, printing what it answered.
// It is 'cloudstack-pd probe', and the tests' way to ask a server.
package probe

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// Options are a probe's settings.
type Options struct {
	// Server is the server asked.
	Server netip.AddrPort
	// MAC is the VM NIC's MAC (in the remote-id and the client's DUID-LL).
	MAC net.HardwareAddr
	// InterfaceID names the VM's VLAN; LinkAddr is the relay's
	// link-address.
	InterfaceID string
	LinkAddr    netip.Addr
	// Timeout is how long to wait for each answer.
	Timeout time.Duration
	// SolicitOnly stops after the Advertise.
	SolicitOnly bool
	// JSON prints the Result as one JSON object instead of text.
	JSON bool
}

// ErrNoPrefix is returned by Run when the server answered but delegated no
// prefix (a NoPrefixAvail, or no IA Prefix with a valid lifetime).
var ErrNoPrefix = errors.New("no prefix delegated")

// Result is what a probe saw, as --json prints it.
type Result struct {
	Server      string     `json:"server"`
	MAC         string     `json:"mac"`
	InterfaceID string     `json:"interface_id"`
	Exchanges   []Exchange `json:"exchanges"`
	// Delegated is the prefix of the last answer with a valid lifetime;
	// empty when none.
	Delegated string `json:"delegated"`
	// Error is why the probe failed; empty when a prefix was delegated.
	Error string `json:"error,omitempty"`
}

// Exchange is one message sent and the server's answer.
type Exchange struct {
	Sent      string  `json:"sent"`
	Answer    string  `json:"answer"`
	LatencyMS float64 `json:"latency_ms"`
	Status    string  `json:"status,omitempty"`
	IAPDs     []IAPD  `json:"ia_pd"`
}

// IAPD is an IA_PD of an answer.
type IAPD struct {
	IAID     string   `json:"iaid"`
	T1       uint32   `json:"t1_s"`
	T2       uint32   `json:"t2_s"`
	Prefixes []Prefix `json:"prefixes"`
	Status   string   `json:"status,omitempty"`
}

// Prefix is an IA Prefix of an answer.
type Prefix struct {
	Prefix    string `json:"prefix"`
	Preferred uint32 `json:"preferred_s"`
	Valid     uint32 `json:"valid_s"`
}

// Run probes as o says, printing each exchange and the IA_PDs answered to
// out (or, with o.JSON, the Result). It returns ErrNoPrefix when the server
// answered without delegating a prefix, and an error naming the server
// when nothing answered.
func Run(out io.Writer, o Options) error {
	res := Result{Server: o.Server.String(), MAC: o.MAC.String(), InterfaceID: o.InterfaceID, Exchanges: []Exchange{}}
	text := out
	if o.JSON {
		text = io.Discard
	}
	err := run(text, o, &res)
	if err == nil && res.Delegated == "" {
		err = ErrNoPrefix
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
	}
	return err
}

func run(out io.Writer, o Options, res *Result) error {
	conn, err := net.ListenUDP("udp6", nil)
	if err != nil {
		return fmt.Errorf("open a UDP socket: %w", err)
	}
	defer conn.Close()

	mac, srv := o.MAC, o.Server
	peer := relay.EUI64LinkLocal(mac)
	fwd := relay.Forward{LinkAddr: o.LinkAddr, PeerAddr: peer, InterfaceID: []byte(o.InterfaceID),
		RemoteID: relay.JuniperRemoteID(mac), HasSourcePort: true}
	client := dhcpv6.OptClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac})
	ia := &dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, 1}}

	exchange := func(t dhcpv6.MessageType, opts ...dhcpv6.Option) (*dhcpv6.Message, error) {
		xid, err := dhcpv6.GenerateTransactionID()
		if err != nil {
			return nil, err
		}
		m := &dhcpv6.Message{MessageType: t, TransactionID: xid}
		for _, o := range opts {
			m.AddOption(o)
		}
		start := time.Now()
		if _, err := conn.WriteToUDPAddrPort(relay.Encapsulate(m.ToBytes(), fwd), srv); err != nil {
			return nil, fmt.Errorf("send %s to %s: %w", t, srv, err)
		}
		buf := make([]byte, 65535)
		for {
			_ = conn.SetReadDeadline(start.Add(o.Timeout))
			n, _, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					return nil, fmt.Errorf("no answer to %s from %s within %s", t, srv, o.Timeout)
				}
				return nil, fmt.Errorf("no answer to %s from %s: %w", t, srv, err)
			}
			ans, err := UnwrapReply(buf[:n])
			if err != nil || ans.TransactionID != xid {
				continue // not ours
			}
			took := time.Since(start)
			fmt.Fprintf(out, "%-8s -> %-9s in %s\n", t, ans.MessageType, took.Round(time.Microsecond))
			res.Exchanges = append(res.Exchanges, exchangeOf(t, ans, took))
			if p := delegated(ans); p != "" {
				res.Delegated = p
			}
			return ans, nil
		}
	}

	adv, err := exchange(dhcpv6.MessageTypeSolicit, client, ia)
	if err != nil {
		return err
	}
	printIAs(out, adv)
	if o.SolicitOnly || delegated(adv) == "" {
		return nil
	}
	sid := adv.GetOneOption(dhcpv6.OptionServerID)
	if sid == nil {
		return errors.New("the Advertise carries no server identifier")
	}
	rep, err := exchange(dhcpv6.MessageTypeRequest, client, sid, ia)
	if err != nil {
		return err
	}
	printIAs(out, rep)
	return nil
}

// UnwrapReply returns the client message inside a Relay-Reply chain.
func UnwrapReply(b []byte) (*dhcpv6.Message, error) {
	m, err := dhcpv6.FromBytes(b)
	if err != nil {
		return nil, err
	}
	return m.GetInnerMessage()
}

// exchangeOf records an answer.
func exchangeOf(t dhcpv6.MessageType, ans *dhcpv6.Message, took time.Duration) Exchange {
	x := Exchange{Sent: t.String(), Answer: ans.MessageType.String(), LatencyMS: float64(took.Microseconds()) / 1000, IAPDs: []IAPD{}}
	if st := ans.Options.Status(); st != nil {
		x.Status = fmt.Sprintf("%s: %s", st.StatusCode, st.StatusMessage)
	}
	for _, ia := range ans.Options.IAPD() {
		r := IAPD{IAID: fmt.Sprintf("%x", ia.IaId), T1: uint32(ia.T1.Seconds()), T2: uint32(ia.T2.Seconds()), Prefixes: []Prefix{}}
		for _, p := range ia.Options.Prefixes() {
			r.Prefixes = append(r.Prefixes, Prefix{Prefix: p.Prefix.String(), Preferred: uint32(p.PreferredLifetime.Seconds()), Valid: uint32(p.ValidLifetime.Seconds())})
		}
		if st := ia.Options.Status(); st != nil {
			r.Status = fmt.Sprintf("%s: %s", st.StatusCode, st.StatusMessage)
		}
		x.IAPDs = append(x.IAPDs, r)
	}
	return x
}

// delegated returns the first prefix of m with a valid lifetime; "" when
// none.
func delegated(m *dhcpv6.Message) string {
	for _, ia := range m.Options.IAPD() {
		for _, p := range ia.Options.Prefixes() {
			if p.ValidLifetime > 0 && p.Prefix != nil {
				return p.Prefix.String()
			}
		}
	}
	return ""
}

func printIAs(out io.Writer, m *dhcpv6.Message) {
	if st := m.Options.Status(); st != nil {
		fmt.Fprintf(out, "  status %s: %s\n", st.StatusCode, st.StatusMessage)
	}
	for _, ia := range m.Options.IAPD() {
		fmt.Fprintf(out, "  IA_PD %x T1 %s T2 %s\n", ia.IaId, ia.T1, ia.T2)
		for _, p := range ia.Options.Prefixes() {
			fmt.Fprintf(out, "    prefix %s preferred %s valid %s\n", p.Prefix, p.PreferredLifetime, p.ValidLifetime)
		}
		if st := ia.Options.Status(); st != nil {
			fmt.Fprintf(out, "    status %s: %s\n", st.StatusCode, st.StatusMessage)
		}
	}
}
