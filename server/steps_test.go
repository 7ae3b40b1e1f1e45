package server

import (
	"errors"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
	"github.com/cloudstack-pd/cloudstack-pd/server/wire"
)

// The steps of the packet path tested one by one: decode, accept,
// identify, each without building an answer.

// decoded runs the decode step on pkt with opts, against the test table.
func decoded(t *testing.T, opts Options, pkt []byte) (*env, *request) {
	t.Helper()
	e := &env{opts: &opts, serverID: serverDUID, metrics: NewMetrics(nil), log: slog.New(slog.DiscardHandler), table: testTable(t)}
	req := &request{dec: wire.NewDecoder()}
	if err := req.decode(e, relayAddr, pkt); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return e, req
}

func TestDecodeStep(t *testing.T) {
	_, req := decoded(t, depth2, relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1)),
		relay.Forward{HopCount: 1, LinkAddr: linkAddr, InterfaceID: []byte("ldra")},
		relay.Forward{LinkAddr: linkAddr, PeerAddr: vmPeer, InterfaceID: []byte("VLAN2701"), RemoteID: relay.JuniperRemoteID(macA)}))
	if len(req.chain.Levels) != 2 || req.trusted != &req.chain.Levels[1] {
		t.Errorf("trusted level %p of %d, want the second", req.trusted, len(req.chain.Levels))
	}
	if req.msg.MessageType != dhcpv6.MessageTypeSolicit || req.src != relayAddr || len(req.clientID()) == 0 {
		t.Errorf("request %s from %s, client id %x", req.msg.MessageType, req.src, req.clientID())
	}
}

func TestIdentify(t *testing.T) {
	sol := func(iid string, mac []byte) []byte {
		return juniper(iid, mac, msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1)))
	}
	noRemoteID := relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1)),
		relay.Forward{LinkAddr: linkAddr, PeerAddr: vmPeer, InterfaceID: []byte("VLAN2701")})
	tests := []struct {
		name   string
		pkt    []byte
		result Result
		pool   string
		rule   PoolRule
		mac    string
		prefix netip.Prefix // the allocation, when there is one to serve
	}{
		{"prefix", sol("VLAN2701", macA), ResultPrefix, "pod-a", PoolByInterfaceID, macA.String(), prefixA},
		{"gone is served", sol("VLAN2701", macGone), ResultPrefix, "pod-a", PoolByInterfaceID, macGone.String(), prefixGone},
		{"quarantined", sol("VLAN2701", macQuar), ResultQuarantined, "pod-a", PoolByInterfaceID, macQuar.String(), netip.Prefix{}},
		{"other pool", sol("VLAN2701", macB), ResultOtherPool, "pod-a", PoolByInterfaceID, macB.String(), netip.Prefix{}},
		{"unknown MAC", sol("VLAN2701", macUnknown), ResultUnknownMAC, "pod-a", PoolByInterfaceID, macUnknown.String(), netip.Prefix{}},
		{"no pool, MAC still read", sol("VLAN9999", macA), ResultNoPool, "", "", macA.String(), netip.Prefix{}},
		{"no MAC", noRemoteID, ResultNoMAC, "pod-a", PoolByInterfaceID, "", netip.Prefix{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, req := decoded(t, testOptions, tt.pkt)
			var id identity
			identify(&id, e, req)
			if id.result != tt.result || id.poolName() != tt.pool || id.poolRule != tt.rule || id.mac.String() != tt.mac {
				t.Errorf("identity: result %s pool %q by %q mac %q; want %s %q by %q %q",
					id.result, id.poolName(), id.poolRule, id.mac, tt.result, tt.pool, tt.rule, tt.mac)
			}
			if id.hasAlloc != tt.prefix.IsValid() || id.hasAlloc && id.alloc.Prefix != tt.prefix {
				t.Errorf("allocation %v %v, want %v", id.hasAlloc, id.alloc.Prefix, tt.prefix)
			}
		})
	}
}

func TestAcceptPlans(t *testing.T) {
	rc := testOptions
	rc.RapidCommit = true
	cid, sid := clientID(macA), serverID(serverDUID)
	tests := []struct {
		name string
		opts Options
		msg  []byte
		want plan
		drop Reason
	}{
		{"solicit", testOptions, msg(dhcpv6.MessageTypeSolicit, cid, iapd(1)), plan{typ: dhcpv6.MessageTypeAdvertise, act: actIAs, md: modeAdvertise}, ""},
		{"solicit, rapid commit off", testOptions, msg(dhcpv6.MessageTypeSolicit, cid, rapidCommit, iapd(1)), plan{typ: dhcpv6.MessageTypeAdvertise, act: actIAs, md: modeAdvertise}, ""},
		{"solicit, rapid commit", rc, msg(dhcpv6.MessageTypeSolicit, cid, rapidCommit, iapd(1)), plan{typ: dhcpv6.MessageTypeReply, act: actIAs, md: modeAssign, rapidCommit: true}, ""},
		{"request", testOptions, msg(dhcpv6.MessageTypeRequest, cid, sid, iapd(1)), plan{typ: dhcpv6.MessageTypeReply, act: actIAs, md: modeAssign}, ""},
		{"renew", testOptions, msg(dhcpv6.MessageTypeRenew, cid, sid, iapd(1)), plan{typ: dhcpv6.MessageTypeReply, act: actIAs, md: modeRenew}, ""},
		{"rebind", testOptions, msg(dhcpv6.MessageTypeRebind, cid, iapd(1)), plan{typ: dhcpv6.MessageTypeReply, act: actIAs, md: modeRenew}, ""},
		{"release", testOptions, msg(dhcpv6.MessageTypeRelease, cid, sid, iapd(1)), plan{typ: dhcpv6.MessageTypeReply, act: actRelease}, ""},
		{"decline", testOptions, msg(dhcpv6.MessageTypeDecline, cid, sid, iapd(1)), plan{typ: dhcpv6.MessageTypeReply, act: actDecline}, ""},
		{"information-request", testOptions, msg(dhcpv6.MessageTypeInformationRequest, cid), plan{typ: dhcpv6.MessageTypeReply, act: actInfo}, ""},
		{"request for another server", testOptions, msg(dhcpv6.MessageTypeRequest, cid, serverID(otherDUID), iapd(1)), plan{}, ReasonServerIDMismatch},
		{"solicit naming a server", testOptions, msg(dhcpv6.MessageTypeSolicit, cid, sid, iapd(1)), plan{}, ReasonServerIDPresent},
		{"renew without client id", testOptions, msg(dhcpv6.MessageTypeRenew, sid, iapd(1)), plan{}, ReasonClientID},
		{"confirm", testOptions, msg(dhcpv6.MessageTypeConfirm, cid), plan{}, ReasonConfirm},
		{"information-request with IA", testOptions, msg(dhcpv6.MessageTypeInformationRequest, cid, iapd(1)), plan{}, ReasonInfoRequestIA},
		{"advertise", testOptions, msg(dhcpv6.MessageTypeAdvertise, cid), plan{}, ReasonUnexpectedType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, req := decoded(t, tt.opts, juniper("VLAN2701", macA, tt.msg))
			r := rules{env: e, req: req, id: &identity{}, out: &scratch{}}
			p, err := r.accept()
			var d *Drop
			if tt.drop != "" {
				if !errors.As(err, &d) || d.Reason != tt.drop {
					t.Fatalf("error %v, want a drop for %s", err, tt.drop)
				}
				return
			}
			if err != nil || p != tt.want {
				t.Fatalf("plan %+v, %v; want %+v", p, err, tt.want)
			}
		})
	}
}

// TestIdentifiedOnce checks, through the handler, that a packet is
// identified once when its answer depends on the client (one pool
// selection counted), and not at all when it is dropped by the message
// rules or is an Information-request.
func TestIdentifiedOnce(t *testing.T) {
	cid, sid := clientID(macA), serverID(serverDUID)
	tests := []struct {
		name string
		msg  []byte
		want float64
	}{
		{"solicit", msg(dhcpv6.MessageTypeSolicit, cid, iapd(1), iapd(2)), 1},
		{"request", msg(dhcpv6.MessageTypeRequest, cid, sid, iapd(1)), 1},
		{"release", msg(dhcpv6.MessageTypeRelease, cid, sid, iapd(1)), 1},
		{"decline", msg(dhcpv6.MessageTypeDecline, cid, sid, iapd(1)), 1},
		{"information-request", msg(dhcpv6.MessageTypeInformationRequest, cid), 0},
		{"request for another server", msg(dhcpv6.MessageTypeRequest, cid, serverID(otherDUID), iapd(1)), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := newTestHandler(t, testOptions)
			_, _ = h.Handle(relayAddr, juniper("VLAN2701", macA, tt.msg))
			got := 0.0
			for _, l := range poolRuleLabels {
				got += testutil.ToFloat64(h.Metrics().PoolSelections.WithLabelValues(l))
			}
			if got != tt.want {
				t.Errorf("%v pool selections, want %v", got, tt.want)
			}
		})
	}
}
