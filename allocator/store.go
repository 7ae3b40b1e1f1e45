package allocator

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"slices"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// SchemaVersion is the value of meta/schema this package writes and reads.
// A store with another value is refused with ErrSchema.
const SchemaVersion = kv.SchemaVersion

// maxMACLen is the longest hardware address stored, as in Kea
// (MAX_HWADDR_LEN) and in the relay remote-id.
const maxMACLen = 20

// The key spaces that are not a pool's, and the meta keys; doc.go
// describes the layout.
var (
	spaceMeta          = kv.Space{Kind: kv.Meta}
	spaceMACs          = kv.Space{Kind: kv.MACs}
	spaceBindings      = kv.Space{Kind: kv.Bindings}
	spaceBindingPrefix = kv.Space{Kind: kv.BindingPrefix}

	keySchema     = []byte("schema")
	keyServerDUID = []byte("server-duid")
)

// allocSpace and prefixSpace are the key spaces of pool's allocations and
// prefix index.
func allocSpace(pool string) kv.Space  { return kv.Space{Kind: kv.Alloc, Pool: pool} }
func prefixSpace(pool string) kv.Space { return kv.Space{Kind: kv.Prefix, Pool: pool} }

// Store is the allocation table and binding record, kept by a backend (a
// kv.Backend: package boltstore's bbolt file, say). Every rule is here,
// over the backend's key spaces, whatever the backend. It is safe for
// concurrent use as far as the backend is.
type Store struct {
	b kv.Backend
}

// NewStore returns the store kept by backend b.
func NewStore(b kv.Backend) *Store { return &Store{b: b} }

// OpenStore is NewStore for the results of a backend's opener, as in
// allocator.OpenStore(boltstore.Open(path, opts)): the error when there is
// one, else the store.
func OpenStore(b kv.Backend, err error) (*Store, error) {
	if err != nil {
		return nil, err
	}
	return NewStore(b), nil
}

// Backend returns the backend that keeps the store.
func (s *Store) Backend() kv.Backend { return s.b }

// Path returns where the store is: the backend's name (a file for bbolt).
func (s *Store) Path() string { return s.b.Name() }

// Close closes the backend. Transactions in progress finish first.
func (s *Store) Close() error { return s.b.Close() }

// Created reports whether opening the backend created the store.
func (s *Store) Created() bool {
	c, ok := s.b.(kv.Creator)
	return ok && c.Created()
}

// Discard closes the store and, when opening created it, removes it: for
// a command that created the store and then failed, so that it leaves
// nothing new behind. A store that existed before is only closed.
func (s *Store) Discard() error {
	if c, ok := s.b.(kv.Creator); ok {
		return c.Discard()
	}
	return s.b.Close()
}

// Verify reads the whole store once, when the backend can (bbolt: every
// page), and returns an error wrapping ErrDamaged if something does not
// read: so that damage is found before the store is used. A backend that
// cannot verify gives nil.
func (s *Store) Verify() error { return s.verify(false) }

// VerifyIndexes is Verify but for the pools' allocation records, which
// LoadTable reads (and so checks): for a caller that runs it beside
// LoadTable, as serve does at start.
func (s *Store) VerifyIndexes() error { return s.verify(true) }

// VerifyIndexesBeforeWrites is VerifyIndexes in the background, for a
// server that answers from the table it has just loaded (and so read)
// while the rest of the store is checked: the result comes on the
// channel, and until it does every write to the store waits; after a
// failure every write fails with it, so that nothing is written to a
// damaged store. A backend that cannot verify in the background is
// verified now.
func (s *Store) VerifyIndexesBeforeWrites() <-chan error {
	if v, ok := s.b.(kv.BackgroundVerifier); ok {
		return v.VerifyBeforeWrites(true)
	}
	done := make(chan error, 1)
	done <- s.VerifyIndexes()
	return done
}

func (s *Store) verify(skipAlloc bool) error {
	if v, ok := s.b.(kv.Verifier); ok {
		return v.Verify(skipAlloc)
	}
	return nil
}

// Update runs fn in one read-write transaction: everything fn wrote is
// committed when it returns nil, and nothing when it returns an error or
// panics. pools are the configured pools that Tx.Put accepts allocations
// for. The Tx must not be used after fn returns.
func (s *Store) Update(pools []Pool, fn func(tx *Tx) error) error {
	tx, err := newTx(pools)
	if err != nil {
		return err
	}
	return s.b.Update(func(kt kv.Tx) error {
		tx.kt = kt
		return fn(tx)
	})
}

// View runs fn in a read-only transaction, which sees one consistent
// snapshot; Tx.Put and Tx.Delete fail in it.
func (s *Store) View(pools []Pool, fn func(tx *Tx) error) error {
	tx, err := newTx(pools)
	if err != nil {
		return err
	}
	return s.b.View(func(kt kv.Tx) error {
		tx.kt = kt
		return fn(tx)
	})
}

// wrap names the store in err, unless err already does (ErrDamaged).
func (s *Store) wrap(err error) error {
	if errors.Is(err, ErrDamaged) {
		return err
	}
	return fmt.Errorf("store %s: %w", s.b.Name(), err)
}

// LoadReport is what LoadTable found besides the table.
type LoadReport struct {
	// Orphaned lists the allocations stored under a pool that is not
	// configured (any more). They stay in the store untouched, are not
	// in the table (so not served), and come back if the pool is
	// configured again; the caller should warn about them.
	Orphaned []Allocation
}

// OrphanedByPool counts the orphaned allocations by pool name; nil when
// there are none.
func (r LoadReport) OrphanedByPool() map[string]int {
	if len(r.Orphaned) == 0 {
		return nil
	}
	pools := map[string]int{}
	for _, a := range r.Orphaned {
		pools[a.Pool]++
	}
	return pools
}

// ErrNoServerDUID is returned by ServerDUID on a read-only store that has
// no server DUID yet (serve never ran on it).
var ErrNoServerDUID = errors.New("no server DUID yet and the store is read-only")

// ServerDUID returns the server's DUID, calling generate and storing its
// result the first time, so that the DUID survives restarts. The DUID must
// be 3 to 130 bytes (a 2-byte type and up to 128 bytes, RFC 8415). On a
// read-only store without one it returns ErrNoServerDUID and generate is
// not called. Two writers racing for the first DUID both get the one that
// was stored first: the write reads the key again in its transaction.
func (s *Store) ServerDUID(generate func() ([]byte, error)) ([]byte, error) {
	var duid []byte
	err := s.b.View(func(tx kv.Tx) error {
		duid = bytes.Clone(tx.Get(spaceMeta, keyServerDUID))
		return nil
	})
	if err != nil || duid != nil {
		return duid, err
	}
	if s.b.ReadOnly() {
		return nil, fmt.Errorf("store %s: %w: %w", s.b.Name(), ErrNoServerDUID, kv.ErrReadOnly)
	}
	err = s.b.Update(func(tx kv.Tx) error {
		if v := tx.Get(spaceMeta, keyServerDUID); v != nil { // another writer was first
			duid = bytes.Clone(v)
			return nil
		}
		d, err := generate()
		if err != nil {
			return fmt.Errorf("generate server DUID: %w", err)
		}
		if len(d) < 3 || len(d) > 130 {
			return fmt.Errorf("generated server DUID %x has %d bytes, want 3 to 130", d, len(d))
		}
		duid = bytes.Clone(d)
		return tx.Put(spaceMeta, keyServerDUID, duid)
	})
	if err != nil {
		return nil, s.wrap(err)
	}
	return duid, nil
}

// Tx is one transaction on the allocation table, valid only inside the
// function given to Store.Update or Store.View. Its writes keep the
// invariants: a prefix belongs to at most one MAC, a MAC has at most one
// allocation across all pools, an allocation never changes prefix, and
// no prefix overlaps another's in any pool. They are checked here, over
// the backend's key spaces, before anything is written: a backend only
// stores what Tx gives it.
type Tx struct {
	kt    kv.Tx
	pools map[string]Pool

	// The history: who makes the changes, the events written, and the
	// next sequence number of the instant seqAt.
	actor      Actor
	keepEvents bool
	// copying: the transaction copies a table (CopyTableInto), whose
	// history is copied with it: it records no events of its own.
	copying  bool
	events   []HistoryEvent
	seqAt    int64
	seq      uint32
	seqKnown bool
}

func newTx(pools []Pool) (*Tx, error) {
	if err := checkPools(pools); err != nil {
		return nil, err
	}
	m := make(map[string]Pool, len(pools))
	for _, p := range pools {
		m[p.Name] = p
	}
	return &Tx{pools: m}, nil
}

// Pool returns the configured pool named name.
func (t *Tx) Pool(name string) (Pool, bool) {
	p, ok := t.pools[name]
	return p, ok
}

// Pools returns the pools given to Update or View, sorted by name.
func (t *Tx) Pools() []Pool {
	out := make([]Pool, 0, len(t.pools))
	for _, p := range t.pools {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Pool) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// StoredPools returns the names of the pools that have allocations or
// index entries in the store (or had: bbolt keeps a pool's buckets),
// configured or not, in byte order.
func (t *Tx) StoredPools() []string { return t.kt.Pools() }

// Put writes a, creating or updating the allocation of a.MAC in a.Pool. It
// fails, writing nothing, when a.Pool is not configured (ErrUnknownPool),
// the MAC is empty or too long (ErrInvalidMAC), the state is unknown
// (ErrInvalidState), the prefix is not a delegated prefix of the pool
// (ErrOutsidePool, ErrPrefixLength), the prefix belongs to another MAC
// (ErrDuplicatePrefix), the MAC has an allocation in another pool
// (ErrDuplicateMAC), or the MAC already has another prefix (ErrPrefixMoved).
// Should the backend itself fail mid-write, return the error from the
// Update function so that the transaction rolls back.
//
// The change is appended to the history in the same transaction (see
// putEvent; SetActor says who makes it).
func (t *Tx) Put(a Allocation) error { return t.put(a, "", nil) }

// put is Put with the history event to write: "" derives it from the
// change (putEvent); edit, when set, completes the event.
func (t *Tx) put(a Allocation, event string, edit func(*HistoryEvent)) error {
	if !t.kt.Writable() {
		return fmt.Errorf("put allocation of %s: %w", a.MAC, kv.ErrReadOnly)
	}
	p, ok := t.pools[a.Pool]
	if !ok {
		return fmt.Errorf("allocation %s of %s: pool %q: %w", a.Prefix, a.MAC, a.Pool, ErrUnknownPool)
	}
	if len(a.MAC) == 0 || len(a.MAC) > maxMACLen {
		return fmt.Errorf("allocation %s in pool %q: MAC %q has %d bytes, want 1 to %d: %w", a.Prefix, a.Pool, a.MAC, len(a.MAC), maxMACLen, ErrInvalidMAC)
	}
	if !validState(a.State) {
		return fmt.Errorf("allocation %s of %s: state %q: %w", a.Prefix, a.MAC, a.State, ErrInvalidState)
	}
	if err := p.Contains(a.Prefix); err != nil {
		return fmt.Errorf("allocation of %s: %w", a.MAC, err)
	}
	key := []byte(a.MAC)
	if owner := t.kt.Get(spaceMACs, key); owner != nil && string(owner) != a.Pool {
		return fmt.Errorf("MAC %s: already allocated in pool %q, cannot take %s in pool %q: %w", a.MAC, owner, a.Prefix, a.Pool, ErrDuplicateMAC)
	}
	prev, had, err := t.Get(a.Pool, a.MAC)
	if err != nil {
		return err
	}
	if had && prev.Prefix != a.Prefix {
		return fmt.Errorf("MAC %s in pool %q has %s, not %s: %w", a.MAC, a.Pool, prev.Prefix, a.Prefix, ErrPrefixMoved)
	}
	if owner, taken := t.PrefixOwner(a.Pool, a.Prefix); taken && !bytes.Equal(owner, key) {
		return fmt.Errorf("prefix %s in pool %q: owned by %s, not given to %s: %w", a.Prefix, a.Pool, owner, a.MAC, ErrDuplicatePrefix)
	}
	if !had && t.kt.Get(heldSpace, PrefixKey(a.Prefix)) != nil {
		return fmt.Errorf("prefix %s in pool %q: held in quarantine (moved away from, or of a forgotten pool), not given to %s until the quarantine ends: %w", a.Prefix, a.Pool, a.MAC, ErrDuplicatePrefix)
	}
	if owner, in, taken := t.PrefixElsewhere(a.Pool, a.Prefix); taken {
		return fmt.Errorf("prefix %s in pool %q: overlaps what %s holds in pool %q, not given to %s: %w", a.Prefix, a.Pool, owner, in, a.MAC, ErrDuplicatePrefix)
	}
	val, err := EncodeAllocation(a)
	if err != nil {
		return err
	}
	// Every check passed: only now write (the backend creates the pool's
	// spaces if need be).
	pk := PrefixKey(a.Prefix)
	if err := t.kt.Put(allocSpace(a.Pool), key, val); err != nil {
		return fmt.Errorf("put pools/%s/alloc/%s: %w", a.Pool, a.MAC, err)
	}
	if err := t.kt.Put(prefixSpace(a.Pool), pk, key); err != nil {
		return fmt.Errorf("put pools/%s/prefix/%s: %w", a.Pool, a.Prefix, err)
	}
	if err := t.kt.Put(spaceMACs, key, []byte(a.Pool)); err != nil {
		return fmt.Errorf("put macs/%s: %w", a.MAC, err)
	}
	if event == "" {
		event = putEvent(prev, had, a)
	}
	if event != "" {
		var before State
		if had {
			before = prev.State
		}
		e := t.eventOf(event, a, before)
		if edit != nil {
			edit(&e)
		}
		if err := t.record(e); err != nil {
			return err
		}
	}
	endGroup(t.kt)
	return nil
}

// allowSplit lets a backend that can (kv.Splitter) commit the rest of
// this Update in several transactions, between whole groups.
func (t *Tx) allowSplit() {
	if sp, ok := t.kt.(kv.Splitter); ok {
		sp.AllowSplit()
	}
}

// endGroup tells a backend that commits large updates in several
// transactions that the writes so far belong together (kv.Grouper): one
// allocation, or one binding, is never split.
func endGroup(kt kv.Tx) {
	if g, ok := kt.(kv.Grouper); ok {
		g.EndGroup()
	}
}

// Get returns the allocation of mac in pool, configured or not.
func (t *Tx) Get(pool string, mac net.HardwareAddr) (Allocation, bool, error) {
	if len(mac) == 0 {
		return Allocation{}, false, nil
	}
	v := t.kt.Get(allocSpace(pool), mac)
	if v == nil {
		return Allocation{}, false, nil
	}
	a, err := DecodeAllocation(pool, mac, v)
	return a, err == nil, err
}

// Lookup returns the allocation of mac in whichever pool holds it.
func (t *Tx) Lookup(mac net.HardwareAddr) (Allocation, bool, error) {
	if len(mac) == 0 {
		return Allocation{}, false, nil
	}
	pool := t.kt.Get(spaceMACs, mac)
	if pool == nil {
		return Allocation{}, false, nil
	}
	a, ok, err := t.Get(string(pool), mac)
	if err == nil && !ok {
		err = fmt.Errorf("macs/%s names pool %q, which has no allocation for it: store is inconsistent, run check", mac, pool)
	}
	return a, ok, err
}

// PrefixOwner returns the MAC that owns prefix in pool, in any state.
func (t *Tx) PrefixOwner(pool string, prefix netip.Prefix) (net.HardwareAddr, bool) {
	if !prefix.IsValid() {
		return nil, false
	}
	v := t.kt.Get(prefixSpace(pool), PrefixKey(prefix))
	if v == nil {
		return nil, false
	}
	return net.HardwareAddr(bytes.Clone(v)), true
}

// PrefixElsewhere reports whether a pool other than pool, configured or
// not (the store keeps the allocations of pools the config dropped), holds
// a prefix that overlaps prefix, and which MAC in which pool does. A
// prefix belongs to at most one MAC across the whole store: a pool renamed
// in the config must not hand out again what its old name still holds.
func (t *Tx) PrefixElsewhere(pool string, prefix netip.Prefix) (owner net.HardwareAddr, in string, ok bool) {
	if !prefix.IsValid() {
		return nil, "", false
	}
	for _, name := range t.kt.Pools() {
		if name == pool {
			continue
		}
		if v := overlapping(t.kt, prefixSpace(name), prefix); v != nil {
			return net.HardwareAddr(bytes.Clone(v)), name, true
		}
	}
	return nil, "", false
}

// overlapping returns the owner of the entry of prefix index idx that
// overlaps p, nil when none does. Within one index prefixes never
// overlap, so the entry just below p's address is the only one that can
// contain it: two ordered reads (Seek, Last), whatever the backend.
func overlapping(kt kv.Tx, idx kv.Space, p netip.Prefix) []byte {
	p = p.Masked()
	a := p.Addr().As16()
	k, v := kt.Seek(idx, a[:])
	if k != nil && len(k) == prefixKeyLen && p.Contains(netip.AddrFrom16([16]byte(k[:16]))) {
		return v
	}
	below := a[:]
	if k != nil {
		below = k
	}
	for k, v = kt.Last(idx, below); k != nil; k, v = kt.Last(idx, k) {
		if len(k) != prefixKeyLen || k[16] > 128 {
			continue // malformed: Check reports it
		}
		if netip.PrefixFrom(netip.AddrFrom16([16]byte(k[:16])), int(k[16])).Contains(p.Addr()) {
			return v
		}
		return nil
	}
	return nil
}

// overlappingIndexes returns the prefix indexes of the other stored pools
// that hold something inside pool's range: those lowestFree must consult.
func (t *Tx) overlappingIndexes(pool Pool) []kv.Space {
	var out []kv.Space
	for _, name := range t.kt.Pools() {
		if name == pool.Name {
			continue
		}
		// overlapping finds any entry inside the range, or one covering it.
		if idx := prefixSpace(name); overlapping(t.kt, idx, pool.Prefix) != nil {
			out = append(out, idx)
		}
	}
	return out
}

// unindex deletes the index entry pk of space sp if it still points at
// owner.
func unindex(kt kv.Tx, sp kv.Space, pk, owner []byte) error {
	if bytes.Equal(kt.Get(sp, pk), owner) {
		return kt.Delete(sp, pk)
	}
	return nil
}

// Delete removes the allocation of mac in pool (configured or not) and
// frees its prefix. Deleting what is not there is not an error. The
// history records it (EventReleased).
func (t *Tx) Delete(pool string, mac net.HardwareAddr) error {
	a, had, err := t.unlink(pool, mac, true)
	if err != nil || !had {
		return err
	}
	e := t.eventOf(EventReleased, a, a.State)
	e.State = ""
	if err := t.record(e); err != nil {
		return err
	}
	endGroup(t.kt)
	return nil
}

// unlink deletes the allocation of mac in pool, its MAC index entry and,
// with unindexPrefix, its prefix index entry; it returns what it deleted.
// The caller ends the group (endGroup) once the change is whole.
func (t *Tx) unlink(pool string, mac net.HardwareAddr, unindexPrefix bool) (Allocation, bool, error) {
	if !t.kt.Writable() {
		return Allocation{}, false, fmt.Errorf("delete allocation of %s in pool %q: %w", mac, pool, kv.ErrReadOnly)
	}
	if len(mac) == 0 {
		return Allocation{}, false, nil
	}
	v := t.kt.Get(allocSpace(pool), mac)
	if v == nil {
		return Allocation{}, false, nil
	}
	a, err := DecodeAllocation(pool, mac, v)
	if err != nil {
		return a, false, err
	}
	if a.Prefix.IsValid() && unindexPrefix {
		if err := unindex(t.kt, prefixSpace(pool), PrefixKey(a.Prefix), mac); err != nil {
			return a, false, fmt.Errorf("delete pools/%s/prefix/%s: %w", pool, a.Prefix, err)
		}
	}
	if err := t.kt.Delete(allocSpace(pool), mac); err != nil {
		return a, false, fmt.Errorf("delete pools/%s/alloc/%s: %w", pool, mac, err)
	}
	if string(t.kt.Get(spaceMACs, mac)) == pool {
		if err := t.kt.Delete(spaceMACs, mac); err != nil {
			return a, false, fmt.Errorf("delete macs/%s: %w", mac, err)
		}
	}
	return a, true, nil
}

// ForEach calls fn with every allocation of pool (configured or not), in
// byte order of the MACs, and stops at fn's first error, which it returns.
// fn must not write to the Tx.
func (t *Tx) ForEach(pool string, fn func(a Allocation) error) error {
	return t.kt.Scan(allocSpace(pool), nil, func(k, v []byte) error {
		a, err := DecodeAllocation(pool, k, v)
		if err != nil {
			return err
		}
		return fn(a)
	})
}

// LowestFree returns the lowest delegated prefix of pool that is not in the
// pool's prefix index, in any state (quarantined prefixes are not free). It
// walks the index in address order from the pool's start, so it costs the
// number of allocations below the first gap. A full pool gives
// ErrPoolExhausted.
func (t *Tx) LowestFree(pool Pool) (netip.Prefix, error) {
	free, err := t.lowestFree(pool, 1)
	if err != nil {
		return netip.Prefix{}, err
	}
	return free[0], nil
}

// lowestFree returns the n lowest free delegated prefixes of pool, in
// address order, in one walk of the prefix index (one ordered Scan): n
// allocations cost one walk, not n. When the pool has fewer than n free
// prefixes it returns those it found and an error wrapping
// ErrPoolExhausted. It reads the index as it is: prefixes Put in the same
// transaction after the call are not accounted for.
func (t *Tx) lowestFree(pool Pool, n int) ([]netip.Prefix, error) {
	if !pool.Prefix.IsValid() || !pool.Prefix.Addr().Is6() || pool.PrefixLen < max(pool.Prefix.Bits(), 1) || pool.PrefixLen > 128 {
		return nil, fmt.Errorf("pool %q (%s, /%d): %w", pool.Name, pool.Prefix, pool.PrefixLen, ErrPrefixLength)
	}
	base := pool.Prefix.Masked().Addr()
	cand := u128From(base)
	last := cand.or(mask(pool.Prefix.Bits()).not())
	step := u128{}.setBit(128 - pool.PrefixLen)
	elsewhere := t.overlappingIndexes(pool)
	out := make([]netip.Prefix, 0, min(n, 1<<16))
	var exhausted, done bool
	// advance settles cand (taken, or free unless another pool's index
	// overlaps it) and moves to the next candidate; done when out is full
	// or the pool has no candidate left.
	advance := func(taken bool) {
		if !taken {
			p := netip.PrefixFrom(cand.addr(), pool.PrefixLen)
			for _, other := range elsewhere {
				if overlapping(t.kt, other, p) != nil {
					taken = true
					break
				}
			}
			if !taken {
				out = append(out, p)
			}
		}
		if len(out) == n {
			done = true
			return
		}
		next, overflow := cand.add(step)
		if overflow || next.cmp(last) > 0 {
			exhausted, done = true, true
			return
		}
		cand = next
	}
	seek := base.As16()
	err := t.kt.Scan(prefixSpace(pool.Name), seek[:], func(k, _ []byte) error {
		// Skip index entries below cand: malformed ones (Check reports
		// them) and a second entry inside a block already passed.
		if len(k) != prefixKeyLen {
			return nil
		}
		a := u128From(netip.AddrFrom16([16]byte(k[:16])))
		if a.cmp(last) > 0 {
			return kv.ErrStop // past the pool: the rest is free
		}
		for a.cmp(cand) >= 0 {
			next, overflow := cand.add(step)
			// An entry inside cand's block (normally at cand) takes it.
			advance(overflow || a.cmp(next) < 0)
			if done {
				return kv.ErrStop
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for !done {
		advance(false)
	}
	if exhausted {
		return out, fmt.Errorf("pool %q (%s, /%d): %w", pool.Name, pool.Prefix, pool.PrefixLen, ErrPoolExhausted)
	}
	return out, nil
}

// allocRecord is an allocation as stored: the MAC, which Allocation keeps
// out of its JSON, is written too so that a record reads on its own.
type allocRecord struct {
	MAC string `json:"mac"`
	Allocation
}

// EncodeAllocation returns the stored form of a (the value of its key in
// the pool's Alloc space): Allocation's JSON plus the MAC. Every backend
// stores these bytes.
func EncodeAllocation(a Allocation) ([]byte, error) {
	v, err := marshalAllocRecord(&a)
	if err != nil {
		return nil, fmt.Errorf("encode allocation of %s in pool %q: %w", a.MAC, a.Pool, err)
	}
	return v, nil
}

// DecodeAllocation decodes a stored allocation, the value of key (the MAC)
// in pool's Alloc space. The key is the authority for the MAC and the
// space for the pool; Check reports a record that disagrees with them.
func DecodeAllocation(pool string, key, val []byte) (Allocation, error) {
	var r allocRecord
	if err := json.Unmarshal(val, &r); err != nil {
		return Allocation{}, fmt.Errorf("pools/%s/alloc/%s: %w", pool, net.HardwareAddr(key), err)
	}
	a := r.Allocation
	a.MAC = net.HardwareAddr(bytes.Clone(key))
	a.Pool = pool
	return a, nil
}

func validState(s State) bool {
	return s == StateActive || s == StateGone || s == StateQuarantined
}

// prefixKeyLen is the length of a prefix index key: 16 address bytes and
// the prefix length.
const prefixKeyLen = 17

// PrefixKey returns the key of p in a prefix index (the Prefix and
// BindingPrefix spaces): the 16 bytes of its address and its length, so
// that keys sort by address.
func PrefixKey(p netip.Prefix) []byte {
	a := p.Addr().As16()
	return append(a[:], byte(p.Bits()))
}

// ParsePrefixKey reads a key PrefixKey wrote; false for a malformed one.
func ParsePrefixKey(k []byte) (netip.Prefix, bool) {
	if len(k) != prefixKeyLen || k[16] > 128 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(netip.AddrFrom16([16]byte(k[:16])), int(k[16])), true
}

// u128 is an IPv6 address as a number, for prefix arithmetic.
type u128 struct{ hi, lo uint64 }

func u128From(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func (u u128) addr() netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], u.hi)
	binary.BigEndian.PutUint64(b[8:], u.lo)
	return netip.AddrFrom16(b)
}

func (u u128) cmp(v u128) int {
	switch {
	case u.hi != v.hi:
		if u.hi < v.hi {
			return -1
		}
		return 1
	case u.lo != v.lo:
		if u.lo < v.lo {
			return -1
		}
		return 1
	}
	return 0
}

// add returns u+v and whether it overflowed 128 bits.
func (u u128) add(v u128) (u128, bool) {
	lo, carry := bits.Add64(u.lo, v.lo, 0)
	hi, carry := bits.Add64(u.hi, v.hi, carry)
	return u128{hi, lo}, carry != 0
}

func (u u128) or(v u128) u128 { return u128{u.hi | v.hi, u.lo | v.lo} }
func (u u128) not() u128      { return u128{^u.hi, ^u.lo} }

// setBit returns u with bit n (0 = least significant) set.
func (u u128) setBit(n int) u128 {
	if n >= 64 {
		u.hi |= 1 << (n - 64)
	} else {
		u.lo |= 1 << n
	}
	return u
}

// mask returns the netmask of a /bits prefix.
func mask(bits int) u128 {
	var m u128
	for i := range bits {
		m = m.setBit(127 - i)
	}
	return m
}

// Check verifies the whole store against itself and against pools, and
// returns one line per violation (none: the store is sound). It reports
// what the backend finds wrong with its own structure (bbolt: missing
// buckets); a missing or unknown schema; allocations of pools that are not
// configured (they are kept but not served); records that do not decode,
// or whose "mac" or "pool" disagrees with their key or space; unknown
// states; prefixes outside their pool, of the wrong length or misaligned;
// a prefix or a MAC allocated twice; prefix index and MAC index entries
// that do not match an allocation, and allocations missing from them;
// bindings and binding-prefix entries that do not match each other. A
// store that does not read (bbolt: its own check of every page, free ones
// included, fails) gives an error wrapping ErrDamaged; the error is only
// for failing to read the store.
func (s *Store) Check(pools []Pool) ([]string, error) {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	configured := make(map[string]*Pool, len(pools))
	for i := range pools {
		p := &pools[i]
		if _, dup := configured[p.Name]; dup {
			add("config: pool %q listed twice", p.Name)
		}
		configured[p.Name] = p
	}
	err := s.b.View(func(kt kv.Tx) error {
		if v := kt.Get(spaceMeta, keySchema); string(v) != SchemaVersion {
			add("meta/schema: %q, want %q", v, SchemaVersion)
		}
		if v := kt.Get(spaceMeta, keyIncomplete); v != nil {
			add("meta/incomplete: a %s did not finish: run it again to complete the table", v)
		}
		checkAllocations(kt, configured, add)
		checkHeld(kt, add)
		checkBindings(kt, add)
		checkHistory(kt, add)
		return nil
	})
	if err == nil {
		if c, ok := s.b.(kv.Checker); ok {
			var lines []string
			if lines, err = c.CheckStructure(); err == nil && len(lines) > 0 {
				n := len(pools) - len(configured) // the config lines come first
				out = slices.Insert(out, n, lines...)
			}
		}
	}
	if err != nil {
		return nil, s.wrap(err)
	}
	return out, nil
}

func checkAllocations(kt kv.Tx, configured map[string]*Pool, add func(string, ...any)) {
	prefixOwner := map[netip.Prefix]string{} // → "pools/<pool>/alloc/<mac>"
	macPool := map[string]string{}
	for _, pool := range kt.Pools() {
		alloc, idx := allocSpace(pool), prefixSpace(pool)
		p, isConfigured := configured[pool]
		if !isConfigured {
			n := 0
			_ = kt.Scan(alloc, nil, func(_, _ []byte) error { n++; return nil })
			if n > 0 {
				add("pools/%s: %d allocation(s) in a pool that is not configured (kept, not served; 'pool forget' quarantines them)", pool, n)
			}
		}
		_ = kt.Scan(alloc, nil, func(k, v []byte) error {
			mac := net.HardwareAddr(k)
			at := fmt.Sprintf("pools/%s/alloc/%s", pool, mac)
			if len(k) == 0 || len(k) > maxMACLen {
				add("%s: MAC key has %d bytes, want 1 to %d", at, len(k), maxMACLen)
			}
			var r allocRecord
			if err := json.Unmarshal(v, &r); err != nil {
				add("%s: does not decode: %v", at, err)
				return nil
			}
			if r.MAC != mac.String() {
				add("%s: record says mac %q", at, r.MAC)
			}
			if r.Pool != pool {
				add("%s: record says pool %q", at, r.Pool)
			}
			if !validState(r.State) {
				add("%s: state %q: %v", at, r.State, ErrInvalidState)
			}
			switch {
			case !r.Prefix.IsValid():
				add("%s: no valid prefix", at)
				return nil
			case isConfigured:
				if err := p.Contains(r.Prefix); err != nil {
					add("%s: %v", at, err)
				}
			}
			if other, dup := prefixOwner[r.Prefix]; dup {
				add("%s: prefix %s also allocated at %s: %v", at, r.Prefix, other, ErrDuplicatePrefix)
			} else {
				prefixOwner[r.Prefix] = at
			}
			if other, dup := macPool[string(k)]; dup {
				add("%s: MAC also allocated in pool %q: %v", at, other, ErrDuplicateMAC)
			} else {
				macPool[string(k)] = pool
			}
			switch owner := kt.Get(idx, PrefixKey(r.Prefix)); {
			case owner == nil:
				add("%s: prefix %s missing from pools/%s/prefix", at, r.Prefix, pool)
			case !bytes.Equal(owner, k):
				add("%s: pools/%s/prefix/%s names %s instead", at, pool, r.Prefix, net.HardwareAddr(owner))
			}
			if owner := kt.Get(spaceMACs, k); string(owner) != pool {
				if owner == nil {
					add("%s: MAC missing from macs", at)
				} else {
					add("%s: macs/%s names pool %q instead", at, mac, owner)
				}
			}
			return nil
		})
		_ = kt.Scan(idx, nil, func(k, v []byte) error {
			pfx, ok := ParsePrefixKey(k)
			if !ok {
				add("pools/%s/prefix/%x: malformed key", pool, k)
				return nil
			}
			at := fmt.Sprintf("pools/%s/prefix/%s", pool, pfx)
			if heldBy(kt, pool, k, v) {
				return nil // held in quarantine without an allocation
			}
			rec := kt.Get(alloc, v)
			if rec == nil {
				add("%s: names %s, which has no allocation in the pool", at, net.HardwareAddr(v))
				return nil
			}
			var r allocRecord
			if json.Unmarshal(rec, &r) == nil && r.Prefix != pfx {
				add("%s: names %s, whose allocation is %s", at, net.HardwareAddr(v), r.Prefix)
			}
			return nil
		})
	}
	_ = kt.Scan(spaceMACs, nil, func(k, v []byte) error {
		at := fmt.Sprintf("macs/%s", net.HardwareAddr(k))
		if kt.Get(allocSpace(string(v)), k) == nil {
			add("%s: names pool %q, which has no allocation for it", at, v)
		}
		return nil
	})
}

func checkBindings(kt kv.Tx, add func(string, ...any)) {
	_ = kt.Scan(spaceBindings, nil, func(k, v []byte) error {
		at := fmt.Sprintf("bindings/%x", k)
		var b Binding
		if err := json.Unmarshal(v, &b); err != nil {
			add("%s: does not decode: %v", at, err)
			return nil
		}
		if !bytes.Equal(b.Key(), k) {
			add("%s: record's client DUID and IAID make key %x", at, b.Key())
		}
		if !b.Prefix.IsValid() {
			add("%s: no valid prefix", at)
			return nil
		}
		if owner := kt.Get(spaceBindingPrefix, PrefixKey(b.Prefix)); !bytes.Equal(owner, k) {
			if owner == nil {
				add("%s: prefix %s missing from binding-prefix", at, b.Prefix)
			} else {
				add("%s: binding-prefix/%s names %x instead", at, b.Prefix, owner)
			}
		}
		return nil
	})
	_ = kt.Scan(spaceBindingPrefix, nil, func(k, v []byte) error {
		pfx, ok := ParsePrefixKey(k)
		if !ok {
			add("binding-prefix/%x: malformed key", k)
			return nil
		}
		at := fmt.Sprintf("binding-prefix/%s", pfx)
		rec := kt.Get(spaceBindings, v)
		if rec == nil {
			add("%s: names binding %x, which does not exist", at, v)
			return nil
		}
		var b Binding
		if json.Unmarshal(rec, &b) == nil && b.Prefix != pfx {
			add("%s: names binding %x, whose prefix is %s", at, v, b.Prefix)
		}
		return nil
	})
}
