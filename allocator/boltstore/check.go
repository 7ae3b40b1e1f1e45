package boltstore

import (
	"fmt"
	"strings"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// maxPageErrors bounds the bbolt check errors an ErrDamaged lists.
const maxPageErrors = 5

// CheckStructure reports, one line each, the buckets a store must have and
// lacks, and what sits in pools/ that is not a pool's pair of buckets; then
// it runs bbolt's consistency check of every page, free ones included, and
// returns an error wrapping kv.ErrDamaged naming its first findings.
// allocator.Store.Check adds the findings of the rules.
func (s *Store) CheckStructure() ([]string, error) {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	err := guard(s.path, func() error {
		return s.db.View(func(btx *bolt.Tx) error {
			if btx.Bucket(bucketMeta) == nil {
				add("meta: missing bucket")
			}
			for _, b := range topBuckets {
				if btx.Bucket(b) == nil {
					add("%s: missing bucket", b)
				}
			}
			if root := btx.Bucket(bucketPools); root != nil {
				_ = root.ForEach(func(name, v []byte) error {
					if v != nil {
						add("pools/%s: a value where a pool bucket belongs", name)
						return nil
					}
					pb := root.Bucket(name)
					if pb.Bucket(bucketAlloc) == nil || pb.Bucket(bucketPrefix) == nil {
						add("pools/%s: missing alloc or prefix bucket", name)
					}
					return nil
				})
			}
			// Every page this process read is sound enough to read;
			// bbolt's own check walks them all again, the free ones too,
			// in a goroutine of its own that recovers its panics.
			return s.checkPages(btx)
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// checkPages runs bbolt's consistency check of every page and returns an
// error wrapping kv.ErrDamaged naming its first findings.
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

// LeafPages returns the ids of the leaf pages in use in the bbolt file at
// path, in file order: for tests that damage a store page by page (see
// allocatortest.Damage). The file must not be open.
func LeafPages(path string) ([]int, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	var leaves []int
	err = db.View(func(tx *bolt.Tx) error {
		for i := 2; i < int(tx.Size())/db.Info().PageSize; i++ {
			p, err := tx.Page(i)
			if err != nil {
				return err
			}
			if p != nil && p.Type == "leaf" {
				leaves = append(leaves, i)
			}
		}
		return nil
	})
	return leaves, err
}

// BucketPages returns the ids of the pages that hold the values of the
// top-level bucket name in the bbolt file at path, in key order, each
// once (for tests that damage one bucket).
func BucketPages(path, name string) ([]int, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	var pages []int
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(name))
		if b == nil {
			return fmt.Errorf("%s: no bucket %q", path, name)
		}
		base, size := db.Info().Data, uintptr(db.Info().PageSize)
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) == 0 {
				continue
			}
			id := int((uintptr(unsafe.Pointer(unsafe.SliceData(v))) - base) / size)
			if len(pages) == 0 || pages[len(pages)-1] != id {
				pages = append(pages, id)
			}
		}
		return nil
	})
	return pages, err
}
