package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/bench/synth"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
	"github.com/cloudstack-pd/cloudstack-pd/server/udpbatch"
)

func newBenchReflectCmd() *cobra.Command {
	var (
		listen string
		pools  int
	)
	cmd := &cobra.Command{
		Use:   "reflect",
		Short: "Answer bench's clients as cheaply as possible, to measure bench itself",
		Long: `Reflect answers the relayed Solicits and Requests of 'cloudstack-pd bench'
with the Advertise and Reply a server would send, each copied from a template
the DHCPv6 library encoded once, with the client's transaction id, MAC,
prefix, and the relay's link-address and peer-address written in: no decoding, no table, no store.
It reads and writes in batches as serve does.

Bench run against it measures the load generator's own ceiling on this
machine: the rate at which a server that costs (almost) nothing would be
driven. It is not a DHCPv6 server: it answers nothing else.`,
		Example: `  cloudstack-pd bench reflect --listen [::1]:10649 &
  cloudstack-pd bench --server [::1]:10649 --server-pid $!`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ap, err := netip.ParseAddrPort(listen)
			if err != nil {
				return fmt.Errorf("--listen %q: %w", listen, err)
			}
			c, err := net.ListenUDP("udp6", net.UDPAddrFromAddrPort(ap))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "reflecting on %s\n", c.LocalAddr())
			return runBenchReflect(cmd.Context(), c, pools)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "[::1]:10649", "address to answer on, [addr]:port")
	cmd.Flags().IntVar(&pools, "pools", 4, "pools of the synthetic clients")
	return cmd
}

// reflectTemplate is an encoded Relay-Reply and where to write a client in it.
type reflectTemplate struct {
	pkt           []byte
	xid, mac, pfx int
}

// reflectSentinelPrefix marks where the prefix goes in a template.
var reflectSentinelPrefix = netip.MustParsePrefix("2001:db8:fee0::/60")

func newReflectTemplate(k int, t dhcpv6.MessageType) (reflectTemplate, error) {
	sid := []byte{0, 1, 0, 1, 0x2f, 0, 0, 1, 2, 0xcd, 0, 0, 0, 9}
	m := &dhcpv6.Message{MessageType: t}
	m.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionServerID, OptionData: sid})
	m.AddOption(dhcpv6.OptClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: benchSentinel}))
	ia := &dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, 1}, T1: 1000 * time.Second, T2: 2000 * time.Second}
	ia.Options.Add(&dhcpv6.OptIAPrefix{PreferredLifetime: 86400 * time.Second, ValidLifetime: 172800 * time.Second,
		Prefix: &net.IPNet{IP: reflectSentinelPrefix.Addr().AsSlice(), Mask: net.CIDRMask(60, 128)}})
	m.AddOption(ia)
	msg := m.ToBytes()
	peer := relay.EUI64LinkLocal(benchSentinel)
	rr := &dhcpv6.RelayMessage{MessageType: dhcpv6.MessageTypeRelayReply, LinkAddr: synth.LinkAddr(k).AsSlice(), PeerAddr: peer.AsSlice()}
	rr.Options.Add(dhcpv6.OptInterfaceID([]byte(synth.InterfaceID(k))))
	rr.Options.Add(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRelayMsg, OptionData: msg})
	pkt := rr.ToBytes()
	a16 := reflectSentinelPrefix.Addr().As16()
	tp := reflectTemplate{pkt: pkt, xid: len(pkt) - len(msg) + 1, mac: bytes.Index(pkt, benchSentinel),
		pfx: bytes.Index(pkt, a16[:])}
	// The relay header (link-address, peer-address) is the request's, copied.
	if tp.mac < 0 || tp.pfx < 0 || !bytes.Equal(pkt[tp.xid-1:], msg) || pkt[0] != byte(dhcpv6.MessageTypeRelayReply) {
		return tp, errors.New("reflect template: cannot find the client's fields")
	}
	return tp, nil
}

// runBenchReflect answers on c until ctx is done.
func runBenchReflect(ctx context.Context, c *net.UDPConn, pools int) error {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var adv, rep []reflectTemplate
	for k := range pools {
		a, err := newReflectTemplate(k, dhcpv6.MessageTypeAdvertise)
		if err != nil {
			return err
		}
		r, err := newReflectTemplate(k, dhcpv6.MessageTypeReply)
		if err != nil {
			return err
		}
		adv, rep = append(adv, a), append(rep, r)
	}
	bio, err := udpbatch.New(c, benchBatch, nil)
	if err != nil {
		return err
	}
	n := bio.Size()
	bufs, lens, srcs := make([][]byte, n), make([]int, n), make([]netip.AddrPort, n)
	outs, dsts := make([][]byte, 0, n), make([]netip.AddrPort, 0, n)
	answers := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, 4096)
		answers[i] = make([]byte, 0, 512)
	}
	for {
		got, err := bio.Read(bufs, lens, srcs)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		outs, dsts = outs[:0], dsts[:0]
		for i := range got {
			req := bufs[i][:lens[i]]
			if len(req) < relay.HeaderLen || req[0] != relay.MsgRelayForward {
				continue
			}
			msg, ok := relay.FindOption(req[relay.HeaderLen:], relay.OptRelayMsg)
			rid, ok2 := relay.FindOption(req[relay.HeaderLen:], relay.OptRemoteID)
			if !ok || !ok2 || len(msg) < 4 || len(rid) != 10 {
				continue
			}
			client, ok := synth.Index(rid[4:])
			if !ok {
				continue
			}
			t := &adv[client%pools]
			if dhcpv6.MessageType(msg[0]) == dhcpv6.MessageTypeRequest {
				t = &rep[client%pools]
			}
			a := append(answers[i][:0], t.pkt...)
			copy(a[t.xid:t.xid+3], msg[1:4])
			copy(a[t.mac:t.mac+6], rid[4:])
			copy(a[2:relay.HeaderLen], req[2:relay.HeaderLen]) // link-address and peer-address
			p := synth.Prefix(client, pools).Addr().As16()
			copy(a[t.pfx:t.pfx+16], p[:])
			answers[i] = a
			outs, dsts = append(outs, a), append(dsts, srcs[i])
		}
		if len(outs) > 0 {
			_ = bio.Write(outs, dsts)
		}
	}
}
