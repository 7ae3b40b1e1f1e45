package synth

import "testing"

// TestRelayLinkAddr: every relay of a VLAN has its own link-address, in
// the pool's ip6-cidr (so that the link-address rule and Kea's subnet
// selection find the pool), and relay 0's is LinkAddr.
func TestRelayLinkAddr(t *testing.T) {
	pools := Pools(5)
	seen := map[string]bool{}
	for k, p := range pools {
		if RelayLinkAddr(k, 0) != LinkAddr(k) {
			t.Errorf("pool %d: relay 0 has %s, LinkAddr %s", k, RelayLinkAddr(k, 0), LinkAddr(k))
		}
		for _, r := range []int{0, 1, 127, 255, 256, 65535, 1 << 20} {
			a := RelayLinkAddr(k, r)
			if !p.IP6CIDR.Contains(a) {
				t.Errorf("relay %d of pool %d: %s outside %s", r, k, a, p.IP6CIDR)
			}
			if seen[a.String()] {
				t.Errorf("relay %d of pool %d: %s given twice", r, k, a)
			}
			seen[a.String()] = true
		}
	}
}
