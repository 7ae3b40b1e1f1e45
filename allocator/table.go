package allocator

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Table is an immutable snapshot of the pools and their allocations. It is
// safe for any number of concurrent readers and is never modified after
// NewTable returns: writers build a new Table and swap it in (see Live).
//
// A table of a million allocations must load in well under two seconds
// and stay small, and the server looks a MAC up in it for every packet,
// so it does not keep a []Allocation: each allocation is a fixed-size
// record without pointers (which the garbage collector never scans), its
// MAC and strings are in two shared buffers, and an open-addressing index
// of record numbers finds a MAC. Find reads it without allocating;
// Lookup, At and Allocations build Allocation values from it.
type Table struct {
	pools  []Pool
	byName map[string]*Pool
	byIID  map[string]*Pool

	recs [][]rec // chunks of recChunk records
	n    int     // records
	macs []byte  // every MAC, one after the other
	strs string  // every string field, interned where repeated
	// What a TableBuilder added to a snapshot: spans with extraSpan set
	// point here instead of into macs and strs, which stay shared with
	// the snapshot it started from.
	extraMacs []byte
	extraStrs string
	// interned are the spans of the strings stored once (states,
	// sources, zones), for a TableBuilder to reuse.
	interned map[string]span
	locs     []*time.Location // the time zones of the records' times
	attrs    []attrs          // the records' shared fields (rec.attr)
	times    []recTimes       // the records' gone-at and quarantined-at times (rec.times)
	// baseTimes is len(times) when the table was built afresh: a
	// TableBuilder only appends to times, and Build compacts once they
	// have grown well beyond it.
	baseTimes int
	cidrs     []netip.Prefix // the distinct ip6-cidrs of the records
	index     []uint64       // by MAC hash: see slot
	seed      maphash.Seed
	// The prefixes in use, kept from the builder for OverlapsOther: the
	// pools' bitmaps (taken, see tableLoader) or, without them, the
	// index of record numbers by prefix hash (prefixes).
	taken    [][]uint64
	prefixes []uint64

	allOnce sync.Once
	all     []Allocation
	counts  atomic.Pointer[map[string]map[State]int]
}

// span is a part of Table.macs or Table.strs, or with extraSpan set in
// off, of Table.extraMacs or Table.extraStrs.
type span struct{ off, n uint32 }

// extraSpan marks a span of a table's extra buffers.
const extraSpan = 1 << 31

// stamp is a time.Time as a record keeps it.
type stamp struct {
	sec  int64
	nsec int32
	loc  uint32 // index in Table.locs; ^0: the zero Time
}

// rec is one allocation; the fields mirror Allocation's. It is 88 bytes:
// what most allocations share (state, source, ip6-cidr, zones) is in an
// attrs kept once, and the times only a released allocation has are in
// Table.times.
type rec struct {
	prefix              [16]byte
	ip6                 [16]byte
	sinceSec            int64
	mac                 span
	vmID, vmName, nicID span
	sinceNsec           int32
	attr                uint32 // index in Table.attrs
	times               uint32 // index in Table.times + 1; 0: no gone-at, no quarantined-at
	pool                uint16
	bits                uint8
	ip6Kind             uint8 // 0 none, 4 IPv4, 6 IPv6
}

// attrs are the fields of a record that most records share: each distinct
// attrs is kept once in Table.attrs.
type attrs struct {
	state, source span
	ip6Zone       span
	cidr          uint32 // index in Table.cidrs + 1; 0: none
	sinceLoc      uint32 // the since time's zone, index in Table.locs; ^0: no since
}

// recTimes are a record's gone-at and quarantined-at times, which only a
// released allocation has.
type recTimes struct{ goneAt, quarAt stamp }

// Entry is what the packet path needs of an allocation (see Table.Find).
type Entry struct {
	// Pool is the allocation's pool, shared: do not modify it.
	Pool   *Pool
	Prefix netip.Prefix
	State  State
}

// Served reports whether the entry's prefix is handed out to its MAC.
func (e Entry) Served() bool { return e.State == StateActive || e.State == StateGone }

// NewTable builds a snapshot and checks its invariants: pool names and
// interface-ids are unique, every allocation names a known pool, lies inside
// it with the pool's prefix length, and no MAC or prefix appears twice.
func NewTable(pools []Pool, allocs []Allocation) (*Table, error) {
	if err := checkPools(pools); err != nil {
		return nil, err
	}
	b := newTableLoader(pools, len(allocs))
	for i := range allocs {
		if err := b.add(&allocs[i]); err != nil {
			return nil, err
		}
	}
	return b.finish()
}

// PoolByInterfaceID returns the pool whose interface-id is iid.
func (t *Table) PoolByInterfaceID(iid []byte) (*Pool, bool) {
	p, ok := t.byIID[string(iid)]
	return p, ok
}

// PoolByLinkAddress returns the pool whose ip6-cidr (the VMs' subnet)
// contains a, the link-address of a relay, as Kea selects a subnet: the
// most specific such ip6-cidr, the first pool among equals. The
// unspecified address (an L2 relay's) and link-local addresses select
// nothing. It looks at each pool once and does not allocate.
func (t *Table) PoolByLinkAddress(a netip.Addr) (*Pool, bool) {
	if !a.Is6() || a.Is4In6() || a.IsUnspecified() || a.IsLinkLocalUnicast() {
		return nil, false
	}
	var best *Pool
	for i := range t.pools {
		p := &t.pools[i]
		if p.IP6CIDR.IsValid() && p.IP6CIDR.Contains(a) && (best == nil || p.IP6CIDR.Bits() > best.IP6CIDR.Bits()) {
			best = p
		}
	}
	return best, best != nil
}

// maxOverlapScan bounds the delegated prefixes of one pool that
// OverlapsOther looks at for a prefix shorter than the pool's prefix-len.
const maxOverlapScan = 64

// OverlapsOther reports whether prefix p overlaps the prefix of an
// allocation, in any pool and any state, of another MAC than mac (nil: of
// any MAC). A p that covers more than 64 delegated prefixes of a pool
// counts as overlapping when the pool has any allocation at all: the
// answer errs on the side of "another's". It does not allocate.
func (t *Table) OverlapsOther(p netip.Prefix, mac []byte) bool {
	if !p.IsValid() || !p.Addr().Is6() {
		return false
	}
	p = p.Masked()
	var own netip.Prefix
	if mac != nil {
		if i := t.find(mac); i >= 0 {
			r := t.rec(i)
			own = netip.PrefixFrom(netip.AddrFrom16(r.prefix), int(r.bits))
		}
	}
	for i := range t.pools {
		pool := &t.pools[i]
		if !pool.Prefix.IsValid() || !pool.Prefix.Overlaps(p) {
			continue
		}
		if p.Bits() >= pool.PrefixLen {
			c, err := p.Addr().Prefix(pool.PrefixLen)
			if err == nil && c != own && t.takenPrefix(i, c) {
				return true
			}
			continue
		}
		// p holds several of the pool's delegated prefixes.
		start := p
		if pool.Prefix.Bits() > p.Bits() {
			start = pool.Prefix // p holds the whole pool
		}
		if pool.PrefixLen-start.Bits() > 6 { // more than maxOverlapScan
			if t.poolHasAllocations(i, own) {
				return true
			}
			continue
		}
		n := 1 << (pool.PrefixLen - start.Bits())
		a := start.Addr()
		for range n {
			c := netip.PrefixFrom(a, pool.PrefixLen)
			if c != own && t.takenPrefix(i, c) {
				return true
			}
			a = nextPrefix(a, pool.PrefixLen)
		}
	}
	return false
}

// nextPrefix returns the address of the /bits prefix after the one at a.
func nextPrefix(a netip.Addr, bits int) netip.Addr {
	b := a.As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	if bits <= 64 {
		hi += 1 << uint(64-bits)
	} else {
		n := lo + 1<<uint(128-bits)
		if n < lo {
			hi++
		}
		lo = n
	}
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	return netip.AddrFrom16(b)
}

// takenPrefix reports whether c, a delegated prefix of pool i, is
// allocated to some MAC.
func (t *Table) takenPrefix(i int, c netip.Prefix) bool {
	pool := &t.pools[i]
	if pool.Contains(c) != nil {
		return false
	}
	a := c.Addr().As16()
	if t.taken != nil {
		bm := t.taken[i]
		if bm == nil {
			return false
		}
		k, w := prefixBit(pool, a)
		return bm[w]&k != 0
	}
	if len(t.prefixes) == 0 {
		return false
	}
	bits := uint8(c.Bits())
	n, _ := probe(t.prefixes, prefixHash(a, bits), func(n int) bool {
		r := t.rec(n)
		return r.prefix == a && r.bits == bits
	})
	return n >= 0
}

// poolHasAllocations reports whether pool i has an allocation other than
// the prefix own.
func (t *Table) poolHasAllocations(i int, own netip.Prefix) bool {
	if t.taken != nil {
		ownWord, ownBit := -1, uint64(0)
		if own.IsValid() && t.pools[i].Contains(own) == nil {
			ownBit, ownWord = prefixBit(&t.pools[i], own.Addr().As16())
		}
		for w, v := range t.taken[i] {
			if w == ownWord {
				v &^= ownBit
			}
			if v != 0 {
				return true
			}
		}
		return false
	}
	// No bitmaps: count the pool's records (a rare table shape).
	for j := range t.n {
		r := t.rec(j)
		if int(r.pool) == i && netip.PrefixFrom(netip.AddrFrom16(r.prefix), int(r.bits)) != own {
			return true
		}
	}
	return false
}

// Pool returns the pool named name.
func (t *Table) Pool(name string) (*Pool, bool) {
	p, ok := t.byName[name]
	return p, ok
}

// Find returns what the packet path needs of mac's allocation, in any
// pool and any state. It does not allocate.
func (t *Table) Find(mac []byte) (Entry, bool) {
	i := t.find(mac)
	if i < 0 {
		return Entry{}, false
	}
	r := t.rec(i)
	return Entry{
		Pool:   &t.pools[r.pool],
		Prefix: netip.PrefixFrom(netip.AddrFrom16(r.prefix), int(r.bits)),
		State:  State(t.str(t.attrs[r.attr].state)),
	}, true
}

// Lookup returns the allocation of mac in any pool, in any state. Its MAC
// and strings are shared with the table: do not modify them.
func (t *Table) Lookup(mac net.HardwareAddr) (*Allocation, bool) {
	i := t.find(mac)
	if i < 0 {
		return nil, false
	}
	a := t.At(i)
	return &a, true
}

// Len returns the number of allocations.
func (t *Table) Len() int { return t.n }

// recChunk is how many records a chunk holds: records are added without
// knowing how many will come, and chunks grow without copying.
const recChunk = 1 << 14

func (t *Table) rec(i int) *rec { return &t.recs[i/recChunk][i%recChunk] }

// At returns allocation i (0 ≤ i < Len), in the order the table was built
// from. Its MAC and strings are shared with the table: do not modify them.
func (t *Table) At(i int) Allocation {
	r := t.rec(i)
	at := &t.attrs[r.attr]
	a := Allocation{
		Pool:   t.pools[r.pool].Name,
		MAC:    net.HardwareAddr(t.macOf(r.mac)),
		Prefix: netip.PrefixFrom(netip.AddrFrom16(r.prefix), int(r.bits)),
		State:  State(t.str(at.state)),
		Since:  t.time(stamp{sec: r.sinceSec, nsec: r.sinceNsec, loc: at.sinceLoc}),
		VMID:   t.str(r.vmID),
		VMName: t.str(r.vmName),
		NICID:  t.str(r.nicID),
		Source: t.str(at.source),
	}
	if r.times != 0 {
		tm := &t.times[r.times-1]
		a.GoneAt, a.QuarantinedAt = t.time(tm.goneAt), t.time(tm.quarAt)
	}
	if at.cidr != 0 {
		a.IP6CIDR = t.cidrs[at.cidr-1]
	}
	switch r.ip6Kind {
	case 4:
		a.IP6 = netip.AddrFrom4([4]byte(r.ip6[12:]))
	case 6:
		a.IP6 = netip.AddrFrom16(r.ip6).WithZone(t.str(at.ip6Zone))
	}
	return a
}

// Pools returns the pools in config order. The slice must not be modified.
func (t *Table) Pools() []Pool { return t.pools }

// Allocations returns every allocation, in the order the table was built
// from. The slice must not be modified. The first call builds it, about
// 250 bytes per allocation, and the table keeps it: where Len, At or
// StateCounts do, prefer them.
func (t *Table) Allocations() []Allocation {
	t.allOnce.Do(func() {
		t.all = make([]Allocation, t.n)
		for i := range t.all {
			t.all[i] = t.At(i)
		}
	})
	return t.all
}

// StateCounts returns, by pool name, how many allocations are in each
// state. The map is computed once and shared: do not modify it.
func (t *Table) StateCounts() map[string]map[State]int {
	if c := t.counts.Load(); c != nil {
		return *c
	}
	c := make(map[string]map[State]int, len(t.pools))
	for i := range t.n {
		r := t.rec(i)
		name := t.pools[r.pool].Name
		if c[name] == nil {
			c[name] = map[State]int{}
		}
		c[name][State(t.str(t.attrs[r.attr].state))]++
	}
	t.counts.Store(&c)
	return c
}

func (t *Table) str(s span) string {
	if s.off&extraSpan != 0 {
		o := s.off &^ extraSpan
		return t.extraStrs[o : o+s.n]
	}
	return t.strs[s.off : s.off+s.n]
}

// macOf returns the MAC at s, with no room to append to.
func (t *Table) macOf(s span) []byte {
	if s.off&extraSpan != 0 {
		o := s.off &^ extraSpan
		return t.extraMacs[o : o+s.n : o+s.n]
	}
	return t.macs[s.off : s.off+s.n : s.off+s.n]
}

func (t *Table) time(s stamp) time.Time {
	if s.loc == ^uint32(0) {
		return time.Time{}
	}
	return time.Unix(s.sec, int64(s.nsec)).In(t.locs[s.loc])
}

// An index slot holds the upper 32 bits of the key's hash and the record
// number + 1; 0 is an empty slot. The hash bits spare reading the record
// of a slot that holds another key: a probe costs one cache miss, not
// three.
func slot(h uint64, n int32) uint64 { return h&^(1<<32-1) | uint64(n+1) }

// probe returns the record number of the key hashed to h in index, for
// which same reports true, or -1 and the empty slot where it would go.
func probe(index []uint64, h uint64, same func(n int) bool) (int, int) {
	mask := uint64(len(index) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		e := index[i]
		if e == 0 {
			return -1, int(i)
		}
		if e>>32 == h>>32 && same(int(uint32(e))-1) {
			return int(uint32(e)) - 1, int(i)
		}
	}
}

// probeMAC is probe of the MAC index for mac, whose hash is h.
func (t *Table) probeMAC(h uint64, mac []byte) (int, int) {
	return probe(t.index, h, func(n int) bool { return bytes.Equal(t.macOf(t.rec(n).mac), mac) })
}

// find returns the record number of mac, -1 when absent.
func (t *Table) find(mac []byte) int {
	if len(t.index) == 0 {
		return -1
	}
	n, _ := t.probeMAC(maphash.Bytes(t.seed, mac), mac)
	return n
}

// tableLoader builds a Table allocation by allocation, checking the
// invariants as NewTable documents them.
type tableLoader struct {
	t        *Table
	strs     []byte          // Table.strs, as it grows
	interned map[string]span // repeated strings: states, sources, zones
	locIdx   map[*time.Location]uint32
	fixed    map[int]uint32 // unnamed fixed zones, by offset
	cidrIdx  map[netip.Prefix]uint32
	lastCIDR struct { // the last ip6-cidr looked up: most repeat it
		p netip.Prefix
		i uint32
	}
	attrIdx  map[attrs]uint32
	lastAttr struct { // the last attrs looked up: most repeat it
		a  attrs
		i  uint32
		ok bool
	}
	prefixes []uint64 // by prefix hash: see slot; nil with taken
	// taken, when the pools do not overlap and are small enough, marks
	// the prefixes in use: bit k of taken[p] is pool p's k-th prefix.
	taken   [][]uint64
	poolIdx map[string]int
	hint    int // how many allocations are expected
	room    int // records the indexes have room for
	// deferred builds the MAC index in finish, when the number of
	// allocations is unknown at the start: one pass, no regrowing.
	deferred bool
}

// checkPools checks what NewTable requires of pools by themselves: at
// most 1<<16 of them, names and interface-ids unique.
func checkPools(pools []Pool) error {
	if len(pools) > 1<<16 {
		return fmt.Errorf("%d pools: at most %d", len(pools), 1<<16)
	}
	names := make(map[string]struct{}, len(pools))
	byIID := make(map[string]string, len(pools)) // pool name by interface-id
	for i := range pools {
		p := &pools[i]
		if _, dup := names[p.Name]; dup {
			return fmt.Errorf("pool %q: %w", p.Name, ErrDuplicatePool)
		}
		if q, dup := byIID[p.InterfaceID]; dup {
			return fmt.Errorf("pools %q and %q: interface-id %q: %w", q, p.Name, p.InterfaceID, ErrDuplicateInterfaceID)
		}
		names[p.Name] = struct{}{}
		byIID[p.InterfaceID] = p.Name
	}
	return nil
}

// newTableLoader starts a table of pools, with room for n allocations.
// pools must have passed checkPools.
func newTableLoader(pools []Pool, n int) *tableLoader {
	t := &Table{
		pools:  slices.Clone(pools),
		byName: make(map[string]*Pool, len(pools)),
		byIID:  make(map[string]*Pool, len(pools)),
		macs:   make([]byte, 0, 6*n),
		seed:   maphash.MakeSeed(),
	}
	for i := range t.pools {
		p := &t.pools[i]
		t.byName[p.Name] = p
		t.byIID[p.InterfaceID] = p
	}
	b := &tableLoader{
		t:        t,
		poolIdx:  make(map[string]int, len(pools)),
		hint:     n,
		interned: map[string]span{},
		locIdx:   map[*time.Location]uint32{},
		fixed:    map[int]uint32{},
		cidrIdx:  map[netip.Prefix]uint32{},
		attrIdx:  map[attrs]uint32{},
	}
	for i := range t.pools {
		b.poolIdx[t.pools[i].Name] = i
	}
	b.taken = bitmapsFor(t.pools)
	b.grow(n)
	return b
}

// allocView is an allocation as the builder takes it: the strings may
// point into a buffer that is reused once add returns.
type allocView struct {
	pool                         *Pool
	poolIndex                    int
	mac                          []byte
	prefix                       netip.Prefix
	state, source                []byte
	vmID, vmName, nicID          []byte
	since, goneAt, quarantinedAt time.Time
	ip6                          netip.Addr
	ip6CIDR                      netip.Prefix
	// lastCIDR is the last ip6-cidr decodeRecord parsed, which it keeps
	// from one record to the next: a pool's records repeat it, and
	// parsing one allocates.
	lastCIDR struct {
		text []byte // a copy
		p    netip.Prefix
	}
}

// bytesOf views s as bytes, without copying. The bytes must not be written.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// add adds a, checking it as NewTable does.
func (b *tableLoader) add(a *Allocation) error {
	i, ok := b.poolIdx[a.Pool]
	if !ok {
		return fmt.Errorf("allocation %s of %s: pool %q: %w", a.Prefix, a.MAC, a.Pool, ErrUnknownPool)
	}
	return b.addView(&allocView{
		pool: &b.t.pools[i], poolIndex: i,
		mac: a.MAC, prefix: a.Prefix, state: bytesOf(string(a.State)), source: bytesOf(a.Source),
		vmID: bytesOf(a.VMID), vmName: bytesOf(a.VMName), nicID: bytesOf(a.NICID),
		since: a.Since, goneAt: a.GoneAt, quarantinedAt: a.QuarantinedAt, ip6: a.IP6, ip6CIDR: a.IP6CIDR,
	})
}

// addView adds the allocation v of the pool v.pool (one of the table's).
func (b *tableLoader) addView(v *allocView) error {
	t := b.t
	mac := net.HardwareAddr(v.mac)
	if err := v.pool.Contains(v.prefix); err != nil {
		return b.fail(fmt.Errorf("allocation of %s: %w", mac, err))
	}
	if 2*(t.n+1) > b.room {
		b.grow(2*t.n + 16)
	}
	var mh uint64
	macSlot := -1
	i := -1
	if !b.deferred {
		mh = maphash.Bytes(t.seed, v.mac)
		i, macSlot = t.probeMAC(mh, v.mac)
		if i >= 0 {
			return fmt.Errorf("MAC %s in pools %q and %q: %w", mac, t.pools[t.rec(i).pool].Name, v.pool.Name, ErrDuplicateMAC)
		}
	}
	pa, pbits := v.prefix.Addr().As16(), uint8(v.prefix.Bits())
	var ph uint64
	prefixSlot := -1
	if b.taken != nil {
		i = -1
		if k, w := prefixBit(v.pool, pa); b.bitmap(v.poolIndex)[w]&k != 0 {
			for j := range t.n {
				if r := t.rec(j); r.prefix == pa && r.bits == pbits {
					i = j
					break
				}
			}
		}
	} else {
		ph = prefixHash(pa, pbits)
		i, prefixSlot = probe(b.prefixes, ph, func(n int) bool {
			r := t.rec(n)
			return r.prefix == pa && r.bits == pbits
		})
	}
	if i >= 0 {
		return b.fail(fmt.Errorf("prefix %s owned by %s and %s: %w", v.prefix, net.HardwareAddr(t.macOf(t.rec(i).mac)), mac, ErrDuplicatePrefix))
	}
	since := b.stamp(v.since)
	r := rec{
		prefix:    pa,
		bits:      pbits,
		pool:      uint16(v.poolIndex),
		vmID:      b.str(v.vmID),
		vmName:    b.str(v.vmName),
		nicID:     b.str(v.nicID),
		sinceSec:  since.sec,
		sinceNsec: since.nsec,
		times:     b.times(v.goneAt, v.quarantinedAt),
	}
	at := attrs{state: b.intern(v.state), source: b.intern(v.source), cidr: b.cidr(v.ip6CIDR), sinceLoc: since.loc}
	switch {
	case v.ip6.Is4():
		r.ip6Kind, r.ip6 = 4, v.ip6.As16()
	case v.ip6.Is6():
		r.ip6Kind, r.ip6 = 6, v.ip6.As16()
		at.ip6Zone = b.intern(bytesOf(v.ip6.Zone()))
	}
	r.attr = b.attr(at)
	r.mac = span{uint32(len(t.macs)), uint32(len(v.mac))}
	t.macs = append(growBuf(t.macs, len(v.mac)), v.mac...)
	n := int32(t.n)
	if t.n%recChunk == 0 {
		c := recChunk // the first chunk grows from what is expected
		if t.n == 0 {
			c = min(max(b.hint, 16), recChunk)
		}
		t.recs = append(t.recs, makeHuge[rec](c))
	}
	last := &t.recs[len(t.recs)-1]
	*last = append(*last, r)
	t.n++
	if !b.deferred {
		t.index[macSlot] = slot(mh, n)
	}
	if b.taken != nil {
		k, w := prefixBit(v.pool, pa)
		b.bitmap(v.poolIndex)[w] |= k
	} else {
		b.prefixes[prefixSlot] = slot(ph, n)
	}
	return nil
}

// finish returns the table; the builder must not be used any more.
func (b *tableLoader) finish() (*Table, error) {
	if b.deferred {
		if err := b.indexMACs(); err != nil {
			return nil, err
		}
	}
	b.t.strs = unsafeString(b.strs) // never written again
	b.t.baseTimes = len(b.t.times)
	b.t.interned = b.interned
	b.t.taken, b.t.prefixes = b.taken, b.prefixes
	b.prefixes, b.taken = nil, nil
	return b.t, nil
}

// fail returns err, the error of the allocation being added, unless a MAC
// added before it is a duplicate (deferred: not checked yet): NewTable
// reports the first problem in order.
func (b *tableLoader) fail(err error) error {
	if b.deferred {
		if dup := b.indexMACs(); dup != nil {
			return dup
		}
	}
	return err
}

// indexMACs builds the MAC index of a deferred builder, in one go now
// that the number of records is known, and reports the first MAC that
// repeats.
func (b *tableLoader) indexMACs() error {
	t := b.t
	size := 16
	for size < 2*t.n {
		size *= 2
	}
	t.index = makeHuge[uint64](size)[:size]
	for i := range t.n {
		mac := t.macOf(t.rec(i).mac)
		mh := maphash.Bytes(t.seed, mac)
		j, s := t.probeMAC(mh, mac)
		if j >= 0 {
			return fmt.Errorf("MAC %s in pools %q and %q: %w", net.HardwareAddr(mac), t.pools[t.rec(j).pool].Name, t.pools[t.rec(i).pool].Name, ErrDuplicateMAC)
		}
		t.index[s] = slot(mh, int32(i))
	}
	return nil
}

// grow makes room for n records in the indexes: the MAC index unless
// deferred, the prefix index when there are no bitmaps.
func (b *tableLoader) grow(n int) {
	t := b.t
	size := 16
	for size < 2*n {
		size *= 2
	}
	if size <= b.room {
		return
	}
	b.room = size
	if b.deferred && b.taken != nil {
		return // no index to build now
	}
	if !b.deferred {
		t.index = make([]uint64, size)
	}
	if b.taken == nil {
		b.prefixes = make([]uint64, size)
	}
	for i := range t.n {
		r := t.rec(i)
		if !b.deferred {
			mh := maphash.Bytes(t.seed, t.macOf(r.mac))
			_, s := probe(t.index, mh, func(int) bool { return false })
			t.index[s] = slot(mh, int32(i))
		}
		if b.taken == nil {
			ph := prefixHash(r.prefix, r.bits)
			_, s := probe(b.prefixes, ph, func(int) bool { return false })
			b.prefixes[s] = slot(ph, int32(i))
		}
	}
}

// maxBitmapBits bounds the prefixes of a pool marked in a bitmap (8 MiB).
const maxBitmapBits = 26

// bitmapsFor returns empty bitmaps for pools, or nil when a pool is too
// large for one or two pools overlap (a prefix could then be in both).
func bitmapsFor(pools []Pool) [][]uint64 {
	if len(pools) > 256 {
		return nil
	}
	for i, p := range pools {
		if !p.Prefix.IsValid() || !p.Prefix.Addr().Is6() || p.PrefixLen > 128 || p.PrefixLen < p.Prefix.Bits() ||
			p.PrefixLen-p.Prefix.Bits() > maxBitmapBits {
			return nil
		}
		for _, q := range pools[:i] {
			if p.Prefix.Overlaps(q.Prefix) {
				return nil
			}
		}
	}
	return make([][]uint64, len(pools))
}

func (b *tableLoader) bitmap(pool int) []uint64 {
	if b.taken[pool] == nil {
		p := &b.t.pools[pool]
		b.taken[pool] = make([]uint64, (1<<(p.PrefixLen-p.Prefix.Bits())+63)/64)
	}
	return b.taken[pool]
}

// prefixBit returns the bit (mask and word) of prefix address a, one of
// p's delegated prefixes (p.Contains holds), in p's bitmap.
func prefixBit(p *Pool, a [16]byte) (uint64, int) {
	hi, lo := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
	var v uint64
	switch s := uint(128 - p.PrefixLen); {
	case s >= 64:
		v = hi >> (s - 64)
	case s == 0:
		v = lo
	default:
		v = lo>>s | hi<<(64-s)
	}
	k := v & (1<<uint(p.PrefixLen-p.Prefix.Bits()) - 1)
	return 1 << (k % 64), int(k / 64)
}

// prefixHash mixes the address and length of a prefix (MurmurHash3's
// finalizer on each half).
func prefixHash(a [16]byte, bits uint8) uint64 {
	h := uint64(bits)
	for i := 0; i < 16; i += 8 {
		h ^= binary.BigEndian.Uint64(a[i:])
		h ^= h >> 33
		h *= 0xff51afd7ed558ccd
		h ^= h >> 33
		h *= 0xc4ceb9fe1a85ec53
		h ^= h >> 33
	}
	return h
}

// str stores s in the strings buffer.
func (b *tableLoader) str(s []byte) span {
	if len(s) == 0 {
		return span{}
	}
	sp := span{uint32(len(b.strs)), uint32(len(s))}
	b.strs = append(growBuf(b.strs, len(s)), s...)
	return sp
}

// intern stores s once however often it is given.
func (b *tableLoader) intern(s []byte) span {
	if len(s) == 0 {
		return span{}
	}
	if sp, ok := b.interned[string(s)]; ok { // no allocation: the compiler looks up without converting
		return sp
	}
	sp := b.str(s)
	b.interned[string(s)] = sp
	return sp
}

// attr returns the index of a in the table's attrs, adding it the first
// time.
func (b *tableLoader) attr(a attrs) uint32 {
	if b.lastAttr.ok && b.lastAttr.a == a {
		return b.lastAttr.i
	}
	i, ok := b.attrIdx[a]
	if !ok {
		i = uint32(len(b.t.attrs))
		b.t.attrs = append(b.t.attrs, a)
		b.attrIdx[a] = i
	}
	b.lastAttr.a, b.lastAttr.i, b.lastAttr.ok = a, i, true
	return i
}

// times returns a record's reference to its gone-at and quarantined-at
// times: 0 when both are zero, else their index in the table's times + 1.
func (b *tableLoader) times(goneAt, quarAt time.Time) uint32 {
	if goneAt == (time.Time{}) && quarAt == (time.Time{}) {
		return 0
	}
	b.t.times = append(b.t.times, recTimes{goneAt: b.stamp(goneAt), quarAt: b.stamp(quarAt)})
	return uint32(len(b.t.times))
}

// stamp stores t, keeping its location.
func (b *tableLoader) stamp(t time.Time) stamp {
	if t == (time.Time{}) {
		return stamp{loc: ^uint32(0)}
	}
	return stamp{sec: t.Unix(), nsec: int32(t.Nanosecond()), loc: b.loc(t)}
}

// cidr returns the record's reference to p: its index in the table's
// ip6-cidrs + 1, 0 for the zero Prefix. Each distinct ip6-cidr is kept
// once: there are about as many as pools.
func (b *tableLoader) cidr(p netip.Prefix) uint32 {
	if p == (netip.Prefix{}) {
		return 0
	}
	if b.lastCIDR.i != 0 && p == b.lastCIDR.p {
		return b.lastCIDR.i
	}
	i, ok := b.cidrIdx[p]
	if !ok {
		b.t.cidrs = append(b.t.cidrs, p)
		i = uint32(len(b.t.cidrs))
		b.cidrIdx[p] = i
	}
	b.lastCIDR.p, b.lastCIDR.i = p, i
	return i
}

func (b *tableLoader) loc(t time.Time) uint32 {
	l := t.Location()
	if i, ok := b.locIdx[l]; ok {
		return i
	}
	if l.String() == "" {
		// An unnamed fixed zone, as encoding/json makes one per time it
		// reads with an offset other than the local one: one per offset.
		_, off := t.Zone()
		if i, ok := b.fixed[off]; ok {
			return i
		}
		i := uint32(len(b.t.locs))
		b.t.locs = append(b.t.locs, l)
		b.fixed[off] = i
		return i
	}
	i := uint32(len(b.t.locs))
	b.t.locs = append(b.t.locs, l)
	b.locIdx[l] = i
	return i
}

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
