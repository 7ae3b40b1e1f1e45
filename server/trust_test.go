package server

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// The trust tests' world: testTable's, with each pool's ip6-cidr (the
// VMs' subnet, which Kea's subnet selection by link-address uses) and an
// attacker VM on pod-b with a prefix of its own.
var (
	cidrA       = netip.MustParsePrefix("2001:db8:100::/64")
	cidrB       = netip.MustParsePrefix("2001:db8:101::/64")
	linkB       = netip.MustParseAddr("2001:db8:101::1")
	macAttacker = mustMAC("06:32:b2:00:0a:01") // pool pod-b, active
	prefixAtt   = netip.MustParsePrefix("2001:db8:300:10::/60")
	attPeer     = relay.EUI64LinkLocal(macAttacker)
)

func trustTable(t testing.TB) *allocator.Table {
	base := testTable(t)
	pools := base.Pools()
	pools[0].IP6CIDR, pools[1].IP6CIDR = cidrA, cidrB
	allocs := append(base.Allocations(),
		allocator.Allocation{Pool: "pod-b", MAC: macAttacker, Prefix: prefixAtt, State: allocator.StateActive})
	tbl, err := allocator.NewTable(pools, allocs)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

func newTrustHandler(t testing.TB, opts Options) (*Handler, *sinkRecorder) {
	t.Helper()
	sink := &sinkRecorder{}
	h, err := NewHandler(HandlerConfig{
		Table: allocator.NewLive(trustTable(t)), ServerID: serverDUID, Options: opts,
		Bindings: sink, Now: func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	return h, sink
}

// forged is the Relay-Forward a VM on pod-b writes itself to pass for the
// victim (macA on VLAN2701): the victim's interface-id and MAC, link ::.
func forged(m []byte) relay.Forward {
	return relay.Forward{LinkAddr: netip.IPv6Unspecified(), PeerAddr: vmPeer,
		InterfaceID: []byte("VLAN2701"), RemoteID: relay.JuniperRemoteID(macA)}
}

// juniperB is the level the operator's Juniper relay adds for the attacker.
var juniperB = relay.Forward{LinkAddr: linkB, PeerAddr: attPeer,
	InterfaceID: []byte("VLAN2702"), RemoteID: relay.JuniperRemoteID(macAttacker)}

// ldra is the level a Lightweight DHCPv6 Relay Agent (RFC 6221) adds
// between the VM and the Juniper relay: link ::, its port as interface-id.
func ldra(iid string, mac net.HardwareAddr) relay.Forward {
	return relay.Forward{LinkAddr: netip.IPv6Unspecified(), PeerAddr: relay.EUI64LinkLocal(mac),
		InterfaceID: []byte(iid), RemoteID: relay.JuniperRemoteID(mac)}
}

// handleTrust handles pkt and returns the answer inside the reply, or the
// drop reason.
func handleTrust(t *testing.T, h *Handler, pkt []byte) (*dhcpv6.Message, []byte, Reason) {
	t.Helper()
	r, err := h.Handle(relayAddr, pkt)
	if err != nil {
		var d *Drop
		if !errors.As(err, &d) {
			t.Fatalf("Handle: %v", err)
		}
		return nil, nil, d.Reason
	}
	return innerAnswer(t, r.Data), r.Data, ""
}

// containsPrefix reports whether the bytes of a reply hold the address of
// prefix p: what a router snooping it could act on.
func containsPrefix(b []byte, p netip.Prefix) bool {
	a := p.Addr().As16()
	return bytes.Contains(b, a[:])
}

func TestForgedRelayLevel(t *testing.T) {
	sol := msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1), rapidCommit)
	req := msg(dhcpv6.MessageTypeRequest, clientID(macA), serverID(serverDUID), iapd(1, prefixA))
	depth3 := testOptions
	depth3.RelayDepth = 3
	rapid := testOptions
	rapid.RapidCommit = true
	tests := []struct {
		name string
		opts Options
		pkt  []byte
		drop Reason
		want netip.Prefix // the prefix served, when answered
		// the binding's relay data when one is recorded
		iid  string
		link netip.Addr
	}{
		{name: "VM's own Relay-Forward for the victim inside the Juniper level: dropped",
			opts: rapid, pkt: relay.Encapsulate(sol, juniperB, forged(sol)), drop: ReasonUntrustedRelayLevel},
		{name: "the same Request: dropped",
			opts: testOptions, pkt: relay.Encapsulate(req, juniperB, forged(req)), drop: ReasonUntrustedRelayLevel},
		{name: "depth 2 (LDRA): a level forged under the LDRA is a third: dropped",
			opts: depth2, pkt: relay.Encapsulate(req, juniperB, ldra("port7", macAttacker), forged(req)), drop: ReasonUntrustedRelayLevel},
		{name: "depth 2 (LDRA): the LDRA's level identifies the VM",
			opts: depth2, pkt: relay.Encapsulate(msg(dhcpv6.MessageTypeRequest, clientID(macA), serverID(serverDUID), iapd(1)),
				relay.Forward{LinkAddr: linkB, PeerAddr: attPeer}, ldra("VLAN2702", macAttacker)),
			want: prefixAtt, iid: "VLAN2702", link: netip.IPv6Unspecified()},
		{name: "depth 2, one level only: that level is the trusted one",
			opts: depth2, pkt: relay.Encapsulate(req, juniperB), want: prefixAtt, iid: "VLAN2702", link: linkB},
		{name: "depth 3, two levels: the innermost is the trusted one",
			opts: depth3, pkt: relay.Encapsulate(req, relay.Forward{LinkAddr: netip.MustParseAddr("2001:db8:ffff::1"), InterfaceID: []byte("core")}, juniperB),
			want: prefixAtt, iid: "VLAN2702", link: linkB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, sink := newTrustHandler(t, tt.opts)
			ans, reply, reason := handleTrust(t, h, tt.pkt)
			if tt.drop != "" {
				if reason != tt.drop {
					t.Fatalf("reason %q, want drop %q", reason, tt.drop)
				}
				if got := testutil.ToFloat64(h.Metrics().Drops.WithLabelValues(string(tt.drop))); got != 1 {
					t.Errorf("drops{reason=%q} = %v, want 1", tt.drop, got)
				}
				return
			}
			if reason != "" {
				t.Fatalf("dropped (%s)", reason)
			}
			if containsPrefix(reply, prefixA) {
				t.Errorf("the victim's prefix is in the reply")
			}
			ps := ans.Options.OneIAPD().Options.Prefixes()
			if len(ps) != 1 {
				t.Fatalf("answer: %s", ans.Summary())
			}
			if p, _ := prefixOf(ps[0]); p != tt.want {
				t.Errorf("served %s, want %s", p, tt.want)
			}
			if len(sink.recorded) != 1 {
				t.Fatalf("%d bindings recorded", len(sink.recorded))
			}
			b := sink.recorded[0]
			if !bytes.Equal(b.MAC, macAttacker) || string(b.InterfaceID) != tt.iid || b.LinkAddress != tt.link ||
				!bytes.Equal(b.RemoteID, relay.JuniperRemoteID(macAttacker)) {
				t.Errorf("binding's relay data not the trusted level's: mac %s iid %q link %s remote-id %x",
					net.HardwareAddr(b.MAC), b.InterfaceID, b.LinkAddress, b.RemoteID)
			}
		})
	}
}

func TestPoolSelection(t *testing.T) {
	byIID := testOptions
	byIID.PoolSelection = []PoolRule{PoolByInterfaceID}
	byLink := testOptions
	byLink.PoolSelection = []PoolRule{PoolByLinkAddress}
	sol := msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1))
	level := func(iid string, link netip.Addr) []byte {
		f := relay.Forward{LinkAddr: link, PeerAddr: vmPeer, RemoteID: relay.JuniperRemoteID(macA)}
		if iid != "" {
			f.InterfaceID = []byte(iid)
		}
		return relay.Encapsulate(sol, f)
	}
	linkA := netip.MustParseAddr("2001:db8:100::1")
	tests := []struct {
		name   string
		opts   Options
		pkt    []byte
		served bool
		rule   string // pool_selections_total label counted
	}{
		{"interface-id names the pool", testOptions, level("VLAN2701", netip.IPv6Unspecified()), true, "interface-id"},
		{"interface-id wins over the link-address", testOptions, level("VLAN2701", linkB), true, "interface-id"},
		{"no interface-id: the pool whose ip6-cidr holds the link-address", testOptions, level("", linkA), true, "link-address"},
		{"an interface-id that names no pool: link-address", testOptions, level("VLAN9999", linkA), true, "link-address"},
		{"link-address of another pool: that pool (the MAC is not in it)", testOptions, level("", linkB), false, "link-address"},
		{"link-address :: selects nothing", testOptions, level("", netip.IPv6Unspecified()), false, "none"},
		{"link-local link-address selects nothing", testOptions, level("", netip.MustParseAddr("fe80::1")), false, "none"},
		{"link-address outside every ip6-cidr", testOptions, level("", netip.MustParseAddr("2001:db8:999::1")), false, "none"},
		{"pool-selection [interface-id]: no fallback", byIID, level("", linkA), false, "none"},
		{"pool-selection [link-address]: interface-id ignored", byLink, level("VLAN2702", linkA), true, "link-address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newTrustHandler(t, tt.opts)
			ans, _, reason := handleTrust(t, h, tt.pkt)
			if reason != "" {
				t.Fatalf("dropped (%s)", reason)
			}
			pd := ans.Options.OneIAPD()
			got := len(pd.Options.Prefixes()) == 1
			if got != tt.served {
				t.Errorf("served = %v, want %v: %s", got, tt.served, ans.Summary())
			}
			if got {
				if p, _ := prefixOf(pd.Options.Prefixes()[0]); p != prefixA {
					t.Errorf("served %s, want %s", p, prefixA)
				}
			}
			for _, l := range poolRuleLabels {
				want := 0.0
				if l == tt.rule {
					want = 1
				}
				if got := testutil.ToFloat64(h.Metrics().PoolSelections.WithLabelValues(l)); got != want {
					t.Errorf("pool_selections_total{rule=%q} = %v, want %v", l, got, want)
				}
			}
		})
	}
}

func TestOnePrefixInOneIA(t *testing.T) {
	rapid := testOptions
	rapid.RapidCommit = true
	held := ia{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}
	withStale := ia{code: dhcpv6.OptionIAPD, status: iana.StatusNoPrefixAvail, prefixes: []pfx{withdrawn(prefixStale)}}
	tests := []struct {
		name    string
		opts    Options
		pkt     []byte
		ias     []ia
		holder  uint32 // IAID of the recorded binding, 0 for none
		records int
	}{
		{name: "solicit, two IA_PDs: the first",
			opts: testOptions, pkt: msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1), iapd(2)), ias: []ia{held, noPrefix}},
		{name: "rapid-commit solicit, two IA_PDs: the first, one binding",
			opts: rapid, pkt: msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1), iapd(2), rapidCommit), ias: []ia{held, noPrefix}, holder: 1, records: 1},
		{name: "request, two IA_PDs: the first",
			opts: testOptions, pkt: msg(dhcpv6.MessageTypeRequest, clientID(macA), serverID(serverDUID), iapd(1), iapd(2)), ias: []ia{held, noPrefix}, holder: 1, records: 1},
		{name: "request, the second IA_PD names the prefix: the second",
			opts: testOptions, pkt: msg(dhcpv6.MessageTypeRequest, clientID(macA), serverID(serverDUID), iapd(1), iapd(2, prefixA)), ias: []ia{noPrefix, held}, holder: 2, records: 1},
		{name: "renew, the second holds it, the first names a stale prefix: withdrawn there",
			opts: testOptions, pkt: msg(dhcpv6.MessageTypeRenew, clientID(macA), serverID(serverDUID), iapd(1, prefixStale), iapd(2, prefixA)),
			ias: []ia{withStale, held}, holder: 2, records: 1},
		{name: "rebind, both name the prefix: the first keeps it, the second does not withdraw it",
			opts: testOptions, pkt: msg(dhcpv6.MessageTypeRebind, clientID(macA), iapd(3, prefixA), iapd(4, prefixA)),
			ias: []ia{held, noPrefix}, holder: 3, records: 1},
		{name: "repeated IAID: the first answered, the rest NoPrefixAvail",
			opts: testOptions, pkt: msg(dhcpv6.MessageTypeRequest, clientID(macA), serverID(serverDUID), iapd(1), iapd(1), iapd(1)),
			ias: []ia{held, noPrefix, noPrefix}, holder: 1, records: 1},
		{name: "repeated IAID naming the prefix is not its holder",
			opts: testOptions, pkt: msg(dhcpv6.MessageTypeRenew, clientID(macA), serverID(serverDUID), iapd(1), iapd(1, prefixA)),
			ias: []ia{held, noPrefix}, holder: 1, records: 1},
		{name: "unknown MAC, repeated IAID: NoPrefixAvail for the repeat",
			opts: testOptions, pkt: msg(dhcpv6.MessageTypeSolicit, clientID(macUnknown), iapd(1), iapd(1)), ias: []ia{noPrefix, noPrefix}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, sink := newTestHandler(t, tt.opts)
			mac := macA
			if bytes.Contains(tt.pkt, macUnknown) {
				mac = macUnknown
			}
			pkt := juniper("VLAN2701", mac, tt.pkt)
			r1, err := h.Handle(relayAddr, pkt)
			if err != nil {
				t.Fatal(err)
			}
			ans := innerAnswer(t, r1.Data)
			checkAnswer(t, ans, ans.MessageType, -1, tt.ias)
			n := 0
			for _, o := range ans.Options.IAPD() {
				for _, p := range o.Options.Prefixes() {
					if got, _ := prefixOf(p); got == prefixA {
						n++
					}
				}
			}
			if n > 1 {
				t.Errorf("the prefix is in %d IAs", n)
			}
			if len(sink.recorded) != tt.records {
				t.Fatalf("%d bindings recorded, want %d", len(sink.recorded), tt.records)
			}
			if tt.records > 0 && sink.recorded[0].IAID != tt.holder {
				t.Errorf("binding for IAID %d, want %d", sink.recorded[0].IAID, tt.holder)
			}
			// The same message again: the same answer.
			r2, err := h.Handle(relayAddr, pkt)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(r1.Data, r2.Data) {
				t.Errorf("a repeat gets another answer")
			}
		})
	}
}

func TestNeverEchoAnotherMACsPrefix(t *testing.T) {
	renew := func(mac net.HardwareAddr, named ...netip.Prefix) []byte {
		return juniper("VLAN2701", mac, msg(dhcpv6.MessageTypeRenew, clientID(mac), serverID(serverDUID), iapd(1, named...)))
	}
	req := func(mac net.HardwareAddr, named ...netip.Prefix) []byte {
		return juniper("VLAN2701", mac, msg(dhcpv6.MessageTypeRequest, clientID(mac), serverID(serverDUID), iapd(1, named...)))
	}
	noBinding := ia{code: dhcpv6.OptionIAPD, status: iana.StatusNoBinding}
	tests := []struct {
		name    string
		pkt     []byte
		ias     []ia
		omitted netip.Prefix // must not be in the reply's bytes
	}{
		{"unknown MAC names another VM's prefix: not echoed",
			renew(macUnknown, prefixB), []ia{noBinding}, prefixB},
		{"unknown MAC names a gone VM's prefix: not echoed",
			renew(macUnknown, prefixGone), []ia{noBinding}, prefixGone},
		{"unknown MAC names a quarantined prefix of another: not echoed",
			renew(macUnknown, prefixQuar), []ia{noBinding}, prefixQuar},
		{"known MAC names another VM's prefix: its own only",
			renew(macA, prefixB), []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}}, prefixB},
		{"known MAC names a /56 around another VM's /60: not echoed",
			renew(macA, netip.MustParsePrefix("2001:db8:300::/56")), []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}}, prefixB},
		{"known MAC names a /64 inside another VM's /60: not echoed",
			req(macA, netip.MustParsePrefix("2001:db8:200:10::/64")), []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}}, prefixGone},
		{"no MAC found: every allocated prefix is another's",
			juniper("VLAN2701", nil, msg(dhcpv6.MessageTypeRenew, clientID(macUnknown), serverID(serverDUID), iapd(1, prefixA))), []ia{noBinding}, prefixA},
		// What may be withdrawn still is.
		{"nobody's prefix: withdrawn",
			renew(macUnknown, prefixStale), []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{withdrawn(prefixStale)}}}, prefixB},
		{"its own quarantined prefix: withdrawn",
			renew(macQuar, prefixQuar), []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{withdrawn(prefixQuar)}}}, prefixA},
		{"its own prefix, asked on another pool's VLAN: withdrawn",
			renew(macB, prefixB), []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{withdrawn(prefixB)}}}, prefixA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newTestHandler(t, testOptions)
			r, err := h.Handle(relayAddr, tt.pkt)
			if err != nil {
				t.Fatal(err)
			}
			checkAnswer(t, innerAnswer(t, r.Data), dhcpv6.MessageTypeReply, -1, tt.ias)
			if containsPrefix(r.Data, tt.omitted) {
				t.Errorf("%s is in the reply", tt.omitted)
			}
		})
	}
}

// replyGrowth bounds how much larger than its Relay-Forward a Relay-Reply
// is: the Server Identifier (4 + its DUID) plus, for each of the at most
// MaxAnsweredIAs IAs answered, 64 bytes. An answered IA grows by at most
// 53 bytes (an IA_NA or IA_TA of 16 and 8 bytes answered with a
// NoAddrsAvail status of 53 bytes; an IA_PD of 16 with an IA Prefix of 29,
// or a status of at most 6 + 40; each withdrawn prefix is one the client
// named); the relay levels echo only options their Relay-Forward carries.
func replyGrowth(serverID []byte) int { return 4 + len(serverID) + MaxAnsweredIAs*64 }

func TestBoundedAnswers(t *testing.T) {
	many := func(n int, mk func(i int) dhcpv6.Option) []byte {
		opts := []dhcpv6.Option{clientID(macA)}
		for i := range n {
			opts = append(opts, mk(i))
		}
		return juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeSolicit, opts...))
	}
	na := func(i int) dhcpv6.Option { return &dhcpv6.OptIANA{IaId: [4]byte{0, 0, 1, byte(i)}} }
	ta := func(i int) dhcpv6.Option { return &dhcpv6.OptIATA{IaId: [4]byte{0, 0, 2, byte(i)}} }
	mixed := func(i int) dhcpv6.Option {
		switch i % 3 {
		case 0:
			return na(i)
		case 1:
			return ta(i)
		}
		return iapd(byte(i))
	}
	tests := []struct {
		name string
		pkt  []byte
		drop Reason
		ias  int
	}{
		{"60 IA_NAs: dropped", many(60, na), ReasonTooManyIAs, 0},
		{"17 IAs of three kinds: dropped", many(17, mixed), ReasonTooManyIAs, 0},
		{"16 IA_NAs: the first 8 answered", many(16, na), "", 8},
		{"16 IA_TAs: the first 8 answered", many(16, ta), "", 8},
		{"16 IAs of three kinds: the first 8 answered", many(16, mixed), "", 8},
		{"8 IA_PDs: all answered", many(8, func(i int) dhcpv6.Option { return iapd(byte(i)) }), "", 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newTestHandler(t, testOptions)
			r, err := h.Handle(relayAddr, tt.pkt)
			if tt.drop != "" {
				wantDropCounted(t, h, err, tt.drop)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ans := innerAnswer(t, r.Data)
			n := 0
			for _, o := range ans.Options.Options {
				if isIA(o) {
					n++
				}
			}
			if n != tt.ias {
				t.Errorf("%d IAs answered, want %d", n, tt.ias)
			}
			if len(r.Data) > len(tt.pkt)+replyGrowth(serverDUID) {
				t.Errorf("reply of %d bytes to a request of %d: more than %d larger", len(r.Data), len(tt.pkt), replyGrowth(serverDUID))
			}
		})
	}
}

func TestBoundedInputs(t *testing.T) {
	duid := func(n int) []byte { return append([]byte{0, 2, 0, 0, 0x0a, 0x4c}, make([]byte, n-6)...) } // DUID-EN of n bytes
	cid := func(d []byte) dhcpv6.Option {
		return &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionClientID, OptionData: d}
	}
	rawIAPD := func(bits byte) []byte {
		// A Renew whose IA_PD names 2001:db8:200::/bits, encoded by hand:
		// the library cannot encode a length above 128.
		m := msg(dhcpv6.MessageTypeRenew, clientID(macA), serverID(serverDUID))
		a := prefixA.Addr().As16()
		pfx := append([]byte{0, 26, 0, 25, 0, 0, 0, 1, 0, 0, 0, 2, bits}, a[:]...)
		pd := append([]byte{0, 25, 0, byte(12 + len(pfx)), 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}, pfx...)
		return append(m, pd...)
	}
	tests := []struct {
		name string
		pkt  []byte
		drop Reason
	}{
		{"client-id of 130 bytes: answered", msg(dhcpv6.MessageTypeSolicit, cid(duid(130)), iapd(1)), ""},
		{"client-id of 131 bytes: malformed", msg(dhcpv6.MessageTypeSolicit, cid(duid(131)), iapd(1)), ReasonMalformed},
		{"server-id of 131 bytes: malformed", msg(dhcpv6.MessageTypeRequest, clientID(macA), serverID(duid(131)), iapd(1)), ReasonMalformed},
		{"prefix length 128: answered", rawIAPD(128), ""},
		{"prefix length 129: malformed", rawIAPD(129), ReasonMalformed},
		{"prefix length 200: malformed", rawIAPD(200), ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newTestHandler(t, testOptions)
			_, err := h.Handle(relayAddr, juniper("VLAN2701", macA, tt.pkt))
			var d *Drop
			switch {
			case tt.drop == "" && err != nil:
				t.Fatalf("Handle: %v", err)
			case tt.drop != "" && (!errors.As(err, &d) || d.Reason != tt.drop):
				t.Fatalf("Handle = %v, want drop %q", err, tt.drop)
			}
		})
	}
}

func TestTrustMetricsPreinitialised(t *testing.T) {
	m := NewMetrics(nil)
	for _, r := range []Reason{ReasonUntrustedRelayLevel, ReasonTooManyIAs} {
		found := false
		for _, x := range Reasons {
			found = found || x == r
		}
		if !found {
			t.Errorf("%s not in Reasons", r)
		}
	}
	if n := testutil.CollectAndCount(m.Drops); n != len(Reasons) {
		t.Errorf("%d drop series, want %d", n, len(Reasons))
	}
	if n := testutil.CollectAndCount(m.PoolSelections); n != len(poolRuleLabels) {
		t.Errorf("%d pool selection series, want %d", n, len(poolRuleLabels))
	}
}

// TestRelayDepthTakesEffect: a reload (SetOptions) puts a new relay-depth
// and pool-selection in force for the next packet.
func TestRelayDepthTakesEffect(t *testing.T) {
	h, _ := newTrustHandler(t, testOptions)
	pkt := relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, clientID(macAttacker), iapd(1)),
		relay.Forward{LinkAddr: linkB}, ldra("VLAN2702", macAttacker))
	if _, _, reason := handleTrust(t, h, pkt); reason != ReasonUntrustedRelayLevel {
		t.Fatalf("depth 1: %q, want %q", reason, ReasonUntrustedRelayLevel)
	}
	h.SetOptions(depth2)
	if ans, _, reason := handleTrust(t, h, pkt); reason != "" || len(ans.Options.OneIAPD().Options.Prefixes()) != 1 {
		t.Fatalf("depth 2: dropped %q or not served", reason)
	}
	o := depth2
	o.PoolSelection = []PoolRule{PoolByLinkAddress} // the LDRA's level has link ::
	h.SetOptions(o)
	if ans, _, _ := handleTrust(t, h, pkt); len(ans.Options.OneIAPD().Options.Prefixes()) != 0 {
		t.Fatalf("pool-selection [link-address] with link :: served a prefix")
	}
}
