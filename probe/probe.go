// Package probe plays a Junos DHCPv6 relay for one VM: a Solicit, then a
// Request, each in a Relay-Forward with the interface-id, a remote-id and
// a relay source port option, to a server, printing what it answered.
// It is 'cloudstack-pd probe', and the tests' way to ask a server.
package probe

import (
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
}

// Run probes as o says, printing each exchange and the IA_PDs answered
// to out.
func Run(out io.Writer, o Options) error {
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
			fmt.Fprintf(out, "%-8s -> %-9s in %s\n", t, ans.MessageType, time.Since(start).Round(time.Microsecond))
			return ans, nil
		}
	}

	adv, err := exchange(dhcpv6.MessageTypeSolicit, client, ia)
	if err != nil {
		return err
	}
	printIAs(out, adv)
	if o.SolicitOnly || !hasPrefix(adv) {
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

func hasPrefix(m *dhcpv6.Message) bool {
	for _, ia := range m.Options.IAPD() {
		for _, p := range ia.Options.Prefixes() {
			if p.ValidLifetime > 0 {
				return true
			}
		}
	}
	return false
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
