package server

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/capture"
	"github.com/cloudstack-pd/cloudstack-pd/relay"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// tsharkServer is where the handler's replies come from in the capture.
var tsharkServer = netip.MustParseAddrPort("[2001:db8::547]:547")

// The fields tshark reports for each frame, in this order. Values of a
// field that occurs more than once (one per relay level, per IA ...) are
// joined by commas, in the order of the packet.
var tsharkColumns = []string{
	"dhcpv6.msgtype",                 // outermost first: 13,13,7 for a Reply in two Relay-Replies
	"dhcpv6.hopcount",                // one per relay level
	"dhcpv6.interface_id",            // hex, one per level that carries it
	"dhcpv6.relay_port",              // RFC 8357 option 135
	"dhcpv6.remoteid.enterprise",     // requests only
	"dhcpv6.iaid.t1",                 // IA_PD and IA_NA
	"dhcpv6.iaid.t2",                 //
	"dhcpv6.iaprefix.pref_addr",      // each IAPREFIX
	"dhcpv6.iaprefix.pref_len",       //
	"dhcpv6.iaprefix.pref_lifetime",  //
	"dhcpv6.iaprefix.valid_lifetime", //
	"dhcpv6.status_code",             // top-level and per IA, in packet order
	"udp.dstport",
}

// severityError is PI_ERROR, as tshark prints _ws.expert.severity
// (PI_WARN is 6291456, PI_NOTE 4194304, PI_CHAT 2097152).
const severityError = "8388608"

// tsharkVerdict are the fields that must stay empty (or good) in every frame.
var tsharkVerdict = []string{"udp.checksum.status", "_ws.malformed", "_ws.expert.severity", "_ws.expert.message"}

// dissection is what tshark must report for one frame, field by field in
// the order of tsharkColumns.
type dissection [13]string

func (d dissection) String() string {
	var b strings.Builder
	for i, c := range tsharkColumns {
		fmt.Fprintf(&b, "\n\t%-31s %q", c, d[i])
	}
	return b.String()
}

// Every kind of reply the server sends, and the request it answers, is
// dissected by tshark (an independent DHCPv6 decoder) without a malformed
// packet, an expert error or warning, or a bad UDP checksum; and tshark
// reads in each reply the values the server meant: message types, relay
// levels, interface-id echo, prefixes, lifetimes, T1/T2 and status codes.
func TestTsharkDissectsEveryReply(t *testing.T) {
	tshark := testenv.Tool(t, "tshark")
	rapid := testOptions
	rapid.RapidCommit = true
	req := func(typ dhcpv6.MessageType, mac []byte, sid []byte, ias ...dhcpv6.Option) []byte {
		opts := []dhcpv6.Option{clientID(mac)}
		if sid != nil {
			opts = append(opts, serverID(sid))
		}
		return msg(typ, append(opts, ias...)...)
	}
	const (
		iid     = "564c414e32373031" // VLAN2701
		reqType = "12,"              // a Relay-Forward around ...
		rep     = "13,"              // a Relay-Reply around ...
	)
	// What tshark reports of a Juniper-shaped request, by message type:
	// one IA_PD (a request's T1 and T2 are 0), or no IA at all.
	juniperReq := func(typ string) dissection {
		return dissection{reqType + typ, "0", iid, "", "2636", "0", "0", "", "", "", "", "", "547"}
	}
	juniperReqNoIA := func(typ string) dissection {
		return dissection{reqType + typ, "0", iid, "", "2636", "", "", "", "", "", "", "", "547"}
	}
	// A reply: one Relay-Reply (hop 0, interface-id echoed, remote-id not) to port 547.
	reply := func(typ, t1, t2, addr, plen, pref, valid, status string) dissection {
		return dissection{rep + typ, "0", iid, "", "", t1, t2, addr, plen, pref, valid, status, "547"}
	}
	const (
		adv, rpl        = "2", "7"
		a, l60          = "2001:db8:200::", "60" // prefixA
		stale           = "2001:db8:200:f0::"    // prefixStale
		p86400, p172800 = "86400", "172800"
		noPrefix        = "6" // NoPrefixAvail
		noAddrs         = "2" // NoAddrsAvail
		noBinding       = "3" // NoBinding
		success         = "0"
	)
	tests := []struct {
		name    string
		opts    *Options
		src     netip.AddrPort
		pkt     []byte
		request dissection
		reply   dissection
	}{
		{name: "advertise with the reserved prefix",
			pkt:     juniper("VLAN2701", macA, req(dhcpv6.MessageTypeSolicit, macA, nil, iapd(1))),
			request: juniperReq("1"),
			reply:   reply(adv, "1000", "2000", a, l60, p86400, p172800, "")},
		{name: "advertise NoPrefixAvail for an unknown MAC",
			pkt:     juniper("VLAN2701", macUnknown, req(dhcpv6.MessageTypeSolicit, macUnknown, nil, iapd(1))),
			request: juniperReq("1"),
			reply:   reply(adv, "0", "0", "", "", "", "", noPrefix)},
		{name: "advertise NoAddrsAvail in IA_NA and IA_TA beside the IA_PD",
			pkt:     juniper("VLAN2701", macA, req(dhcpv6.MessageTypeSolicit, macA, nil, iapd(1), iana1, iata1)),
			request: dissection{reqType + "1", "0", iid, "", "2636", "0,0", "0,0", "", "", "", "", "", "547"},
			// T1/T2: the IA_PD's, then the IA_NA's (IA_TA has none).
			reply: reply(adv, "1000,0", "2000,0", a, l60, p86400, p172800, noAddrs+","+noAddrs)},
		{name: "advertise with top-level NoPrefixAvail when the solicit has no IA",
			pkt:     juniper("VLAN2701", macA, req(dhcpv6.MessageTypeSolicit, macA, nil)),
			request: juniperReqNoIA("1"),
			reply:   reply(adv, "", "", "", "", "", "", noPrefix)},
		{name: "reply to a request with the reserved prefix",
			pkt:     juniper("VLAN2701", macA, req(dhcpv6.MessageTypeRequest, macA, serverDUID, iapd(1))),
			request: juniperReq("3"),
			reply:   reply(rpl, "1000", "2000", a, l60, p86400, p172800, "")},
		{name: "reply to a solicit with rapid commit",
			opts:    &rapid,
			pkt:     juniper("VLAN2701", macA, req(dhcpv6.MessageTypeSolicit, macA, nil, iapd(1), rapidCommit)),
			request: juniperReq("1"),
			reply:   reply(rpl, "1000", "2000", a, l60, p86400, p172800, "")},
		{name: "reply to a renew: reservation, and the stale prefix withdrawn with 0 lifetimes",
			pkt:     juniper("VLAN2701", macA, req(dhcpv6.MessageTypeRenew, macA, serverDUID, iapd(1, prefixStale))),
			request: dissection{reqType + "5", "0", iid, "", "2636", "0", "0", stale, l60, "3600", "7200", "", "547"},
			reply:   reply(rpl, "1000", "2000", a+","+stale, l60+","+l60, p86400+",0", p172800+",0", "")},
		{name: "reply to a renew of an unknown MAC naming a prefix: withdrawn only",
			pkt:     juniper("VLAN2701", macUnknown, req(dhcpv6.MessageTypeRenew, macUnknown, serverDUID, iapd(1, prefixStale))),
			request: dissection{reqType + "5", "0", iid, "", "2636", "0", "0", stale, l60, "3600", "7200", "", "547"},
			reply:   reply(rpl, "0", "0", stale, l60, "0", "0", "")},
		{name: "reply to a renew NoBinding",
			pkt:     juniper("VLAN2701", macUnknown, req(dhcpv6.MessageTypeRenew, macUnknown, serverDUID, iapd(1))),
			request: juniperReq("5"),
			reply:   reply(rpl, "0", "0", "", "", "", "", noBinding)},
		{name: "reply to a rebind with fresh lifetimes",
			pkt:     juniper("VLAN2701", macA, req(dhcpv6.MessageTypeRebind, macA, nil, iapd(1, prefixA))),
			request: dissection{reqType + "6", "0", iid, "", "2636", "0", "0", a, l60, "3600", "7200", "", "547"},
			reply:   reply(rpl, "1000", "2000", a, l60, p86400, p172800, "")},
		{name: "reply to a release: top-level Success",
			pkt:     juniper("VLAN2701", macA, req(dhcpv6.MessageTypeRelease, macA, serverDUID, iapd(1, prefixA))),
			request: dissection{reqType + "8", "0", iid, "", "2636", "0", "0", a, l60, "3600", "7200", "", "547"},
			reply:   reply(rpl, "", "", "", "", "", "", success)},
		{name: "reply to a release of an unknown IA: Success, NoBinding in the IA",
			pkt:     juniper("VLAN2701", macUnknown, req(dhcpv6.MessageTypeRelease, macUnknown, serverDUID, iapd(1, prefixStale))),
			request: dissection{reqType + "8", "0", iid, "", "2636", "0", "0", stale, l60, "3600", "7200", "", "547"},
			reply:   reply(rpl, "0", "0", "", "", "", "", success+","+noBinding)},
		{name: "reply to a decline: top-level Success",
			pkt:     juniper("VLAN2701", macA, req(dhcpv6.MessageTypeDecline, macA, serverDUID, iapd(1, prefixA))),
			request: dissection{reqType + "9", "0", iid, "", "2636", "0", "0", a, l60, "3600", "7200", "", "547"},
			reply:   reply(rpl, "", "", "", "", "", "", success)},
		{name: "reply to an information-request",
			pkt:     juniper("VLAN2701", macA, req(dhcpv6.MessageTypeInformationRequest, macA, nil)),
			request: juniperReqNoIA("11"),
			reply:   reply(rpl, "", "", "", "", "", "", "")},
		{name: "two relay levels, relay source port echoed, reply to the source port",
			opts: &depth2, src: netip.MustParseAddrPort("[2001:db8:ffff::1]:40123"),
			pkt: relay.Encapsulate(req(dhcpv6.MessageTypeSolicit, macA, nil, iapd(1)),
				relay.Forward{HopCount: 1, LinkAddr: netip.MustParseAddr("2001:db8:ffff::1"), PeerAddr: netip.MustParseAddr("2001:db8:ffff::7"),
					InterfaceID: []byte("core"), HasSourcePort: true, SourcePort: 40123},
				relay.Forward{LinkAddr: linkAddr, PeerAddr: vmPeer, InterfaceID: []byte("VLAN2701"), RemoteID: relay.JuniperRemoteID(macA)}),
			request: dissection{"12,12,1", "1,0", "636f7265," + iid, "40123", "2636", "0", "0", "", "", "", "", "", "547"},
			reply:   dissection{"13,13,2", "1,0", "636f7265," + iid, "40123", "", "1000", "2000", a, l60, p86400, p172800, "", "40123"}},
	}

	path := filepath.Join(t.TempDir(), "replies.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := capture.NewWriter(f)
	if err != nil {
		t.Fatal(err)
	}
	var want []dissection
	for i, tt := range tests {
		opts := testOptions
		if tt.opts != nil {
			opts = *tt.opts
		}
		h, _ := newTestHandler(t, opts)
		src := tt.src
		if !src.IsValid() {
			src = relayAddr
		}
		r, err := h.Handle(src, tt.pkt)
		if err != nil {
			t.Fatalf("%s: Handle: %v", tt.name, err)
		}
		at := testNow.Add(time.Duration(i) * time.Second)
		if err := w.WritePacket(at, src, tsharkServer, tt.pkt); err != nil {
			t.Fatal(err)
		}
		if err := w.WritePacket(at.Add(time.Millisecond), tsharkServer, r.Dst, r.Data); err != nil {
			t.Fatal(err)
		}
		want = append(want, tt.request, tt.reply)
	}
	// The canary: a Relay-Reply around a Reply whose IA_PD holds only its
	// IAID (4 of at least 12 bytes). tshark must flag it, or the verdict
	// columns prove nothing. (A cut packet would not do: tshark's DHCPv6
	// dissector silently stops at an option that runs past the end.)
	chain, err := relay.Decode(tests[0].pkt)
	if err != nil {
		t.Fatal(err)
	}
	bad := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeReply}
	bad.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionIAPD, OptionData: []byte{0, 0, 0, 1}})
	if err := w.WritePacket(testNow.Add(time.Hour), tsharkServer, relayAddr, chain.Reply(bad)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	lines := runTshark(t, tshark, path, append(append([]string{"frame.number"}, tsharkVerdict...), tsharkColumns...))
	if len(lines) != len(want)+1 {
		t.Fatalf("tshark dissected %d frames, want %d:\n%s", len(lines), len(want)+1, strings.Join(lines, "\n"))
	}
	if v := strings.Split(lines[len(want)], "\t"); len(v) < 5 || v[2] == "" || !strings.Contains(v[3], severityError) {
		t.Errorf("the canary, a reply with a 4-byte IA_PD, is not flagged malformed with an expert error by tshark: %q", lines[len(want)])
	}
	for i, line := range lines[:len(want)] {
		tt := tests[i/2]
		what := "reply"
		if i%2 == 0 {
			what = "request"
		}
		cols := strings.Split(line, "\t")
		if len(cols) != 1+len(tsharkVerdict)+len(tsharkColumns) {
			t.Fatalf("frame %d: %d fields from tshark: %q", i+1, len(cols), line)
		}
		// Checksum status 1 is Good; no malformed packet, no expert info
		// at all (the dissector raises none for these packets: not even a
		// note or a chat, so any would be news).
		if v := cols[1:5]; v[0] != "1" || v[1] != "" || v[2] != "" || v[3] != "" {
			t.Errorf("%s, %s (frame %d): tshark says: checksum status %q, malformed %q, expert severity %q: %q",
				tt.name, what, i+1, v[0], v[1], v[2], v[3])
		}
		var got dissection
		copy(got[:], cols[5:])
		if got != want[i] {
			t.Errorf("%s, %s (frame %d): tshark reads%s\nwant%s", tt.name, what, i+1, got, want[i])
		}
	}
}

// runTshark dissects file with UDP checksums verified and returns, per
// frame, the fields tab-separated, repeated values joined by commas.
func runTshark(t *testing.T, tshark, file string, fields []string) []string {
	t.Helper()
	args := []string{"-r", file, "-n", "-o", "udp.check_checksum:TRUE", "-T", "fields",
		"-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	cmd := exec.Command(tshark, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.Split(strings.TrimRight(string(out), "\n"), "\n")
}
