package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/leasequery"
)

type leasequeryFlags struct {
	server      string
	address     string
	clientID    string
	relayID     string
	linkAddress string
	remoteID    string
	link        string
	bulk        bool
	timeout     time.Duration
	json        bool
}

func newLeasequeryCmd() *cobra.Command {
	var f leasequeryFlags
	cmd := &cobra.Command{
		Use:   "leasequery",
		Short: "Ask a DHCPv6 server which prefixes it delegated, as a router does after a reboot",
		Long: `Leasequery asks a DHCPv6 server about its bindings with a LEASEQUERY, as a
Junos relay does to rebuild its routes: over UDP (RFC 5007) by address or
client-id, or with --bulk over TCP (RFC 5460) by any of address,
client-id, relay-id, link-address or remote-id. It prints each binding:
the client's DUID, the prefixes with what remains of their lifetimes, the
time since the client was last heard from, and the relay data of that
exchange.

The server answers only requestors in its server.leasequery.requestors
(by default its server.trusted-relays): run it from such an address.

Exit status: 0 when bindings were answered, 1 when none matches, the
server refused the query or nothing answered.`,
		Example: `  cloudstack-pd leasequery --server [2001:db8::100:69]:547 --address 2001:db8:200:30::1
  cloudstack-pd leasequery --server [2001:db8::100:69]:547 --client-id 000100012c3a4b5c0632b2000479
  cloudstack-pd leasequery --server [2001:db8::100:69]:547 --bulk --link-address 2001:db8:1::1 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := leasequeryOptions(f)
			if err != nil {
				return err
			}
			return runLeasequery(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", "[::1]:547", "server address, [addr]:port (the same port for UDP and, with --bulk, TCP)")
	fl.StringVar(&f.address, "address", "", "query by address: any address inside a delegated prefix")
	fl.StringVar(&f.clientID, "client-id", "", "query by client-id: the client's DUID in hex (colons allowed)")
	fl.StringVar(&f.relayID, "relay-id", "", "query by relay-id (--bulk): the relay's DUID in hex, as in its option 53")
	fl.StringVar(&f.linkAddress, "link-address", "", "query by link-address (--bulk): the relay's link-address")
	fl.StringVar(&f.remoteID, "remote-id", "", "query by remote-id (--bulk): option 37's data in hex, enterprise number first")
	fl.StringVar(&f.link, "link", "", "with --address or --client-id: only bindings on this link-address")
	fl.BoolVar(&f.bulk, "bulk", false, "ask over TCP (Bulk Leasequery); needed for relay-id, link-address and remote-id")
	fl.DurationVar(&f.timeout, "timeout", 5*time.Second, "how long to wait for each answer")
	fl.BoolVar(&f.json, "json", false, "print the result as JSON")
	cmd.MarkFlagsOneRequired("address", "client-id", "relay-id", "link-address", "remote-id")
	cmd.MarkFlagsMutuallyExclusive("address", "client-id", "relay-id", "link-address", "remote-id")
	return cmd
}

func runLeasequery(ctx context.Context, out io.Writer, o leasequery.Options) error {
	if ctx == nil {
		ctx = context.Background()
	}
	return leasequery.Run(ctx, out, o)
}

func leasequeryOptions(f leasequeryFlags) (leasequery.Options, error) {
	o := leasequery.Options{Bulk: f.bulk, Timeout: f.timeout, JSON: f.json}
	srv, err := netip.ParseAddrPort(f.server)
	if err != nil {
		return o, fmt.Errorf("--server %q: %w", f.server, err)
	}
	o.Server = srv
	q := leasequery.Query{LinkAddress: netip.IPv6Unspecified()}
	if f.link != "" {
		if q.LinkAddress, err = netip.ParseAddr(f.link); err != nil {
			return o, fmt.Errorf("--link %q: %w", f.link, err)
		}
	}
	hexFlag := func(name, s string) ([]byte, error) {
		b, err := hex.DecodeString(strings.NewReplacer(":", "", "-", "").Replace(s))
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("--%s %q: not hex bytes", name, s)
		}
		return b, nil
	}
	switch {
	case f.address != "":
		q.Type = leasequery.ByAddress
		if q.Address, err = netip.ParseAddr(f.address); err != nil || !q.Address.Is6() {
			return o, fmt.Errorf("--address %q: not an IPv6 address", f.address)
		}
	case f.clientID != "":
		q.Type = leasequery.ByClientID
		if q.ClientID, err = hexFlag("client-id", f.clientID); err != nil {
			return o, err
		}
	case f.relayID != "":
		q.Type = leasequery.ByRelayID
		if q.RelayID, err = hexFlag("relay-id", f.relayID); err != nil {
			return o, err
		}
	case f.linkAddress != "":
		q.Type = leasequery.ByLinkAddress
		if q.LinkAddress, err = netip.ParseAddr(f.linkAddress); err != nil || !q.LinkAddress.Is6() {
			return o, fmt.Errorf("--link-address %q: not an IPv6 address", f.linkAddress)
		}
	case f.remoteID != "":
		q.Type = leasequery.ByRemoteID
		if q.RemoteID, err = hexFlag("remote-id", f.remoteID); err != nil {
			return o, err
		}
	}
	if q.Type.BulkOnly() && !f.bulk {
		return o, fmt.Errorf("a query by %s is answered over TCP only: add --bulk", q.Type)
	}
	o.Query = q
	return o, nil
}
