package allocator

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// StoreOptions tunes Open. The zero value opens an existing store for
// reading and writing, which is what the server needs.
type StoreOptions struct {
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
	// caller that sets it must call Verify itself before it trusts the
	// store (serve runs it beside LoadTable). False (the default): a
	// damaged page anywhere gives ErrDamaged from Open.
	NoVerify bool
	// NoSync skips fsync on commit. False (the default) makes every
	// committed transaction durable; true is for tests only: a crash can
	// lose recent commits or corrupt the file.
	NoSync bool
}

// Store is the bbolt-backed allocation table and binding record. It is safe
// for concurrent use; bbolt serialises the writers.
type Store struct {
	db       *bolt.DB
	path     string
	readOnly bool
	// undo removes the file and the folders Open created; nil when the
	// file was there before.
	undo func()
}

// lockedError names the store another process holds.
type lockedError struct{ path string }

func (e *lockedError) Error() string {
	return fmt.Sprintf("store %s is locked by another process (pid unknown); is another cloudstack-pd running?", e.path)
}

func (e *lockedError) Unwrap() error { return ErrLocked }

// Open opens the store at path. A missing file is created, with its folder
// and the schema marker, only with opts.Create; otherwise it gives an error
// wrapping ErrNoStore (and fs.ErrNotExist). A file that is empty, not a
// bbolt file, or a bbolt file without this package's schema marker gives
// ErrNotStore; one whose last commit does not fit in the file (truncated)
// or whose pages do not read gives ErrDamaged; a store of an unknown schema
// gives ErrSchema. When another process holds the file lock beyond
// opts.Timeout it returns an error wrapping ErrLocked.
//
// A new store appears at path whole or not at all: it is made under a
// temporary name in the same folder and linked to path only once it holds
// its schema marker (never over a file that appeared meanwhile). If Open
// created the file and then fails, it removes the file (and the folders it
// created): a failed Open leaves nothing new behind, and never removes
// what was there before.
func Open(path string, opts StoreOptions) (st *Store, err error) {
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
		return nil, fmt.Errorf("store %s does not exist: %w (%w)", path, ErrNoStore, fs.ErrNotExist)
	default:
		return nil, fmt.Errorf("store %s: %w", path, statErr)
	}
	var db *bolt.DB
	err = guard(path, func() (err error) {
		db, err = bolt.Open(path, 0o600, &bolt.Options{
			Timeout:  timeout,
			ReadOnly: opts.ReadOnly,
			NoSync:   opts.NoSync,
		})
		return err
	})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, &lockedError{path: path}
	case errors.Is(err, ErrDamaged):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	s := &Store{db: db, path: path, readOnly: opts.ReadOnly, undo: undo}
	if err = guard(path, func() error { return s.init(false) }); err == nil && !opts.NoVerify {
		err = s.Verify()
	}
	if err != nil {
		_ = db.Close()
		if errors.Is(err, ErrDamaged) {
			return nil, err
		}
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	return s, nil
}

// Created reports whether Open created the file (StoreOptions.Create).
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

// createStore makes a new, empty store at path, with the folders it needs,
// and returns the function that removes them again. The store is written
// under a temporary name and linked to path, which fails if path exists:
// what undo removes is only what createStore made, and a crash leaves
// either no file at path or a whole store.
func createStore(path string, noSync bool) (undo func(), err error) {
	// The folders that do not exist yet, innermost first.
	var dirs []string
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil || !errors.Is(err, fs.ErrNotExist) {
			break
		}
		dirs = append(dirs, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	undoDirs := func() {
		for _, d := range dirs {
			_ = os.Remove(d) // only when empty
		}
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		undoDirs()
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".new-*")
	if err != nil {
		undoDirs()
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	tmp := f.Name()
	_ = f.Close()
	err = guard(tmp, func() error {
		db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: -1, NoSync: noSync})
		if err != nil {
			return err
		}
		s := &Store{db: db, path: tmp}
		if err := s.init(true); err != nil {
			_ = db.Close()
			return err
		}
		return db.Close()
	})
	linked := false
	if err == nil {
		err = os.Link(tmp, path)
		linked = err == nil
	}
	_ = os.Remove(tmp)
	if err == nil && !noSync {
		err = syncDir(dir)
	}
	if err != nil {
		if linked {
			_ = os.Remove(path)
		}
		undoDirs()
		return nil, fmt.Errorf("create store %s: %w", path, err)
	}
	return func() {
		_ = os.Remove(path)
		undoDirs()
	}, nil
}

// syncDir makes a new name in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
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
				return fmt.Errorf("a bbolt file without any bucket, so without the cloudstack-pd schema marker (meta/schema): %w", ErrNotStore)
			}
			return fmt.Errorf("a bbolt file with buckets %v but no cloudstack-pd schema marker (meta/schema): %w", names, ErrNotStore)
		}
		if v := meta.Get(keySchema); string(v) != SchemaVersion {
			return fmt.Errorf("schema %q, this cloudstack-pd reads %q: %w", v, SchemaVersion, ErrSchema)
		}
		for _, b := range [][]byte{bucketPools, bucketMACs, bucketBindings, bucketBindingPrefix} {
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
			if err := meta.Put(keySchema, []byte(SchemaVersion)); err != nil {
				return err
			}
		}
		for _, b := range [][]byte{bucketPools, bucketMACs, bucketBindings, bucketBindingPrefix} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		return nil
	})
}

// Verify reads every branch and leaf page of every bucket once and returns
// an error wrapping ErrDamaged if one does not read (zeroed, overwritten),
// so that damage is found before the store is used, rather than in the
// middle of a sync or never in an index the server does not load. Open
// runs it unless StoreOptions.NoVerify. It walks keys with bbolt's cursors
// and decodes nothing: some 0.1 to 0.4 s for a million allocations, most
// of it faulting the file's pages in, against 0.5 to 0.7 s more for
// bbolt's own Tx.Check, which Store.Check runs. The pages read are dropped
// from the process's memory as it goes (see dropPages). It may run
// beside other readers.
func (s *Store) Verify() error { return s.verify(false) }

// VerifyIndexes is Verify but for the pools' allocation records, which
// LoadTable reads (and so checks): for a caller that runs it beside
// LoadTable, as serve does at start.
func (s *Store) VerifyIndexes() error { return s.verify(true) }

func (s *Store) verify(skipAlloc bool) error {
	return s.guard(func() error {
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

// damagedError is a store whose file does not read.
type damagedError struct {
	path, why string
}

func (e *damagedError) Error() string {
	return fmt.Sprintf("store %s is damaged: %s", e.path, e.why)
}

func (e *damagedError) Unwrap() error { return ErrDamaged }

// guard runs fn, which reads the store's file at path, turning what bbolt
// does on a damaged file into an error wrapping ErrDamaged: its panics on
// pages that do not make sense, and memory faults (SIGSEGV, SIGBUS) on
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

// bbolt's file format (go.etcd.io/bbolt/internal/common): pages 0 and 1
// are meta pages; a page starts with a 16-byte header, the meta follows.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	boltPageHeader = 16
	// boltMetaSum is the length of the meta fields the checksum covers:
	// magic, version, pageSize, flags (4 each), root bucket (16),
	// freelist, high-water pgid, txid (8 each).
	boltMetaSum    = 56
	boltNoFreelist = ^uint64(0)
)

// boltMeta is the part of a bbolt meta page that validateFile uses.
type boltMeta struct {
	pageSize             uint32
	root, freelist, pgid uint64
	txid                 uint64
	valid                bool
}

// readMeta decodes the meta page found at off in buf, the file's first
// bytes.
func readMeta(buf []byte, off int) boltMeta {
	var m boltMeta
	if off+boltPageHeader+boltMetaSum+8 > len(buf) {
		return m
	}
	b := buf[off+boltPageHeader:]
	ne := binary.NativeEndian
	if ne.Uint32(b[0:]) != boltMagic || ne.Uint32(b[4:]) != boltVersion {
		return m
	}
	h := fnv.New64a()
	_, _ = h.Write(b[:boltMetaSum])
	if h.Sum64() != ne.Uint64(b[boltMetaSum:]) {
		return m
	}
	m.pageSize = ne.Uint32(b[8:])
	m.root = ne.Uint64(b[16:])
	m.freelist = ne.Uint64(b[32:])
	m.pgid = ne.Uint64(b[40:])
	m.txid = ne.Uint64(b[48:])
	m.valid = m.pageSize >= 512 && m.pageSize&(m.pageSize-1) == 0
	return m
}

// validateFile checks, cheaply and before bbolt maps it, that the file at
// path is a whole bbolt file: not empty, a valid meta page, and every page
// its last commit uses inside the file. bbolt itself would map a truncated
// file and fault (SIGBUS) on the first read past its end. It does not read
// the other pages: a page damaged in the middle is found when it is read
// (guard) or by Store.Check.
func validateFile(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("store %s is not a regular file (%v): %w", path, fi.Mode().Type(), ErrNotStore)
	}
	if fi.Size() == 0 {
		return fmt.Errorf("store %s is an empty file (0 bytes): %w", path, ErrNotStore)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("store %s: %w", path, err)
	}
	defer f.Close()
	// Meta page 0 is at 0; meta page 1 at the page size, which bbolt
	// chooses from the OS's page size (up to 64 KiB here).
	const span = 64<<10 + 4096
	buf := make([]byte, span)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("store %s: %w", path, err)
	}
	buf = buf[:n]
	metas := []boltMeta{readMeta(buf, 0)}
	for ps := 512; ps <= 64<<10; ps *= 2 {
		if m := readMeta(buf, ps); m.valid && int(m.pageSize) == ps {
			metas = append(metas, m)
		}
	}
	metas = slices.DeleteFunc(metas, func(m boltMeta) bool { return !m.valid })
	if len(metas) == 0 {
		return fmt.Errorf("store %s is not a bbolt file (%d bytes, no valid meta page): %w", path, fi.Size(), ErrNotStore)
	}
	// bbolt uses the valid meta page of the latest transaction.
	m := slices.MaxFunc(metas, func(a, b boltMeta) int { return cmp.Compare(a.txid, b.txid) })
	need := m.pgid * uint64(m.pageSize)
	switch {
	case m.pgid < 2 || m.root >= m.pgid || (m.freelist != boltNoFreelist && m.freelist >= m.pgid):
		return &damagedError{path: path, why: fmt.Sprintf("its meta page is inconsistent (root page %d, freelist page %d, %d pages)", m.root, m.freelist, m.pgid)}
	case uint64(fi.Size()) < need:
		return &damagedError{path: path, why: fmt.Sprintf("the file has %d bytes but its last commit uses %d pages of %d bytes (%d bytes): truncated", fi.Size(), m.pgid, m.pageSize, need)}
	case uint64(fi.Size()) < 2*uint64(m.pageSize):
		return &damagedError{path: path, why: fmt.Sprintf("the file has %d bytes, less than its two meta pages of %d bytes: truncated", fi.Size(), m.pageSize)}
	}
	return nil
}
