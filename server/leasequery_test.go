package server

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/leasequery"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// The leasequery world: bindings in a store, a router that may ask.
var (
	lqXID       = dhcpv6.TransactionID{0, 0x12, 0x34}
	lqRequestor = []byte{0, 3, 0, 1, 0x02, 0x00, 0x5e, 0x00, 0x00, 0x01} // the router's DUID
	lqRouter    = netip.MustParseAddrPort("[2001:db8:ffff::1]:547")
	lqStranger  = netip.MustParseAddrPort("[2001:db8:eeee::9]:547")
	lqRelayID   = []byte{0, 2, 0, 0, 0x0a, 0x4c, 'm', 'x', '1'}
	lqLinkC1    = netip.MustParseAddr("2001:db8:110::1")
	lqLinkC2    = netip.MustParseAddr("2001:db8:120::1")
	lqPrefixC1  = netip.MustParsePrefix("2001:db8:200:40::/60")
	lqPrefixC2  = netip.MustParsePrefix("2001:db8:300:50::/60")
	// Client C: a VM with two NICs, on two VLANs, with one DUID.
	lqDUIDC      = []byte{0, 1, 0, 1, 0x2f, 0, 0, 9, 6, 0x32, 0xb2, 0, 4, 0x90}
	macC1        = mustMAC("06:32:b2:00:04:91")
	macC2        = mustMAC("06:32:b2:00:04:92")
	lqRequestors = []netip.Prefix{netip.MustParsePrefix("2001:db8:ffff::/48")}
)

func duidLL(mac net.HardwareAddr) []byte { return append([]byte{0, 3, 0, 1}, mac...) }

// lqBindings: A and B on linkAddr by the same relay (relay-id), A
// renewed 100 s ago, B 300 s ago; an expired one on that link too; C, one
// client with an IA on each of two links.
func lqBindings() []allocator.Binding {
	b := func(mac net.HardwareAddr, iaid uint32, pool string, p netip.Prefix, ago time.Duration, link netip.Addr, iid string, relayID []byte) allocator.Binding {
		le := testNow.Add(-ago)
		return allocator.Binding{ClientDUID: duidLL(mac), MAC: mac, IAID: iaid, Pool: pool, Prefix: p,
			PreferredLifetime: 86400, ValidLifetime: 172800, Expires: le.Add(172800 * time.Second),
			LastExchange: le, LastMessage: "RENEW", RelaySource: relayAddr, LinkAddress: link, PeerAddress: vmPeer,
			InterfaceID: []byte(iid), RemoteID: relay.JuniperRemoteID(mac), RelayID: relayID}
	}
	return []allocator.Binding{
		b(macA, 1, "pod-a", prefixA, 100*time.Second, linkAddr, "VLAN2701", lqRelayID),
		b(macB, 1, "pod-b", prefixB, 300*time.Second, linkAddr, "VLAN2702", lqRelayID),
		b(macGone, 1, "pod-a", prefixGone, 200000*time.Second, linkAddr, "VLAN2701", lqRelayID),
		b(macQuar, 1, "pod-a", prefixQuar, 70*time.Second, linkAddr, "VLAN2701", nil),
		withDUID(b(macC1, 1, "pod-a", lqPrefixC1, 50*time.Second, lqLinkC1, "VLAN2701", nil), lqDUIDC),
		withDUID(b(macC2, 2, "pod-b", lqPrefixC2, 60*time.Second, lqLinkC2, "VLAN2702", nil), lqDUIDC),
	}
}

func withDUID(b allocator.Binding, duid []byte) allocator.Binding {
	b.ClientDUID = duid
	return b
}

// lqTable is testTable with client C's two NICs.
func lqTable(t testing.TB) *allocator.Table {
	tbl := testTable(t)
	allocs := append(tbl.Allocations(),
		allocator.Allocation{Pool: "pod-a", MAC: macC1, Prefix: lqPrefixC1, State: allocator.StateActive},
		allocator.Allocation{Pool: "pod-b", MAC: macC2, Prefix: lqPrefixC2, State: allocator.StateActive})
	out, err := allocator.NewTable(tbl.Pools(), allocs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// newLQHandler returns a handler answering leasequeries from a store
// holding lqBindings, with a Recorder as its sink.
func newLQHandler(t testing.TB) (*Handler, *allocator.Store, *Recorder) {
	t.Helper()
	st, err := allocator.OpenStore(boltstore.Open(filepath.Join(t.TempDir(), "state.db"), boltstore.Options{Create: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.PutBindings(lqBindings(), nil); err != nil {
		t.Fatal(err)
	}
	rec := NewRecorder(st, 0, nil)
	opts := testOptions
	opts.LeasequeryRequestors = lqRequestors
	h, err := NewHandler(HandlerConfig{Table: allocator.NewLive(lqTable(t)), ServerID: serverDUID, Options: opts,
		Bindings: rec, Now: func() time.Time { return testNow }, Leases: st})
	if err != nil {
		t.Fatal(err)
	}
	return h, st, rec
}

func lqQuery(q leasequery.Query) []byte {
	if !q.LinkAddress.IsValid() {
		q.LinkAddress = netip.IPv6Unspecified()
	}
	return leasequery.NewQueryMessage(lqXID, lqRequestor, q).ToBytes()
}

// lqRaw is a LEASEQUERY with the options given, as they are.
func lqRaw(opts ...dhcpv6.Option) []byte {
	m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeLeaseQuery, TransactionID: lqXID}
	m.AddOption(&leasequery.OptBytes{OptionCode: dhcpv6.OptionClientID, Data: lqRequestor})
	for _, o := range opts {
		m.AddOption(o)
	}
	return m.ToBytes()
}

var anyLink = netip.IPv6Unspecified()

// lqDump renders messages for golden files: each decoded, then its bytes.
func lqDump(t *testing.T, names []string, msgs [][]byte) []byte {
	t.Helper()
	var b strings.Builder
	for i, data := range msgs {
		m, err := leasequery.DecodeMessage(data)
		if err != nil {
			t.Fatalf("%s does not decode: %v", names[i], err)
		}
		fmt.Fprintf(&b, "# %s\n%s\n%x\n", names[i], m.Summary(), data)
	}
	return []byte(b.String())
}

// answerOf decodes an answer as a requestor does.
func answerOf(t *testing.T, topRelay bool, msgs ...[]byte) *leasequery.Answer {
	t.Helper()
	a := &leasequery.Answer{}
	for _, data := range msgs {
		m, err := leasequery.DecodeMessage(data)
		if err != nil {
			t.Fatal(err)
		}
		if m.TransactionID != lqXID {
			t.Errorf("%s with transaction id %x, want %x", m.MessageType, m.TransactionID, lqXID)
		}
		if err := a.Add(m, topRelay); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

func prefixesOf(a *leasequery.Answer) []netip.Prefix {
	var out []netip.Prefix
	for _, l := range a.Leases {
		for _, p := range l.Prefixes {
			out = append(out, p.Prefix)
		}
	}
	return out
}

// TestLeasequeryUDP: bytes in, bytes out, for every query type and status
// over UDP, each answer a golden file; the bindings, lifetimes, CLT_TIME
// and relay data a requestor reads from it; the metric by type and
// outcome.
func TestLeasequeryUDP(t *testing.T) {
	inA := netip.MustParseAddr("2001:db8:200:0:1234::5")
	tests := []struct {
		name     string
		src      netip.AddrPort
		pkt      []byte
		status   iana.StatusCode
		prefixes []netip.Prefix
		links    int
		typ      string
		outcome  string
	}{
		{name: "by address inside a prefix", pkt: lqQuery(leasequery.Query{Type: leasequery.ByAddress, Address: inA}),
			prefixes: []netip.Prefix{prefixA}, typ: "address", outcome: LQFound},
		{name: "by address the prefix itself", pkt: lqQuery(leasequery.Query{Type: leasequery.ByAddress, Address: prefixB.Addr()}),
			prefixes: []netip.Prefix{prefixB}, typ: "address", outcome: LQFound},
		{name: "by address as an IAPREFIX", pkt: lqRaw(&leasequery.OptLQQuery{Type: leasequery.ByAddress, LinkAddress: anyLink,
			Options: dhcpv6.Options{&dhcpv6.OptIAPrefix{Prefix: ipnet(prefixA)}}}),
			prefixes: []netip.Prefix{prefixA}, typ: "address", outcome: LQFound},
		{name: "by address on its link", pkt: lqQuery(leasequery.Query{Type: leasequery.ByAddress, Address: inA, LinkAddress: linkAddr}),
			prefixes: []netip.Prefix{prefixA}, typ: "address", outcome: LQFound},
		{name: "by address on another link", pkt: lqQuery(leasequery.Query{Type: leasequery.ByAddress, Address: inA, LinkAddress: lqLinkC1}),
			typ: "address", outcome: LQNotFound},
		{name: "by address of no binding", pkt: lqQuery(leasequery.Query{Type: leasequery.ByAddress, Address: netip.MustParseAddr("2001:db8:200:50::1")}),
			typ: "address", outcome: LQNotFound},
		{name: "by address of an expired binding", pkt: lqQuery(leasequery.Query{Type: leasequery.ByAddress, Address: prefixGone.Addr().Next()}),
			typ: "address", outcome: LQNotFound},
		{name: "by address of a quarantined prefix", pkt: lqQuery(leasequery.Query{Type: leasequery.ByAddress, Address: prefixQuar.Addr()}),
			typ: "address", outcome: LQNotFound},
		{name: "by client-id", pkt: lqQuery(leasequery.Query{Type: leasequery.ByClientID, ClientID: duidLL(macA)}),
			prefixes: []netip.Prefix{prefixA}, typ: "client-id", outcome: LQFound},
		{name: "by client-id on two links gives the links", pkt: lqQuery(leasequery.Query{Type: leasequery.ByClientID, ClientID: lqDUIDC}),
			links: 2, typ: "client-id", outcome: LQFound},
		{name: "by client-id naming one of its links", pkt: lqQuery(leasequery.Query{Type: leasequery.ByClientID, ClientID: lqDUIDC, LinkAddress: lqLinkC2}),
			prefixes: []netip.Prefix{lqPrefixC2}, typ: "client-id", outcome: LQFound},
		{name: "by client-id unknown", pkt: lqQuery(leasequery.Query{Type: leasequery.ByClientID, ClientID: duidLL(macUnknown)}),
			typ: "client-id", outcome: LQNotFound},
		{name: "by relay-id over UDP NotAllowed", pkt: lqQuery(leasequery.Query{Type: leasequery.ByRelayID, RelayID: lqRelayID}),
			status: leasequery.StatusNotAllowed, typ: "relay-id", outcome: LQNotAllowed},
		{name: "by link-address over UDP NotAllowed", pkt: lqQuery(leasequery.Query{Type: leasequery.ByLinkAddress, LinkAddress: linkAddr}),
			status: leasequery.StatusNotAllowed, typ: "link-address", outcome: LQNotAllowed},
		{name: "by remote-id over UDP NotAllowed", pkt: lqQuery(leasequery.Query{Type: leasequery.ByRemoteID, RemoteID: relay.JuniperRemoteID(macB)}),
			status: leasequery.StatusNotAllowed, typ: "remote-id", outcome: LQNotAllowed},
		{name: "unknown query type", pkt: lqRaw(&leasequery.OptLQQuery{Type: 42, LinkAddress: anyLink}),
			status: leasequery.StatusUnknownQueryType, typ: "unknown", outcome: LQUnknownType},
		{name: "no OPTION_LQ_QUERY", pkt: lqRaw(),
			status: leasequery.StatusMalformedQuery, typ: "unknown", outcome: LQMalformed},
		{name: "multicast link-address", pkt: lqRaw(&leasequery.OptLQQuery{Type: leasequery.ByAddress, LinkAddress: netip.MustParseAddr("ff02::1:2"),
			Options: dhcpv6.Options{&dhcpv6.OptIAAddress{IPv6Addr: net.IP(inA.AsSlice())}}}),
			status: leasequery.StatusMalformedQuery, typ: "address", outcome: LQMalformed},
		{name: "by address without an address", pkt: lqRaw(&leasequery.OptLQQuery{Type: leasequery.ByAddress, LinkAddress: anyLink}),
			status: leasequery.StatusMalformedQuery, typ: "address", outcome: LQMalformed},
		{name: "requestor not allowed", src: lqStranger, pkt: lqQuery(leasequery.Query{Type: leasequery.ByAddress, Address: inA}),
			status: leasequery.StatusNotAllowed, typ: "address", outcome: LQNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _, _ := newLQHandler(t)
			src := tc.src
			if !src.IsValid() {
				src = lqRouter
			}
			r, err := h.Handle(src, tc.pkt)
			if err != nil {
				t.Fatalf("Handle: %v", err)
			}
			if r.Dst != src || r.Type != dhcpv6.MessageTypeLeaseQueryReply {
				t.Errorf("reply %s to %s, want LEASEQUERY-REPLY to %s", r.Type, r.Dst, src)
			}
			golden(t, "leasequery-udp-"+goldenName(tc.name), lqDump(t, []string{"query", "reply"}, [][]byte{tc.pkt, r.Data}))
			m, _ := leasequery.DecodeMessage(r.Data)
			if sid := m.Options.GetOne(dhcpv6.OptionServerID); sid == nil || string(sid.ToBytes()) != string(serverDUID) {
				t.Errorf("server id %v", sid)
			}
			if cid, ok := m.Options.GetOne(dhcpv6.OptionClientID).(*leasequery.OptBytes); !ok || string(cid.Data) != string(lqRequestor) {
				t.Errorf("requestor's client id not echoed: %v", m.Options.GetOne(dhcpv6.OptionClientID))
			}
			a := answerOf(t, true, r.Data)
			if a.Status != tc.status {
				t.Errorf("status %s (%s), want %s", a.Status, a.StatusMsg, tc.status)
			}
			if got := prefixesOf(a); !slices.Equal(got, tc.prefixes) {
				t.Errorf("prefixes %v, want %v", got, tc.prefixes)
			}
			if len(a.ClientLinks) != tc.links {
				t.Errorf("client links %v, want %d", a.ClientLinks, tc.links)
			}
			if got := testutil.ToFloat64(h.Metrics().Leasequery.Queries.WithLabelValues("udp", tc.typ, tc.outcome)); got != 1 {
				t.Errorf("leasequeries_total{udp,%s,%s} = %v, want 1", tc.typ, tc.outcome, got)
			}
		})
	}
}

// TestLeasequeryAnswerContent: what a router rebuilds its route from:
// remaining lifetimes, the time since the last exchange, and the relay
// level of that exchange, as recorded.
func TestLeasequeryAnswerContent(t *testing.T) {
	h, _, _ := newLQHandler(t)
	r, err := h.Handle(lqRouter, lqQuery(leasequery.Query{Type: leasequery.ByAddress, Address: prefixA.Addr()}))
	if err != nil {
		t.Fatal(err)
	}
	a := answerOf(t, true, r.Data)
	if len(a.Leases) != 1 {
		t.Fatalf("leases %+v", a.Leases)
	}
	if got := testutil.ToFloat64(h.Metrics().Leasequery.Bindings.WithLabelValues("udp")); got != 1 {
		t.Errorf("leasequery_bindings_total{udp} = %v, want 1", got)
	}
	l := a.Leases[0]
	want := leasequery.Prefix{Prefix: prefixA, Preferred: 86400 - 100, Valid: 172800 - 100}
	if string(l.ClientID) != string(duidLL(macA)) || len(l.Prefixes) != 1 || l.Prefixes[0] != want || l.CLT != 100*time.Second {
		t.Errorf("lease %+v, want client %x, %+v, CLT 100s", l, duidLL(macA), want)
	}
	rl := l.Relay
	if rl == nil || rl.Source != relayAddr.Addr() || rl.LinkAddress != linkAddr || rl.PeerAddress != vmPeer ||
		string(rl.InterfaceID) != "VLAN2701" || string(rl.RemoteID) != string(relay.JuniperRemoteID(macA)) || string(rl.RelayID) != string(lqRelayID) {
		t.Errorf("relay %+v", rl)
	}
}

// TestLeasequeryUDPDrops: what is not a leasequery this server answers is
// dropped and counted, never answered.
func TestLeasequeryUDPDrops(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pkt    []byte
		reason Reason
	}{
		{"truncated", []byte{14, 0, 0}, ReasonMalformed},
		{"option past the end", []byte{14, 0, 0, 1, 0, 44, 0, 40, 1, 2}, ReasonMalformed},
		{"for another server", lqRaw(serverID(otherDUID), leasequery.Query{Type: leasequery.ByLinkAddress, LinkAddress: linkAddr}.Option()), ReasonServerIDMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _, _ := newLQHandler(t)
			_, err := h.Handle(lqRouter, tc.pkt)
			wantDropCounted(t, h, err, tc.reason)
		})
	}
	// Without a lease source a leasequery is not answered, and not blamed
	// on a VM (unrelayed): not a message this handler serves.
	h, _ := newTestHandler(t, testOptions)
	_, err := h.Handle(lqRouter, lqQuery(leasequery.Query{Type: leasequery.ByAddress, Address: prefixA.Addr()}))
	wantDropCounted(t, h, err, ReasonUnexpectedType)
}

// TestLeasequeryReleaseAtOnce: a Release ends the binding in answers at
// once, before the Recorder writes it, and after.
func TestLeasequeryReleaseAtOnce(t *testing.T) {
	h, st, rec := newLQHandler(t)
	query := lqQuery(leasequery.Query{Type: leasequery.ByClientID, ClientID: duidLL(macA)})
	found := func() int {
		t.Helper()
		r, err := h.Handle(lqRouter, query)
		if err != nil {
			t.Fatal(err)
		}
		return len(answerOf(t, true, r.Data).Leases)
	}
	if n := found(); n != 1 {
		t.Fatalf("before the Release: %d bindings", n)
	}
	release := juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeRelease,
		dhcpv6.OptClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: macA}), serverID(serverDUID), iapd(1, prefixA)))
	if _, err := h.Handle(relayAddr, release); err != nil {
		t.Fatal(err)
	}
	if n := found(); n != 0 {
		t.Errorf("released, not yet written: %d bindings answered", n)
	}
	if bs, _ := st.BindingsOfClient(duidLL(macA)); len(bs) != 1 {
		t.Fatalf("the store changed before the flush: %+v", bs)
	}
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := found(); n != 0 {
		t.Errorf("released and written: %d bindings answered", n)
	}
}
