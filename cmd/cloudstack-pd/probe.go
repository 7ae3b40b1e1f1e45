package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

type probeFlags struct {
	server      string
	mac         string
	interfaceID string
	linkAddr    string
	timeout     time.Duration
	solicitOnly bool
}

func newProbeCmd() *cobra.Command {
	var f probeFlags
	cmd := &cobra.Command{
		Use:   "probe",
		Short: "Ask a DHCPv6 server for a VM's prefix, as a Juniper relay would",
		Long: `Probe plays a Junos DHCPv6 relay for one VM: it sends a Solicit, then a
Request, each wrapped in a Relay-Forward with the interface-id (option 18)
and a remote-id (option 37: enterprise 2636 and the MAC) as Junos inserts
them, plus a relay source port option (135) so that the answers come back
to probe's own port. It prints what the server answered.

Use it to check a running cloudstack-pd (or Kea) before pointing routers at
it. It works against any server that honours RFC 8357's relay source port.`,
		Example: `  cloudstack-pd probe --server [::1]:10547 --mac 06:32:b2:00:04:79 --interface-id VLAN2701`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runProbe(cmd.OutOrStdout(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", "[::1]:547", "server address, [addr]:port")
	fl.StringVar(&f.mac, "mac", "", "the VM NIC's MAC (put in the remote-id and the client's DUID-LL)")
	fl.StringVar(&f.interfaceID, "interface-id", "", "the interface-id naming the VM's VLAN")
	fl.StringVar(&f.linkAddr, "link-address", "::", "the relay's link-address")
	fl.DurationVar(&f.timeout, "timeout", 2*time.Second, "how long to wait for each answer")
	fl.BoolVar(&f.solicitOnly, "solicit-only", false, "stop after the Advertise")
	_ = cmd.MarkFlagRequired("mac")
	_ = cmd.MarkFlagRequired("interface-id")
	return cmd
}

func runProbe(out io.Writer, f probeFlags) error {
	srv, err := netip.ParseAddrPort(f.server)
	if err != nil {
		return fmt.Errorf("--server %q: %w", f.server, err)
	}
	mac, err := net.ParseMAC(f.mac)
	if err != nil {
		return fmt.Errorf("--mac %q: %w", f.mac, err)
	}
	link, err := netip.ParseAddr(f.linkAddr)
	if err != nil {
		return fmt.Errorf("--link-address %q: %w", f.linkAddr, err)
	}
	conn, err := net.ListenUDP("udp6", nil)
	if err != nil {
		return fmt.Errorf("open a UDP socket: %w", err)
	}
	defer conn.Close()

	peer := relay.EUI64LinkLocal(mac)
	fwd := relay.Forward{LinkAddr: link, PeerAddr: peer, InterfaceID: []byte(f.interfaceID),
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
			_ = conn.SetReadDeadline(start.Add(f.timeout))
			n, _, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					return nil, fmt.Errorf("no answer to %s from %s within %s", t, srv, f.timeout)
				}
				return nil, fmt.Errorf("no answer to %s from %s: %w", t, srv, err)
			}
			ans, err := unwrapReply(buf[:n])
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
	if f.solicitOnly || !hasPrefix(adv) {
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

// unwrapReply returns the client message inside a Relay-Reply chain.
func unwrapReply(b []byte) (*dhcpv6.Message, error) {
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
