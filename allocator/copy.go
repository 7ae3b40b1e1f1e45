package allocator

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// keyIncomplete marks a store that a copy (CopyStore: `cluster migrate`,
// `cluster export`) is filling: it is written first and deleted last, so
// that a copy cut short is seen (Incomplete, Check) and never served.
var keyIncomplete = []byte("incomplete")

// CopyReport says what CopyStore did.
type CopyReport struct {
	// Copied is the number of keys written, Present the number already
	// there with the same value.
	Copied, Present int
	// Conflicts names each key the destination holds with another value
	// (nothing is written when there is one).
	Conflicts []string
}

// ErrCopyConflict: the destination holds data that differs from the
// source's.
var ErrCopyConflict = errors.New("the destination holds different data")

// maxConflicts bounds the conflicts a report lists.
const maxConflicts = 50

// spaces lists every key space of a store: each kind's, and each pool's
// for the pool kinds (allocations, prefix index). A kind added to package
// kv is copied without a change here.
func spaces(kt kv.Tx) []kv.Space {
	var out []kv.Space
	for k := kv.Kind(1); k.String() != "unknown"; k++ {
		if k == kv.Alloc || k == kv.Prefix {
			for _, p := range kt.Pools() {
				out = append(out, kv.Space{Kind: k, Pool: p})
			}
			continue
		}
		out = append(out, kv.Space{Kind: k})
	}
	return out
}

// CopyStore copies every key of src into dst, bytes for bytes, so that no
// prefix changes: the way a table moves between backends (a single
// server's bbolt file into an etcd cluster, and back). Keys dst already
// holds with the same value are kept; when dst holds any key of src with
// another value, CopyStore writes nothing and returns the report with the
// conflicts and an error wrapping ErrCopyConflict. Keys of dst that src
// lacks are kept. The destination is marked incomplete until the last key
// is written (see Incomplete); a copy cut short is completed by running it
// again. progress, when not nil, is called after each 10,000 keys.
func CopyStore(dst, src *Store, progress func(copied int)) (*CopyReport, error) {
	rep := &CopyReport{}
	type item struct {
		sp   kv.Space
		k, v []byte
	}
	var todo []item
	err := src.b.View(func(stx kv.Tx) error {
		return dst.b.View(func(dtx kv.Tx) error {
			for _, sp := range spaces(stx) {
				err := stx.Scan(sp, nil, func(k, v []byte) error {
					if sp.Kind == kv.Meta && bytes.Equal(k, keyIncomplete) {
						return nil
					}
					have := dtx.Get(sp, k)
					switch {
					case have == nil:
						todo = append(todo, item{sp, bytes.Clone(k), bytes.Clone(v)})
					case bytes.Equal(have, v):
						rep.Present++
					default:
						if len(rep.Conflicts) < maxConflicts {
							rep.Conflicts = append(rep.Conflicts, fmt.Sprintf("%s/%s: %s in the source, %s in the destination", sp, printable(k), printable(v), printable(have)))
						} else if len(rep.Conflicts) == maxConflicts {
							rep.Conflicts = append(rep.Conflicts, "(more conflicts not listed)")
						}
					}
					return nil
				})
				if err != nil {
					return fmt.Errorf("read %s: %w", sp, err)
				}
			}
			return nil
		})
	})
	if err != nil {
		return rep, fmt.Errorf("copy %s to %s: %w", src.Path(), dst.Path(), err)
	}
	if len(rep.Conflicts) > 0 {
		return rep, fmt.Errorf("copy %s to %s: %d keys differ: %w", src.Path(), dst.Path(), len(rep.Conflicts), ErrCopyConflict)
	}
	if len(todo) == 0 {
		return rep, dst.clearIncomplete()
	}
	mark := fmt.Appendf(nil, "copy from %s", src.Path())
	if err := dst.b.Update(func(tx kv.Tx) error { return tx.Put(spaceMeta, keyIncomplete, mark) }); err != nil {
		return rep, fmt.Errorf("copy to %s: mark it incomplete: %w", dst.Path(), err)
	}
	// Batches of whole keys; a backend that commits in several
	// transactions (etcd) may cut between any two of them.
	const batch = 10000
	for start := 0; start < len(todo); start += batch {
		part := todo[start:min(start+batch, len(todo))]
		err := dst.b.Update(func(tx kv.Tx) error {
			g, _ := tx.(kv.Grouper)
			for _, it := range part {
				if err := tx.Put(it.sp, it.k, it.v); err != nil {
					return fmt.Errorf("%s/%s: %w", it.sp, printable(it.k), err)
				}
				if g != nil {
					g.EndGroup()
				}
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("copy to %s after %d keys: %w (run the copy again to complete it)", dst.Path(), rep.Copied, err)
		}
		rep.Copied += len(part)
		if progress != nil {
			progress(rep.Copied)
		}
	}
	return rep, dst.clearIncomplete()
}

func (s *Store) clearIncomplete() error {
	var has bool
	if err := s.b.View(func(tx kv.Tx) error { has = tx.Get(spaceMeta, keyIncomplete) != nil; return nil }); err != nil || !has {
		return err
	}
	if err := s.b.Update(func(tx kv.Tx) error { return tx.Delete(spaceMeta, keyIncomplete) }); err != nil {
		return fmt.Errorf("copy to %s: clear the incomplete mark: %w", s.Path(), err)
	}
	return nil
}

// Incomplete reports whether a copy into the store (CopyStore) was cut
// short, and what it copied from.
func (s *Store) Incomplete() (from string, incomplete bool, err error) {
	err = s.b.View(func(tx kv.Tx) error {
		if v := tx.Get(spaceMeta, keyIncomplete); v != nil {
			from, incomplete = string(v), true
		}
		return nil
	})
	return from, incomplete, err
}

// printable shows a key or value: as text when it is, else in hex.
func printable(b []byte) string {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return fmt.Sprintf("%x", b)
		}
	}
	return string(b)
}

// snapshotBatch is the most keys CopyInto writes in one transaction of
// the destination, so that its memory stays bounded.
const snapshotBatch = 50000

// tableBatch is the most allocations CopyTableInto writes in one
// transaction (three keys each, and their index pages).
const tableBatch = 5000

// CopyInto copies every key of src into dst, an empty store just created
// (a snapshot, an export), streaming: at most snapshotBatch keys are held
// at once, each batch written in one transaction of dst. It reads src in
// one View, so the copy is of one consistent state. Unlike CopyStore it
// checks nothing against dst, which must be empty. dst is marked
// incomplete until the last key is written.
func CopyInto(dst, src *Store) (copied int, err error) {
	return copyInto(dst, src, nil)
}

// CopyTableInto is CopyInto for a source that does not hold the
// allocations (a cluster server's store mirrors the other spaces only):
// dst gets src's keys but those of the Alloc, Prefix, MACs and Held spaces
// and the history, and the allocations of tbl, written with Tx.Put (which
// makes their prefix and MAC index entries), at most tableBatch
// allocations per transaction. Allocations of pools not in tbl, held
// prefixes and the history are not copied.
func CopyTableInto(dst, src *Store, tbl *Table) (copied int, err error) {
	n, err := copyInto(dst, src, func(k kv.Kind) bool {
		return k == kv.Alloc || k == kv.Prefix || k == kv.MACs || k == kv.Held || k == kv.History
	})
	if err != nil {
		return n, err
	}
	if err := dst.b.Update(func(tx kv.Tx) error { return tx.Put(spaceMeta, keyIncomplete, []byte("copy of a table")) }); err != nil {
		return n, fmt.Errorf("copy to %s: mark it incomplete: %w", dst.Path(), err)
	}
	for from := 0; from < tbl.Len(); from += tableBatch {
		to := min(from+tableBatch, tbl.Len())
		err := dst.Update(tbl.Pools(), func(tx *Tx) error {
			tx.copying = true
			for i := from; i < to; i++ {
				if err := tx.Put(tbl.At(i)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return n, fmt.Errorf("copy the table's allocations to %s: %w", dst.Path(), err)
		}
		n += to - from
	}
	return n, dst.clearIncomplete()
}

// copyInto is CopyInto leaving out the spaces of the kinds skip says.
func copyInto(dst, src *Store, skip func(kv.Kind) bool) (copied int, err error) {
	mark := fmt.Appendf(nil, "copy from %s", src.Path())
	if err := dst.b.Update(func(tx kv.Tx) error { return tx.Put(spaceMeta, keyIncomplete, mark) }); err != nil {
		return 0, fmt.Errorf("copy to %s: mark it incomplete: %w", dst.Path(), err)
	}
	type item struct {
		sp   kv.Space
		k, v []byte
	}
	batch := make([]item, 0, 1024)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := dst.b.Update(func(tx kv.Tx) error {
			for _, it := range batch {
				if err := tx.Put(it.sp, it.k, it.v); err != nil {
					return fmt.Errorf("%s/%s: %w", it.sp, printable(it.k), err)
				}
			}
			return nil
		})
		copied += len(batch)
		batch = batch[:0]
		return err
	}
	err = src.b.View(func(stx kv.Tx) error {
		for _, sp := range spaces(stx) {
			if skip != nil && skip(sp.Kind) {
				continue
			}
			err := stx.Scan(sp, nil, func(k, v []byte) error {
				if sp.Kind == kv.Meta && (bytes.Equal(k, keyIncomplete) || bytes.Equal(k, keySchema)) {
					return nil
				}
				batch = append(batch, item{sp, bytes.Clone(k), bytes.Clone(v)})
				if len(batch) == snapshotBatch {
					return flush()
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("%s: %w", sp, err)
			}
		}
		return flush()
	})
	if err != nil {
		return copied, fmt.Errorf("copy %s to %s: %w", src.Path(), dst.Path(), err)
	}
	return copied, dst.clearIncomplete()
}

// BackupReport says what a backup wrote.
type BackupReport struct {
	// Path is the copy, Bytes its size.
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
	// Allocations and Events count what the copy holds.
	Allocations int `json:"allocations"`
	Events      int `json:"events"`
	// Violations are what Check finds in the copy: the store's own at the
	// instant of the copy, which holds its bytes.
	Violations []string `json:"violations,omitempty"`
}
