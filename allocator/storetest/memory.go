package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// Memory is a kv.Backend in memory, for tests: the simplest thing that
// passes Run. Update works on a copy of the spaces it writes and swaps
// them in when fn returns nil; writers are serialised, readers see the
// last commit.
type Memory struct {
	mu     sync.RWMutex // held by Update for writing, View for reading
	spaces map[kv.Space]map[string][]byte
}

var _ kv.Backend = (*Memory)(nil)

// NewMemory returns an empty store with its schema marker, as a backend
// creates a new store.
func NewMemory() *Memory {
	return &Memory{spaces: map[kv.Space]map[string][]byte{
		{Kind: kv.Meta}: {"schema": []byte(kv.SchemaVersion)},
	}}
}

func (m *Memory) Name() string   { return "memory" }
func (m *Memory) ReadOnly() bool { return false }
func (m *Memory) Close() error   { return nil }

func (m *Memory) View(fn func(kv.Tx) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return fn(&memTx{spaces: m.spaces})
}

func (m *Memory) Update(fn func(kv.Tx) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	tx := &memTx{spaces: maps.Clone(m.spaces), writable: true, copied: map[kv.Space]bool{}}
	if err := fn(tx); err != nil {
		return err
	}
	m.spaces = tx.spaces
	return nil
}

type memTx struct {
	spaces   map[kv.Space]map[string][]byte
	writable bool
	copied   map[kv.Space]bool // spaces this Update has cloned
}

func (t *memTx) Writable() bool { return t.writable }

func (t *memTx) Get(s kv.Space, key []byte) []byte { return t.spaces[s][string(key)] }

func (t *memTx) write(s kv.Space) (map[string][]byte, error) {
	if !t.writable {
		return nil, fmt.Errorf("memory: write to %s in a View: %w", s, kv.ErrReadOnly)
	}
	if !t.copied[s] {
		t.spaces[s] = maps.Clone(t.spaces[s])
		if t.spaces[s] == nil {
			t.spaces[s] = map[string][]byte{}
		}
		t.copied[s] = true
	}
	return t.spaces[s], nil
}

func (t *memTx) Put(s kv.Space, key, value []byte) error {
	m, err := t.write(s)
	if err != nil {
		return err
	}
	if (s.Kind == kv.Alloc || s.Kind == kv.Prefix) && s.Pool != "" {
		// A pool's two spaces exist together, as bbolt's buckets do.
		other := kv.Space{Kind: kv.Alloc + kv.Prefix - s.Kind, Pool: s.Pool}
		if _, err := t.write(other); err != nil {
			return err
		}
	}
	m[string(key)] = bytes.Clone(value)
	return nil
}

func (t *memTx) Delete(s kv.Space, key []byte) error {
	if t.spaces[s] == nil {
		if !t.writable {
			return fmt.Errorf("memory: write to %s in a View: %w", s, kv.ErrReadOnly)
		}
		return nil
	}
	m, err := t.write(s)
	if err != nil {
		return err
	}
	delete(m, string(key))
	return nil
}

// keys returns the keys of s in byte order.
func (t *memTx) keys(s kv.Space) []string {
	return slices.Sorted(maps.Keys(t.spaces[s]))
}

func (t *memTx) Seek(s kv.Space, key []byte) ([]byte, []byte) {
	ks := t.keys(s)
	i, _ := slices.BinarySearch(ks, string(key))
	if i == len(ks) {
		return nil, nil
	}
	return []byte(ks[i]), t.spaces[s][ks[i]]
}

func (t *memTx) Last(s kv.Space, key []byte) ([]byte, []byte) {
	ks := t.keys(s)
	i := len(ks)
	if key != nil {
		i, _ = slices.BinarySearch(ks, string(key))
	}
	if i == 0 {
		return nil, nil
	}
	return []byte(ks[i-1]), t.spaces[s][ks[i-1]]
}

func (t *memTx) Scan(s kv.Space, from []byte, fn func(k, v []byte) error) error {
	ks := t.keys(s)
	i, _ := slices.BinarySearch(ks, string(from))
	for _, k := range ks[i:] {
		if err := fn([]byte(k), t.spaces[s][k]); err != nil {
			if errors.Is(err, kv.ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

func (t *memTx) Pools() []string {
	var names []string
	for s := range t.spaces {
		if s.Kind == kv.Alloc {
			names = append(names, s.Pool)
		}
	}
	slices.Sort(names)
	return names
}
