package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/probe"
)

type probeFlags struct {
	server      string
	mac         string
	interfaceID string
	linkAddr    string
	timeout     time.Duration
	solicitOnly bool
	json        bool
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
it. It works against any server that honours RFC 8357's relay source port.

Exit status: 0 when the server delegated a prefix, 1 when it answered
without one (NoPrefixAvail) or nothing answered, so that a migration check
can loop over MACs. --json prints the exchanges, the prefix delegated and the
error as one JSON object.`,
		Example: `  cloudstack-pd probe --server [::1]:10547 --mac 06:32:b2:00:04:79 --interface-id VLAN2701

  # Every MAC of a list, one JSON line each:
  while read mac; do cloudstack-pd probe --server [::1]:547 --mac $mac --interface-id VLAN2701 --json | jq -c '{mac, delegated, error}'; done < macs.txt`,
		Args: cobra.NoArgs,
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
	fl.BoolVar(&f.json, "json", false, "print the result as JSON (the exchanges, the prefix delegated, the error)")
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
	o := probe.Options{Server: srv, MAC: mac, InterfaceID: f.interfaceID, LinkAddr: link, Timeout: f.timeout, SolicitOnly: f.solicitOnly, JSON: f.json}
	return probe.Run(out, o)
}
