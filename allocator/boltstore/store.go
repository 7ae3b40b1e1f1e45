package boltstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// DefaultLockTimeout is how long Open waits for the file lock when
// Options.Timeout is zero.
const DefaultLockTimeout = time.Second

// initialMmapSize is the address space bbolt maps at open: 1 GiB, about
// twice a store of a million allocations with their history (544 MB made
// by 'bench setup --fill'). It is
// address space, not memory (the pages are read from the file on demand,
// and the file grows only as data needs it), and it saves the remaps of a
// growing file: bbolt copies every node a write transaction has touched
// out of the old map at each one, which cost a first sync of 100,000 VMs
// about half of its CPU. A store larger than this is remapped as before.
const initialMmapSize = 1 << 30

// Bucket and key names; doc.go describes the layout.
var (
	bucketMeta          = []byte("meta")
	bucketPools         = []byte("pools")
	bucketAlloc         = []byte("alloc")
	bucketPrefix        = []byte("prefix")
	bucketMACs          = []byte("macs")
	bucketBindings      = []byte("bindings")
	bucketBindingPrefix = []byte("binding-prefix")
	// Buckets made on their first write: stores of earlier versions lack
	// them, and a read of a missing one reads an empty space.
	bucketHeld    = []byte("held")
	bucketHistory = []byte("history")

	keySchema = []byte("schema")
)

// topBuckets are the buckets every store has besides meta.
var topBuckets = [][]byte{bucketPools, bucketMACs, bucketBindings, bucketBindingPrefix}

// Options tunes Open. The zero value opens an existing store for reading
// and writing, which is what the server needs.
type Options struct {
	// Timeout bounds the wait for the file lock another process holds.
	// Zero means DefaultLockTimeout (1s); a negative value tries once and
	// does not wait. Open never waits forever.
	Timeout time.Duration
	// ReadOnly opens the store with a shared lock and refuses writes. The
	// file must exist. False (the default) opens it for writing.
	ReadOnly bool
	// Create lets Open create the file (and its folder) when it does not
	// exist, as a new, empty store with its schema marker. False (the
	// default): a missing file gives ErrNoStore, so that a typo in the
	// path or an unmounted folder never starts an empty store. An
	// existing file is never created anew: a 0-byte or schema-less one
	// gives ErrNotStore whatever Create says. Create with ReadOnly is an
	// error.
	Create bool
	// NoVerify skips Verify, which Open otherwise runs: reading every page
	// of the store once, some 0.1 to 0.4 s for a million allocations. A
	// caller that sets it must verify the store itself before it trusts
	// it (serve loads its table, then runs
	// allocator.Store.VerifyIndexesBeforeWrites).
	// False (the default): a damaged page anywhere gives ErrDamaged from
	// Open.
	NoVerify bool
	// NoSync skips fsync on commit. False (the default) makes every
	// committed transaction durable; true is for tests only: a crash can
	// lose recent commits or corrupt the file.
	NoSync bool
	// SplitBytes is how much a transaction that allows splitting
	// (kv.Splitter) writes before it commits at the next group's end and
	// goes on in a new one. Zero means DefaultSplitBytes.
	SplitBytes int
}

// DefaultSplitBytes bounds what a splittable Update (a sync's) holds
// before it commits a part: 8 MiB of keys and values, about 10,000
// allocations with their indexes and history. bbolt keeps every write of
// a transaction in memory until the commit, and then as much again in
// the pages it writes: a first sync of 100,000 VMs in one transaction
// held some 180 MB.
const DefaultSplitBytes = 8 << 20

// putCost is what a write costs a transaction besides its key and value
// (bbolt's node entry), for SplitBytes.
const putCost = 64

// Store is a bbolt file holding the key spaces of package kv: it
// implements kv.Backend, kv.Verifier, kv.Checker and kv.Creator. It is
// safe for concurrent use; bbolt serialises the writers.
type Store struct {
	db         *bolt.DB
	path       string
	readOnly   bool
	splitBytes int
	// update serialises Update: the parts of a split one are not
	// interleaved with another writer's transaction.
	update sync.Mutex
	// undo removes the file and the folders Open created; nil when the
	// file was there before.
	undo func()
	// gate, once VerifyBeforeWrites ran, holds Update until its Verify
	// ends.
	gate atomic.Pointer[writeGate]
}

var (
	_ kv.Backend            = (*Store)(nil)
	_ kv.Verifier           = (*Store)(nil)
	_ kv.BackgroundVerifier = (*Store)(nil)
	_ kv.Checker            = (*Store)(nil)
	_ kv.Creator            = (*Store)(nil)
	_ kv.Backuper           = (*Store)(nil)
	_ kv.Splitter           = (*tx)(nil)
)

// lockedError names the store another process holds.
type lockedError struct{ path string }

func (e *lockedError) Error() string {
	return fmt.Sprintf("store %s is locked by another process (pid unknown); is another cloudstack-pd running?", e.path)
}

func (e *lockedError) Unwrap() error { return kv.ErrLocked }

// Open opens the store at path. A missing file is created, with its folder
// and the schema marker, only with opts.Create; otherwise it gives an error
// wrapping kv.ErrNoStore (and fs.ErrNotExist). A file that is empty, not a
// bbolt file, or a bbolt file without the schema marker gives
// kv.ErrNotStore; one whose last commit does not fit in the file
// (truncated) or whose pages do not read gives kv.ErrDamaged; a store of an
// unknown schema gives kv.ErrSchema. When another process holds the file
// lock beyond opts.Timeout it returns an error wrapping kv.ErrLocked.
//
// A new store appears at path whole or not at all: it is made under a
// temporary name in the same folder and linked to path only once it holds
// its schema marker (never over a file that appeared meanwhile). If Open
// created the file and then fails, it removes the file (and the folders it
// created): a failed Open leaves nothing new behind, and never removes
// what was there before.
func Open(path string, opts Options) (st *Store, err error) {
	if opts.ReadOnly && opts.Create {
		return nil, fmt.Errorf("store %s: cannot create a store read-only", path)
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = DefaultLockTimeout
	}
	var undo func()
	fi, statErr := os.Stat(path)
	if errors.Is(statErr, fs.ErrNotExist) && opts.Create {
		if undo, err = createStore(path, opts.NoSync); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				undo()
			}
		}()
		fi, statErr = os.Stat(path)
	}
	switch {
	case statErr == nil:
		if err := validateFile(path, fi); err != nil {
			return nil, err
		}
	case errors.Is(statErr, fs.ErrNotExist):
		return nil, fmt.Errorf("store %s does not exist: %w (%w)", path, kv.ErrNoStore, fs.ErrNotExist)
	default:
		return nil, fmt.Errorf("store %s: %w", path, statErr)
	}
	var db *bolt.DB
	err = guard(path, func() (err error) {
		db, err = bolt.Open(path, 0o600, &bolt.Options{
			Timeout:         timeout,
			ReadOnly:        opts.ReadOnly,
			NoSync:          opts.NoSync,
			InitialMmapSize: initialMmapSize,
		})
		return err
	})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, &lockedError{path: path}
	case errors.Is(err, kv.ErrDamaged):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	s := &Store{db: db, path: path, readOnly: opts.ReadOnly, undo: undo, splitBytes: opts.SplitBytes}
	if s.splitBytes <= 0 {
		s.splitBytes = DefaultSplitBytes
	}
	if err = guard(path, func() error { return s.init(false) }); err == nil && !opts.NoVerify {
		err = s.Verify(false)
	}
	if err != nil {
		_ = db.Close()
		if errors.Is(err, kv.ErrDamaged) {
			return nil, err
		}
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	return s, nil
}

// Name returns the file the store was opened from.
func (s *Store) Name() string { return s.path }

// ReadOnly reports whether the store was opened read-only.
func (s *Store) ReadOnly() bool { return s.readOnly }

// Close releases the file lock. Transactions in progress finish first.
func (s *Store) Close() error { return s.db.Close() }

// Created reports whether Open created the file (Options.Create).
func (s *Store) Created() bool { return s.undo != nil }

// Discard closes the store and, when Open created its file, removes it
// and the folders Open made: for a command that created the store and
// then failed, so that it leaves nothing new behind. A store that existed
// before is only closed.
func (s *Store) Discard() error {
	err := s.db.Close()
	if s.undo != nil {
		s.undo()
	}
	return err
}

// View runs fn in a read-only bbolt transaction. A damaged page gives an
// error wrapping kv.ErrDamaged, not a crash (see guard).
func (s *Store) View(fn func(kv.Tx) error) error {
	return guard(s.path, func() error {
		return s.db.View(func(btx *bolt.Tx) error {
			return fn(s.newTx(btx))
		})
	})
}

// Update runs fn in a read-write bbolt transaction. On a read-only store
// it fails with an error wrapping kv.ErrReadOnly. The pages the
// transaction read, and its commit rewrote, are dropped from the
// process's memory afterwards (see dropPages): a server recording
// bindings all day would otherwise hold, as resident file pages, every
// page of the store its writes ever went through.
//
// fn's writes are committed at once, all or nothing, unless fn allows
// splitting (kv.Splitter): then, once they pass Options.SplitBytes, the
// writes so far are committed at the end of the next group and fn goes
// on in a new transaction; an error after that leaves those parts
// committed, and says so. Updates are serialised, so that no other
// writer of this process sees or writes between two parts.
func (s *Store) Update(fn func(kv.Tx) error) error {
	if s.readOnly {
		return fmt.Errorf("store %s: %w: %w", s.path, kv.ErrReadOnly, berrors.ErrDatabaseReadOnly)
	}
	if g := s.gate.Load(); g != nil {
		<-g.done
		if g.err != nil {
			return g.err // nothing is written to a damaged store
		}
	}
	s.update.Lock()
	defer s.update.Unlock()
	var t *tx
	err := guard(s.path, func() error {
		btx, err := s.db.Begin(true)
		if err != nil {
			return err
		}
		t = s.newTx(btx)
		defer func() {
			if t.btx != nil { // fn failed or panicked (guard recovers)
				_ = t.btx.Rollback()
			}
		}()
		if err := fn(t); err != nil {
			return err
		}
		if t.err != nil {
			return t.err
		}
		err = t.btx.Commit()
		t.btx = nil
		return err
	})
	if err != nil {
		if t != nil && t.parts > 0 {
			return fmt.Errorf("%w (the update's first %d parts were committed, each of whole changes; the rest was not)", err, t.parts)
		}
		return err
	}
	// dropPages needs a transaction, which keeps bbolt from remapping.
	_ = guard(s.path, func() error { return s.db.View(func(btx *bolt.Tx) error { s.dropPages(btx); return nil }) })
	return nil
}

// AllowSplit lets the transaction commit in parts (kv.Splitter).
func (t *tx) AllowSplit() { t.split = true }

// EndGroup closes a group of writes (kv.Grouper). A transaction that
// allows splitting and has written Options.SplitBytes commits here and
// goes on in a new bbolt transaction; a failure is kept in t.err, which
// every later write and the Update return.
func (t *tx) EndGroup() {
	if !t.split || t.err != nil || t.btx == nil || t.written < t.s.splitBytes {
		return
	}
	err := t.btx.Commit()
	t.btx, t.buckets, t.written = nil, nil, 0
	if err != nil {
		t.err = fmt.Errorf("commit part %d of a large update: %w", t.parts+1, err)
		return
	}
	t.parts++
	if t.btx, err = t.s.db.Begin(true); err != nil {
		t.err = fmt.Errorf("begin part %d of a large update: %w", t.parts+1, err)
	}
}

// tx is a kv.Tx over a bbolt transaction. It keeps the buckets it looked
// up, so that a Put of an allocation does not walk the root three times.
type tx struct {
	s       *Store
	btx     *bolt.Tx // nil once a part failed to commit (err says why)
	buckets map[kv.Space]*bolt.Bucket
	reads   int // records scanned, for dropPages
	// A splittable Update's (kv.Splitter): whether it may split, what it
	// wrote since its last part, the parts committed, and the failure
	// that ended it.
	split   bool
	written int
	parts   int
	err     error
}

// WriteTo writes a consistent copy of the store to w: the bbolt file as
// one read transaction sees it (bbolt's hot backup), which Open opens as
// it opens the store. Writers go on meanwhile.
func (s *Store) WriteTo(w io.Writer) (n int64, err error) {
	err = guard(s.path, func() error {
		return s.db.View(func(btx *bolt.Tx) error {
			n, err = btx.WriteTo(w)
			return err
		})
	})
	return n, err
}

func (s *Store) newTx(btx *bolt.Tx) *tx { return &tx{s: s, btx: btx} }

// bucket returns the bucket of space sp, creating it (and the pool's other
// bucket) when create is set; nil when it does not exist and create is
// false.
func (t *tx) bucket(sp kv.Space, create bool) (*bolt.Bucket, error) {
	if t.btx == nil {
		return nil, t.err
	}
	if b, ok := t.buckets[sp]; ok {
		return b, nil
	}
	var b *bolt.Bucket
	switch sp.Kind {
	case kv.Meta:
		b = t.btx.Bucket(bucketMeta)
	case kv.MACs:
		b = t.btx.Bucket(bucketMACs)
	case kv.Bindings:
		b = t.btx.Bucket(bucketBindings)
	case kv.BindingPrefix:
		b = t.btx.Bucket(bucketBindingPrefix)
	case kv.Held, kv.History:
		name := bucketHeld
		if sp.Kind == kv.History {
			name = bucketHistory
		}
		if b = t.btx.Bucket(name); b == nil && create {
			var err error
			if b, err = t.btx.CreateBucket(name); err != nil {
				return nil, fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
	case kv.Alloc, kv.Prefix:
		root := t.btx.Bucket(bucketPools)
		if root == nil {
			return nil, nil
		}
		pb := root.Bucket([]byte(sp.Pool))
		if pb == nil {
			if !create {
				return nil, nil
			}
			var err error
			if pb, err = root.CreateBucket([]byte(sp.Pool)); err != nil {
				return nil, fmt.Errorf("create bucket pools/%s: %w", sp.Pool, err)
			}
		}
		// Both buckets of a pool are made together: Check wants both.
		alloc, prefix := pb.Bucket(bucketAlloc), pb.Bucket(bucketPrefix)
		if create {
			var err error
			if alloc == nil {
				if alloc, err = pb.CreateBucket(bucketAlloc); err != nil {
					return nil, fmt.Errorf("create bucket pools/%s/alloc: %w", sp.Pool, err)
				}
			}
			if prefix == nil {
				if prefix, err = pb.CreateBucket(bucketPrefix); err != nil {
					return nil, fmt.Errorf("create bucket pools/%s/prefix: %w", sp.Pool, err)
				}
			}
		}
		if alloc == nil || prefix == nil {
			// Not cached: a later create must complete the pool.
			if sp.Kind == kv.Alloc {
				return alloc, nil
			}
			return prefix, nil
		}
		if t.buckets == nil {
			t.buckets = make(map[kv.Space]*bolt.Bucket, 4)
		}
		alloc.FillPercent, prefix.FillPercent = fillPercent(kv.Alloc), fillPercent(kv.Prefix)
		t.buckets[kv.Space{Kind: kv.Alloc, Pool: sp.Pool}] = alloc
		t.buckets[kv.Space{Kind: kv.Prefix, Pool: sp.Pool}] = prefix
		return t.buckets[sp], nil
	default:
		return nil, fmt.Errorf("key space %d: unknown", sp.Kind)
	}
	if b == nil && create {
		return nil, fmt.Errorf("bucket %s is missing: store is inconsistent, run check", sp)
	}
	if b != nil {
		if t.buckets == nil {
			t.buckets = make(map[kv.Space]*bolt.Bucket, 4)
		}
		b.FillPercent = fillPercent(sp.Kind)
		t.buckets[sp] = b
	}
	return b, nil
}

// fillPercent is how full bbolt fills the pages of a space's bucket when
// a write transaction splits them. The history's keys only grow (time and
// sequence), so its pages are filled: an insert never lands in them again.
// The other spaces take their keys in any order (MACs, prefixes) and
// leave a tenth free, where bbolt leaves half: a first sync of 100,000
// VMs wrote 42,000 half-empty pages (170 MB held until the commit, one
// write call each), and a page that an insert overfills is split again
// anyway, as it would be at half.
func fillPercent(k kv.Kind) float64 {
	if k == kv.History {
		return 1
	}
	return 0.9
}

func (t *tx) Writable() bool { return t.btx != nil && t.btx.Writable() }

func (t *tx) Get(sp kv.Space, key []byte) []byte {
	b, _ := t.bucket(sp, false)
	if b == nil || len(key) == 0 {
		return nil
	}
	return b.Get(key)
}

func (t *tx) Put(sp kv.Space, key, value []byte) error {
	if t.err != nil {
		return t.err
	}
	if !t.btx.Writable() {
		return fmt.Errorf("put %s/%x: %w: %w", sp, key, kv.ErrReadOnly, berrors.ErrTxNotWritable)
	}
	b, err := t.bucket(sp, true)
	if err != nil {
		return err
	}
	t.written += len(key) + len(value) + putCost
	return b.Put(key, value)
}

func (t *tx) Delete(sp kv.Space, key []byte) error {
	if t.err != nil {
		return t.err
	}
	if !t.btx.Writable() {
		return fmt.Errorf("delete %s/%x: %w: %w", sp, key, kv.ErrReadOnly, berrors.ErrTxNotWritable)
	}
	b, _ := t.bucket(sp, false)
	if b == nil || len(key) == 0 {
		return nil
	}
	t.written += len(key) + putCost
	return b.Delete(key)
}

func (t *tx) Seek(sp kv.Space, key []byte) ([]byte, []byte) {
	b, _ := t.bucket(sp, false)
	if b == nil {
		return nil, nil
	}
	return b.Cursor().Seek(key)
}

func (t *tx) Last(sp kv.Space, key []byte) ([]byte, []byte) {
	b, _ := t.bucket(sp, false)
	if b == nil {
		return nil, nil
	}
	c := b.Cursor()
	if key == nil {
		return c.Last()
	}
	if k, _ := c.Seek(key); k == nil {
		return c.Last()
	}
	return c.Prev()
}

// dropEvery is how many records Scan reads between two calls of
// dropPages: some 10 MB of the store.
const dropEvery = 1 << 16

func (t *tx) Scan(sp kv.Space, from []byte, fn func(k, v []byte) error) error {
	b, _ := t.bucket(sp, false)
	if b == nil {
		return nil
	}
	c := b.Cursor()
	var k, v []byte
	if from == nil {
		k, v = c.First()
	} else {
		k, v = c.Seek(from)
	}
	n := 0
	defer func() {
		// A long scan (LoadTable's) leaves none of what it read resident.
		if n >= dropEvery/16 {
			t.s.dropPages(t.btx)
		}
	}()
	for ; k != nil; k, v = c.Next() {
		if v == nil {
			continue // a nested bucket: not a key of the space
		}
		if t.reads++; t.reads%dropEvery == 0 {
			t.s.dropPages(t.btx)
		}
		n++
		if err := fn(k, v); err != nil {
			if errors.Is(err, kv.ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

func (t *tx) Pools() []string {
	var names []string
	if t.btx == nil {
		return nil
	}
	if root := t.btx.Bucket(bucketPools); root != nil {
		_ = root.ForEachBucket(func(k []byte) error {
			names = append(names, string(k))
			return nil
		})
	}
	return names
}

// init checks the schema and, on a writable store, completes the
// top-level buckets. created says createStore has just made the file: only
// then is a file without the schema marker a new store, which gets it.
// Stores written by every earlier version have the marker (meta/schema):
// it was written with the buckets when the file was created.
func (s *Store) init(created bool) error {
	complete := true
	err := s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			if created {
				complete = false
				return nil
			}
			var names []string
			_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
				names = append(names, fmt.Sprintf("%q", name))
				return nil
			})
			if len(names) == 0 {
				return fmt.Errorf("a bbolt file without any bucket, so without the cloudstack-pd schema marker (meta/schema): %w", kv.ErrNotStore)
			}
			return fmt.Errorf("a bbolt file with buckets %v but no cloudstack-pd schema marker (meta/schema): %w", names, kv.ErrNotStore)
		}
		if v := meta.Get(keySchema); string(v) != kv.SchemaVersion {
			return fmt.Errorf("schema %q, this cloudstack-pd reads %q: %w", v, kv.SchemaVersion, kv.ErrSchema)
		}
		for _, b := range topBuckets {
			if tx.Bucket(b) == nil {
				complete = false // an older writer died between buckets; create the rest
			}
		}
		return nil
	})
	if err != nil || complete || s.readOnly {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if meta.Get(keySchema) == nil {
			if err := meta.Put(keySchema, []byte(kv.SchemaVersion)); err != nil {
				return err
			}
		}
		for _, b := range topBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		return nil
	})
}

// Verify reads every branch and leaf page of every bucket once and returns
// an error wrapping kv.ErrDamaged if one does not read (zeroed,
// overwritten), so that damage is found before the store is used, rather
// than in the middle of a sync or never in an index the server does not
// load. Open runs it unless Options.NoVerify; skipAlloc leaves out the
// pools' allocation buckets, which LoadTable reads (and so checks). It
// walks keys with bbolt's cursors and decodes nothing: some 0.1 to 0.4 s
// for a million allocations, most of it faulting the file's pages in,
// against 0.5 to 0.7 s more for bbolt's own Tx.Check, which CheckStructure
// runs. The pages read are dropped from the process's memory as it goes
// (see dropPages). It may run beside other readers.
func (s *Store) Verify(skipAlloc bool) error {
	return guard(s.path, func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			defer s.dropPages(tx)
			n := 0
			// walk reads b's pages and its sub-buckets'; inPool says b is
			// pools/<name>.
			var walk func(b *bolt.Bucket, inPool bool)
			walk = func(b *bolt.Bucket, inPool bool) {
				c := b.Cursor()
				for k, v := c.First(); k != nil; k, v = c.Next() {
					if n++; n%dropEvery == 0 {
						s.dropPages(tx)
					}
					if v != nil || skipAlloc && inPool && bytes.Equal(k, bucketAlloc) {
						continue
					}
					if sub := b.Bucket(k); sub != nil {
						walk(sub, false)
					}
				}
			}
			return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
				if !bytes.Equal(name, bucketPools) {
					walk(b, false)
					return nil
				}
				c := b.Cursor()
				for k, v := c.First(); k != nil; k, v = c.Next() {
					if v == nil {
						if sub := b.Bucket(k); sub != nil {
							walk(sub, true)
						}
					}
				}
				return nil
			})
		})
	})
}

// VerifyBeforeWrites runs Verify(skipAlloc) in the background (see
// kv.BackgroundVerifier): Update waits for its result, and fails with it
// once it failed. serve loads its table (which reads the allocation
// buckets), starts this and answers at once, the rest of the store
// checked before its first write, rather than checking it beside the load
// on the same cores.
func (s *Store) VerifyBeforeWrites(skipAlloc bool) <-chan error {
	g := &writeGate{done: make(chan struct{})}
	s.gate.Store(g)
	out := make(chan error, 1)
	go func() {
		g.err = s.Verify(skipAlloc)
		out <- g.err // before the writes go on: they see the result given
		close(g.done)
	}()
	return out
}

// writeGate holds writes until a background Verify ends (err is set
// before done is closed).
type writeGate struct {
	done chan struct{}
	err  error
}

// damagedError is a store whose file does not read.
type damagedError struct {
	path, why string
}

func (e *damagedError) Error() string {
	return fmt.Sprintf("store %s is damaged: %s", e.path, e.why)
}

func (e *damagedError) Unwrap() error { return kv.ErrDamaged }

// guard runs fn, which reads the store's file at path, turning what bbolt
// does on a damaged file into an error wrapping kv.ErrDamaged: its panics
// on pages that do not make sense, and memory faults (SIGSEGV, SIGBUS) on
// reads outside the mapping, which debug.SetPanicOnFault makes panics of
// this goroutine. bbolt rolls back a managed transaction that panics.
func guard(path string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = &damagedError{path: path, why: fmt.Sprintf("reading it failed: %v", r)}
		}
	}()
	return fn()
}
