package replay

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/capture"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

func TestExtract(t *testing.T) {
	sol := clientMsg(dhcpv6.MessageTypeSolicit, 1, vmMAC, iaPD())
	req := clientMsg(dhcpv6.MessageTypeRequest, 2, vmMAC, sid(oldDUID), iaPD(vmPrefix))
	withPort := relay.Encapsulate(sol, relay.Forward{LinkAddr: linkAddr, PeerAddr: netip.MustParseAddr("fe80::1"),
		InterfaceID: []byte("VLAN2701"), HasSourcePort: true, SourcePort: 1234})
	broken := junos(sol, vmMAC)[:50]
	clientSrc := netip.MustParseAddrPort("[fe80::432:b2ff:fe00:479]:546")
	allServers := netip.MustParseAddrPort("[ff02::1:2]:547")
	pkts := []capture.Packet{
		relayed(1, junos(sol, vmMAC)),
		{Index: 2, Src: serverAP, Dst: routerAP, Payload: relay.Encapsulate(clientMsg(dhcpv6.MessageTypeAdvertise, 1, vmMAC), relay.Forward{})},
		relayed(3, junos(req, vmMAC)),
		relayed(4, withPort),
		{Index: 5, Src: clientSrc, Dst: allServers, SrcMAC: vmMAC, Payload: sol},
		{Index: 6, Src: serverAP, Dst: clientSrc, Payload: clientMsg(dhcpv6.MessageTypeReply, 2, vmMAC)},
		relayed(7, broken),
	}
	// The Relay-Reply above is rewritten as one: type 13.
	pkts[1].Payload[0] = relay.MsgRelayReply

	reqs, sk := Extract(pkts, ExtractOptions{})
	if got := frames(reqs); !slices.Equal(got, []int{1, 3, 4, 7}) {
		t.Fatalf("frames %v, want [1 3 4 7]", got)
	}
	if sk != (Skipped{NotToServer: 1, ServerMessages: 1, Unrelayed: 1}) {
		t.Errorf("skipped %+v", sk)
	}

	r := reqs[0]
	if !r.SourcePortAdded || r.Wrapped || r.Type != dhcpv6.MessageTypeSolicit || hex.EncodeToString(r.XID[:]) != "100001" ||
		r.MAC.String() != vmMAC.String() || r.NamesServer || !r.HasIA || string(r.InterfaceID()) != "VLAN2701" {
		t.Errorf("frame 1: %+v", r)
	}
	if c := r.Chain.Outermost(); !c.HasSourcePort || c.SourcePort != 0 {
		t.Errorf("frame 1: relay source port %v %d, want 0 added", c.HasSourcePort, c.SourcePort)
	}
	if !bytes.Equal(r.Chain.Message, sol) {
		t.Error("frame 1: client message changed")
	}
	if !reqs[1].NamesServer || !reqs[1].Rewritable() {
		t.Error("frame 3: a Request naming a server must be rewritable")
	}
	if reqs[2].SourcePortAdded || reqs[2].Chain.Outermost().SourcePort != 1234 || !bytes.Equal(reqs[2].Payload, withPort) {
		t.Error("frame 4: a Relay-Forward with a relay source port must be sent as captured")
	}
	if r := reqs[3]; r.ChainErr == nil || r.Chain != nil || !r.NoSourcePort || !bytes.Equal(r.Payload, broken) {
		t.Errorf("frame 7: malformed Relay-Forward: err %v, no source port %v", r.ChainErr, r.NoSourcePort)
	}
	if _, ok := reqs[3].Key(); ok {
		t.Error("frame 7: a malformed request has no key")
	}

	// With --wrap: the client message too, as a Junos relay wraps it.
	reqs, sk = Extract(pkts, ExtractOptions{Wrap: &Wrap{InterfaceID: []byte("VLAN2701"), LinkAddr: linkAddr}})
	if got := frames(reqs); !slices.Equal(got, []int{1, 3, 4, 5, 7}) || sk.Unrelayed != 0 {
		t.Fatalf("frames %v, skipped %+v", got, sk)
	}
	w := reqs[3]
	if !w.Wrapped || len(w.Chain.Levels) != 1 {
		t.Fatalf("frame 5 not wrapped: %+v", w)
	}
	l := w.Chain.Levels[0]
	if l.HopCount != 0 || l.LinkAddr != linkAddr || l.PeerAddr != clientSrc.Addr() || string(l.InterfaceID) != "VLAN2701" ||
		!bytes.Equal(l.RemoteID, relay.JuniperRemoteID(vmMAC)) || !l.HasSourcePort || l.SourcePort != 0 || !bytes.Equal(w.Chain.Message, sol) {
		t.Errorf("frame 5 wrapped as %+v", l)
	}
}

func frames(reqs []Request) []int {
	var out []int
	for _, r := range reqs {
		out = append(out, r.Frame)
	}
	return out
}

// extract is Extract of relayed packets, failing on anything skipped.
func extract(t *testing.T, pkts ...capture.Packet) []Request {
	t.Helper()
	reqs, sk := Extract(pkts, ExtractOptions{})
	if sk.Total() != 0 {
		t.Fatalf("skipped %+v", sk)
	}
	return reqs
}

func TestRunClosedLoop(t *testing.T) {
	h := testHandler(t)
	reqs := extract(t,
		// A Renew first: replay must learn the server's DUID before it.
		relayed(1, junos(clientMsg(dhcpv6.MessageTypeRenew, 1, vmMAC, sid(oldDUID), iaPD(vmPrefix)), vmMAC)),
		relayed(2, junos(clientMsg(dhcpv6.MessageTypeSolicit, 2, vmMAC, iaPD()), vmMAC)),
		relayed(3, junos(clientMsg(dhcpv6.MessageTypeConfirm, 3, vmMAC), vmMAC)),
		relayed(4, junos(clientMsg(dhcpv6.MessageTypeSolicit, 4, otherMAC, iaPD()), otherMAC)),
	)
	clk := newRunClock()
	tgt := newChanTarget("mem", handlerFunc(h), clk)
	defer tgt.Close()
	var order []int
	res, err := clk.run(t, context.Background(), reqs, []Target{tgt}, Options{Timeout: 100 * time.Millisecond,
		Done: func(x *Exchange) { order = append(order, x.Request.Frame) }})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, []int{1, 2, 3, 4}) {
		t.Errorf("Done order %v", order)
	}
	rep := res.Targets[0]
	if !bytes.Equal(rep.ServerID, testDUID) || !strings.Contains(rep.ServerIDFrom, "Information-request") || rep.Rewritten != 1 {
		t.Errorf("target report %+v", rep)
	}
	// The discovery's Information-request, then the four requests.
	if len(tgt.sent) != 5 || tgt.sent[0][0] != relay.MsgRelayForward {
		t.Fatalf("%d packets sent", len(tgt.sent))
	}
	o := res.Exchanges[0].Outcomes[0]
	if !o.Rewritten || !o.Answered() || o.Normalized.Kind() != "prefix" || o.Normalized.ServerID != PlaceholderServerID {
		t.Errorf("Renew: %+v %+v", o, o.Normalized)
	}
	if c, _ := relay.Decode(o.Payload); !bytes.Contains(c.Message, testDUID) || bytes.Contains(c.Message, oldDUID) {
		t.Error("Renew sent without our server id")
	}
	if o := res.Exchanges[2].Outcomes[0]; o.Answered() || o.Latency != 0 {
		t.Errorf("Confirm answered: %+v", o)
	}
	if k := res.Exchanges[3].Outcomes[0].Normalized.Kind(); k != "NoPrefixAvail" {
		t.Errorf("unknown MAC: %s", k)
	}
	// One at a time, each answered 1ms after it is sent: the discovery at
	// 0, frames 1 to 3 at 1, 2 and 3ms; the Confirm times out at 103ms,
	// when frame 4 goes.
	for i, want := range []time.Duration{1, 2, 3, 103} {
		o := res.Exchanges[i].Outcomes[0]
		if at := o.Sent.At.Sub(runEpoch); at != want*time.Millisecond {
			t.Errorf("frame %d sent at %s, want %dms", i+1, at, want)
		}
		if o.Answered() && o.Latency != time.Millisecond {
			t.Errorf("frame %d: latency %s, want 1ms", i+1, o.Latency)
		}
	}
	if res.Elapsed != 104*time.Millisecond {
		t.Errorf("took %s, want 104ms", res.Elapsed)
	}
}

func TestRunGivenServerIDAndKeep(t *testing.T) {
	h := testHandler(t)
	reqs := extract(t, relayed(1, junos(clientMsg(dhcpv6.MessageTypeRequest, 1, vmMAC, sid(oldDUID), iaPD()), vmMAC)))
	for _, tc := range []struct {
		name     string
		opts     Options
		answered bool
	}{
		{"given", Options{ServerIDs: [][]byte{testDUID}}, true},
		{"wrong given", Options{ServerIDs: [][]byte{oldDUID[:10]}}, false},
		{"kept", Options{KeepServerID: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newRunClock()
			tgt := newChanTarget("mem", handlerFunc(h), clk)
			defer tgt.Close()
			tc.opts.Timeout = 50 * time.Millisecond
			res, err := clk.run(t, context.Background(), reqs, []Target{tgt}, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Exchanges[0].Outcomes[0].Answered(); got != tc.answered {
				t.Errorf("answered %v, want %v", got, tc.answered)
			}
			if len(tgt.sent) != 1 {
				t.Errorf("%d packets sent: no discovery wanted", len(tgt.sent))
			}
			// Answered after 1ms, or not before the timeout.
			if want := map[bool]time.Duration{true: time.Millisecond, false: 50 * time.Millisecond}[tc.answered]; res.Elapsed != want {
				t.Errorf("took %s, want %s", res.Elapsed, want)
			}
		})
	}
}

// At a rate, several requests are outstanding: answers that come out of
// order, late, twice or not at all are each matched right.
func TestRunRate(t *testing.T) {
	h := testHandler(t)
	var pkts []capture.Packet
	for i := 1; i <= 20; i++ {
		pkts = append(pkts, relayed(i, junos(clientMsg(dhcpv6.MessageTypeSolicit, byte(i), vmMAC, iaPD()), vmMAC)))
	}
	// Frame 21 retransmits frame 20: same transaction id.
	pkts = append(pkts, relayed(21, pkts[19].Payload))
	reqs := extract(t, pkts...)
	clk := newRunClock()
	tgt := newChanTarget("mem", handlerFunc(h), clk)
	defer tgt.Close()
	// At 200/s frame n goes at (n-1)*5ms; answers come 1ms later, except:
	latency := map[int]time.Duration{
		4: 155 * time.Millisecond, // at 170ms, after its timeout at 165ms: late
		5: 60 * time.Millisecond,  // at 80ms, overtaken by frames 6 to 15
	}
	tgt.delay = func(n int) time.Duration {
		if d, ok := latency[n+1]; ok {
			return d
		}
		return time.Millisecond
	}
	tgt.lose = func(n int) bool { return n+1 == 8 }
	tgt.dup = func(n int) bool { return n+1 == 11 }
	var order []int
	res, err := clk.run(t, context.Background(), reqs, []Target{tgt}, Options{Rate: 200, Timeout: 150 * time.Millisecond,
		Done: func(x *Exchange) { order = append(order, x.Request.Frame) }})
	if err != nil {
		t.Fatal(err)
	}
	var unanswered, done []int
	for i, x := range res.Exchanges {
		f := x.Request.Frame
		done = append(done, i+1)
		o := x.Outcomes[0]
		if at := o.Sent.At.Sub(runEpoch); at != time.Duration(i)*5*time.Millisecond {
			t.Errorf("frame %d sent at %s, want %s", f, at, time.Duration(i)*5*time.Millisecond)
		}
		if !o.Answered() {
			unanswered = append(unanswered, f)
			continue
		}
		if got := o.Normalized; got.Kind() != "prefix" {
			t.Errorf("frame %d: %s", f, got.Result())
		}
		want := time.Millisecond
		if d, ok := latency[f]; ok {
			want = d
		}
		if o.Latency != want || !o.Answer.At.Equal(o.Sent.At.Add(want)) {
			t.Errorf("frame %d: latency %s, answered at %s, want %s", f, o.Latency, o.Answer.At.Sub(runEpoch), want)
		}
	}
	if !slices.Equal(unanswered, []int{4, 8}) {
		t.Errorf("unanswered frames %v, want [4 8] (late, lost)", unanswered)
	}
	// Frame 4 and 5 hold the others back; all 21 are done, in order.
	if !slices.Equal(order, done) || len(done) != 21 {
		t.Errorf("Done order %v", order)
	}
	// The duplicate answer to frame 11 is unmatched; frame 4's came late.
	if r := res.Targets[0]; r.Unmatched != 1 || r.Late != 1 {
		t.Errorf("unmatched %d, late %d; want 1 and 1", r.Unmatched, r.Late)
	}
	// The last to settle is frame 8, lost: sent at 35ms, timed out at 185ms.
	if res.Elapsed != 185*time.Millisecond {
		t.Errorf("took %s, want 185ms", res.Elapsed)
	}
}

// Run stops sending when its context ends, and returns what it has.
func TestRunCancel(t *testing.T) {
	h := testHandler(t)
	var pkts []capture.Packet
	for i := 1; i <= 50; i++ {
		pkts = append(pkts, relayed(i, junos(clientMsg(dhcpv6.MessageTypeSolicit, byte(i), vmMAC, iaPD()), vmMAC)))
	}
	clk := newRunClock()
	tgt := newChanTarget("mem", handlerFunc(h), clk)
	defer tgt.Close()
	// At 1000/s frame k goes at k-1 ms and is answered 2ms later: the
	// fifth answer comes at 6ms, when frame 6 is in flight and frame 7
	// not sent yet.
	tgt.delay = func(int) time.Duration { return 2 * time.Millisecond }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	res, err := clk.run(t, ctx, extract(t, pkts...), []Target{tgt}, Options{Rate: 1000, Done: func(*Exchange) {
		if n++; n == 5 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
	// Frame 6 is waited for: answered at 7ms.
	if len(res.Exchanges) != 6 || n != 6 || !res.Exchanges[5].Outcomes[0].Answered() || res.Elapsed != 7*time.Millisecond {
		t.Errorf("%d exchanges, %d done, took %s; want 6, all answered, 7ms", len(res.Exchanges), n, res.Elapsed)
	}
}

// A Func target stamps on Run's clock: sent and answered at the fake
// clock's time, in no time.
func TestRunFuncOnClock(t *testing.T) {
	reqs := extract(t, relayed(1, junos(clientMsg(dhcpv6.MessageTypeSolicit, 1, vmMAC, iaPD()), vmMAC)))
	res, err := Run(context.Background(), reqs, []Target{NewFunc("offline", handlerFunc(testHandler(t)))},
		Options{Clock: clock.NewFake(runEpoch)})
	if err != nil {
		t.Fatal(err)
	}
	o := res.Exchanges[0].Outcomes[0]
	if !o.Answered() || !o.Sent.At.Equal(runEpoch) || !o.Answer.At.Equal(runEpoch) || o.Latency != 0 || res.Elapsed != 0 {
		t.Errorf("answered %v, sent at %v, latency %s, took %s; want all at %v", o.Answered(), o.Sent.At, o.Latency, res.Elapsed, runEpoch)
	}
}

func TestNormalize(t *testing.T) {
	h := testHandler(t)
	sol := clientMsg(dhcpv6.MessageTypeSolicit, 1, vmMAC, iaPD(), &dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, 2}})
	reqs := extract(t, relayed(1, junos(sol, vmMAC)))
	ans, err := h.Handle(routerAP, reqs[0].Payload)
	if err != nil {
		t.Fatal(err)
	}
	a := Normalize(ans.Data, testDUID, reqs[0].ClientID)
	port := uint16(0)
	want := Answer{Type: "ADVERTISE", ServerID: PlaceholderServerID, ClientID: ClientIDEchoed,
		IAs: []IA{
			{Kind: "IA_PD", IAID: "00000001", T1: 1000, T2: 2000, Prefixes: []Lease{{Prefix: "2001:db8:200::/60", Preferred: 86400, Valid: 172800}}},
			{Kind: "IA_NA", IAID: "00000002", Status: "NoAddrsAvail"},
		},
		Relay: []Echo{{LinkAddress: "2001:db8:100::1", PeerAddress: "fe80::432:b2ff:fe00:479", InterfaceID: "VLAN2701", RelaySourcePort: &port}},
	}
	if got, w := mustJSON(t, a), mustJSON(t, want); got != w {
		t.Errorf("normalized:\n%s\nwant\n%s", got, w)
	}
	if r := a.Result(); r != "2001:db8:200::/60, IA_NA NoAddrsAvail" {
		t.Errorf("Result %q", r)
	}
	// Another server's DUID, another client id: kept in hex.
	b := Normalize(ans.Data, oldDUID, []byte{1, 2})
	if b.ServerID != hex.EncodeToString(testDUID) || b.ClientID == ClientIDEchoed {
		t.Errorf("server id %s, client id %s", b.ServerID, b.ClientID)
	}
	// Not a Relay-Reply, or cut short: said, not panicked.
	if c := Normalize(sol, nil, nil); c.Error == "" || c.Type != "SOLICIT" {
		t.Errorf("client message normalized as %+v", c)
	}
	if c := Normalize(ans.Data[:60], nil, nil); c.Error == "" {
		t.Error("a cut answer has no error")
	}
}

func mustJSON(t *testing.T, a Answer) string {
	t.Helper()
	g := &Golden{Exchanges: []GoldenExchange{{Answer: &a}}}
	b, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// goldenOf replays reqs offline and records the answers.
func goldenOf(t *testing.T, h HandlerFunc, reqs []Request) *Golden {
	t.Helper()
	res, err := Run(context.Background(), reqs, []Target{NewFunc("offline", h)}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return NewGolden("test.pcap", nil, res.Exchanges, 0)
}

func TestGoldenRoundTripAndDiff(t *testing.T) {
	h := handlerFunc(testHandler(t))
	reqs := extract(t,
		relayed(1, junos(clientMsg(dhcpv6.MessageTypeSolicit, 1, vmMAC, iaPD()), vmMAC)),
		relayed(2, junos(clientMsg(dhcpv6.MessageTypeRequest, 2, vmMAC, sid(oldDUID), iaPD(vmPrefix)), vmMAC)),
		relayed(3, junos(clientMsg(dhcpv6.MessageTypeConfirm, 3, vmMAC), vmMAC)),
	)
	g := goldenOf(t, h, reqs)
	path := filepath.Join(t.TempDir(), "g.json")
	if err := g.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadGolden(path)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(back, goldenOf(t, h, reqs)); d != "" {
		t.Fatalf("a second replay differs:\n%s", d)
	}
	if answered, known := back.Expects(3); answered || !known {
		t.Error("the Confirm is recorded as answered")
	}
	raw, _ := os.ReadFile(path)
	for _, s := range []string{`"server-id": "<server-duid>"`, `"latency": "<latency>"`, `"notes": [`, `"server-id-rewritten"`, `"answer": null`} {
		if !strings.Contains(string(raw), s) {
			t.Errorf("golden file lacks %s:\n%s", s, raw)
		}
	}

	// One expected value altered: the diff names the frame, the field,
	// and both values.
	altered := strings.Replace(string(raw), `"valid": 172800`, `"valid": 86400`, 1)
	if err := os.WriteFile(path, []byte(altered), 0o644); err != nil {
		t.Fatal(err)
	}
	want, err := ReadGolden(path)
	if err != nil {
		t.Fatal(err)
	}
	d := Diff(want, goldenOf(t, h, reqs))
	for _, s := range []string{
		"frame 1 (SOLICIT xid 100001 mac 06:32:b2:00:04:79 on VLAN2701):",
		"  answer.ias[IA_PD 00000001].prefixes[2001:db8:200::/60]\n    expected: preferred 86400 valid 86400\n    got:      preferred 86400 valid 172800\n",
	} {
		if !strings.Contains(d, s) {
			t.Errorf("diff lacks %q:\n%s", s, d)
		}
	}
	if strings.Contains(d, "frame 2") {
		t.Errorf("diff names an unchanged frame:\n%s", d)
	}

	// A request that gets an answer now but none in the golden file, and
	// frames missing on either side.
	want.Exchanges[1].Answer = nil
	want.Exchanges = append(want.Exchanges, GoldenExchange{Frame: 9, Request: "SOLICIT"})
	got := goldenOf(t, h, reqs)
	got.Exchanges = got.Exchanges[1:]
	d = Diff(want, got)
	for _, s := range []string{"frame 1 (SOLICIT xid 100001 mac 06:32:b2:00:04:79 on VLAN2701): expected in the replay, not sent",
		"frame 2 (REQUEST xid 100002 mac 06:32:b2:00:04:79 on VLAN2701):\n  answer\n    expected: (no answer)\n    got:      REPLY 2001:db8:200::/60\n", "frame 9 (SOLICIT): expected in the replay, not sent"} {
		if !strings.Contains(d, s) {
			t.Errorf("diff lacks %q:\n%s", s, d)
		}
	}
	if _, err := ReadGolden(filepath.Join(t.TempDir(), "none.json")); err == nil || !strings.Contains(err.Error(), "none.json") {
		t.Errorf("missing golden file: %v", err)
	}
	os.WriteFile(path, []byte(`{"capture": "x", "exchanges": [], "surprise": 1}`), 0o644)
	if _, err := ReadGolden(path); err == nil || !strings.Contains(err.Error(), "g.json") || !strings.Contains(err.Error(), "surprise") {
		t.Errorf("unknown key: %v", err)
	}
}
