package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/leasequery"
)

// TestLeasequeryFlags: each query flag makes its query; a bad value or a
// bulk-only query without --bulk is refused naming the flag.
func TestLeasequeryFlags(t *testing.T) {
	base := leasequeryFlags{server: "[2001:db8::2]:547"}
	with := func(f func(*leasequeryFlags)) leasequeryFlags { c := base; f(&c); return c }
	for _, tc := range []struct {
		name string
		f    leasequeryFlags
		want leasequery.Query
		err  string
	}{
		{"address", with(func(f *leasequeryFlags) { f.address = "2001:db8:200:30::1" }),
			leasequery.Query{Type: leasequery.ByAddress, LinkAddress: netip.IPv6Unspecified(), Address: netip.MustParseAddr("2001:db8:200:30::1")}, ""},
		{"client-id with colons, on a link", with(func(f *leasequeryFlags) { f.clientID = "00:03:00:01:06:32"; f.link = "2001:db8:1::1" }),
			leasequery.Query{Type: leasequery.ByClientID, LinkAddress: netip.MustParseAddr("2001:db8:1::1"), ClientID: []byte{0, 3, 0, 1, 6, 0x32}}, ""},
		{"relay-id bulk", with(func(f *leasequeryFlags) { f.relayID = "0002000a4c01"; f.bulk = true }),
			leasequery.Query{Type: leasequery.ByRelayID, LinkAddress: netip.IPv6Unspecified(), RelayID: []byte{0, 2, 0, 0x0a, 0x4c, 1}}, ""},
		{"link-address bulk", with(func(f *leasequeryFlags) { f.linkAddress = "2001:db8:1::1"; f.bulk = true }),
			leasequery.Query{Type: leasequery.ByLinkAddress, LinkAddress: netip.MustParseAddr("2001:db8:1::1")}, ""},
		{"remote-id bulk", with(func(f *leasequeryFlags) { f.remoteID = "00000a4c0632b2000479"; f.bulk = true }),
			leasequery.Query{Type: leasequery.ByRemoteID, LinkAddress: netip.IPv6Unspecified(), RemoteID: []byte{0, 0, 0x0a, 0x4c, 6, 0x32, 0xb2, 0, 4, 0x79}}, ""},
		{"link-address without bulk", with(func(f *leasequeryFlags) { f.linkAddress = "2001:db8:1::1" }), leasequery.Query{}, "add --bulk"},
		{"bad address", with(func(f *leasequeryFlags) { f.address = "10.0.0.1" }), leasequery.Query{}, "--address"},
		{"bad hex", with(func(f *leasequeryFlags) { f.clientID = "xyz" }), leasequery.Query{}, "--client-id"},
		{"bad server", leasequeryFlags{server: "host:547", address: "2001:db8::1"}, leasequery.Query{}, "--server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := leasequeryOptions(tc.f)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.Query.Type != tc.want.Type || o.Query.LinkAddress != tc.want.LinkAddress || o.Query.Address != tc.want.Address ||
				string(o.Query.ClientID) != string(tc.want.ClientID) || string(o.Query.RelayID) != string(tc.want.RelayID) ||
				string(o.Query.RemoteID) != string(tc.want.RemoteID) {
				t.Errorf("query %+v, want %+v", o.Query, tc.want)
			}
		})
	}
}
