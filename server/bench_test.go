package server

import (
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
)

// BenchmarkHandle measures the handler path of a relayed exchange: decode,
// rules, table lookup, encode, as the listener's workers run it
// (HandleAppend into a buffer reused from packet to packet). allocs/op is
// the allocations per answered packet (issue 7's target: at most 10).
func BenchmarkHandle(b *testing.B) {
	cases := []struct {
		name string
		pkt  []byte
	}{
		{"solicit", juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1)))},
		{"request", juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeRequest, clientID(macA), serverID(serverDUID), iapd(1)))},
		{"renew", juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeRenew, clientID(macA), serverID(serverDUID), iapd(1, prefixA)))},
		{"unknown-mac", juniper("VLAN2701", macUnknown, msg(dhcpv6.MessageTypeSolicit, clientID(macUnknown), iapd(1)))},
	}
	src := netip.MustParseAddrPort("[2001:db8:ffff::1]:547")
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			h, _ := newTestHandler(b, testOptions)
			b.ReportAllocs()
			b.SetBytes(int64(len(c.pkt)))
			var out []byte
			for b.Loop() {
				r, err := h.HandleAppend(out[:0], src, c.pkt)
				if err != nil {
					b.Fatal(err)
				}
				out = r.Data
			}
		})
	}
	// The request again, with serve's sink: the Recorder (its store is
	// written only by Flush, which does not run here).
	b.Run("request+recorder", func(b *testing.B) {
		h, err := NewHandler(HandlerConfig{
			Table: allocator.NewLive(testTable(b)), ServerID: serverDUID, Options: testOptions,
			Bindings: NewRecorder(nil, 0, nil), Now: func() time.Time { return testNow },
		})
		if err != nil {
			b.Fatal(err)
		}
		pkt := cases[1].pkt
		b.ReportAllocs()
		b.SetBytes(int64(len(pkt)))
		var out []byte
		for b.Loop() {
			r, err := h.HandleAppend(out[:0], src, pkt)
			if err != nil {
				b.Fatal(err)
			}
			out = r.Data
		}
	})
}
