package httpapi

import (
	"cmp"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// Counts counts a pool's allocations by state.
type Counts struct {
	Active      int `json:"active"`
	Gone        int `json:"gone"`
	Quarantined int `json:"quarantined"`
}

// Total is the number of prefixes taken, in any state.
func (c Counts) Total() int { return c.Active + c.Gone + c.Quarantined }

func (c *Counts) addN(s allocator.State, n int) {
	switch s {
	case allocator.StateActive:
		c.Active += n
	case allocator.StateGone:
		c.Gone += n
	case allocator.StateQuarantined:
		c.Quarantined += n
	}
}

// Pool is one entry of /v1/pools.
type Pool struct {
	// Name is the mapping key (the CloudStack pod UUID).
	Name        string       `json:"name"`
	Prefix      netip.Prefix `json:"prefix"`
	PrefixLen   int          `json:"prefix-len"`
	InterfaceID string       `json:"interface-id"`
	// IP6CIDR is the VMs' SLAAC subnet; "" when not configured.
	IP6CIDR string `json:"ip6-cidr"`
	// Size is the number of delegable prefixes, 2^(prefix-len − pool
	// length); a float, since a /40 cut in /128s has 2^88.
	Size float64 `json:"size"`
	// Free is Size less the prefixes taken in any state.
	Free   float64 `json:"free"`
	Counts Counts  `json:"counts"`
}

// PoolSize returns the number of prefixes of p's PrefixLen in p.
func PoolSize(p *allocator.Pool) float64 {
	return math.Exp2(float64(p.PrefixLen - p.Prefix.Bits()))
}

// PoolOf returns the view of p, with c its counts.
func PoolOf(p *allocator.Pool, c Counts) Pool {
	v := Pool{
		Name: p.Name, Prefix: p.Prefix, PrefixLen: p.PrefixLen, InterfaceID: p.InterfaceID,
		Size: PoolSize(p), Counts: c,
	}
	if p.IP6CIDR.IsValid() {
		v.IP6CIDR = p.IP6CIDR.String()
	}
	v.Free = max(v.Size-float64(c.Total()), 0)
	return v
}

// Allocation is one entry of /v1/allocations, with the fields of
// `cloudstack-pd allocations --json`.
type Allocation struct {
	MAC    string       `json:"mac"`
	Prefix netip.Prefix `json:"prefix"`
	// Pool is the mapping key; InterfaceID the pool's.
	Pool        string          `json:"pool"`
	InterfaceID string          `json:"interface-id"`
	VMID        string          `json:"vm-id"`
	VMName      string          `json:"vm-name"`
	NICID       string          `json:"nic-id"`
	State       allocator.State `json:"state"`
	Since       *time.Time      `json:"since"`
	// GoneAt is when the NIC was first missing from CloudStack, null unless
	// gone or quarantined; QuarantinedAt when the prefix was released.
	GoneAt        *time.Time `json:"gone-at"`
	QuarantinedAt *time.Time `json:"quarantined-at"`
	// IP6 is the NIC's IPv6 address; "" when unknown.
	IP6 string `json:"ip6"`
	// IP6CIDR is the pool's ip6-cidr (the VMs' SLAAC subnet) stored with
	// the allocation when it was last written; "" when none.
	IP6CIDR string `json:"ip6-cidr"`
	// Source is who made the allocation: "sync" or "import-kea".
	Source string `json:"source"`
}

// AllocationOf returns the view of a; p is its pool (nil when unknown).
func AllocationOf(a *allocator.Allocation, p *allocator.Pool) Allocation {
	v := Allocation{
		MAC: a.MAC.String(), Prefix: a.Prefix, Pool: a.Pool,
		VMID: a.VMID, VMName: a.VMName, NICID: a.NICID, State: a.State,
		Since: timePtr(a.Since), GoneAt: timePtr(a.GoneAt), QuarantinedAt: timePtr(a.QuarantinedAt),
		Source: a.Source,
	}
	if p != nil {
		v.InterfaceID = p.InterfaceID
	}
	if a.IP6.IsValid() {
		v.IP6 = a.IP6.String()
	}
	if a.IP6CIDR.IsValid() {
		v.IP6CIDR = a.IP6CIDR.String()
	}
	return v
}

// Lease is one entry of /v1/leases: a binding the server recorded.
type Lease struct {
	// ClientDUID and IAID identify the IA_PD.
	ClientDUID string       `json:"client-duid"`
	IAID       uint32       `json:"iaid"`
	MAC        string       `json:"mac"`
	Pool       string       `json:"pool"`
	Prefix     netip.Prefix `json:"prefix"`
	// Lifetimes in seconds, as sent.
	PreferredLifetime uint32 `json:"preferred-lifetime"`
	ValidLifetime     uint32 `json:"valid-lifetime"`
	// Expires is when the valid lifetime runs out; Expired says it has.
	Expires *time.Time `json:"expires"`
	Expired bool       `json:"expired"`
	// LastExchange is when the IA was last answered, LastMessage the type
	// of that message (REQUEST, RENEW, …).
	LastExchange *time.Time `json:"last-exchange"`
	LastMessage  string     `json:"last-message"`
	// What the innermost relay said.
	RelaySource string `json:"relay-source"`
	LinkAddress string `json:"link-address"`
	PeerAddress string `json:"peer-address"`
	InterfaceID string `json:"interface-id"`
	RemoteID    string `json:"remote-id"`
	RelayID     string `json:"relay-id"`
}

// LeaseOf returns the view of b at time now.
func LeaseOf(b *allocator.Binding, now time.Time) Lease {
	v := Lease{
		ClientDUID: net.HardwareAddr(b.ClientDUID).String(), IAID: b.IAID, MAC: b.MAC.String(),
		Pool: b.Pool, Prefix: b.Prefix,
		PreferredLifetime: b.PreferredLifetime, ValidLifetime: b.ValidLifetime,
		Expires: timePtr(b.Expires), LastExchange: timePtr(b.LastExchange), LastMessage: b.LastMessage,
		InterfaceID: relay.Printable(b.InterfaceID), RemoteID: net.HardwareAddr(b.RemoteID).String(), RelayID: net.HardwareAddr(b.RelayID).String(),
	}
	v.Expired = !b.Expires.IsZero() && !now.Before(b.Expires)
	if b.RelaySource.IsValid() {
		v.RelaySource = b.RelaySource.String()
	}
	if b.LinkAddress.IsValid() {
		v.LinkAddress = b.LinkAddress.String()
	}
	if b.PeerAddress.IsValid() {
		v.PeerAddress = b.PeerAddress.String()
	}
	return v
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// comparePrefix orders prefixes by address, then length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// countCache counts allocations by pool and state once per table
// snapshot: a Table never changes, so a scrape or a /v1/pools after the
// first costs nothing until the next swap.
type countCache struct {
	mu     sync.Mutex
	table  *allocator.Table
	counts map[string]Counts
}

// get returns the counts by pool name of t.
func (c *countCache) get(t *allocator.Table) map[string]Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.table == t && c.counts != nil {
		return c.counts
	}
	counts := make(map[string]Counts, len(t.Pools()))
	for pool, states := range t.StateCounts() {
		var pc Counts
		for s, n := range states {
			pc.addN(s, n)
		}
		counts[pool] = pc
	}
	c.table, c.counts = t, counts
	return counts
}
