package allocator

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// PrefixAt returns the pool (its index in Pools) and the prefix of
// allocation i (0 ≤ i < Len) without building the Allocation, for
// ordering a listing. It does not allocate.
func (t *Table) PrefixAt(i int) (pool int, prefix netip.Prefix) {
	r := t.rec(i)
	return int(r.pool), netip.PrefixFrom(netip.AddrFrom16(r.prefix), int(r.bits))
}

// ScanBindings calls fn with each recorded binding whose key comes after
// after (nil: from the first), in key order (see Binding.Key), with its
// key, until fn returns false or an error, which ScanBindings returns.
// The key is valid only during the call. It reads in one read
// transaction and holds nothing but the binding being decoded, so a
// listing of any size costs the memory of what fn keeps.
func (s *Store) ScanBindings(after []byte, fn func(key []byte, b Binding) (more bool, err error)) error {
	var from []byte
	if after != nil {
		from = append(append(make([]byte, 0, len(after)+1), after...), 0) // the first key after it
	}
	err := s.b.View(func(kt kv.Tx) error {
		return kt.Scan(spaceBindings, from, func(k, v []byte) error {
			var b Binding
			if err := json.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("bindings/%x: %w", k, err)
			}
			more, err := fn(k, b)
			if err == nil && !more {
				err = kv.ErrStop
			}
			return err
		})
	})
	if err != nil {
		return s.wrap(err)
	}
	return nil
}

// CountBindings returns the number of recorded bindings: one walk of the
// keys, no value decoded.
func (s *Store) CountBindings() (int, error) {
	n := 0
	err := s.b.View(func(kt kv.Tx) error {
		return kt.Scan(spaceBindings, nil, func(_, _ []byte) error {
			n++
			return nil
		})
	})
	if err != nil {
		return 0, s.wrap(err)
	}
	return n, nil
}

// ForEachByPrefix calls fn with every allocation of pool (configured or
// not) in prefix order (address, then length), and stops at fn's first
// error, which it returns. It walks the pool's prefix index and reads
// each allocation by its MAC, holding one at a time; prefixes held in
// quarantine without an allocation (Tx.Move, Tx.ForgetPool) are not
// allocations and are skipped. fn must not write to the Tx.
func (t *Tx) ForEachByPrefix(pool string, fn func(a Allocation) error) error {
	return t.kt.Scan(prefixSpace(pool), nil, func(pk, mac []byte) error {
		if heldBy(t.kt, pool, pk, mac) {
			return nil
		}
		v := t.kt.Get(allocSpace(pool), mac)
		if v == nil {
			p, _ := ParsePrefixKey(pk)
			return fmt.Errorf("pool %s: prefix %s names MAC %x, which has no allocation: store is inconsistent, run check", pool, p, mac)
		}
		a, err := DecodeAllocation(pool, mac, v)
		if err != nil {
			return err
		}
		return fn(a)
	})
}
