package allocator

import (
	"fmt"
	"net"
	"slices"
	"sync/atomic"
)

// Table is an immutable snapshot of the pools and their allocations. It is
// safe for any number of concurrent readers and is never modified after
// NewTable returns: writers build a new Table and swap it in (see Live).
type Table struct {
	pools  []Pool
	byName map[string]*Pool
	byIID  map[string]*Pool
	// byMAC maps string(MAC bytes) to the allocation of that MAC. A MAC has
	// at most one allocation in the whole table (one NIC, one pool).
	byMAC  map[string]*Allocation
	allocs []Allocation
}

// NewTable builds a snapshot and checks its invariants: pool names and
// interface-ids are unique, every allocation names a known pool, lies inside
// it with the pool's prefix length, and no MAC or prefix appears twice.
func NewTable(pools []Pool, allocs []Allocation) (*Table, error) {
	t := &Table{
		pools:  slices.Clone(pools),
		byName: make(map[string]*Pool, len(pools)),
		byIID:  make(map[string]*Pool, len(pools)),
		byMAC:  make(map[string]*Allocation, len(allocs)),
		allocs: slices.Clone(allocs),
	}
	for i := range t.pools {
		p := &t.pools[i]
		if _, dup := t.byName[p.Name]; dup {
			return nil, fmt.Errorf("pool %q: %w", p.Name, ErrDuplicatePool)
		}
		if q, dup := t.byIID[p.InterfaceID]; dup {
			return nil, fmt.Errorf("pools %q and %q: interface-id %q: %w", q.Name, p.Name, p.InterfaceID, ErrDuplicateInterfaceID)
		}
		t.byName[p.Name] = p
		t.byIID[p.InterfaceID] = p
	}
	prefixes := make(map[string]string, len(allocs))
	for i := range t.allocs {
		a := &t.allocs[i]
		p, ok := t.byName[a.Pool]
		if !ok {
			return nil, fmt.Errorf("allocation %s of %s: pool %q: %w", a.Prefix, a.MAC, a.Pool, ErrUnknownPool)
		}
		if err := p.Contains(a.Prefix); err != nil {
			return nil, fmt.Errorf("allocation of %s: %w", a.MAC, err)
		}
		if other, dup := t.byMAC[string(a.MAC)]; dup {
			return nil, fmt.Errorf("MAC %s in pools %q and %q: %w", a.MAC, other.Pool, a.Pool, ErrDuplicateMAC)
		}
		if owner, dup := prefixes[a.Prefix.String()]; dup {
			return nil, fmt.Errorf("prefix %s owned by %s and %s: %w", a.Prefix, net.HardwareAddr(owner), a.MAC, ErrDuplicatePrefix)
		}
		prefixes[a.Prefix.String()] = string(a.MAC)
		t.byMAC[string(a.MAC)] = a
	}
	return t, nil
}

// PoolByInterfaceID returns the pool whose interface-id is iid.
func (t *Table) PoolByInterfaceID(iid []byte) (*Pool, bool) {
	p, ok := t.byIID[string(iid)]
	return p, ok
}

// Pool returns the pool named name.
func (t *Table) Pool(name string) (*Pool, bool) {
	p, ok := t.byName[name]
	return p, ok
}

// Lookup returns the allocation of mac in any pool, in any state. The
// returned pointer is shared: callers must not modify it.
func (t *Table) Lookup(mac net.HardwareAddr) (*Allocation, bool) {
	a, ok := t.byMAC[string(mac)]
	return a, ok
}

// Pools returns the pools in config order. The slice must not be modified.
func (t *Table) Pools() []Pool { return t.pools }

// Allocations returns every allocation. The slice must not be modified.
func (t *Table) Allocations() []Allocation { return t.allocs }

// Live holds the current Table and lets writers swap a new one in
// atomically while readers keep answering from the old one.
type Live struct{ p atomic.Pointer[Table] }

// NewLive returns a Live holding t.
func NewLive(t *Table) *Live {
	l := &Live{}
	l.p.Store(t)
	return l
}

// Current returns the table in force. It never blocks.
func (l *Live) Current() *Table { return l.p.Load() }

// Swap puts t in force.
func (l *Live) Swap(t *Table) { l.p.Store(t) }

// Reader is what a server answers from: anything that yields the table in
// force. *Live is the local implementation; an etcd-fed replica is another.
type Reader interface {
	Current() *Table
}
