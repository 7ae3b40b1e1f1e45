package server

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/capture"
	"github.com/cloudstack-pd/cloudstack-pd/relay"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// The real captures of ../shared/captures (see its README), fed through
// the handler. They were taken on other people's networks, between clients
// and servers that are not ours, so the test gives their clients a world:
//
//   - the pool of interface-id "VLAN2701" (the one a Juniper relay puts in
//     front of the unrelayed messages here) holds a reservation for
//     00:01:02:03:04:05, the source MAC of the client in dhcpv6-ia-pd,
//     dhcpv6-ia-na and dhcpv6-AFTR-Name-RFC6334 (the same test client);
//   - 48:5b:39:e7:14:84, the client of dhcpv6-rfc6355-duid-uuid, has its
//     prefix in another pool ("VLAN2702");
//   - 00:00:01:01:00:00, the client of dhcpv6-rfc8415-duid-type2, is unknown.
//
// Client messages sent to port 547 are fed twice: as captured, which the
// server drops as unrelayed (their MAC cannot be trusted), and wrapped the
// way a Junos relay wraps them (interface-id "VLAN2701", remote-id =
// enterprise 2636 + the frame's source MAC). Relay-Forwards are fed as
// captured. Messages that only servers send (Advertise, Reply,
// Relay-Reply) are fed both ways too and must never be answered.
//
// Requests and Renews name the server that answered them at the time, so
// this server drops them (server-id-mismatch): that is right, RFC 8415
// section 16. They are fed a third time with the Server Identifier
// rewritten to ours, as `cloudstack-pd replay` will do (issue 5), to check
// the answer they would get.
var (
	capMACKnown  = mustMAC("00:01:02:03:04:05")
	capMACOther  = mustMAC("48:5b:39:e7:14:84")
	capPrefix    = netip.MustParsePrefix("2001:db8:400:10::/60")
	capPrefixB   = netip.MustParsePrefix("2001:db8:500:10::/60")
	capFallback  = mustMAC("02:00:5e:00:53:ff") // remote-id MAC when a frame has no source MAC
	capServed    = pfx{capPrefix, 86400 * time.Second, 172800 * time.Second}
	capOldPrefix = netip.MustParsePrefix("2a00:1:1:100::/56") // what the captured server delegated
)

func captureTable(t testing.TB) *allocator.Table {
	t.Helper()
	tbl, err := allocator.NewTable([]allocator.Pool{
		{Name: "pod-cap", Prefix: netip.MustParsePrefix("2001:db8:400::/40"), PrefixLen: 60, InterfaceID: "VLAN2701"},
		{Name: "pod-cap-b", Prefix: netip.MustParsePrefix("2001:db8:500::/40"), PrefixLen: 60, InterfaceID: "VLAN2702"},
	}, []allocator.Allocation{
		{Pool: "pod-cap", MAC: capMACKnown, Prefix: capPrefix, State: allocator.StateActive},
		{Pool: "pod-cap-b", MAC: capMACOther, Prefix: capPrefixB, State: allocator.StateActive},
	})
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// outcome is what the handler must do with one packet.
type outcome struct {
	drop    Reason // the drop reason, or "" for an answer
	answer  dhcpv6.MessageType
	status  int // top-level status code, -1 for none
	ias     []ia
	result  Result // the handler's verdict on the client (its "answered" log record)
	records int    // bindings recorded
}

func dropped(r Reason) outcome { return outcome{drop: r} }

// iaNoAddrs is the answer to an IA_NA: this server assigns no addresses.
var iaNoAddrs = []ia{{code: dhcpv6.OptionIANA, status: iana.StatusNoAddrsAvail}}

// captureCase is the expectation for one DHCPv6 message of a capture.
type captureCase struct {
	file  string
	frame int
	what  string
	// sent: the packet as captured (a client message sent straight to the
	// server, or a relay's Relay-Forward).
	sent outcome
	// juniper: an unrelayed message wrapped by a Junos relay; nil for
	// Relay-Forwards, which are not wrapped again.
	juniper *outcome
	// rewritten: the relayed packet (juniper-wrapped or as captured) with
	// its Server Identifier replaced by ours; nil when it names no server.
	rewritten *outcome
	// interfaceID: a captured Relay-Forward's innermost interface-id, hex.
	interfaceID string
}

func ptr(o outcome) *outcome { return &o }

// pdExchange is the expectation for the Solicit/Advertise/Request/Reply
// captures of an IA_PD client (dhcpv6-ia-pd, dhcpv6-AFTR-Name-RFC6334).
func pdExchange(file string) []captureCase {
	return []captureCase{
		{file: file, frame: 1, what: "Solicit with an IA_PD",
			sent: dropped(ReasonUnrelayed),
			juniper: ptr(outcome{answer: dhcpv6.MessageTypeAdvertise, status: -1, result: ResultPrefix,
				ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{capServed}, t1: t1, t2: t2}}})},
		{file: file, frame: 2, what: "Advertise (a server's message)",
			sent: dropped(ReasonUnrelayed), juniper: ptr(dropped(ReasonUnexpectedType))},
		{file: file, frame: 3, what: "Request for 2a00:1:1:100::/56 from the captured server",
			sent: dropped(ReasonUnrelayed), juniper: ptr(dropped(ReasonServerIDMismatch)),
			// Our reservation, and the prefix the other server gave withdrawn.
			rewritten: ptr(outcome{answer: dhcpv6.MessageTypeReply, status: -1, result: ResultPrefix, records: 1,
				ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{capServed, withdrawn(capOldPrefix)}, t1: t1, t2: t2}}})},
		{file: file, frame: 4, what: "Reply (a server's message)",
			sent: dropped(ReasonUnrelayed), juniper: ptr(dropped(ReasonUnexpectedType))},
	}
}

var captureCases = slices.Concat(
	pdExchange("dhcpv6-ia-pd.pcap"),
	pdExchange("dhcpv6-AFTR-Name-RFC6334.pcap"),
	[]captureCase{
		// An IA_NA client: the server assigns no addresses, and says so
		// in the IA_NA. Its MAC has a prefix, but it asks for none.
		{file: "dhcpv6-ia-na.pcap", frame: 1, what: "Solicit with an IA_NA",
			sent:    dropped(ReasonUnrelayed),
			juniper: ptr(outcome{answer: dhcpv6.MessageTypeAdvertise, status: -1, ias: iaNoAddrs, result: ResultPrefix})},
		{file: "dhcpv6-ia-na.pcap", frame: 2, what: "Advertise",
			sent: dropped(ReasonUnrelayed), juniper: ptr(dropped(ReasonUnexpectedType))},
		{file: "dhcpv6-ia-na.pcap", frame: 3, what: "Request for an address",
			sent: dropped(ReasonUnrelayed), juniper: ptr(dropped(ReasonServerIDMismatch)),
			rewritten: ptr(outcome{answer: dhcpv6.MessageTypeReply, status: -1, ias: iaNoAddrs, result: ResultPrefix})},
		{file: "dhcpv6-ia-na.pcap", frame: 4, what: "Reply",
			sent: dropped(ReasonUnrelayed), juniper: ptr(dropped(ReasonUnexpectedType))},

		// A DUID-UUID client (no MAC in its DUID) renewing an address; its
		// MAC (from the remote-id) has a prefix in another pool.
		{file: "dhcpv6-rfc6355-duid-uuid.pcap", frame: 1, what: "Renew of an address",
			sent: dropped(ReasonUnrelayed), juniper: ptr(dropped(ReasonServerIDMismatch)),
			rewritten: ptr(outcome{answer: dhcpv6.MessageTypeReply, status: -1, ias: iaNoAddrs, result: ResultOtherPool})},
		{file: "dhcpv6-rfc6355-duid-uuid.pcap", frame: 2, what: "Reply",
			sent: dropped(ReasonUnrelayed), juniper: ptr(dropped(ReasonUnexpectedType))},

		// A DUID-EN client (no MAC in its DUID), unknown here.
		{file: "dhcpv6-rfc8415-duid-type2.pcap", frame: 1, what: "Request for an address, with vendor options",
			sent: dropped(ReasonUnrelayed), juniper: ptr(dropped(ReasonServerIDMismatch)),
			rewritten: ptr(outcome{answer: dhcpv6.MessageTypeReply, status: -1, ias: iaNoAddrs, result: ResultUnknownMAC})},

		// A real relay (a cable head-end, hop-count 1, sending from port
		// 546) whose interface-id is 6 binary bytes: no pool has it. The
		// Request names the captured server; rewritten, it gets its IA_NA
		// answered, and its relay level echoed.
		{file: "dhcpv6-vendor-specific-information.pcap", frame: 1, what: "Relay-Forward of a Request",
			interfaceID: "54d46ffa109a",
			sent:        dropped(ReasonServerIDMismatch),
			rewritten:   ptr(outcome{answer: dhcpv6.MessageTypeReply, status: -1, ias: iaNoAddrs, result: ResultNoPool})},

		{file: "dhcpv6-domain-list.pcap", frame: 1, what: "Reply with a domain search list",
			sent: dropped(ReasonUnrelayed), juniper: ptr(dropped(ReasonUnexpectedType))},

		// The malformed capture: a Relay-reply (two empty Reconfigure
		// Message options) over IPv4, cut by the snap length. Sent as it
		// is, the handler drops it as unrelayed (anything but a
		// Relay-Forward is); inside a Relay-Forward, relay.Decode refuses
		// a Relay-Reply within a Relay-Forward: malformed-relay.
		{file: "dhcp6_reconf_asan.pcap", frame: 1,
			what: "malformed Relay-reply over IPv4, cut by the snap length (capture.Read skips it)",
			sent: dropped(ReasonUnrelayed), juniper: ptr(dropped(ReasonMalformedRelay))},
	},
	// The same Relay-Forward retransmitted five times: hop-count 0,
	// link-local peer, global link-address, interface-id 00000008 (no
	// pool), a Solicit with Rapid Commit (off here: Advertise) and only
	// an IA_NA.
	func() []captureCase {
		var cs []captureCase
		for f := 1; f <= 5; f++ {
			cs = append(cs, captureCase{file: "dhcpv6-mud.pcap", frame: f, what: "Relay-Forward of a Solicit with rapid commit and a MUD URL",
				interfaceID: "00000008",
				sent:        outcome{answer: dhcpv6.MessageTypeAdvertise, status: -1, ias: iaNoAddrs, result: ResultNoPool}})
		}
		return cs
	}(),
)

func TestSharedCapturesThroughHandler(t *testing.T) {
	dir := testenv.SharedCaptures(t)
	files, err := filepath.Glob(filepath.Join(dir, "*.pcap"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no captures in %s (%v)", dir, err)
	}
	want := map[string]captureCase{}
	for _, c := range captureCases {
		key := fmt.Sprintf("%s#%d", c.file, c.frame)
		if _, dup := want[key]; dup {
			t.Fatalf("two expectations for %s", key)
		}
		want[key] = c
	}
	seen := map[string]bool{}
	for _, path := range files {
		file := filepath.Base(path)
		for _, p := range capturedMessages(t, path) {
			key := fmt.Sprintf("%s#%d", file, p.Index)
			seen[key] = true
			c, ok := want[key]
			if !ok {
				t.Errorf("%s frame %d (%s): no expectation in captureCases", file, p.Index, dhcpv6.MessageType(p.Payload[0]))
				continue
			}
			t.Run(fmt.Sprintf("%s/%d %s", file, p.Index, c.what), func(t *testing.T) { runCaptureCase(t, c, p) })
		}
	}
	for _, c := range captureCases {
		if key := fmt.Sprintf("%s#%d", c.file, c.frame); !seen[key] {
			t.Errorf("expectation for %s, a message the captures do not hold", key)
		}
	}
}

func runCaptureCase(t *testing.T, c captureCase, p capture.Packet) {
	if p.Payload[0] == relay.MsgRelayForward {
		if c.juniper != nil {
			t.Fatal("a Relay-Forward has an expectation for being wrapped again")
		}
		chain, err := relay.Decode(p.Payload)
		if err != nil {
			t.Fatalf("captured Relay-Forward does not decode: %v", err)
		}
		if got := hex.EncodeToString(chain.InterfaceID()); got != c.interfaceID {
			t.Errorf("interface-id %s, want %s", got, c.interfaceID)
		}
		t.Run("as captured", func(t *testing.T) { feed(t, p.Src, p.Payload, c.sent) })
		rewrite(t, p.Src, p.Payload, c.rewritten)
		return
	}
	t.Run("unrelayed", func(t *testing.T) { feed(t, p.Src, p.Payload, c.sent) })
	if c.juniper == nil {
		t.Fatal("no expectation for the message wrapped by a Junos relay")
	}
	mac := p.SrcMAC
	if mac == nil {
		mac = capFallback
	}
	// The relay on the client's link: its global address as link-address,
	// the client's source address as peer-address (RFC 8415 section 19.1.1).
	wrapped := relay.Encapsulate(p.Payload, relay.Forward{LinkAddr: linkAddr, PeerAddr: p.Src.Addr(),
		InterfaceID: []byte("VLAN2701"), RemoteID: relay.JuniperRemoteID(mac)})
	t.Run("juniper", func(t *testing.T) { feed(t, relayAddr, wrapped, *c.juniper) })
	switch dhcpv6.MessageType(p.Payload[0]) {
	case dhcpv6.MessageTypeAdvertise, dhcpv6.MessageTypeReply, dhcpv6.MessageTypeReconfigure, dhcpv6.MessageTypeRelayReply:
		// A server's message names its server; there is nothing to rewrite.
		if c.rewritten != nil {
			t.Error("expectation for a server's message with a rewritten server id")
		}
	default:
		rewrite(t, relayAddr, wrapped, c.rewritten)
	}
}

// rewrite feeds pkt with its Server Identifier replaced by ours, when it
// names a server; want is nil exactly when it names none.
func rewrite(t *testing.T, src netip.AddrPort, pkt []byte, want *outcome) {
	t.Helper()
	ours, n, err := capture.ReplaceServerID(pkt, serverDUID)
	if err != nil {
		// Only the malformed capture cannot be rewritten.
		if want != nil {
			t.Fatalf("ReplaceServerID: %v", err)
		}
		return
	}
	switch {
	case n == 0 && want != nil:
		t.Fatal("expectation for a rewritten server id, but the message names no server")
	case n > 0 && want == nil:
		t.Fatal("the message names a server: add an expectation for it rewritten to ours")
	case n > 0:
		t.Run("server-id rewritten", func(t *testing.T) { feed(t, src, ours, *want) })
	}
}

// feed hands one packet to a fresh handler and checks the outcome.
func feed(t *testing.T, src netip.AddrPort, pkt []byte, want outcome) {
	t.Helper()
	log := &resultLog{}
	sink := &sinkRecorder{}
	h, err := NewHandler(HandlerConfig{
		Table: allocator.NewLive(captureTable(t)), ServerID: serverDUID, Options: testOptions,
		Bindings: sink, Now: func() time.Time { return testNow }, Logger: slog.New(log),
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := h.Handle(src, bytes.Clone(pkt))
	if want.drop != "" {
		var d *Drop
		if !errors.As(err, &d) || d.Reason != want.drop {
			t.Fatalf("Handle = %v (reply %d bytes), want drop %q", err, len(r.Data), want.drop)
		}
		if got := testutil.ToFloat64(h.Metrics().Drops.WithLabelValues(string(want.drop))); got != 1 {
			t.Errorf("drops{reason=%q} = %v, want 1", want.drop, got)
		}
		if r.Data != nil {
			t.Errorf("a dropped packet returned %d bytes", len(r.Data))
		}
		return
	}
	if err != nil {
		t.Fatalf("Handle: %v", err)
	}
	chain, err := relay.Decode(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if wantDst := netip.AddrPortFrom(src.Addr(), chain.ReplyPort(src.Port())); r.Dst != wantDst {
		t.Errorf("reply to %s, want %s", r.Dst, wantDst)
	}
	ans := checkEcho(t, chain, r.Data)
	checkAnswer(t, ans, want.answer, want.status, want.ias)
	req, err := dhcpv6.MessageFromBytes(chain.Message)
	if err != nil {
		t.Fatal(err)
	}
	if ans.TransactionID != req.TransactionID {
		t.Errorf("transaction id %s, want the request's %s", ans.TransactionID, req.TransactionID)
	}
	if got, want := ans.GetOneOption(dhcpv6.OptionClientID).ToBytes(), req.GetOneOption(dhcpv6.OptionClientID).ToBytes(); !bytes.Equal(got, want) {
		t.Errorf("client id %x, want the request's %x", got, want)
	}
	if sid := ans.GetOneOption(dhcpv6.OptionServerID); sid == nil || !bytes.Equal(sid.ToBytes(), serverDUID) {
		t.Errorf("server id %v, want ours", sid)
	}
	if got := log.last(); got != string(want.result) {
		t.Errorf("handler's result %q, want %q", got, want.result)
	}
	if len(sink.recorded) != want.records {
		t.Errorf("%d bindings recorded, want %d", len(sink.recorded), want.records)
	}
}

// checkEcho checks that reply is one Relay-Reply per level of the request's
// chain, each copying its level's hop-count, link and peer addresses and
// echoing its interface-id and relay source port, and returns the answer.
func checkEcho(t *testing.T, chain *relay.Chain, reply []byte) *dhcpv6.Message {
	t.Helper()
	m, err := dhcpv6.FromBytes(reply)
	if err != nil {
		t.Fatalf("reply does not decode: %v", err)
	}
	for i, lvl := range chain.Levels {
		rr, ok := m.(*dhcpv6.RelayMessage)
		if !ok || rr.MessageType != dhcpv6.MessageTypeRelayReply {
			t.Fatalf("reply level %d is %s, want a Relay-Reply", i, m.Type())
		}
		got := fmt.Sprintf("hop %d link %s peer %s iid %x", rr.HopCount, rr.LinkAddr, rr.PeerAddr, rr.Options.InterfaceID())
		want := fmt.Sprintf("hop %d link %s peer %s iid %x", lvl.HopCount, lvl.LinkAddr, lvl.PeerAddr, lvl.InterfaceID)
		if got != want {
			t.Errorf("reply level %d: %s; want %s", i, got, want)
		}
		if rp := rr.Options.RelayPort(); (rp != nil) != lvl.HasSourcePort || (rp != nil && rp.DownstreamSourcePort != lvl.SourcePort) {
			t.Errorf("reply level %d: relay port %v, want %v %d", i, rp, lvl.HasSourcePort, lvl.SourcePort)
		}
		m = rr.Options.RelayMessage()
		if m == nil {
			t.Fatalf("reply level %d has no relay message", i)
		}
	}
	ans, ok := m.(*dhcpv6.Message)
	if !ok {
		t.Fatalf("reply has more levels than the request's %d", len(chain.Levels))
	}
	return ans
}

// resultLog is a slog handler that keeps the result of each "answered"
// record the handler logs at debug level: the only place where its verdict
// on the client (no-pool, other-pool ...) shows when the client asked for
// no prefix.
type resultLog struct {
	mu      sync.Mutex
	results []string
}

func (l *resultLog) Enabled(context.Context, slog.Level) bool { return true }

func (l *resultLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "answered" {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	res := "(no result attribute)"
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "result" {
			res = a.Value.String()
		}
		return true
	})
	l.results = append(l.results, res)
	return nil
}

func (l *resultLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *resultLog) WithGroup(string) slog.Handler      { return l }

func (l *resultLog) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.results) == 0 {
		return "(no answered record logged)"
	}
	return l.results[len(l.results)-1]
}

// capturedMessages returns the DHCPv6 messages of a capture as
// capture.ReadFile finds them, plus those it skips because they travel
// over IPv4 (the malformed dhcp6_reconf_asan.pcap): a server never gets
// those from its IPv6 socket, but their bytes must not harm it either.
func capturedMessages(t *testing.T, path string) []capture.Packet {
	t.Helper()
	pkts, st, err := capture.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Malformed != 0 {
		t.Errorf("%s: %d malformed frames: %v", path, st.Malformed, st.Errors)
	}
	if st.Skipped == 0 {
		return pkts
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; ; n++ {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		pkt := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
		ip4, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if ip4 == nil || ip4.Protocol != layers.IPProtocolUDP || ip4.FragOffset != 0 {
			continue
		}
		// Decoded here rather than by gopacket's chain, which stops at
		// the IPv4 header of this frame: it has the More Fragments flag set.
		var udp layers.UDP
		if udp.DecodeFromBytes(ip4.Payload, gopacket.NilDecodeFeedback) != nil || len(udp.Payload) == 0 ||
			(udp.SrcPort != 547 && udp.DstPort != 547 && udp.SrcPort != 546 && udp.DstPort != 546) {
			continue
		}
		var mac net.HardwareAddr
		if eth, ok := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet); ok {
			mac = eth.SrcMAC
		}
		src, _ := netip.AddrFromSlice(ip4.SrcIP)
		pkts = append(pkts, capture.Packet{Index: n, SrcMAC: mac, Src: netip.AddrPortFrom(src, uint16(udp.SrcPort)), Payload: udp.Payload})
	}
	slices.SortFunc(pkts, func(a, b capture.Packet) int { return a.Index - b.Index })
	return pkts
}
