package allocator

import (
	"bytes"
	"fmt"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// copyBatch is how many keys CopyStore writes per transaction.
const copyBatch = 10000

// CopyStore copies every key space of src, as one read transaction sees
// it, into dst, which should be empty (a new store): the generic backup
// of a backend that cannot write a copy of itself (kv.Backuper). It
// writes in transactions of copyBatch keys, so dst is complete only when
// it returns nil.
func CopyStore(dst, src kv.Backend) error {
	return src.View(func(st kv.Tx) error {
		spaces := make([]kv.Space, 0, len(kv.Kinds)+2*len(st.Pools()))
		for _, k := range kv.Kinds {
			spaces = append(spaces, kv.Space{Kind: k})
		}
		for _, p := range st.Pools() {
			spaces = append(spaces, kv.Space{Kind: kv.Alloc, Pool: p}, kv.Space{Kind: kv.Prefix, Pool: p})
		}
		type kvPair struct {
			sp   kv.Space
			k, v []byte
		}
		var batch []kvPair
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			err := dst.Update(func(dt kv.Tx) error {
				for _, p := range batch {
					if err := dt.Put(p.sp, p.k, p.v); err != nil {
						return fmt.Errorf("copy %s/%x: %w", p.sp, p.k, err)
					}
				}
				return nil
			})
			batch = batch[:0]
			return err
		}
		for _, sp := range spaces {
			err := st.Scan(sp, nil, func(k, v []byte) error {
				batch = append(batch, kvPair{sp, bytes.Clone(k), bytes.Clone(v)})
				if len(batch) >= copyBatch {
					return flush()
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("copy %s from %s to %s: %w", sp, src.Name(), dst.Name(), err)
			}
		}
		return flush()
	})
}

// BackupReport says what a backup wrote.
type BackupReport struct {
	// Path is the copy, Bytes its size.
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
	// Allocations and Events count what the copy holds.
	Allocations int `json:"allocations"`
	Events      int `json:"events"`
	// Violations are what Check finds in the copy that the store had too
	// when the copy was made (a copy with a violation of its own is
	// refused).
	Violations []string `json:"violations,omitempty"`
}
