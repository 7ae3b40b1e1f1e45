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
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the value of meta/schema this package writes and reads.
// A store with another value is refused with ErrSchema.
const SchemaVersion = "1"

// DefaultLockTimeout is how long Open waits for the file lock when
// StoreOptions.Timeout is zero.
const DefaultLockTimeout = time.Second

// maxMACLen is the longest hardware address stored, as in Kea
// (MAX_HWADDR_LEN) and in the relay remote-id.
const maxMACLen = 20

// Bucket and key names; doc.go describes the layout.
var (
	bucketMeta          = []byte("meta")
	bucketPools         = []byte("pools")
	bucketAlloc         = []byte("alloc")
	bucketPrefix        = []byte("prefix")
	bucketMACs          = []byte("macs")
	bucketBindings      = []byte("bindings")
	bucketBindingPrefix = []byte("binding-prefix")

	keySchema     = []byte("schema")
	keyServerDUID = []byte("server-duid")
)

// Path returns the file the store was opened from.
func (s *Store) Path() string { return s.path }

// Close releases the file lock. Transactions in progress finish first.
func (s *Store) Close() error { return s.db.Close() }

// Update runs fn in one read-write transaction: everything fn wrote is
// committed when it returns nil, and nothing when it returns an error or
// panics. pools are the configured pools that Tx.Put accepts allocations
// for. The Tx must not be used after fn returns.
func (s *Store) Update(pools []Pool, fn func(tx *Tx) error) error {
	tx, err := newTx(pools)
	if err != nil {
		return err
	}
	return s.guard(func() error {
		return s.db.Update(func(btx *bolt.Tx) error {
			tx.btx = btx
			return fn(tx)
		})
	})
}

// View runs fn in a read-only transaction, which sees one consistent
// snapshot; Tx.Put and Tx.Delete fail in it.
func (s *Store) View(pools []Pool, fn func(tx *Tx) error) error {
	tx, err := newTx(pools)
	if err != nil {
		return err
	}
	return s.guard(func() error {
		return s.db.View(func(btx *bolt.Tx) error {
			tx.btx = btx
			return fn(tx)
		})
	})
}

// guard runs fn, which reads the store, turning a damaged page into an
// error wrapping ErrDamaged instead of a crash (see guard).
func (s *Store) guard(fn func() error) error { return guard(s.path, fn) }

// wrap names the store in err, unless err already does (ErrDamaged).
func (s *Store) wrap(err error) error {
	if errors.Is(err, ErrDamaged) {
		return err
	}
	return fmt.Errorf("store %s: %w", s.path, err)
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
// not called.
func (s *Store) ServerDUID(generate func() ([]byte, error)) ([]byte, error) {
	var duid []byte
	err := s.guard(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			if meta := tx.Bucket(bucketMeta); meta != nil {
				duid = bytes.Clone(meta.Get(keyServerDUID))
			}
			return nil
		})
	})
	if err != nil || duid != nil {
		return duid, err
	}
	if s.readOnly {
		return nil, fmt.Errorf("store %s: %w: %w", s.path, ErrNoServerDUID, berrors.ErrDatabaseReadOnly)
	}
	err = s.guard(func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			meta := tx.Bucket(bucketMeta)
			if v := meta.Get(keyServerDUID); v != nil { // another writer was first
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
			return meta.Put(keyServerDUID, duid)
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", s.path, err)
	}
	return duid, nil
}

// Tx is one transaction on the allocation table, valid only inside the
// function given to Store.Update or Store.View. Its writes keep the
// invariants: a prefix belongs to at most one MAC, a MAC has at most one
// allocation across all pools, an allocation never changes prefix.
type Tx struct {
	btx   *bolt.Tx
	pools map[string]Pool
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

// StoredPools returns the names of the pools that have a bucket in the
// store, configured or not, in byte order.
func (t *Tx) StoredPools() []string {
	var names []string
	if root := t.btx.Bucket(bucketPools); root != nil {
		_ = root.ForEachBucket(func(k []byte) error {
			names = append(names, string(k))
			return nil
		})
	}
	return names
}

// poolBuckets returns the alloc and prefix buckets of pool name; nil when
// the pool has none yet and create is false.
func (t *Tx) poolBuckets(name string, create bool) (alloc, prefix *bolt.Bucket, err error) {
	root := t.btx.Bucket(bucketPools)
	if root == nil {
		return nil, nil, nil
	}
	pb := root.Bucket([]byte(name))
	if pb == nil {
		if !create {
			return nil, nil, nil
		}
		if pb, err = root.CreateBucket([]byte(name)); err != nil {
			return nil, nil, fmt.Errorf("create bucket pools/%s: %w", name, err)
		}
	}
	alloc, prefix = pb.Bucket(bucketAlloc), pb.Bucket(bucketPrefix)
	if create {
		if alloc == nil {
			if alloc, err = pb.CreateBucket(bucketAlloc); err != nil {
				return nil, nil, fmt.Errorf("create bucket pools/%s/alloc: %w", name, err)
			}
		}
		if prefix == nil {
			if prefix, err = pb.CreateBucket(bucketPrefix); err != nil {
				return nil, nil, fmt.Errorf("create bucket pools/%s/prefix: %w", name, err)
			}
		}
	}
	return alloc, prefix, nil
}

// Put writes a, creating or updating the allocation of a.MAC in a.Pool. It
// fails, writing nothing, when a.Pool is not configured (ErrUnknownPool),
// the MAC is empty or too long (ErrInvalidMAC), the state is unknown
// (ErrInvalidState), the prefix is not a delegated prefix of the pool
// (ErrOutsidePool, ErrPrefixLength), the prefix belongs to another MAC
// (ErrDuplicatePrefix), the MAC has an allocation in another pool
// (ErrDuplicateMAC), or the MAC already has another prefix (ErrPrefixMoved).
// Should bbolt itself fail mid-write, return the error from the Update
// function so that the transaction rolls back.
func (t *Tx) Put(a Allocation) error {
	if !t.btx.Writable() {
		return fmt.Errorf("put allocation of %s: %w", a.MAC, berrors.ErrTxNotWritable)
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
	macs := t.btx.Bucket(bucketMACs)
	key := []byte(a.MAC)
	if owner := macs.Get(key); owner != nil && string(owner) != a.Pool {
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
	if owner, in, taken := t.PrefixElsewhere(a.Pool, a.Prefix); taken {
		return fmt.Errorf("prefix %s in pool %q: overlaps what %s holds in pool %q, not given to %s: %w", a.Prefix, a.Pool, owner, in, a.MAC, ErrDuplicatePrefix)
	}
	val, err := encodeAllocation(a)
	if err != nil {
		return err
	}
	// Every check passed: only now create the pool's buckets if need be.
	alloc, idx, err := t.poolBuckets(a.Pool, true)
	if err != nil {
		return err
	}
	pk := prefixKey(a.Prefix)
	if err := alloc.Put(key, val); err != nil {
		return fmt.Errorf("put pools/%s/alloc/%s: %w", a.Pool, a.MAC, err)
	}
	if err := idx.Put(pk, key); err != nil {
		return fmt.Errorf("put pools/%s/prefix/%s: %w", a.Pool, a.Prefix, err)
	}
	if err := macs.Put(key, []byte(a.Pool)); err != nil {
		return fmt.Errorf("put macs/%s: %w", a.MAC, err)
	}
	return nil
}

// Get returns the allocation of mac in pool, configured or not.
func (t *Tx) Get(pool string, mac net.HardwareAddr) (Allocation, bool, error) {
	alloc, _, err := t.poolBuckets(pool, false)
	if err != nil || alloc == nil || len(mac) == 0 {
		return Allocation{}, false, err
	}
	v := alloc.Get(mac)
	if v == nil {
		return Allocation{}, false, nil
	}
	a, err := decodeAllocation(pool, mac, v)
	return a, err == nil, err
}

// Lookup returns the allocation of mac in whichever pool holds it.
func (t *Tx) Lookup(mac net.HardwareAddr) (Allocation, bool, error) {
	if len(mac) == 0 {
		return Allocation{}, false, nil
	}
	macs := t.btx.Bucket(bucketMACs)
	if macs == nil {
		return Allocation{}, false, nil
	}
	pool := macs.Get(mac)
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
	_, idx, _ := t.poolBuckets(pool, false)
	if idx == nil || !prefix.IsValid() {
		return nil, false
	}
	v := idx.Get(prefixKey(prefix))
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
	root := t.btx.Bucket(bucketPools)
	if root == nil || !prefix.IsValid() {
		return nil, "", false
	}
	_ = root.ForEachBucket(func(name []byte) error {
		if string(name) == pool {
			return nil
		}
		if idx := root.Bucket(name).Bucket(bucketPrefix); idx != nil {
			if v := overlapping(idx, prefix); v != nil {
				owner, in, ok = net.HardwareAddr(bytes.Clone(v)), string(name), true
				return errStop
			}
		}
		return nil
	})
	return owner, in, ok
}

// errStop ends a ForEach early.
var errStop = errors.New("stop")

// overlapping returns the owner of the entry of prefix index idx that
// overlaps p, nil when none does. Within one index prefixes never
// overlap, so the entry just below p's address is the only one that can
// contain it.
func overlapping(idx *bolt.Bucket, p netip.Prefix) []byte {
	p = p.Masked()
	c := idx.Cursor()
	a := p.Addr().As16()
	k, v := c.Seek(a[:])
	if k != nil && len(k) == prefixKeyLen && p.Contains(netip.AddrFrom16([16]byte(k[:16]))) {
		return v
	}
	if k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	for ; k != nil; k, v = c.Prev() {
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
func (t *Tx) overlappingIndexes(pool Pool) []*bolt.Bucket {
	root := t.btx.Bucket(bucketPools)
	if root == nil {
		return nil
	}
	var out []*bolt.Bucket
	_ = root.ForEachBucket(func(name []byte) error {
		if string(name) == pool.Name {
			return nil
		}
		// overlapping finds any entry inside the range, or one covering it.
		if idx := root.Bucket(name).Bucket(bucketPrefix); idx != nil && overlapping(idx, pool.Prefix) != nil {
			out = append(out, idx)
		}
		return nil
	})
	return out
}

// unindex deletes the index entry pk of b if it still points at owner.
func unindex(b *bolt.Bucket, pk, owner []byte) error {
	if bytes.Equal(b.Get(pk), owner) {
		return b.Delete(pk)
	}
	return nil
}

// Delete removes the allocation of mac in pool (configured or not) and
// frees its prefix. Deleting what is not there is not an error.
func (t *Tx) Delete(pool string, mac net.HardwareAddr) error {
	if !t.btx.Writable() {
		return fmt.Errorf("delete allocation of %s in pool %q: %w", mac, pool, berrors.ErrTxNotWritable)
	}
	alloc, idx, err := t.poolBuckets(pool, false)
	if err != nil || alloc == nil || len(mac) == 0 {
		return err
	}
	v := alloc.Get(mac)
	if v == nil {
		return nil
	}
	a, err := decodeAllocation(pool, mac, v)
	if err != nil {
		return err
	}
	if idx != nil && a.Prefix.IsValid() {
		if err := unindex(idx, prefixKey(a.Prefix), mac); err != nil {
			return fmt.Errorf("delete pools/%s/prefix/%s: %w", pool, a.Prefix, err)
		}
	}
	if err := alloc.Delete(mac); err != nil {
		return fmt.Errorf("delete pools/%s/alloc/%s: %w", pool, mac, err)
	}
	if macs := t.btx.Bucket(bucketMACs); macs != nil && string(macs.Get(mac)) == pool {
		if err := macs.Delete(mac); err != nil {
			return fmt.Errorf("delete macs/%s: %w", mac, err)
		}
	}
	return nil
}

// ForEach calls fn with every allocation of pool (configured or not), in
// byte order of the MACs, and stops at fn's first error, which it returns.
// fn must not write to the Tx.
func (t *Tx) ForEach(pool string, fn func(a Allocation) error) error {
	alloc, _, err := t.poolBuckets(pool, false)
	if err != nil || alloc == nil {
		return err
	}
	return alloc.ForEach(func(k, v []byte) error {
		a, err := decodeAllocation(pool, k, v)
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
// address order, in one walk of the prefix index: n allocations cost one
// walk, not n. When the pool has fewer than n free prefixes it returns
// those it found and an error wrapping ErrPoolExhausted. It reads the index
// as it is: prefixes Put in the same transaction after the call are not
// accounted for.
func (t *Tx) lowestFree(pool Pool, n int) ([]netip.Prefix, error) {
	if !pool.Prefix.IsValid() || !pool.Prefix.Addr().Is6() || pool.PrefixLen < max(pool.Prefix.Bits(), 1) || pool.PrefixLen > 128 {
		return nil, fmt.Errorf("pool %q (%s, /%d): %w", pool.Name, pool.Prefix, pool.PrefixLen, ErrPrefixLength)
	}
	exhausted := func(found []netip.Prefix) ([]netip.Prefix, error) {
		return found, fmt.Errorf("pool %q (%s, /%d): %w", pool.Name, pool.Prefix, pool.PrefixLen, ErrPoolExhausted)
	}
	base := pool.Prefix.Masked().Addr()
	cand := u128From(base)
	last := cand.or(mask(pool.Prefix.Bits()).not())
	step := u128{}.setBit(128 - pool.PrefixLen)
	_, idx, err := t.poolBuckets(pool.Name, false)
	if err != nil {
		return nil, err
	}
	var (
		c *bolt.Cursor
		k []byte
	)
	if idx != nil {
		c = idx.Cursor()
		seek := base.As16()
		k, _ = c.Seek(seek[:])
	}
	elsewhere := t.overlappingIndexes(pool)
	out := make([]netip.Prefix, 0, min(n, 1<<16))
	for len(out) < n {
		// Skip index entries below cand: malformed ones (Check reports
		// them) and a second entry inside a block already passed.
		for k != nil && (len(k) != prefixKeyLen || u128From(netip.AddrFrom16([16]byte(k[:16]))).cmp(cand) < 0) {
			k, _ = c.Next()
		}
		next, overflow := cand.add(step)
		taken := false
		if k != nil {
			a := u128From(netip.AddrFrom16([16]byte(k[:16])))
			// An entry inside cand's block (normally at cand) takes it.
			taken = a.cmp(last) <= 0 && (overflow || a.cmp(next) < 0)
		}
		if !taken {
			p := netip.PrefixFrom(cand.addr(), pool.PrefixLen)
			for _, other := range elsewhere {
				if overlapping(other, p) != nil {
					taken = true
					break
				}
			}
			if !taken {
				out = append(out, p)
			}
		}
		if len(out) == n {
			break
		}
		if overflow || next.cmp(last) > 0 {
			return exhausted(out)
		}
		cand = next
	}
	return out, nil
}

// allocRecord is an allocation as stored: the MAC, which Allocation keeps
// out of its JSON, is written too so that a record reads on its own.
type allocRecord struct {
	MAC string `json:"mac"`
	Allocation
}

func encodeAllocation(a Allocation) ([]byte, error) {
	v, err := json.Marshal(allocRecord{MAC: a.MAC.String(), Allocation: a})
	if err != nil {
		return nil, fmt.Errorf("encode allocation of %s in pool %q: %w", a.MAC, a.Pool, err)
	}
	return v, nil
}

// decodeAllocation decodes a stored allocation. The bucket key is the
// authority for the MAC and the bucket for the pool; Check reports a record
// that disagrees with them.
func decodeAllocation(pool string, key, val []byte) (Allocation, error) {
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

func prefixKey(p netip.Prefix) []byte {
	a := p.Addr().As16()
	return append(a[:], byte(p.Bits()))
}

func parsePrefixKey(k []byte) (netip.Prefix, bool) {
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
// returns one line per violation (none: the store is sound). It reports:
// a missing or unknown schema; allocations of pools that are not configured
// (they are kept but not served); records that do not decode, or whose
// "mac" or "pool" disagrees with their key or bucket; unknown states;
// prefixes outside their pool, of the wrong length or misaligned; a prefix
// or a MAC allocated twice; prefix index and MAC index entries that do not
// match an allocation, and allocations missing from them; bindings and
// binding-prefix entries that do not match each other. A store whose pages
// do not read (bbolt's own check of every page, free ones included, fails)
// gives an error wrapping ErrDamaged; the error is only for failing to
// read the store.
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
	err := s.guard(func() error {
		return s.db.View(func(btx *bolt.Tx) error {
			meta := btx.Bucket(bucketMeta)
			if meta == nil {
				add("meta: missing bucket")
			} else if v := meta.Get(keySchema); string(v) != SchemaVersion {
				add("meta/schema: %q, want %q", v, SchemaVersion)
			}
			root, macs := btx.Bucket(bucketPools), btx.Bucket(bucketMACs)
			if root == nil {
				add("pools: missing bucket")
			}
			if macs == nil {
				add("macs: missing bucket")
			}
			if root != nil && macs != nil {
				checkAllocations(root, macs, configured, add)
			}
			bb, bp := btx.Bucket(bucketBindings), btx.Bucket(bucketBindingPrefix)
			if bb == nil {
				add("bindings: missing bucket")
			}
			if bp == nil {
				add("binding-prefix: missing bucket")
			}
			if bb != nil && bp != nil {
				checkBindings(bb, bp, add)
			}
			// Every page this process read above is sound enough to read;
			// bbolt's own check walks them all again, the free ones too, in
			// a goroutine of its own that recovers its panics.
			return s.checkPages(btx)
		})
	})
	if err != nil {
		return nil, s.wrap(err)
	}
	return out, nil
}

// maxPageErrors bounds the bbolt check errors an ErrDamaged lists.
const maxPageErrors = 5

// checkPages runs bbolt's consistency check of every page and returns an
// error wrapping ErrDamaged naming its first findings.
func (s *Store) checkPages(btx *bolt.Tx) error {
	var errs []string
	n := 0
	for err := range btx.Check() {
		if n++; n <= maxPageErrors {
			errs = append(errs, err.Error())
		}
	}
	if n == 0 {
		return nil
	}
	why := fmt.Sprintf("bbolt's page check found %d problem(s): %s", n, strings.Join(errs, "; "))
	if n > maxPageErrors {
		why += "; …"
	}
	return &damagedError{path: s.path, why: why}
}

func checkAllocations(root, macs *bolt.Bucket, configured map[string]*Pool, add func(string, ...any)) {
	prefixOwner := map[netip.Prefix]string{} // → "pools/<pool>/alloc/<mac>"
	macPool := map[string]string{}
	_ = root.ForEach(func(name, v []byte) error {
		pool := string(name)
		if v != nil {
			add("pools/%s: a value where a pool bucket belongs", pool)
			return nil
		}
		pb := root.Bucket(name)
		alloc, idx := pb.Bucket(bucketAlloc), pb.Bucket(bucketPrefix)
		if alloc == nil || idx == nil {
			add("pools/%s: missing alloc or prefix bucket", pool)
			return nil
		}
		p, isConfigured := configured[pool]
		if !isConfigured {
			add("pools/%s: %d allocation(s) in a pool that is not configured (kept, not served)", pool, alloc.Stats().KeyN)
		}
		_ = alloc.ForEach(func(k, v []byte) error {
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
			switch owner := idx.Get(prefixKey(r.Prefix)); {
			case owner == nil:
				add("%s: prefix %s missing from pools/%s/prefix", at, r.Prefix, pool)
			case !bytes.Equal(owner, k):
				add("%s: pools/%s/prefix/%s names %s instead", at, pool, r.Prefix, net.HardwareAddr(owner))
			}
			if owner := macs.Get(k); string(owner) != pool {
				if owner == nil {
					add("%s: MAC missing from macs", at)
				} else {
					add("%s: macs/%s names pool %q instead", at, mac, owner)
				}
			}
			return nil
		})
		_ = idx.ForEach(func(k, v []byte) error {
			pfx, ok := parsePrefixKey(k)
			if !ok {
				add("pools/%s/prefix/%x: malformed key", pool, k)
				return nil
			}
			at := fmt.Sprintf("pools/%s/prefix/%s", pool, pfx)
			rec := alloc.Get(v)
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
		return nil
	})
	_ = macs.ForEach(func(k, v []byte) error {
		at := fmt.Sprintf("macs/%s", net.HardwareAddr(k))
		pb := root.Bucket(v)
		if pb == nil || pb.Bucket(bucketAlloc) == nil || pb.Bucket(bucketAlloc).Get(k) == nil {
			add("%s: names pool %q, which has no allocation for it", at, v)
		}
		return nil
	})
}

func checkBindings(bb, bp *bolt.Bucket, add func(string, ...any)) {
	_ = bb.ForEach(func(k, v []byte) error {
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
		if owner := bp.Get(prefixKey(b.Prefix)); !bytes.Equal(owner, k) {
			if owner == nil {
				add("%s: prefix %s missing from binding-prefix", at, b.Prefix)
			} else {
				add("%s: binding-prefix/%s names %x instead", at, b.Prefix, owner)
			}
		}
		return nil
	})
	_ = bp.ForEach(func(k, v []byte) error {
		pfx, ok := parsePrefixKey(k)
		if !ok {
			add("binding-prefix/%x: malformed key", k)
			return nil
		}
		at := fmt.Sprintf("binding-prefix/%s", pfx)
		rec := bb.Get(v)
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
