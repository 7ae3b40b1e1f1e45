package replay

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/capture"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
	"github.com/cloudstack-pd/cloudstack-pd/server"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// kea is a stand-in for Kea 2.2: our handler, with the answers changed
// the way Kea's differ for the request at hand.
func keaLike(h HandlerFunc) HandlerFunc {
	return func(src netip.AddrPort, pkt []byte) ([]byte, netip.AddrPort, error) {
		c, err := relay.Decode(pkt)
		if err != nil {
			return nil, netip.AddrPort{}, err
		}
		if c.Innermost().LinkAddr.IsUnspecified() {
			// L2 relay: Kea finds no subnet, so the known MAC is not found.
			c.Innermost().RemoteID = relay.JuniperRemoteID(otherMAC)
			pkt = relay.Encapsulate(c.Message, relay.Forward{LinkAddr: c.Innermost().LinkAddr, PeerAddr: c.Innermost().PeerAddr,
				InterfaceID: c.Innermost().InterfaceID, RemoteID: c.Innermost().RemoteID, HasSourcePort: true})
		}
		return h(src, pkt)
	}
}

func TestCompareAnswers(t *testing.T) {
	h := handlerFunc(testHandler(t))
	l2 := relay.Encapsulate(clientMsg(dhcpv6.MessageTypeSolicit, 2, vmMAC, iaPD()), relay.Forward{LinkAddr: netip.IPv6Unspecified(),
		PeerAddr: netip.MustParseAddr("fe80::1"), InterfaceID: []byte("VLAN2701"), RemoteID: relay.JuniperRemoteID(vmMAC)})
	reqs := extract(t,
		relayed(1, junos(clientMsg(dhcpv6.MessageTypeSolicit, 1, vmMAC, iaPD()), vmMAC)),
		relayed(2, l2),
		relayed(3, junos(clientMsg(dhcpv6.MessageTypeConfirm, 3, vmMAC), vmMAC)),
	)
	res, err := Run(context.Background(), reqs, []Target{NewFunc("ours", h), NewFunc("kea", keaLike(h))}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep := &Report{W: &out, Rules: Kea22Rules, Labels: []string{"cloudstack-pd", "kea"}}
	for _, x := range res.Exchanges {
		rep.Exchange(x)
	}
	ds := rep.Differences()
	if len(ds) != 4 {
		t.Fatalf("%d differences, want 4 (T1, T2, status, prefix of frame 2):\n%s", len(ds), out.String())
	}
	for _, d := range ds {
		if d.Expected == nil || d.Expected.Name != "kea-l2-relay" || d.Class() != "ia" {
			t.Errorf("%+v not expected by kea-l2-relay", d)
		}
	}
	for _, s := range []string{
		"differs ias[IA_PD 00000001].prefixes[2001:db8:200::/60]: cloudstack-pd preferred 86400 valid 172800, kea (absent) (expected: kea-l2-relay)",
		"differs ias[IA_PD 00000001].status: cloudstack-pd \"\", kea NoPrefixAvail (expected: kea-l2-relay)",
	} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q:\n%s", s, out.String())
		}
	}
	// Without rules, the same differences are unexpected.
	if ds := CompareAnswers(res.Exchanges[1].Request, res.Exchanges[1].Outcomes[0].Normalized, res.Exchanges[1].Outcomes[1].Normalized, nil); len(ds) != 4 || ds[0].Expected != nil {
		t.Errorf("without rules: %+v", ds)
	}
	// One server answers, the other not.
	a := res.Exchanges[0].Outcomes[0].Normalized
	ds = CompareAnswers(&reqs[0], a, nil, Kea22Rules)
	if len(ds) != 1 || ds[0].Field != "answer" || ds[0].Compare != noAnswer || ds[0].Expected != nil {
		t.Errorf("one answer missing: %+v", ds)
	}
	// Identical answers: nothing.
	if ds := CompareAnswers(&reqs[0], a, a, nil); len(ds) != 0 {
		t.Errorf("identical answers differ: %+v", ds)
	}
}

// kea-l2-relay and kea-text-remote-id expect only Kea's known answer to
// such requests, no prefix where cloudstack-pd delegates one: two answers
// that both delegate a prefix but differ in it or in its lifetimes are
// UNEXPECTED, whatever the request looks like.
func TestKeaRulesNeedKeasAnswer(t *testing.T) {
	text := append(relay.JuniperRemoteID(nil), []byte("06:32:b2:00:04:79")...)
	reqs := extract(t,
		relayed(1, relay.Encapsulate(clientMsg(dhcpv6.MessageTypeSolicit, 1, vmMAC, iaPD()), relay.Forward{LinkAddr: netip.IPv6Unspecified(),
			PeerAddr: netip.MustParseAddr("fe80::1"), InterfaceID: []byte("VLAN2701"), RemoteID: relay.JuniperRemoteID(vmMAC)})),
		relayed(2, relay.Encapsulate(clientMsg(dhcpv6.MessageTypeSolicit, 2, vmMAC, iaPD()), relay.Forward{LinkAddr: linkAddr,
			PeerAddr: netip.MustParseAddr("fe80::1"), InterfaceID: []byte("VLAN2701"), RemoteID: text})),
	)
	if !(&Condition{LinkAddress: "unspecified-or-link-local"}).holds(&reqs[0], nil, nil) ||
		(&Condition{LinkAddress: "unspecified-or-link-local"}).holds(&reqs[1], nil, nil) ||
		!(&Condition{RemoteID: "text-mac"}).holds(&reqs[1], nil, nil) {
		t.Fatal("the requests are not shaped as the test needs")
	}
	rule := map[int]string{1: "kea-l2-relay", 2: "kea-text-remote-id"}
	answer := func(t1, t2 uint32, status string, leases ...Lease) *Answer {
		return &Answer{Type: "ADVERTISE", ServerID: PlaceholderServerID, ClientID: ClientIDEchoed, Relay: []Echo{},
			IAs: []IA{{Kind: "IA_PD", IAID: "00000001", T1: t1, T2: t2, Status: status, Prefixes: leases}}}
	}
	ours := answer(1000, 2000, "", Lease{Prefix: "2001:db8:200::/60", Preferred: 86400, Valid: 172800})
	for _, tc := range []struct {
		name    string
		compare *Answer
		want    []string // the differing fields, all UNEXPECTED
	}{
		{"lifetimes", answer(1000, 2000, "", Lease{Prefix: "2001:db8:200::/60", Preferred: 90000, Valid: 100000}),
			[]string{"ias[IA_PD 00000001].prefixes[2001:db8:200::/60]"}},
		{"timers", answer(500, 800, "", Lease{Prefix: "2001:db8:200::/60", Preferred: 86400, Valid: 172800}),
			[]string{"ias[IA_PD 00000001].t1", "ias[IA_PD 00000001].t2"}},
		{"prefix", answer(1000, 2000, "", Lease{Prefix: "2001:db8:210::/60", Preferred: 86400, Valid: 172800}),
			[]string{"ias[IA_PD 00000001].prefixes[2001:db8:200::/60]", "ias[IA_PD 00000001].prefixes[2001:db8:210::/60]"}},
	} {
		for i := range reqs {
			ds := CompareAnswers(&reqs[i], ours, tc.compare, Kea22Rules)
			var fields []string
			for _, d := range ds {
				fields = append(fields, d.Field)
				if d.Expected != nil {
					t.Errorf("%s, frame %d: %s (%s / %s) expected by %s, want UNEXPECTED", tc.name, reqs[i].Frame, d.Field, d.Server, d.Compare, d.Expected.Name)
				}
			}
			slices.Sort(fields)
			if !slices.Equal(fields, tc.want) {
				t.Errorf("%s, frame %d: differences in %v, want %v", tc.name, reqs[i].Frame, fields, tc.want)
			}
		}
	}
	// Kea's known answer, NoPrefixAvail and no prefix, is still expected.
	kea := answer(0, 0, "NoPrefixAvail")
	for i := range reqs {
		ds := CompareAnswers(&reqs[i], ours, kea, Kea22Rules)
		if len(ds) == 0 {
			t.Errorf("frame %d: no difference from Kea's NoPrefixAvail", reqs[i].Frame)
		}
		for _, d := range ds {
			if d.Expected == nil || d.Expected.Name != rule[reqs[i].Frame] {
				t.Errorf("frame %d: %+v not expected by %s", reqs[i].Frame, d, rule[reqs[i].Frame])
			}
		}
		// The other way round (Kea a prefix, cloudstack-pd none) is not
		// theirs.
		for _, d := range CompareAnswers(&reqs[i], kea, ours, Kea22Rules) {
			if d.Expected != nil && d.Expected.Name == rule[reqs[i].Frame] {
				t.Errorf("frame %d reversed: %+v expected by %s", reqs[i].Frame, d, d.Expected.Name)
			}
		}
	}

	// The audit's case end to end: two cloudstack-pd servers that differ
	// only in lifetimes, through Run and the report.
	h := handlerFunc(testHandler(t))
	other, err := server.NewHandler(server.HandlerConfig{Table: allocator.NewLive(mustTable(t)), ServerID: testDUID, Options: server.Options{
		MACSources: []relay.MACSource{relay.SourceRemoteID}, PreferredLifetime: 90000, ValidLifetime: 100000, RenewTimer: 1000, RebindTimer: 2000,
	}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), reqs, []Target{NewFunc("ours", h), NewFunc("other", handlerFunc(other))}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep := &Report{W: &out, Rules: Kea22Rules, Labels: []string{"server", "compare"}}
	for _, x := range res.Exchanges {
		rep.Exchange(x)
	}
	ds := rep.Differences()
	if len(ds) != 2 {
		t.Fatalf("%d differences, want the prefix's lifetimes on frames 1 and 2:\n%s", len(ds), out.String())
	}
	for _, d := range ds {
		if d.Expected != nil {
			t.Errorf("%+v expected by %s, want UNEXPECTED", d, d.Expected.Name)
		}
	}
	want := "differs ias[IA_PD 00000001].prefixes[2001:db8:200::/60]: server preferred 86400 valid 172800, compare preferred 90000 valid 100000 (UNEXPECTED)"
	if n := strings.Count(out.String(), want); n != 2 {
		t.Errorf("output has %q %d times, want 2:\n%s", want, n, out.String())
	}
}

func TestRuleConditions(t *testing.T) {
	text := append(relay.JuniperRemoteID(nil), []byte("06:32:b2:00:04:79")...)
	reqs := extract(t,
		relayed(1, junos(clientMsg(dhcpv6.MessageTypeRelease, 1, vmMAC, sid(oldDUID), iaPD(vmPrefix)), vmMAC)),
		relayed(2, relay.Encapsulate(clientMsg(dhcpv6.MessageTypeInformationRequest, 2, vmMAC, iaPD()), relay.Forward{
			LinkAddr: netip.MustParseAddr("fe80::1"), RemoteID: text, InterfaceID: []byte("VLAN999")})),
		relayed(3, relay.Encapsulate(clientMsg(dhcpv6.MessageTypeSolicit, 3, vmMAC), relay.Forward{HopCount: 1, LinkAddr: linkAddr},
			relay.Forward{RemoteID: []byte{1, 2}})),
	)
	prefix := &Answer{IAs: []IA{{Kind: "IA_PD", Prefixes: []Lease{{Prefix: "2001:db8::/60", Valid: 1}}}}}
	none := &Answer{IAs: []IA{{Kind: "IA_PD", Status: "NoPrefixAvail"}}}
	yes, no := true, false
	for _, tc := range []struct {
		c    Condition
		want [3]bool
	}{
		{Condition{Frames: []int{2}}, [3]bool{false, true, false}},
		{Condition{Types: []string{"release", "SOLICIT"}}, [3]bool{true, false, true}},
		{Condition{InterfaceIDs: []string{"VLAN999"}}, [3]bool{false, true, false}},
		{Condition{MACs: []string{"06-32-B2-00-04-79"}}, [3]bool{true, true, false}},
		{Condition{LinkAddress: "unspecified-or-link-local"}, [3]bool{false, true, false}},
		{Condition{LinkAddress: "global"}, [3]bool{true, false, true}},
		{Condition{LinkAddress: "2001:db8:100::1"}, [3]bool{true, false, true}},
		{Condition{HasIA: &yes}, [3]bool{true, true, false}},
		{Condition{RemoteID: "text-mac"}, [3]bool{false, true, false}},
		{Condition{RemoteID: "malformed"}, [3]bool{false, false, true}},
		{Condition{RemoteID: "binary"}, [3]bool{true, false, false}},
		{Condition{Nested: &yes}, [3]bool{false, false, true}},
		{Condition{Nested: &no, Server: "prefix", Compare: "no-prefix"}, [3]bool{true, true, false}},
	} {
		for i := range reqs {
			server, compare := prefix, none
			if i == 2 {
				server, compare = nil, prefix
			}
			if got := tc.c.holds(&reqs[i], server, compare); got != tc.want[i] {
				t.Errorf("%+v on frame %d: %v, want %v", tc.c, reqs[i].Frame, got, tc.want[i])
			}
		}
	}
}

func TestLoadRules(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "exp.json")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rules, err := LoadRules(write(`{"rules": [{"name": "site", "why": "because", "when": {"types": ["CONFIRM"]}, "fields": ["answer"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 1+len(Kea22Rules) || rules[0].Name != "site" {
		t.Errorf("rules %+v", rules)
	}
	rules, err = LoadRules(write(`{"builtin": false, "rules": []}`))
	if err != nil || len(rules) != 0 {
		t.Errorf("builtin false: %v %v", rules, err)
	}
	for _, tc := range []struct{ file, want string }{
		{`{"rules": [{"name": "x"}]}`, "rules[0]: needs a name and a why"},
		{`{"rules": [{"name": "x", "why": "y", "when": {"link-address": "somewhere"}}]}`, `rules[0] (x): when.link-address "somewhere"`},
		{`{"rules": [{"name": "x", "why": "y", "fields": ["prefix"]}]}`, `rules[0] (x): fields: "prefix"`},
		{`{"rules": [{"name": "x", "why": "y", "when": {"server": "maybe"}}]}`, `when.server/compare "maybe"`},
		{`{"rules": [{"name": "x", "why": "y", "when": {"macs": ["nope"]}}]}`, `when.macs`},
		{`{"rules": [], "extra": 1}`, `unknown field "extra"`},
	} {
		_, err := LoadRules(write(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "exp.json") {
			t.Errorf("%s: %v, want %q naming the file", tc.file, err, tc.want)
		}
	}
}

// The requests and answers written by WriteCapture are what tshark, an
// independent dissector, reads: DHCPv6 relay messages with correct UDP
// checksums, each answer echoing its request's transaction id.
func TestWriteCaptureTshark(t *testing.T) {
	tshark := testenv.Tool(t, "tshark")
	h := handlerFunc(testHandler(t))
	reqs := extract(t,
		relayed(1, junos(clientMsg(dhcpv6.MessageTypeSolicit, 1, vmMAC, iaPD()), vmMAC)),
		relayed(2, junos(clientMsg(dhcpv6.MessageTypeRequest, 2, vmMAC, sid(oldDUID), iaPD(vmPrefix)), vmMAC)),
		relayed(3, junos(clientMsg(dhcpv6.MessageTypeConfirm, 3, vmMAC), vmMAC)),
	)
	clk := newRunClock()
	tgt := newChanTarget("mem", h, clk)
	defer tgt.Close()
	res, err := clk.run(t, context.Background(), reqs, []Target{tgt, NewFunc("offline", h)}, Options{Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteCapture(&b, res.Exchanges); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "answers.pcap")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	pkts, st, err := capture.ReadFile(path)
	if err != nil || st.Malformed != 0 || len(pkts) != 10 {
		t.Fatalf("read back: %d messages, %+v, %v (want 3 requests and 2 answers per target)", len(pkts), st, err)
	}
	cmd := exec.Command(tshark, "-r", path, "-n", "-o", "udp.check_checksum:TRUE", "-T", "fields", "-E", "separator=|",
		"-e", "udp.checksum.status", "-e", "dhcpv6.msgtype", "-e", "dhcpv6.xid", "-e", "_ws.expert.severity")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 10 {
		t.Fatalf("tshark read %d frames:\n%s", len(lines), out)
	}
	replies := 0
	for _, l := range lines {
		f := strings.Split(l, "|")
		// Checksum good (1); the relay message types, then the inner one.
		if f[0] != "1" || !strings.HasPrefix(f[1], "12,") && !strings.HasPrefix(f[1], "13,") || f[3] != "" {
			t.Errorf("tshark: %q", l)
		}
		if strings.HasPrefix(f[1], "13,") {
			replies++
		}
	}
	if replies != 4 {
		t.Errorf("%d Relay-replies, want 4:\n%s", replies, out)
	}
}

// Normalize and the reply walker never panic, whatever the bytes.
func FuzzNormalize(f *testing.F) {
	h := handlerFunc(testHandler(f))
	reqs := extract(&testing.T{}, relayed(1, junos(clientMsg(dhcpv6.MessageTypeSolicit, 1, vmMAC, iaPD(), &dhcpv6.OptIANA{}), vmMAC)))
	ans, _, _ := h(routerAP, reqs[0].Payload)
	f.Add(ans)                            // a whole Relay-Reply
	f.Add(ans[:40])                       // cut inside the first level's options
	f.Add([]byte{13})                     // a lone message type
	f.Add(clientMsg(7, 1, vmMAC, iaPD())) // a Reply without relay
	f.Fuzz(func(t *testing.T, b []byte) {
		a := Normalize(b, testDUID, nil)
		_ = a.Result()
		_ = a.Kind()
		_, _ = answerKey(b)
		_ = (&GoldenExchange{Answer: &a}).fields()
	})
}
