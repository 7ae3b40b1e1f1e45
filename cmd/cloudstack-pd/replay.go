package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/daemon"
	"github.com/cloudstack-pd/cloudstack-pd/replay"
	"github.com/cloudstack-pd/cloudstack-pd/server"
)

// Exit statuses of replay besides 0 (all answered, as expected) and 1
// (an error: bad flags, unreadable files, no socket).
const (
	replayExitNoAnswer    = replay.ExitNoAnswer
	replayExitDifferences = replay.ExitDifferences
)

type replayFlags struct {
	pcap        string
	server      string
	offline     bool
	config      string
	wrap        bool
	interfaceID string
	linkAddr    string
	rate        float64
	timeout     time.Duration
	serverID    string
	keepSID     bool
	allowDrops  bool
	record      string
	expect      string
	compare     string
	expectedDif string
	writeAns    string
	quiet       bool
}

func newReplayCmd() *cobra.Command {
	var f replayFlags
	cmd := &cobra.Command{
		Use:   "replay --pcap FILE (--server [ADDR]:PORT | --offline --config FILE)",
		Short: "Replay the DHCPv6 requests of a capture to a server and check its answers",
		Long: `Replay reads a packet capture (pcap or pcapng, plain or gzipped; link types
Ethernet with or without 802.1Q/802.1ad tags, Linux cooked v1 and v2 as
'tcpdump -i any' writes, raw IPv6, BSD loopback), picks the DHCPv6 messages
sent towards a server, sends them to a server in capture order and prints,
for each, what the server answered:

  frame     3  06:32:b2:00:04:79  REQUEST             -> REPLY      2001:db8:200::/60  143µs  [server-id rewritten]

(the frame number in the capture, the client MAC the relay names, the
request type, the answer type, the prefixes it gives or the status codes,
the latency), then a summary: requests sent, answered, not answered, the
answers by kind, latency p50 and p99.

What is sent:
  Relay-Forwards, as captured. One without a Relay Source Port option (135,
  RFC 8357) gets one added to its outermost level: without it the server
  would answer at port 547 of the sender, not at replay's port. The summary
  says how many got one.
  With --wrap, the client messages that were sent straight to a server
  too, each wrapped in a Relay-Forward as a Junos relay wraps it:
  --interface-id, --link-address (default ::), the client's address as
  peer-address, remote-id = enterprise 2636 + the frame's source MAC, and
  a relay source port option. Without --wrap they are skipped and counted.
  Never the messages only servers send (Advertise, Reply, Relay-Reply ...):
  a capture taken on the server holds the old server's answers too.

Server Identifier: the Requests, Renews, Releases, Declines (and
Information-requests) of a capture name the server that answered them then,
often Kea; the target would drop them. Replay rewrites their Server
Identifier to the DUID the target uses: --server-id, or learned from the
target's first Advertise or Reply (when a request needs it before any
answer, replay sends an Information-request to learn it). Each rewritten
request is marked "server-id rewritten"; --keep-server-id sends them as
captured.

Answers are matched to requests by the transaction id of the client message
and the shape of the relay chain (hop-count, link-address and peer-address
of each level, which a Relay-Reply copies). By default one request is
outstanding at a time: the next goes as soon as the previous one is answered
or --timeout passed. --rate N sends N per second whatever the answers.

No answer: a request that gets no answer within --timeout counts as "no
answer", and any makes the exit status 2. Some requests are rightly left
unanswered (a Confirm or an Information-request with an IA to a
prefix-delegation server, a malformed packet, a Release naming another
server with --keep-server-id): replay cannot tell them from lost ones.
--allow-drops accepts them; --expect accepts exactly those its golden file
records as unanswered. With --offline the line says why the server dropped
the request (its drop reason, as in the cloudstack_pd_drops_total metric).

Checking:
  --record FILE   writes the answers as a golden JSON file: per request, the
                  answer's type, status codes, IAs with prefixes, lifetimes
                  and timers, relay echo; the server's DUID and the latency
                  are replaced by placeholders (<server-duid>, <latency>) and
                  status messages are left out, so that the file is the
                  same from run to run and from server to server.
  --expect FILE   compares the answers with a golden file and prints every
                  changed field with its expected and actual value; exit
                  status 3 when anything differs.
  --compare ADDR  sends every request to a second server too (each server's
                  own DUID is rewritten in) and reports every difference in
                  the answer's presence, type, status codes, prefixes,
                  lifetimes, timers and relay echo. Kea against
                  cloudstack-pd is the intended use. The known differences
                  of Kea 2.2 are marked "expected" by built-in rules:
` + replayRulesHelp() + `
                  --expected-differences FILE adds a site's own rules
                  (docs/replay.md). Exit status 3 when a difference is
                  unexpected. Replayed Requests, Renews, Releases and
                  Declines change the leases of the server they reach:
                  compare with a Kea running a copy of the production
                  config, not with the production Kea.

--offline --config FILE runs the server's handler in-process, on the pools
and settings of the config and the table of the store it names, without
any socket: the store is opened read-only and nothing is written (bindings
are not recorded). It cannot open the store of a running serve, which holds
it: copy the file and point CLOUDSTACK_PD_STATE at the copy. A store that
serve never ran on has no server DUID yet: replay then answers with a
placeholder DUID and says so. Captured Relay-Forwards are handed to the
handler from their captured source address (so trusted-relays applies),
wrapped messages from [::1]:547.

--write-answers FILE.pcap writes each request as sent and each answer as a
pcap file that Wireshark and tshark read; the server's port is written as
547 so that they dissect DHCPv6 without "Decode As".

Exit status: 0 when every request was answered (or its lack of answer was
allowed) and nothing differs; 1 on an error (flags, files, sockets, no
request in the capture); 2 when a request got no answer; 3 when answers
differ from --expect's golden file or a --compare difference is unexpected.`,
		Example: `  # Replay a capture taken on the old Kea host to a staging cloudstack-pd:
  tcpdump -i any -w relay.pcap udp port 547
  cloudstack-pd replay --pcap relay.pcap --server [2001:db8::100:70]:547

  # The same, in-process on a copy of the production store, no socket:
  cp /var/lib/cloudstack-pd/state.db /tmp/state.db
  CLOUDSTACK_PD_STATE=/tmp/state.db cloudstack-pd replay --pcap relay.pcap \
      --offline --config /etc/cloudstack-pd/config.yaml

  # Against staging, compared with a Kea serving the production Kea config
  # on a staging address; Kea's known differences are marked as expected:
  cloudstack-pd replay --pcap relay.pcap --server [2001:db8::100:70]:547 \
      --compare [2001:db8::100:71]:547

  # Client traffic mirrored from a VLAN trunk, wrapped as the Junos relay would:
  cloudstack-pd replay --pcap clients.pcap --server [::1]:10547 \
      --wrap --interface-id VLAN2701 --link-address 2001:db8:100::1

  # Regression test: record the answers once, check them on every build:
  cloudstack-pd replay --pcap relay.pcap --offline -c cfg.yaml --record relay.golden.json
  cloudstack-pd replay --pcap relay.pcap --offline -c cfg.yaml --expect relay.golden.json

  # 500 requests per second, answers saved for Wireshark:
  cloudstack-pd replay --pcap relay.pcap --server [::1]:10547 --rate 500 --write-answers answers.pcap`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runReplayFlags(cmd.Context(), cmd.OutOrStdout(), f, cmd.Flags().Changed)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.pcap, "pcap", "", "the capture to replay (pcap or pcapng, may be gzipped)")
	fl.StringVar(&f.server, "server", "", "the server to replay to, [addr]:port (IPv6)")
	fl.BoolVar(&f.offline, "offline", false, "instead of --server, run the server's handler in-process on --config's pools and store (read-only, no socket)")
	fl.StringVarP(&f.config, "config", "c", "/etc/cloudstack-pd/config.yaml", "with --offline: the cloudstack-pd config whose pools, server settings and store (state) answer")
	fl.BoolVar(&f.wrap, "wrap", false, "also replay client messages sent straight to a server, wrapped as a Junos relay does (needs --interface-id)")
	fl.StringVar(&f.interfaceID, "interface-id", "", "with --wrap: the interface-id (option 18) naming the clients' VLAN, e.g. VLAN2701")
	fl.StringVar(&f.linkAddr, "link-address", "::", "with --wrap: the relay's link-address (Kea 2.2 needs a global one to use the interface-id)")
	fl.Float64Var(&f.rate, "rate", 0, "send this many requests per second; 0: one at a time, each as soon as the previous one is answered or timed out")
	fl.DurationVar(&f.timeout, "timeout", replay.DefaultTimeout, "how long to wait for each answer")
	fl.StringVar(&f.serverID, "server-id", "", "the --server's DUID in hex (colons allowed), written into requests that name a server; default: learned from its first answer (always so for --compare's)")
	fl.BoolVar(&f.keepSID, "keep-server-id", false, "send Server Identifiers as captured (the server drops requests naming another server)")
	fl.BoolVar(&f.allowDrops, "allow-drops", false, "exit 0 even when requests get no answer (they are still counted and shown)")
	fl.StringVar(&f.record, "record", "", "write the answers as a normalized golden JSON file")
	fl.StringVar(&f.expect, "expect", "", "compare the answers with this golden JSON file; exit 3 on a difference")
	fl.StringVar(&f.compare, "compare", "", "also send every request to this server, [addr]:port, and report every difference (e.g. Kea)")
	fl.StringVar(&f.expectedDif, "expected-differences", "", "with --compare: a JSON file of rules marking known differences as expected (plus the built-in Kea 2.2 rules unless it says \"builtin\": false)")
	fl.StringVar(&f.writeAns, "write-answers", "", "write the requests as sent and the answers as a pcap file for Wireshark or tshark (the server's port written as 547)")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "print only the summary, not one line per request")
	_ = cmd.MarkFlagRequired("pcap")
	return cmd
}

// replayRulesHelp lists the built-in expected differences for --help.
func replayRulesHelp() string {
	var b strings.Builder
	for _, r := range replay.Kea22Rules {
		line := "                    " + r.Name + ":"
		for _, w := range strings.Fields(r.Why) {
			if len(line)+1+len(w) > 78 {
				b.WriteString(line + "\n")
				line = "                      "
			}
			line += " " + w
		}
		b.WriteString(line + "\n")
	}
	return strings.TrimRight(b.String(), "\n")
}

// parseServer parses an [addr]:port flag: IPv6, since DHCPv6 is.
func parseServer(flag, s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, fmt.Errorf("--%s %q: want [IPv6 address]:port: %w", flag, s, err)
	}
	if !ap.Addr().Is6() || ap.Addr().Is4In6() || ap.Port() == 0 {
		return ap, fmt.Errorf("--%s %q: want [IPv6 address]:port (DHCPv6 runs over IPv6)", flag, s)
	}
	return ap, nil
}

func (f *replayFlags) check(changed func(string) bool) error {
	switch {
	case f.offline && f.server != "":
		return errors.New("--offline and --server exclude each other")
	case !f.offline && f.server == "":
		return errors.New("--server [ADDR]:PORT or --offline is required")
	case !f.wrap && (f.interfaceID != "" || changed("link-address")):
		return errors.New("--interface-id and --link-address are for --wrap")
	case f.wrap && f.interfaceID == "":
		return errors.New("--wrap needs --interface-id: the VLAN the relay would name")
	case f.expectedDif != "" && f.compare == "":
		return errors.New("--expected-differences is for --compare")
	case f.rate < 0:
		return fmt.Errorf("--rate %v: want 0 (one at a time) or more", f.rate)
	case f.timeout <= 0:
		return fmt.Errorf("--timeout %s: want more than 0", f.timeout)
	case f.keepSID && f.serverID != "":
		return errors.New("--server-id and --keep-server-id exclude each other")
	case changed("config") && !f.offline:
		return errors.New("--config is for --offline")
	}
	return nil
}

// runReplayFlags runs replay with the flags f, printing to out; changed
// says which flags were given on the command line (for those whose
// default is meaningful).
func runReplayFlags(ctx context.Context, out io.Writer, f replayFlags, changed func(string) bool) error {
	if err := f.check(changed); err != nil {
		return err
	}
	var wrap *replay.Wrap
	if f.wrap {
		link, err := netip.ParseAddr(f.linkAddr)
		if err != nil || !link.Is6() || link.Is4In6() {
			return fmt.Errorf("--link-address %q: want an IPv6 address", f.linkAddr)
		}
		wrap = &replay.Wrap{InterfaceID: []byte(f.interfaceID), LinkAddr: link}
	}
	var serverID []byte
	if f.serverID != "" {
		b, err := hex.DecodeString(strings.ReplaceAll(f.serverID, ":", ""))
		if err != nil {
			return fmt.Errorf("--server-id %q: %w", f.serverID, err)
		}
		if _, err := dhcpv6.DUIDFromBytes(b); err != nil || len(b) < 3 || len(b) > 130 {
			return fmt.Errorf("--server-id %q is not a DUID (2-byte type, then 1 to 128 bytes)", f.serverID)
		}
		serverID = b
	}
	offline, note := replay.Target(nil), ""
	if f.offline {
		h, n, err := replayHandler(f.config)
		if err != nil {
			return err
		}
		note = n
		offline = replay.NewFunc("offline", func(src netip.AddrPort, pkt []byte) ([]byte, netip.AddrPort, error) {
			r, err := h.Handle(src, pkt)
			return r.Data, r.Dst, err
		})
	}
	s := replay.Session{Capture: f.pcap, Offline: offline, OfflineNote: note, Config: f.config, Wrap: wrap,
		ExpectedDifferences: f.expectedDif, ServerID: serverID, KeepServerID: f.keepSID, Rate: f.rate, Timeout: f.timeout,
		AllowDrops: f.allowDrops, Record: f.record, WriteAnswers: f.writeAns, Expect: f.expect, Quiet: f.quiet}
	var err error
	if !f.offline {
		if s.Server, err = parseServer("server", f.server); err != nil {
			return err
		}
	}
	if f.compare != "" {
		if s.Compare, err = parseServer("compare", f.compare); err != nil {
			return err
		}
	}
	return replay.RunSession(ctx, out, s)
}

// replayHandler builds the server's handler as serve does
// (daemon.OfflineHandler), on a store opened read-only: an offline replay
// writes nothing. note, when not empty, is to be shown.
func replayHandler(cfgPath string) (h *server.Handler, note string, err error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, "", err
	}
	st, err := openReadOnly(cfg, "replay --offline", fmt.Sprintf(
		"copy it (cp %s /tmp/state.db) and replay on the copy (CLOUDSTACK_PD_STATE=/tmp/state.db)", cfg.State))
	if err != nil {
		return nil, "", err
	}
	defer st.Close()
	return daemon.OfflineHandler(cfg, st)
}
