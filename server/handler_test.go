package server

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/relay"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/server")

// The test world: two pools, a few VMs.
var (
	serverDUID = []byte{0, 1, 0, 1, 0x2f, 0x00, 0x00, 0x01, 0x02, 0xcd, 0x00, 0x00, 0x00, 0x01}
	otherDUID  = []byte{0, 1, 0, 1, 0x2f, 0x00, 0x00, 0x01, 0x02, 0xee, 0x00, 0x00, 0x00, 0x02}
	testNow    = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	relayAddr  = netip.MustParseAddrPort("[2001:db8:ffff::1]:547")
	linkAddr   = netip.MustParseAddr("2001:db8:100::1")
	vmPeer     = netip.MustParseAddr("fe80::432:b2ff:fe00:479")

	macA        = mustMAC("06:32:b2:00:04:79") // pool pod-a, active
	macB        = mustMAC("06:32:b2:00:04:80") // pool pod-b, active
	macGone     = mustMAC("06:32:b2:00:04:81") // pool pod-a, gone (still served)
	macQuar     = mustMAC("06:32:b2:00:04:82") // pool pod-a, quarantined
	macUnknown  = mustMAC("06:32:b2:00:0f:ff")
	prefixA     = netip.MustParsePrefix("2001:db8:200::/60")
	prefixB     = netip.MustParsePrefix("2001:db8:300::/60")
	prefixGone  = netip.MustParsePrefix("2001:db8:200:10::/60")
	prefixQuar  = netip.MustParsePrefix("2001:db8:200:20::/60")
	prefixStale = netip.MustParsePrefix("2001:db8:200:f0::/60")
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func testTable(t testing.TB) *allocator.Table {
	pools := []allocator.Pool{
		{Name: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60, InterfaceID: "VLAN2701"},
		{Name: "pod-b", Prefix: netip.MustParsePrefix("2001:db8:300::/40"), PrefixLen: 60, InterfaceID: "VLAN2702"},
	}
	allocs := []allocator.Allocation{
		{Pool: "pod-a", MAC: macA, Prefix: prefixA, State: allocator.StateActive},
		{Pool: "pod-b", MAC: macB, Prefix: prefixB, State: allocator.StateActive},
		{Pool: "pod-a", MAC: macGone, Prefix: prefixGone, State: allocator.StateGone},
		{Pool: "pod-a", MAC: macQuar, Prefix: prefixQuar, State: allocator.StateQuarantined},
	}
	tbl, err := allocator.NewTable(pools, allocs)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

var testOptions = Options{
	MACSources:        []relay.MACSource{relay.SourceRemoteID},
	PreferredLifetime: 86400, ValidLifetime: 172800, RenewTimer: 1000, RebindTimer: 2000,
}

// depth2 trusts two relay levels: a Juniper relay and a relay (an LDRA,
// or an aggregation router) between it and the server or the client.
var depth2 = func() Options { o := testOptions; o.RelayDepth = 2; return o }()

// sinkRecorder is a BindingSink that remembers what it was told.
type sinkRecorder struct {
	mu       sync.Mutex
	recorded []allocator.Binding
	released []allocator.BindingRelease
}

func (s *sinkRecorder) Record(b allocator.Binding) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recorded = append(s.recorded, b)
}

func (s *sinkRecorder) Release(r allocator.BindingRelease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.released = append(s.released, r)
}

func newTestHandler(t testing.TB, opts Options) (*Handler, *sinkRecorder) {
	sink := &sinkRecorder{}
	h, err := NewHandler(HandlerConfig{
		Table: allocator.NewLive(testTable(t)), ServerID: serverDUID, Options: opts,
		Bindings: sink, Now: func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	return h, sink
}

// Client message options.
func clientID(mac net.HardwareAddr) dhcpv6.Option {
	return dhcpv6.OptClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac})
}

func serverID(d []byte) dhcpv6.Option {
	return &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionServerID, OptionData: d}
}

func iapd(id byte, named ...netip.Prefix) dhcpv6.Option {
	o := &dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, id}}
	for _, p := range named {
		o.Options.Add(&dhcpv6.OptIAPrefix{PreferredLifetime: time.Hour, ValidLifetime: 2 * time.Hour, Prefix: ipnet(p)})
	}
	return o
}

var (
	hint60      = &dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, 1}, Options: dhcpv6.PDOptions{Options: dhcpv6.Options{&dhcpv6.OptIAPrefix{Prefix: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(60, 128)}}}}}
	rapidCommit = &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}
	iana1       = &dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, 9}}
	iata1       = &dhcpv6.OptIATA{IaId: [4]byte{0, 0, 0, 8}}
)

func msg(t dhcpv6.MessageType, opts ...dhcpv6.Option) []byte {
	m := &dhcpv6.Message{MessageType: t, TransactionID: dhcpv6.TransactionID{0x12, 0x34, 0x56}}
	for _, o := range opts {
		m.AddOption(o)
	}
	return m.ToBytes()
}

// juniper wraps a client message as a Junos relay does for a VM on iid.
func juniper(iid string, mac net.HardwareAddr, m []byte) []byte {
	return relay.Encapsulate(m, relay.Forward{LinkAddr: linkAddr, PeerAddr: vmPeer,
		InterfaceID: []byte(iid), RemoteID: relay.JuniperRemoteID(mac)})
}

// ia is the expectation for one IA in an answer.
type ia struct {
	code     dhcpv6.OptionCode
	status   iana.StatusCode // 0 with no prefixes: no status option expected
	prefixes []pfx
	t1, t2   time.Duration
}

type pfx struct {
	p                netip.Prefix
	preferred, valid time.Duration
}

var (
	served   = pfx{prefixA, 86400 * time.Second, 172800 * time.Second}
	t1, t2   = 1000 * time.Second, 2000 * time.Second
	noPrefix = ia{code: dhcpv6.OptionIAPD, status: iana.StatusNoPrefixAvail}
)

func withdrawn(p netip.Prefix) pfx { return pfx{p: p} }

func TestHandlerRules(t *testing.T) {
	rapid := testOptions
	rapid.RapidCommit = true
	fallback := testOptions
	fallback.MACSources = []relay.MACSource{relay.SourceRemoteID, relay.SourceDUID}
	trusted := testOptions
	trusted.TrustedRelays = []netip.Prefix{netip.MustParsePrefix("2001:db8:eeee::/48")}

	sol := func(mac net.HardwareAddr, extra ...dhcpv6.Option) []byte {
		return msg(dhcpv6.MessageTypeSolicit, append([]dhcpv6.Option{clientID(mac), iapd(1)}, extra...)...)
	}
	req := func(t dhcpv6.MessageType, mac net.HardwareAddr, sid []byte, ias ...dhcpv6.Option) []byte {
		opts := []dhcpv6.Option{clientID(mac)}
		if sid != nil {
			opts = append(opts, serverID(sid))
		}
		return msg(t, append(opts, ias...)...)
	}

	tests := []struct {
		name    string
		opts    *Options
		src     netip.AddrPort
		pkt     []byte
		drop    Reason // expected drop, or "" for an answer
		answer  dhcpv6.MessageType
		status  int // top-level status code, -1 for none
		ias     []ia
		rapid   bool
		records int // bindings recorded
		release int // bindings released
	}{
		// Solicit.
		{name: "solicit known MAC gets advertise with its prefix",
			pkt: juniper("VLAN2701", macA, sol(macA)), answer: dhcpv6.MessageTypeAdvertise, status: -1,
			ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}}},
		{name: "solicit with a /60 hint gets the reservation",
			pkt: juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeSolicit, clientID(macA), hint60)), answer: dhcpv6.MessageTypeAdvertise, status: -1,
			ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}}},
		{name: "solicit rapid commit, enabled: reply with option 14",
			opts: &rapid, pkt: juniper("VLAN2701", macA, sol(macA, rapidCommit)), answer: dhcpv6.MessageTypeReply, status: -1, rapid: true,
			ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}}, records: 1},
		{name: "solicit rapid commit, disabled: advertise",
			pkt: juniper("VLAN2701", macA, sol(macA, rapidCommit)), answer: dhcpv6.MessageTypeAdvertise, status: -1,
			ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}}},
		{name: "solicit unknown MAC: NoPrefixAvail, T1 T2 zero",
			pkt: juniper("VLAN2701", macUnknown, sol(macUnknown)), answer: dhcpv6.MessageTypeAdvertise, status: -1, ias: []ia{noPrefix}},
		{name: "solicit on a foreign VLAN: NoPrefixAvail",
			pkt: juniper("VLAN9999", macA, sol(macA)), answer: dhcpv6.MessageTypeAdvertise, status: -1, ias: []ia{noPrefix}},
		{name: "solicit without interface-id: NoPrefixAvail",
			pkt:    relay.Encapsulate(sol(macA), relay.Forward{LinkAddr: linkAddr, PeerAddr: vmPeer, RemoteID: relay.JuniperRemoteID(macA)}),
			answer: dhcpv6.MessageTypeAdvertise, status: -1, ias: []ia{noPrefix}},
		{name: "solicit MAC of another pool: NoPrefixAvail",
			pkt: juniper("VLAN2701", macB, sol(macB)), answer: dhcpv6.MessageTypeAdvertise, status: -1, ias: []ia{noPrefix}},
		{name: "solicit quarantined MAC: NoPrefixAvail",
			pkt: juniper("VLAN2701", macQuar, sol(macQuar)), answer: dhcpv6.MessageTypeAdvertise, status: -1, ias: []ia{noPrefix}},
		{name: "solicit gone MAC keeps its prefix",
			pkt: juniper("VLAN2701", macGone, sol(macGone)), answer: dhcpv6.MessageTypeAdvertise, status: -1,
			ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{{prefixGone, served.preferred, served.valid}}, t1: t1, t2: t2}}},
		{name: "solicit from an L2 relay (link-address ::) is served by interface-id",
			pkt: relay.Encapsulate(sol(macA), relay.Forward{LinkAddr: netip.IPv6Unspecified(), PeerAddr: vmPeer,
				InterfaceID: []byte("VLAN2701"), RemoteID: relay.JuniperRemoteID(macA)}),
			answer: dhcpv6.MessageTypeAdvertise, status: -1, ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}}},
		{name: "solicit with textual remote-id MAC",
			pkt: relay.Encapsulate(sol(macA), relay.Forward{LinkAddr: linkAddr, PeerAddr: vmPeer, InterfaceID: []byte("VLAN2701"),
				RemoteID: append([]byte{0, 0, 0x0a, 0x4c}, "0632.B200.0479"...)}),
			answer: dhcpv6.MessageTypeAdvertise, status: -1, ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}}},
		{name: "solicit without MAC source: NoPrefixAvail",
			pkt:    relay.Encapsulate(sol(macA), relay.Forward{LinkAddr: linkAddr, PeerAddr: vmPeer, InterfaceID: []byte("VLAN2701")}),
			answer: dhcpv6.MessageTypeAdvertise, status: -1, ias: []ia{noPrefix}},
		{name: "solicit malformed remote-id falls back to duid",
			opts: &fallback,
			pkt: relay.Encapsulate(sol(macA), relay.Forward{LinkAddr: linkAddr, PeerAddr: vmPeer, InterfaceID: []byte("VLAN2701"),
				Extra: []dhcpv6.Option{&dhcpv6.OptionGeneric{OptionCode: 37, OptionData: []byte{0, 0, 1}}}}),
			answer: dhcpv6.MessageTypeAdvertise, status: -1, ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}}},
		{name: "solicit with IA_NA and IA_TA: NoAddrsAvail in each, IA_PD served",
			pkt: juniper("VLAN2701", macA, sol(macA, iana1, iata1)), answer: dhcpv6.MessageTypeAdvertise, status: -1,
			ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2},
				{code: dhcpv6.OptionIANA, status: iana.StatusNoAddrsAvail}, {code: dhcpv6.OptionIATA, status: iana.StatusNoAddrsAvail}}},
		{name: "solicit with only IA_NA",
			pkt: juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeSolicit, clientID(macA), iana1)), answer: dhcpv6.MessageTypeAdvertise, status: -1,
			ias: []ia{{code: dhcpv6.OptionIANA, status: iana.StatusNoAddrsAvail}}},
		{name: "solicit with no IA: top-level NoPrefixAvail",
			pkt: juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeSolicit, clientID(macA))), answer: dhcpv6.MessageTypeAdvertise,
			status: int(iana.StatusNoPrefixAvail)},
		{name: "solicit with two IA_PDs: the first gets the prefix, the second NoPrefixAvail",
			pkt: juniper("VLAN2701", macA, sol(macA, iapd(2))), answer: dhcpv6.MessageTypeAdvertise, status: -1,
			ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}, noPrefix}},
		{name: "solicit with server id: dropped",
			pkt: juniper("VLAN2701", macA, sol(macA, serverID(serverDUID))), drop: ReasonServerIDPresent},
		{name: "solicit with two client ids: dropped",
			pkt: juniper("VLAN2701", macA, sol(macA, clientID(macB))), drop: ReasonClientID},
		{name: "solicit without client id: dropped",
			pkt: juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeSolicit, iapd(1))), drop: ReasonClientID},

		// Request.
		{name: "request gets the reservation and records the binding",
			pkt: juniper("VLAN2701", macA, req(dhcpv6.MessageTypeRequest, macA, serverDUID, iapd(1))), answer: dhcpv6.MessageTypeReply, status: -1,
			ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}}, records: 1},
		{name: "request naming another prefix: reservation, and the other withdrawn",
			pkt: juniper("VLAN2701", macA, req(dhcpv6.MessageTypeRequest, macA, serverDUID, iapd(1, prefixStale))), answer: dhcpv6.MessageTypeReply, status: -1,
			ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served, withdrawn(prefixStale)}, t1: t1, t2: t2}}, records: 1},
		{name: "request unknown MAC: NoPrefixAvail",
			pkt: juniper("VLAN2701", macUnknown, req(dhcpv6.MessageTypeRequest, macUnknown, serverDUID, iapd(1))), answer: dhcpv6.MessageTypeReply, status: -1,
			ias: []ia{noPrefix}},
		{name: "request for another server: dropped",
			pkt: juniper("VLAN2701", macA, req(dhcpv6.MessageTypeRequest, macA, otherDUID, iapd(1))), drop: ReasonServerIDMismatch},
		{name: "request without server id: dropped",
			pkt: juniper("VLAN2701", macA, req(dhcpv6.MessageTypeRequest, macA, nil, iapd(1))), drop: ReasonServerIDMismatch},
		{name: "request without client id: dropped",
			pkt: juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeRequest, serverID(serverDUID), iapd(1))), drop: ReasonClientID},

		// Renew and Rebind.
		{name: "renew: fresh lifetimes",
			pkt: juniper("VLAN2701", macA, req(dhcpv6.MessageTypeRenew, macA, serverDUID, iapd(1, prefixA))), answer: dhcpv6.MessageTypeReply, status: -1,
			ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}}, records: 1},
		{name: "renew with no binding recorded re-creates it from the reservation",
			pkt: juniper("VLAN2701", macA, req(dhcpv6.MessageTypeRenew, macA, serverDUID, iapd(7))), answer: dhcpv6.MessageTypeReply, status: -1,
			ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}}, records: 1},
		{name: "renew of a stale prefix: withdrawn with 0 lifetimes, reservation given",
			pkt: juniper("VLAN2701", macA, req(dhcpv6.MessageTypeRenew, macA, serverDUID, iapd(1, prefixStale))), answer: dhcpv6.MessageTypeReply, status: -1,
			ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served, withdrawn(prefixStale)}, t1: t1, t2: t2}}, records: 1},
		{name: "renew unknown MAC naming a prefix: withdrawn",
			pkt: juniper("VLAN2701", macUnknown, req(dhcpv6.MessageTypeRenew, macUnknown, serverDUID, iapd(1, prefixStale))), answer: dhcpv6.MessageTypeReply, status: -1,
			ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{withdrawn(prefixStale)}}}},
		{name: "renew unknown MAC naming nothing: NoBinding",
			pkt: juniper("VLAN2701", macUnknown, req(dhcpv6.MessageTypeRenew, macUnknown, serverDUID, iapd(1))), answer: dhcpv6.MessageTypeReply, status: -1,
			ias: []ia{{code: dhcpv6.OptionIAPD, status: iana.StatusNoBinding}}},
		{name: "renew of a quarantined prefix: withdrawn",
			pkt: juniper("VLAN2701", macQuar, req(dhcpv6.MessageTypeRenew, macQuar, serverDUID, iapd(1, prefixQuar))), answer: dhcpv6.MessageTypeReply, status: -1,
			ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{withdrawn(prefixQuar)}}}},
		{name: "renew for another server: dropped",
			pkt: juniper("VLAN2701", macA, req(dhcpv6.MessageTypeRenew, macA, otherDUID, iapd(1, prefixA))), drop: ReasonServerIDMismatch},
		{name: "rebind: fresh lifetimes",
			pkt: juniper("VLAN2701", macA, req(dhcpv6.MessageTypeRebind, macA, nil, iapd(1, prefixA))), answer: dhcpv6.MessageTypeReply, status: -1,
			ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}}, records: 1},
		{name: "rebind with server id: dropped",
			pkt: juniper("VLAN2701", macA, req(dhcpv6.MessageTypeRebind, macA, serverDUID, iapd(1, prefixA))), drop: ReasonServerIDPresent},

		// Release, Decline, Confirm, Information-request.
		{name: "release: top-level success, binding released",
			pkt: juniper("VLAN2701", macA, req(dhcpv6.MessageTypeRelease, macA, serverDUID, iapd(1, prefixA))), answer: dhcpv6.MessageTypeReply,
			status: int(iana.StatusSuccess), release: 1},
		{name: "release of an unknown IA: success, NoBinding inside the IA",
			pkt: juniper("VLAN2701", macUnknown, req(dhcpv6.MessageTypeRelease, macUnknown, serverDUID, iapd(1, prefixStale))), answer: dhcpv6.MessageTypeReply,
			status: int(iana.StatusSuccess), ias: []ia{{code: dhcpv6.OptionIAPD, status: iana.StatusNoBinding}}},
		{name: "release for another server: dropped",
			pkt: juniper("VLAN2701", macA, req(dhcpv6.MessageTypeRelease, macA, otherDUID, iapd(1, prefixA))), drop: ReasonServerIDMismatch},
		{name: "decline: reply",
			pkt: juniper("VLAN2701", macA, req(dhcpv6.MessageTypeDecline, macA, serverDUID, iapd(1, prefixA))), answer: dhcpv6.MessageTypeReply,
			status: int(iana.StatusSuccess)},
		{name: "decline without server id: dropped",
			pkt: juniper("VLAN2701", macA, req(dhcpv6.MessageTypeDecline, macA, nil, iapd(1, prefixA))), drop: ReasonServerIDMismatch},
		{name: "confirm: dropped",
			pkt: juniper("VLAN2701", macA, req(dhcpv6.MessageTypeConfirm, macA, nil, iana1)), drop: ReasonConfirm},
		{name: "confirm with server id: dropped",
			pkt: juniper("VLAN2701", macA, req(dhcpv6.MessageTypeConfirm, macA, serverDUID, iana1)), drop: ReasonServerIDPresent},
		{name: "information-request: reply",
			pkt: juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeInformationRequest, clientID(macA))), answer: dhcpv6.MessageTypeReply, status: -1},
		{name: "information-request with IA: dropped",
			pkt: juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeInformationRequest, clientID(macA), iapd(1))), drop: ReasonInfoRequestIA},
		{name: "information-request for another server: dropped",
			pkt: juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeInformationRequest, clientID(macA), serverID(otherDUID))), drop: ReasonServerIDMismatch},

		// What never gets an answer.
		{name: "unrelayed solicit: dropped", pkt: sol(macA), drop: ReasonUnrelayed},
		{name: "relay from outside trusted-relays: dropped", opts: &trusted, pkt: juniper("VLAN2701", macA, sol(macA)), drop: ReasonUntrustedRelay},
		{name: "relay inside trusted-relays: answered", opts: &trusted, src: netip.MustParseAddrPort("[2001:db8:eeee::5]:547"),
			pkt: juniper("VLAN2701", macA, sol(macA)), answer: dhcpv6.MessageTypeAdvertise, status: -1,
			ias: []ia{{code: dhcpv6.OptionIAPD, prefixes: []pfx{served}, t1: t1, t2: t2}}},
		{name: "advertise sent to the server: dropped", pkt: juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeAdvertise, clientID(macA))), drop: ReasonUnexpectedType},
		{name: "reply sent to the server: dropped", pkt: juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeReply, clientID(macA))), drop: ReasonUnexpectedType},
		{name: "truncated relay: dropped", pkt: juniper("VLAN2701", macA, sol(macA))[:30], drop: ReasonMalformedRelay},
		{name: "malformed client message: dropped",
			pkt: juniper("VLAN2701", macA, []byte{1, 0, 0, 1, 0, 1, 0, 40, 0}), drop: ReasonMalformed},
		{name: "empty packet: dropped", pkt: []byte{}, drop: ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions
			if tt.opts != nil {
				opts = *tt.opts
			}
			h, sink := newTestHandler(t, opts)
			src := tt.src
			if !src.IsValid() {
				src = relayAddr
			}
			r, err := h.Handle(src, tt.pkt)
			if tt.drop != "" {
				wantDropCounted(t, h, err, tt.drop)
				return
			}
			if err != nil {
				t.Fatalf("Handle: %v", err)
			}
			if r.Dst != netip.AddrPortFrom(src.Addr(), 547) {
				t.Errorf("reply goes to %s, want %s port 547", r.Dst, src.Addr())
			}
			ans := innerAnswer(t, r.Data)
			checkAnswer(t, ans, tt.answer, tt.status, tt.ias)
			if got := ans.GetOneOption(dhcpv6.OptionRapidCommit) != nil; got != tt.rapid {
				t.Errorf("rapid commit option = %v, want %v", got, tt.rapid)
			}
			if !bytes.Equal(ans.GetOneOption(dhcpv6.OptionServerID).ToBytes(), serverDUID) {
				t.Errorf("server id not ours")
			}
			if ans.GetOneOption(dhcpv6.OptionUnicast) != nil {
				t.Errorf("server unicast option sent")
			}
			if ans.TransactionID != (dhcpv6.TransactionID{0x12, 0x34, 0x56}) {
				t.Errorf("transaction id = %x", ans.TransactionID)
			}
			if len(sink.recorded) != tt.records || len(sink.released) != tt.release {
				t.Errorf("bindings recorded %d released %d, want %d and %d", len(sink.recorded), len(sink.released), tt.records, tt.release)
			}
			if got := testutil.ToFloat64(h.Metrics().Replies.WithLabelValues(tt.answer.String())); got != 1 {
				t.Errorf("replies{type=%s} = %v, want 1", tt.answer, got)
			}
			golden(t, goldenName(tt.name), []byte(dump(t, tt.pkt, r.Data)))
		})
	}
}

// innerAnswer decodes a Relay-Reply chain and returns the client message.
func innerAnswer(t *testing.T, b []byte) *dhcpv6.Message {
	t.Helper()
	m, err := dhcpv6.FromBytes(b)
	if err != nil {
		t.Fatalf("reply does not decode: %v", err)
	}
	for m.IsRelay() {
		rr := m.(*dhcpv6.RelayMessage)
		if rr.MessageType != dhcpv6.MessageTypeRelayReply {
			t.Fatalf("relay level of type %s", rr.MessageType)
		}
		m = rr.Options.RelayMessage()
		if m == nil {
			t.Fatalf("relay-reply without relay message")
		}
	}
	return m.(*dhcpv6.Message)
}

func checkAnswer(t *testing.T, ans *dhcpv6.Message, typ dhcpv6.MessageType, status int, want []ia) {
	t.Helper()
	if ans.MessageType != typ {
		t.Fatalf("answer %s, want %s", ans.MessageType, typ)
	}
	top := ans.Options.Status()
	switch {
	case status < 0 && top != nil:
		t.Errorf("top-level status %s, want none", top)
	case status >= 0 && (top == nil || top.StatusCode != iana.StatusCode(status)):
		t.Errorf("top-level status %v, want %s", top, iana.StatusCode(status))
	}
	var got []dhcpv6.Option
	for _, o := range ans.Options.Options {
		switch o.Code() {
		case dhcpv6.OptionIAPD, dhcpv6.OptionIANA, dhcpv6.OptionIATA:
			got = append(got, o)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d IAs in answer, want %d:\n%s", len(got), len(want), ans.Summary())
	}
	for i, w := range want {
		if got[i].Code() != w.code {
			t.Errorf("IA %d is %s, want %s", i, got[i].Code(), w.code)
			continue
		}
		var st *dhcpv6.OptStatusCode
		switch o := got[i].(type) {
		case *dhcpv6.OptIAPD:
			st = o.Options.Status()
			if o.T1 != w.t1 || o.T2 != w.t2 {
				t.Errorf("IA_PD T1/T2 = %v/%v, want %v/%v", o.T1, o.T2, w.t1, w.t2)
			}
			ps := o.Options.Prefixes()
			if len(ps) != len(w.prefixes) {
				t.Errorf("IA_PD has %d prefixes, want %d", len(ps), len(w.prefixes))
				continue
			}
			for j, p := range ps {
				gp, _ := prefixOf(p)
				if gp != w.prefixes[j].p || p.PreferredLifetime != w.prefixes[j].preferred || p.ValidLifetime != w.prefixes[j].valid {
					t.Errorf("prefix %d = %s %v/%v, want %s %v/%v", j, gp, p.PreferredLifetime, p.ValidLifetime,
						w.prefixes[j].p, w.prefixes[j].preferred, w.prefixes[j].valid)
				}
				if w.prefixes[j].valid < w.prefixes[j].preferred || (o.T2 > 0 && o.T2 > p.PreferredLifetime && p.PreferredLifetime > 0) {
					t.Errorf("lifetimes out of order")
				}
			}
		case *dhcpv6.OptIANA:
			st = o.Options.Status()
		case *dhcpv6.OptIATA:
			st = o.Options.Status()
		}
		switch {
		case w.status == 0 && st != nil && st.StatusCode != iana.StatusSuccess:
			t.Errorf("IA %d status %s, want none", i, st)
		case w.status != 0 && (st == nil || st.StatusCode != w.status):
			t.Errorf("IA %d status %v, want %s", i, st, w.status)
		}
	}
}

func TestHandlerRecordsBindingFields(t *testing.T) {
	h, sink := newTestHandler(t, depth2)
	pkt := relay.Encapsulate(msg(dhcpv6.MessageTypeRequest, clientID(macA), serverID(serverDUID), iapd(5)),
		relay.Forward{HopCount: 1, LinkAddr: netip.MustParseAddr("2001:db8:ffff::1"), PeerAddr: netip.MustParseAddr("2001:db8:ffff::9")},
		relay.Forward{LinkAddr: linkAddr, PeerAddr: vmPeer, InterfaceID: []byte("VLAN2701"),
			RemoteID: relay.JuniperRemoteID(macA), RelayID: []byte{0, 3, 0, 1, 1, 2, 3, 4, 5, 6}})
	if _, err := h.Handle(relayAddr, pkt); err != nil {
		t.Fatal(err)
	}
	if len(sink.recorded) != 1 {
		t.Fatalf("%d bindings recorded", len(sink.recorded))
	}
	b := sink.recorded[0]
	wantDUID := clientID(macA).ToBytes()
	checks := []struct {
		field string
		ok    bool
	}{
		{"client duid", bytes.Equal(b.ClientDUID, wantDUID)},
		{"mac", bytes.Equal(b.MAC, macA)},
		{"iaid", b.IAID == 5},
		{"pool", b.Pool == "pod-a"},
		{"prefix", b.Prefix == prefixA},
		{"lifetimes", b.PreferredLifetime == 86400 && b.ValidLifetime == 172800},
		{"expires", b.Expires.Equal(testNow.Add(172800 * time.Second))},
		{"last exchange", b.LastExchange.Equal(testNow) && b.LastMessage == "REQUEST"},
		{"relay source", b.RelaySource == relayAddr},
		{"link address (innermost)", b.LinkAddress == linkAddr},
		{"peer address (innermost)", b.PeerAddress == vmPeer},
		{"interface-id", string(b.InterfaceID) == "VLAN2701"},
		{"remote-id", bytes.Equal(b.RemoteID, relay.JuniperRemoteID(macA))},
		{"relay-id", bytes.Equal(b.RelayID, []byte{0, 3, 0, 1, 1, 2, 3, 4, 5, 6})},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("binding %s wrong: %+v", c.field, b)
		}
	}
	// The binding must not alias the packet buffer, which the listener reuses.
	for i := range pkt {
		pkt[i] = 0
	}
	if string(b.InterfaceID) != "VLAN2701" || !bytes.Equal(b.MAC, macA) {
		t.Error("binding aliases the packet buffer")
	}
}

func TestHandlerReplyDestinationAndEcho(t *testing.T) {
	h, _ := newTestHandler(t, depth2)
	src := netip.MustParseAddrPort("[2001:db8:ffff::1]:40123")
	sol := msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1))
	// Outer relay with a relay source port option: answer at the source port.
	pkt := relay.Encapsulate(sol,
		relay.Forward{HopCount: 3, LinkAddr: netip.MustParseAddr("2001:db8:ffff::1"), PeerAddr: netip.MustParseAddr("2001:db8:ffff::7"),
			InterfaceID: []byte("core"), HasSourcePort: true},
		relay.Forward{HopCount: 1, LinkAddr: linkAddr, PeerAddr: vmPeer, InterfaceID: []byte("VLAN2701"), RemoteID: relay.JuniperRemoteID(macA)})
	r, err := h.Handle(src, pkt)
	if err != nil {
		t.Fatal(err)
	}
	if r.Dst != src {
		t.Errorf("reply to %s, want the relay's source %s (option 135)", r.Dst, src)
	}
	m, err := dhcpv6.FromBytes(r.Data)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		hop uint8
		iid string
		rp  bool
	}{{3, "core", true}, {1, "VLAN2701", false}}
	for i, w := range want {
		rr, ok := m.(*dhcpv6.RelayMessage)
		if !ok || rr.MessageType != dhcpv6.MessageTypeRelayReply {
			t.Fatalf("reply level %d is %v", i, m.Type())
		}
		if rr.HopCount != w.hop || string(rr.Options.InterfaceID()) != w.iid || (rr.Options.RelayPort() != nil) != w.rp {
			t.Errorf("reply level %d: hop %d iid %q relay-port %v; want %d %q %v", i, rr.HopCount, rr.Options.InterfaceID(),
				rr.Options.RelayPort() != nil, w.hop, w.iid, w.rp)
		}
		if rr.GetOneOption(dhcpv6.OptionRemoteID) != nil {
			t.Errorf("reply level %d echoes remote-id", i)
		}
		m = rr.Options.RelayMessage()
	}
	if m == nil || m.IsRelay() {
		t.Fatalf("reply has more than 2 levels")
	}
}

func TestHandlerSetOptionsTakesEffect(t *testing.T) {
	h, _ := newTestHandler(t, testOptions)
	pkt := juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1), rapidCommit))
	r, _ := h.Handle(relayAddr, pkt)
	if innerAnswer(t, r.Data).MessageType != dhcpv6.MessageTypeAdvertise {
		t.Fatal("rapid commit answered while disabled")
	}
	o := testOptions
	o.RapidCommit = true
	o.ValidLifetime = 999999
	h.SetOptions(o)
	r, _ = h.Handle(relayAddr, pkt)
	ans := innerAnswer(t, r.Data)
	if ans.MessageType != dhcpv6.MessageTypeReply || ans.Options.OneIAPD().Options.Prefixes()[0].ValidLifetime != 999999*time.Second {
		t.Errorf("new options not in force: %s", ans.Summary())
	}
}

func TestHandlerTableSwap(t *testing.T) {
	live := allocator.NewLive(testTable(t))
	h, err := NewHandler(HandlerConfig{Table: live, ServerID: serverDUID, Options: testOptions})
	if err != nil {
		t.Fatal(err)
	}
	pkt := juniper("VLAN2701", macUnknown, msg(dhcpv6.MessageTypeSolicit, clientID(macUnknown), iapd(1)))
	r, _ := h.Handle(relayAddr, pkt)
	if st := innerAnswer(t, r.Data).Options.OneIAPD().Options.Status(); st == nil || st.StatusCode != iana.StatusNoPrefixAvail {
		t.Fatal("unknown MAC served")
	}
	tbl, err := allocator.NewTable(testTable(t).Pools(), append(testTable(t).Allocations(),
		allocator.Allocation{Pool: "pod-a", MAC: macUnknown, Prefix: prefixStale, State: allocator.StateActive}))
	if err != nil {
		t.Fatal(err)
	}
	live.Swap(tbl)
	r, _ = h.Handle(relayAddr, pkt)
	if p, _ := prefixOf(innerAnswer(t, r.Data).Options.OneIAPD().Options.Prefixes()[0]); p != prefixStale {
		t.Errorf("after swap: %s, want %s", p, prefixStale)
	}
}

func TestNewHandlerRejectsBadServerID(t *testing.T) {
	for _, id := range [][]byte{nil, {0}, {0, 1}} {
		if _, err := NewHandler(HandlerConfig{Table: allocator.NewLive(testTable(t)), ServerID: id, Options: testOptions}); err == nil {
			t.Errorf("server id %x accepted", id)
		}
	}
}

// dump renders a request and its reply for golden files: the library's
// description, then the reply's bytes in hex.
func dump(t *testing.T, req, reply []byte) string {
	t.Helper()
	var b strings.Builder
	for _, part := range []struct {
		name string
		data []byte
	}{{"request", req}, {"reply", reply}} {
		m, err := dhcpv6.FromBytes(part.data)
		if err != nil {
			// The library rejects some requests we accept (a malformed
			// remote-id); show those as bytes.
			fmt.Fprintf(&b, "# %s (the library cannot describe it: %v)\n%x\n", part.name, err, part.data)
			continue
		}
		fmt.Fprintf(&b, "# %s\n%s\n", part.name, m.Summary())
	}
	fmt.Fprintf(&b, "# reply bytes\n%x\n", reply)
	return b.String()
}

func goldenName(test string) string {
	r := strings.NewReplacer(" ", "-", ",", "", ":", "", "(", "", ")", "", "/", "-")
	return r.Replace(test) + ".golden"
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("..", "testdata", "server", name)
	testenv.Golden(t, path, got, *update, "update")
}

// TestReleaseActsOnlyForSender: bytes in, bytes out, with a Recorder on a
// real store. VM A sends a Release, then a Decline, carrying VM B's
// client-id and IAID (A's own MAC in the remote-id, naming A's prefix so
// the handler accepts it): B's binding stays as it was. B's own Release
// ends it.
func TestReleaseActsOnlyForSender(t *testing.T) {
	st := openTestStore(t)
	rec := NewRecorder(st, 0, nil)
	h, err := NewHandler(HandlerConfig{Table: allocator.NewLive(testTable(t)), ServerID: serverDUID, Options: testOptions,
		Bindings: rec, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	handle := func(pkt []byte) {
		t.Helper()
		if _, err := h.Handle(relayAddr, pkt); err != nil {
			t.Fatal(err)
		}
		if err := rec.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	bindings := func() map[string]allocator.Binding {
		t.Helper()
		bs, err := st.Bindings()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]allocator.Binding{}
		for _, b := range bs {
			out[b.MAC.String()] = b
		}
		return out
	}
	handle(juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeRequest, clientID(macA), serverID(serverDUID), iapd(1))))
	handle(juniper("VLAN2702", macB, msg(dhcpv6.MessageTypeRequest, clientID(macB), serverID(serverDUID), iapd(1))))
	before := bindings()
	if len(before) != 2 || before[macB.String()].Prefix != prefixB {
		t.Fatalf("bindings after the Requests: %+v", before)
	}

	for _, typ := range []dhcpv6.MessageType{dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline} {
		for _, named := range [][]netip.Prefix{{prefixA}, nil} {
			forged := juniper("VLAN2701", macA, msg(typ, clientID(macB), serverID(serverDUID), iapd(1, named...)))
			handle(forged)
			if got := bindings(); !reflect.DeepEqual(got, before) {
				t.Errorf("%s from A with B's client-id naming %v changed the bindings:\n got %+v\nwant %+v", typ, named, got, before)
			}
		}
	}

	handle(juniper("VLAN2702", macB, msg(dhcpv6.MessageTypeRelease, clientID(macB), serverID(serverDUID), iapd(1, prefixB))))
	after := bindings()
	if _, ok := after[macB.String()]; ok || len(after) != 1 {
		t.Errorf("B's own Release: bindings %+v, want A's only", after)
	}
}

// wantDropCounted fails the test unless err is a drop for reason, counted
// once in h's drops_total.
func wantDropCounted(t *testing.T, h *Handler, err error, reason Reason) {
	t.Helper()
	var d *Drop
	if !errors.As(err, &d) || d.Reason != reason {
		t.Fatalf("Handle = %v, want drop %q", err, reason)
	}
	if got := testutil.ToFloat64(h.Metrics().Drops.WithLabelValues(string(reason))); got != 1 {
		t.Errorf("drops{reason=%q} = %v, want 1", reason, got)
	}
}
