package allocator

import (
	"net"
	"net/netip"
	"testing"
)

// TestPoolByLinkAddress checks Kea's subnet selection by a relay's
// link-address: the pool whose ip6-cidr holds it, the most specific one;
// never for ::, a link-local address or an address outside every ip6-cidr.
func TestPoolByLinkAddress(t *testing.T) {
	wide := Pool{Name: "wide", Prefix: netip.MustParsePrefix("2001:db8:500::/40"), PrefixLen: 60, InterfaceID: "VLAN5",
		IP6CIDR: netip.MustParsePrefix("2001:db8:100::/48")}
	tbl, err := NewTable([]Pool{wide, poolA, poolB}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		addr string
		want string // "" for none
	}{
		{"2001:db8:100::1", "pod-a"}, // in pod-a's /64 and wide's /48: the /64 wins
		{"2001:db8:100:1::1", "wide"},
		{"2001:db8:999::1", ""},
		{"::", ""},
		{"fe80::1", ""},
		{"::ffff:192.0.2.1", ""},
	} {
		p, ok := tbl.PoolByLinkAddress(netip.MustParseAddr(c.addr))
		got := ""
		if ok {
			got = p.Name
		}
		if got != c.want {
			t.Errorf("PoolByLinkAddress(%s) = %q, want %q", c.addr, got, c.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { tbl.PoolByLinkAddress(netip.MustParseAddr("2001:db8:100::1")) }); n != 0 {
		t.Errorf("PoolByLinkAddress allocates %v times", n)
	}
}

// TestOverlapsOther checks the ownership test of a prefix a client names,
// on a table with pool bitmaps and on one with a prefix index (a pool too
// large for a bitmap).
func TestOverlapsOther(t *testing.T) {
	huge := Pool{Name: "huge", Prefix: netip.MustParsePrefix("2001:db8::/32"), PrefixLen: 60, InterfaceID: "VLAN9"}
	m1, m2, m3 := mac("06:00:00:00:00:01"), mac("06:00:00:00:00:02"), mac("06:00:00:00:00:03")
	for _, c := range []struct {
		name string
		pool Pool
	}{{"bitmap", poolA}, {"prefix index", huge}} {
		t.Run(c.name, func(t *testing.T) {
			allocs := []Allocation{
				{Pool: c.pool.Name, MAC: m1, Prefix: netip.MustParsePrefix("2001:db8:200::/60"), State: StateActive},
				{Pool: c.pool.Name, MAC: m2, Prefix: netip.MustParsePrefix("2001:db8:200:10::/60"), State: StateQuarantined},
			}
			tbl, err := NewTable([]Pool{c.pool, poolSmall}, allocs)
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				prefix string
				mac    net.HardwareAddr
				want   bool
			}{
				{"2001:db8:200::/60", m1, false},     // its own
				{"2001:db8:200::/60", m2, true},      // m1's
				{"2001:db8:200::/60", m3, true},      // m1's, m3 has none
				{"2001:db8:200::/60", nil, true},     // m1's, no MAC known
				{"2001:db8:200:10::/60", m1, true},   // m2's, quarantined
				{"2001:db8:200:10::/60", m2, false},  // its own, quarantined
				{"2001:db8:200:20::/60", m1, false},  // nobody's
				{"2001:db8:200::/64", m2, true},      // inside m1's
				{"2001:db8:200::/64", m1, false},     // inside its own
				{"2001:db8:200::/56", m1, true},      // holds m1's and m2's
				{"2001:db8:200:100::/56", m1, false}, // holds nobody's
				{"2001:db8:200::/40", m3, true},      // too large to look at each: another's
				{"2001:db8:400::/58", m1, false},     // a pool without allocations
				{"2001:db9::/60", m1, false},         // in no pool
			} {
				if got := tbl.OverlapsOther(netip.MustParsePrefix(tc.prefix), tc.mac); got != tc.want {
					t.Errorf("OverlapsOther(%s, %v) = %v, want %v", tc.prefix, tc.mac, got, tc.want)
				}
			}
			if n := testing.AllocsPerRun(100, func() { tbl.OverlapsOther(netip.MustParsePrefix("2001:db8:200::/56"), m1) }); n != 0 {
				t.Errorf("OverlapsOther allocates %v times", n)
			}
		})
	}
}
