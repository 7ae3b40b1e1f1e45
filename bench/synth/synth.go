// Package synth makes synthetic allocation tables, the same for every
// caller: the benchmarks of the allocator and of the server, and
// `cloudstack-pd bench`, whose load generator plays the clients whose
// reservations this package generates. It is production code (the bench
// subcommands link it); the store-damaging test fixtures stay in
// allocator/allocatortest.
//
// Client i (0 ≤ i < 2^32) has MAC 02:b0:i (i as 4 big-endian bytes; a
// locally administered unicast address), lives in pool i mod P of P pools,
// and owns the (i div P)-th delegated /60 of that pool's /40. Pool k is
// named "bench-pod-k", has interface-id "VLAN(2700+k)", prefix
// 2001:db8:(k+1)00::/40 and ip6-cidr 2001:db8:0:k::/64, so that the
// relay's link-address 2001:db8:0:k::1 lies in it (Kea 2.2 selects a
// subnet by interface-id only when the link-address is global).
package synth

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
)

// MaxPools is the most pools Pools makes: one /40 each inside 2001:db8::/32.
const MaxPools = 255

// PrefixLen is the length of every delegated prefix.
const PrefixLen = 60

// perPool is how many /60s a /40 holds.
const perPool = 1 << (PrefixLen - 40)

// Pools returns n synthetic pools (1 ≤ n ≤ MaxPools).
func Pools(n int) []allocator.Pool {
	out := make([]allocator.Pool, n)
	for k := range out {
		out[k] = allocator.Pool{
			Name:        fmt.Sprintf("bench-pod-%d", k),
			Prefix:      netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(k + 1)}), 40),
			PrefixLen:   PrefixLen,
			InterfaceID: InterfaceID(k),
			IP6CIDR:     netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 6: 0, 7: byte(k)}), 64),
		}
	}
	return out
}

// InterfaceID is the relay interface-id naming pool k's VLAN.
func InterfaceID(k int) string { return fmt.Sprintf("VLAN%d", 2700+k) }

// LinkAddr is the link-address a relay on pool k's VLAN puts in its
// Relay-Forward: the first address of the pool's ip6-cidr.
func LinkAddr(k int) netip.Addr { return RelayLinkAddr(k, 0) }

// RelayLinkAddr is the link-address relay r (0 ≤ r < 2^32-1) puts in its
// Relay-Forwards of pool k's VLAN: address r+1 of the pool's ip6-cidr,
// so that several relays of one VLAN each have their own, as routers on
// one link do. Relay 0's is LinkAddr(k).
func RelayLinkAddr(k, r int) netip.Addr {
	a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 6: 0, 7: byte(k)}
	binary.BigEndian.PutUint32(a[12:], uint32(r+1))
	return netip.AddrFrom16(a)
}

// MAC returns client i's MAC.
func MAC(i int) net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	PutMAC(m, i)
	return m
}

// PutMAC writes client i's MAC into m[:6].
func PutMAC(m []byte, i int) {
	m[0], m[1] = 0x02, 0xb0
	binary.BigEndian.PutUint32(m[2:6], uint32(i))
}

// Index returns the client whose MAC is m, and false when m is not a
// synthetic MAC.
func Index(m []byte) (int, bool) {
	if len(m) != 6 || m[0] != 0x02 || m[1] != 0xb0 {
		return 0, false
	}
	return int(binary.BigEndian.Uint32(m[2:6])), true
}

// Pool returns the index of client i's pool among n pools.
func Pool(i, pools int) int { return i % pools }

// Prefix returns client i's delegated prefix when there are pools pools.
func Prefix(i, pools int) netip.Prefix {
	k, j := i%pools, i/pools
	a := [16]byte{0x20, 0x01, 0x0d, 0xb8, byte(k + 1)}
	// the /60 number j takes bits 40..59: bytes 5, 6 and the top nibble of 7
	v := uint32(j) << 4
	a[5], a[6], a[7] = byte(v>>16), byte(v>>8), byte(v)
	return netip.PrefixFrom(netip.AddrFrom16(a), PrefixLen)
}

// Capacity is how many clients pools pools hold.
func Capacity(pools int) int { return pools * perPool }

// checkFits fails when n clients do not fit in pools pools.
func checkFits(n, pools int) error {
	if n > Capacity(pools) {
		return fmt.Errorf("%d clients do not fit in %d pools of %d prefixes", n, pools, perPool)
	}
	return nil
}

// Allocation returns client i's allocation, active, made at since, with
// its pool's ip6-cidr.
func Allocation(pools []allocator.Pool, i int, since time.Time) allocator.Allocation {
	p := &pools[i%len(pools)]
	return allocator.Allocation{
		Pool:    p.Name,
		MAC:     MAC(i),
		Prefix:  Prefix(i, len(pools)),
		State:   allocator.StateActive,
		Since:   since,
		IP6CIDR: p.IP6CIDR,
		Source:  "bench",
	}
}

// Allocations returns the allocations of clients 0 to n-1.
func Allocations(pools []allocator.Pool, n int, since time.Time) ([]allocator.Allocation, error) {
	if err := checkFits(n, len(pools)); err != nil {
		return nil, err
	}
	out := make([]allocator.Allocation, n)
	for i := range out {
		out[i] = Allocation(pools, i, since)
	}
	return out, nil
}

// Fill writes the allocations of clients 0 to n-1 into st, batch clients
// per transaction (0: 100,000).
func Fill(st *allocator.Store, pools []allocator.Pool, n, batch int, since time.Time) error {
	if err := checkFits(n, len(pools)); err != nil {
		return err
	}
	if batch <= 0 {
		batch = 100_000
	}
	for lo := 0; lo < n; lo += batch {
		hi := min(lo+batch, n)
		err := st.Update(pools, func(tx *allocator.Tx) error {
			for i := lo; i < hi; i++ {
				if err := tx.Put(Allocation(pools, i, since)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
