package allocator

import (
	"fmt"
	"hash/maphash"
	"maps"
	"net"
	"net/netip"
	"slices"
	"time"
	"unsafe"
)

// TableBuilder makes a new Table from a snapshot and a few changes, as a
// replica following a change stream (an etcd watch) does: Put and Delete
// apply allocations and deletions, Build returns the new snapshot. Only
// what changes is copied: the chunks of records written to, the indexes
// (one array each, copied once per Build), the bitmap of a pool whose
// prefixes change; new MACs and strings go to small buffers of their own.
// The base snapshot is never modified: readers keep answering from it.
//
// The result is the table NewTable would build from the base's
// allocations with the changes applied, but for the order of Allocations
// and At (a deleted record's place is taken by the last one). The
// invariants NewTable checks are checked on each Put (a MAC in two pools,
// a prefix of two MACs: ErrDuplicateMAC, ErrDuplicatePrefix), and a Put
// or Delete that fails changes nothing. When what the changes added
// outgrows half the base's buffers, Build compacts: it builds the table
// afresh, once in a while, so that a long-running replica does not keep
// the strings of every record it ever replaced.
type TableBuilder struct {
	t *Table // the new table: shares with the base what was not written

	poolIdx     map[string]int
	ownChunk    []bool // chunks of t.recs copied
	ownIndex    bool
	ownPrefixes bool
	ownTaken    []bool
	ownInterned bool
	extraStrs   []byte
	extraMacs   []byte
	locIdx      map[*time.Location]uint32
	fixed       map[int]uint32
	cidrIdx     map[netip.Prefix]uint32
	attrIdx     map[attrs]uint32
	ownAttrs    bool
	ownTimes    bool
	built       bool
}

// NewTableBuilder starts a table from base, which it does not modify.
func NewTableBuilder(base *Table) *TableBuilder {
	t := &Table{
		pools: base.pools, byName: base.byName, byIID: base.byIID,
		recs: slices.Clone(base.recs), n: base.n,
		macs: base.macs, strs: base.strs, extraMacs: base.extraMacs, extraStrs: base.extraStrs,
		interned: base.interned,
		locs:     base.locs, cidrs: base.cidrs,
		attrs: base.attrs, times: base.times, baseTimes: base.baseTimes,
		index: base.index, seed: base.seed,
		taken: slices.Clone(base.taken), prefixes: base.prefixes,
	}
	b := &TableBuilder{
		t:        t,
		poolIdx:  make(map[string]int, len(t.pools)),
		ownChunk: make([]bool, len(t.recs)),
		ownTaken: make([]bool, len(t.taken)),
	}
	for i := range t.pools {
		b.poolIdx[t.pools[i].Name] = i
	}
	return b
}

// Len returns the number of allocations with the changes so far.
func (b *TableBuilder) Len() int { return b.t.n }

// Put adds a, or replaces the allocation of a.MAC in a.Pool (its state,
// its fields, its prefix). It fails, changing nothing, when a.Pool is not
// one of the table's pools (ErrUnknownPool), a.Prefix is not a delegated
// prefix of it (ErrOutsidePool, ErrPrefixLength), the MAC has an
// allocation in another pool (ErrDuplicateMAC: Delete it there first) or
// the prefix belongs to another MAC (ErrDuplicatePrefix).
func (b *TableBuilder) Put(a Allocation) error {
	b.mustNotBeBuilt()
	t := b.t
	pi, ok := b.poolIdx[a.Pool]
	if !ok {
		return fmt.Errorf("allocation %s of %s: pool %q: %w", a.Prefix, a.MAC, a.Pool, ErrUnknownPool)
	}
	pool := &t.pools[pi]
	if err := pool.Contains(a.Prefix); err != nil {
		return fmt.Errorf("allocation of %s: %w", a.MAC, err)
	}
	i := t.find(a.MAC)
	if i >= 0 && int(t.rec(i).pool) != pi {
		return fmt.Errorf("MAC %s in pools %q and %q: %w", a.MAC, t.pools[t.rec(i).pool].Name, a.Pool, ErrDuplicateMAC)
	}
	pa, pbits := a.Prefix.Addr().As16(), uint8(a.Prefix.Bits())
	// A rewrite of the same prefix (a change of state, the common case)
	// needs no look-up.
	if same := i >= 0 && t.rec(i).prefix == pa && t.rec(i).bits == pbits; !same {
		if o := b.prefixOwner(pi, pa, pbits); o >= 0 {
			return fmt.Errorf("prefix %s owned by %s and %s: %w", a.Prefix, net.HardwareAddr(t.macOf(t.rec(o).mac)), a.MAC, ErrDuplicatePrefix)
		}
	}
	if i < 0 {
		b.add(&a, pi, pa, pbits)
		return nil
	}
	r := b.writeRec(i)
	if r.prefix != pa || r.bits != pbits {
		b.unindexPrefix(i, r)
		r.prefix, r.bits = pa, pbits
		b.indexPrefix(i, r)
	}
	b.fill(r, &a)
	return nil
}

// Delete removes the allocation of mac in pool; nothing when there is
// none (or mac's allocation is in another pool).
func (b *TableBuilder) Delete(pool string, mac net.HardwareAddr) {
	b.mustNotBeBuilt()
	t := b.t
	i := t.find(mac)
	if i < 0 || t.pools[t.rec(i).pool].Name != pool {
		return
	}
	b.unindexPrefix(i, t.rec(i))
	b.ownIndexes()
	deleteSlot(t.index, b.macSlot(i), t.macHash)
	last := t.n - 1
	if i != last {
		// The last record takes the deleted one's place.
		moved := *t.rec(last)
		*b.writeRec(i) = moved
		t.index[b.macSlot(last)] = slot(maphash.Bytes(t.seed, t.macOf(moved.mac)), int32(i))
		if t.taken == nil {
			s := b.prefixSlot(last)
			t.prefixes[s] = slot(prefixHash(moved.prefix, moved.bits), int32(i))
		}
	}
	c := last / recChunk
	if !b.ownChunk[c] {
		t.recs[c] = slices.Clone(t.recs[c][:len(t.recs[c])-1])
		b.ownChunk[c] = true
	} else {
		t.recs[c] = t.recs[c][:len(t.recs[c])-1]
	}
	if len(t.recs[c]) == 0 {
		t.recs = t.recs[:c]
		b.ownChunk = b.ownChunk[:c]
	}
	t.n--
}

// Build returns the new table. The builder must not be used any more.
func (b *TableBuilder) Build() *Table {
	b.mustNotBeBuilt()
	b.built = true
	t := b.t
	if len(t.extraStrs)+len(t.extraMacs) > (len(t.strs)+len(t.macs))/2+64<<10 || len(t.times) > 2*t.baseTimes+4096 {
		return t.compact()
	}
	return t
}

func (b *TableBuilder) mustNotBeBuilt() {
	if b.built {
		panic("allocator: TableBuilder used after Build")
	}
}

// compact returns t built afresh, its strings and MACs in one buffer each.
func (t *Table) compact() *Table {
	b := newTableLoader(t.pools, t.n)
	for i := range t.n {
		a := t.At(i)
		if err := b.add(&a); err != nil {
			panic(fmt.Sprintf("allocator: compacting a table that holds its invariants: %v", err))
		}
	}
	c, _ := b.finish()
	return c
}

// ownIndexes copies the MAC index, and the prefix index when there are
// no bitmaps, the first time this builder writes to them.
func (b *TableBuilder) ownIndexes() {
	t := b.t
	if !b.ownIndex {
		t.index, b.ownIndex = slices.Clone(t.index), true
	}
	if t.taken == nil && !b.ownPrefixes {
		t.prefixes, b.ownPrefixes = slices.Clone(t.prefixes), true
	}
}

// writeRec returns record i for writing, in a chunk of this builder's.
func (b *TableBuilder) writeRec(i int) *rec {
	c := i / recChunk
	if !b.ownChunk[c] {
		b.t.recs[c] = slices.Clip(slices.Clone(b.t.recs[c]))
		b.ownChunk[c] = true
	}
	return &b.t.recs[c][i%recChunk]
}

func (t *Table) macHash(n int) uint64 { return maphash.Bytes(t.seed, t.macOf(t.rec(n).mac)) }

func (t *Table) prefixHashOf(n int) uint64 {
	r := t.rec(n)
	return prefixHash(r.prefix, r.bits)
}

// macSlot returns the MAC index slot of record n.
func (b *TableBuilder) macSlot(n int) int {
	return findSlot(b.t.index, b.t.macHash(n), n)
}

// prefixSlot returns the prefix index slot of record n (no bitmaps).
func (b *TableBuilder) prefixSlot(n int) int {
	return findSlot(b.t.prefixes, b.t.prefixHashOf(n), n)
}

// findSlot returns the slot of index that holds record n, whose hash is h.
func findSlot(index []uint64, h uint64, n int) int {
	mask := uint64(len(index) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		e := index[i]
		if e == 0 {
			panic("allocator: a table record is missing from its index")
		}
		if int(uint32(e))-1 == n {
			return int(i)
		}
	}
}

// deleteSlot empties slot i of a linear-probing index and moves up the
// entries after it that would no longer be found (backward-shift
// deletion); hashOf gives the hash of a record number.
func deleteSlot(index []uint64, i int, hashOf func(n int) uint64) {
	mask := len(index) - 1
	for j := (i + 1) & mask; index[j] != 0; j = (j + 1) & mask {
		k := int(hashOf(int(uint32(index[j]))-1)) & mask // where the entry wants to be
		// Move it into the hole unless its home lies in (i, j].
		if (j > i && (k <= i || k > j)) || (j < i && k <= i && k > j) {
			index[i] = index[j]
			i = j
		}
	}
	index[i] = 0
}

// prefixOwner returns the record holding the prefix pa/pbits of pool pi,
// -1 when none does. With bitmaps, finding which record holds a taken
// prefix walks the records: Put asks only when the prefix is new to the
// MAC, and a taken one is then an error.
func (b *TableBuilder) prefixOwner(pi int, pa [16]byte, pbits uint8) int {
	t := b.t
	if t.taken != nil {
		bm := t.taken[pi]
		if bm == nil {
			return -1
		}
		if k, w := prefixBit(&t.pools[pi], pa); bm[w]&k == 0 {
			return -1
		}
		for j := range t.n { // only on a conflict or a rewrite of the same prefix
			if r := t.rec(j); r.prefix == pa && r.bits == pbits {
				return j
			}
		}
		return -1
	}
	if len(t.prefixes) == 0 {
		return -1
	}
	n, _ := probe(t.prefixes, prefixHash(pa, pbits), func(n int) bool {
		r := t.rec(n)
		return r.prefix == pa && r.bits == pbits
	})
	return n
}

// unindexPrefix removes record n's prefix (r) from the prefix index or
// bitmap.
func (b *TableBuilder) unindexPrefix(n int, r *rec) {
	t := b.t
	if t.taken != nil {
		bm := b.bitmap(int(r.pool))
		k, w := prefixBit(&t.pools[r.pool], r.prefix)
		bm[w] &^= k
		return
	}
	b.ownIndexes()
	deleteSlot(t.prefixes, b.prefixSlot(n), t.prefixHashOf)
}

// indexPrefix adds record n's prefix (r) to the prefix index or bitmap.
func (b *TableBuilder) indexPrefix(n int, r *rec) {
	t := b.t
	if t.taken != nil {
		bm := b.bitmap(int(r.pool))
		k, w := prefixBit(&t.pools[r.pool], r.prefix)
		bm[w] |= k
		return
	}
	b.ownIndexes()
	h := prefixHash(r.prefix, r.bits)
	_, s := probe(t.prefixes, h, func(int) bool { return false })
	t.prefixes[s] = slot(h, int32(n))
}

// bitmap returns pool i's bitmap for writing.
func (b *TableBuilder) bitmap(i int) []uint64 {
	t := b.t
	if !b.ownTaken[i] {
		if t.taken[i] == nil {
			p := &t.pools[i]
			t.taken[i] = make([]uint64, (1<<(p.PrefixLen-p.Prefix.Bits())+63)/64)
		} else {
			t.taken[i] = slices.Clone(t.taken[i])
		}
		b.ownTaken[i] = true
	}
	return t.taken[i]
}

// add appends a new record for a, whose MAC has none.
func (b *TableBuilder) add(a *Allocation, pi int, pa [16]byte, pbits uint8) {
	t := b.t
	if 2*(t.n+1) > len(t.index) {
		b.regrow(2*t.n + 16)
	}
	b.ownIndexes()
	n := t.n
	if n%recChunk == 0 {
		t.recs = append(t.recs, make([]rec, 0, recChunk))
		b.ownChunk = append(b.ownChunk, true)
	} else if c := n / recChunk; !b.ownChunk[c] {
		t.recs[c] = slices.Clone(t.recs[c])
		b.ownChunk[c] = true
	}
	c := n / recChunk
	r := rec{prefix: pa, bits: pbits, pool: uint16(pi)}
	if b.extraMacs == nil {
		b.extraMacs = slices.Clip(slices.Clone(t.extraMacs))
		if b.extraMacs == nil {
			b.extraMacs = []byte{}
		}
	}
	r.mac = span{extraSpan | uint32(len(b.extraMacs)), uint32(len(a.MAC))}
	b.extraMacs = append(b.extraMacs, a.MAC...)
	t.extraMacs = b.extraMacs
	t.recs[c] = append(t.recs[c], r)
	t.n++
	rp := &t.recs[c][n%recChunk]
	b.fill(rp, a)
	_, s := probe(t.index, maphash.Bytes(t.seed, a.MAC), func(int) bool { return false })
	t.index[s] = slot(maphash.Bytes(t.seed, a.MAC), int32(n))
	b.indexPrefix(n, rp)
}

// regrow makes the indexes room for n records, rebuilding them.
func (b *TableBuilder) regrow(n int) {
	t := b.t
	size := 16
	for size < 2*n {
		size *= 2
	}
	t.index = make([]uint64, size)
	b.ownIndex = true
	if t.taken == nil {
		t.prefixes = make([]uint64, size)
		b.ownPrefixes = true
	}
	for i := range t.n {
		h := t.macHash(i)
		_, s := probe(t.index, h, func(int) bool { return false })
		t.index[s] = slot(h, int32(i))
		if t.taken == nil {
			ph := t.prefixHashOf(i)
			_, s := probe(t.prefixes, ph, func(int) bool { return false })
			t.prefixes[s] = slot(ph, int32(i))
		}
	}
}

// fill sets the fields of r but the MAC, pool and prefix from a, keeping
// the spans of strings that did not change.
func (b *TableBuilder) fill(r *rec, a *Allocation) {
	t := b.t
	keep := func(old span, s string, intern bool) span {
		if t.str(old) == s {
			return old
		}
		if intern {
			return b.intern(s)
		}
		return b.str(s)
	}
	var old attrs
	if int(r.attr) < len(t.attrs) {
		old = t.attrs[r.attr]
	}
	since := b.stamp(a.Since)
	at := attrs{
		state:    keep(old.state, string(a.State), true),
		source:   keep(old.source, a.Source, true),
		cidr:     b.cidr(a.IP6CIDR),
		sinceLoc: since.loc,
	}
	r.vmID = keep(r.vmID, a.VMID, false)
	r.vmName = keep(r.vmName, a.VMName, false)
	r.nicID = keep(r.nicID, a.NICID, false)
	r.sinceSec, r.sinceNsec = since.sec, since.nsec
	r.times = b.times(r.times, a.GoneAt, a.QuarantinedAt)
	r.ip6Kind, r.ip6 = 0, [16]byte{}
	switch {
	case a.IP6.Is4():
		r.ip6Kind, r.ip6 = 4, a.IP6.As16()
	case a.IP6.Is6():
		r.ip6Kind, r.ip6 = 6, a.IP6.As16()
		at.ip6Zone = b.intern(a.IP6.Zone())
	}
	r.attr = b.attr(at)
}

// attr returns the index of a in the table's attrs, adding it the first
// time.
func (b *TableBuilder) attr(a attrs) uint32 {
	t := b.t
	if b.attrIdx == nil {
		b.attrIdx = make(map[attrs]uint32, len(t.attrs))
		for i, x := range t.attrs {
			b.attrIdx[x] = uint32(i)
		}
	}
	if i, ok := b.attrIdx[a]; ok {
		return i
	}
	if !b.ownAttrs {
		t.attrs, b.ownAttrs = slices.Clip(t.attrs), true // the first append copies
	}
	t.attrs = append(t.attrs, a)
	i := uint32(len(t.attrs) - 1)
	b.attrIdx[a] = i
	return i
}

// times returns a record's reference to its gone-at and quarantined-at
// times (see tableLoader.times), old when they did not change. New ones
// are appended: Build compacts once they outgrow the table's.
func (b *TableBuilder) times(old uint32, goneAt, quarAt time.Time) uint32 {
	t := b.t
	if goneAt == (time.Time{}) && quarAt == (time.Time{}) {
		return 0
	}
	if old != 0 && int(old) <= len(t.times) {
		tm := &t.times[old-1]
		if t.time(tm.goneAt) == goneAt && t.time(tm.quarAt) == quarAt {
			return old
		}
	}
	if !b.ownTimes {
		t.times, b.ownTimes = slices.Clip(t.times), true // the first append copies
	}
	t.times = append(t.times, recTimes{goneAt: b.stamp(goneAt), quarAt: b.stamp(quarAt)})
	return uint32(len(t.times))
}

// str stores s in the extra strings.
func (b *TableBuilder) str(s string) span {
	if s == "" {
		return span{}
	}
	if b.extraStrs == nil {
		b.extraStrs = append([]byte{}, b.t.extraStrs...)
	}
	sp := span{extraSpan | uint32(len(b.extraStrs)), uint32(len(s))}
	b.extraStrs = append(b.extraStrs, s...)
	// The table reads its strings from extraStrs: keep it current.
	b.t.extraStrs = unsafeString(b.extraStrs)
	return sp
}

// intern stores s once however often it is given.
func (b *TableBuilder) intern(s string) span {
	if s == "" {
		return span{}
	}
	if sp, ok := b.t.interned[s]; ok {
		return sp
	}
	sp := b.str(s)
	if !b.ownInterned {
		b.t.interned, b.ownInterned = maps.Clone(b.t.interned), true
		if b.t.interned == nil {
			b.t.interned = map[string]span{}
		}
	}
	b.t.interned[s] = sp
	return sp
}

// stamp stores tm, keeping its location.
func (b *TableBuilder) stamp(tm time.Time) stamp {
	if tm == (time.Time{}) {
		return stamp{loc: ^uint32(0)}
	}
	return stamp{sec: tm.Unix(), nsec: int32(tm.Nanosecond()), loc: b.loc(tm)}
}

func (b *TableBuilder) loc(tm time.Time) uint32 {
	t := b.t
	if b.locIdx == nil {
		b.locIdx, b.fixed = map[*time.Location]uint32{}, map[int]uint32{}
		for i, l := range t.locs {
			if l.String() == "" {
				_, off := time.Unix(0, 0).In(l).Zone()
				b.fixed[off] = uint32(i)
			} else {
				b.locIdx[l] = uint32(i)
			}
		}
	}
	l := tm.Location()
	if i, ok := b.locIdx[l]; ok {
		return i
	}
	if l.String() == "" {
		_, off := tm.Zone()
		if i, ok := b.fixed[off]; ok {
			return i
		}
		t.locs = append(slices.Clip(t.locs), l)
		b.fixed[off] = uint32(len(t.locs) - 1)
		return uint32(len(t.locs) - 1)
	}
	t.locs = append(slices.Clip(t.locs), l)
	b.locIdx[l] = uint32(len(t.locs) - 1)
	return uint32(len(t.locs) - 1)
}

// cidr returns the record's reference to p (see tableLoader.cidr).
func (b *TableBuilder) cidr(p netip.Prefix) uint32 {
	if p == (netip.Prefix{}) {
		return 0
	}
	t := b.t
	if b.cidrIdx == nil {
		b.cidrIdx = make(map[netip.Prefix]uint32, len(t.cidrs))
		for i, c := range t.cidrs {
			b.cidrIdx[c] = uint32(i + 1)
		}
	}
	if i, ok := b.cidrIdx[p]; ok {
		return i
	}
	t.cidrs = append(slices.Clip(t.cidrs), p)
	i := uint32(len(t.cidrs))
	b.cidrIdx[p] = i
	return i
}

// unsafeString views b as a string, without copying: b's bytes up to its
// length must never be written again (the builder only appends).
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
