package boltstore

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

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
		return fmt.Errorf("store %s is not a regular file (%v): %w", path, fi.Mode().Type(), kv.ErrNotStore)
	}
	if fi.Size() == 0 {
		return fmt.Errorf("store %s is an empty file (0 bytes): %w", path, kv.ErrNotStore)
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
		return fmt.Errorf("store %s is not a bbolt file (%d bytes, no valid meta page): %w", path, fi.Size(), kv.ErrNotStore)
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
