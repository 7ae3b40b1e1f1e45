package etcdstore

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/btree"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// tx is a kv.Tx on a clone of the mirror. In an Update (writable) it
// records what fn read, for the commit's compares, and what it wrote.
type tx struct {
	b        *Backend
	t        *btree.BTreeG[item]
	rev      int64 // the revision the clone reflects
	writable bool
	prefixes map[kv.Space]string
	// err is the first access to a space the mirror does not hold
	// (ErrNotMirrored): View and Update return it.
	err error

	// Update only.
	reads   map[string]int64 // relative key → mod revision seen (0: absent)
	ranges  []keyRange       // ranges read: [start, end)
	cur     map[string]wop   // every key written, at its last write
	group   []string         // keys written since the last EndGroup
	inGroup map[string]bool
	groups  [][]wop // the closed groups' writes, each as it stood at EndGroup
	// Keys read for the first time since the last EndGroup, and, once a
	// group closes, the group each such key belongs to (its index in
	// groups): a key only read is compared in the transaction that
	// commits the group that read it, not in the first one (see plan).
	groupReads []string
	readGroup  map[string]int
	needFence  bool
}

// keyRange is a range of relative keys, [start, end).
type keyRange struct{ start, end string }

// wop is one write: a put of val, or a delete.
type wop struct {
	key string
	val string
	del bool
}

func (t *tx) Writable() bool { return t.writable }

func (t *tx) space(s kv.Space) string {
	if p, ok := t.prefixes[s]; ok {
		return p
	}
	if !t.b.mirrors(s.Kind) {
		if t.err == nil {
			t.err = t.b.wrap(fmt.Errorf("space %s: %w (Options.Kinds)", s, ErrNotMirrored))
		}
		return ""
	}
	if t.prefixes == nil {
		t.prefixes = make(map[kv.Space]string, 4)
	}
	p := spacePrefix(s)
	t.prefixes[s] = p
	return p
}

// readKey records a read of relative key k that found it at revision rev
// (-1: this Update's own write; 0: absent).
func (t *tx) readKey(k string, rev int64) {
	if !t.writable || rev < 0 {
		return
	}
	if _, own := t.cur[k]; own {
		return
	}
	if _, seen := t.reads[k]; !seen {
		t.reads[k] = rev
		t.groupReads = append(t.groupReads, k)
	}
}

func (t *tx) readRange(start, end string) {
	if t.writable && start < end {
		t.ranges = append(t.ranges, keyRange{start, end})
	}
}

func (t *tx) Get(s kv.Space, key []byte) []byte {
	sp := t.space(s)
	if sp == "" || len(key) == 0 {
		return nil
	}
	k := sp + string(key)
	it, ok := t.t.Get(pivot(k))
	if !ok {
		t.readKey(k, 0)
		return nil
	}
	t.readKey(k, it.rev)
	return bytesOf(it.val())
}

func (t *tx) Seek(s kv.Space, key []byte) (k, v []byte) {
	sp := t.space(s)
	if sp == "" {
		return nil, nil
	}
	start := sp + string(key)
	end := prefixEnd(sp)
	var found item
	ok := false
	t.t.AscendGreaterOrEqual(pivot(start), func(it item) bool {
		if strings.HasPrefix(it.key(), sp) {
			found, ok = it, true
		}
		return false
	})
	if !ok {
		t.readRange(start, end)
		return nil, nil
	}
	t.readRange(start, found.key()+"\x00")
	return bytesOf(found.key()[len(sp):]), bytesOf(found.val())
}

func (t *tx) Last(s kv.Space, key []byte) (k, v []byte) {
	sp := t.space(s)
	if sp == "" {
		return nil, nil
	}
	end := prefixEnd(sp)
	if key != nil {
		end = sp + string(key)
	}
	var found item
	ok := false
	t.t.DescendLessOrEqual(pivot(end), func(it item) bool {
		if it.key() == end {
			return true // Last is strictly before key
		}
		if strings.HasPrefix(it.key(), sp) {
			found, ok = it, true
		}
		return false
	})
	if !ok {
		t.readRange(sp, end)
		return nil, nil
	}
	t.readRange(found.key(), end)
	return bytesOf(found.key()[len(sp):]), bytesOf(found.val())
}

func (t *tx) Scan(s kv.Space, from []byte, fn func(k, v []byte) error) error {
	sp := t.space(s)
	if t.err != nil {
		return t.err
	}
	if sp == "" {
		return nil
	}
	start := sp + string(from)
	end := prefixEnd(sp)
	var err error
	t.t.AscendGreaterOrEqual(pivot(start), func(it item) bool {
		if !strings.HasPrefix(it.key(), sp) {
			return false
		}
		if e := fn(bytesOf(it.key()[len(sp):]), bytesOf(it.val())); e != nil {
			end = it.key() + "\x00" // read up to here
			if !errors.Is(e, kv.ErrStop) {
				err = e
			}
			return false
		}
		return true
	})
	t.readRange(start, end)
	return err
}

func (t *tx) Pools() []string {
	start := markerKind + "/"
	end := prefixEnd(start)
	var names []string
	t.t.AscendGreaterOrEqual(pivot(start), func(it item) bool {
		if !strings.HasPrefix(it.key(), start) {
			return false
		}
		if name, ok := unescapePool(it.key()[len(start):]); ok {
			names = append(names, name)
		}
		return true
	})
	t.readRange(start, end)
	slices.Sort(names) // escaping changes the order of names with '%' or '/'
	return names
}

// write records a write of relative key k.
func (t *tx) write(k string, w wop) {
	w.key = k
	t.cur[k] = w
	if !t.inGroup[k] {
		t.inGroup[k] = true
		t.group = append(t.group, k)
	}
}

func (t *tx) Put(s kv.Space, key, value []byte) error {
	if !t.writable {
		return fmt.Errorf("put %s/%x: %w", s, key, kv.ErrReadOnly)
	}
	sp := t.space(s)
	if t.err != nil {
		return t.err
	}
	if sp == "" {
		return fmt.Errorf("put %s/%x: key space kind %d has no name (known: %s)", s, key, s.Kind, strings.Join(kindNames(), ", "))
	}
	if len(key) == 0 {
		return fmt.Errorf("put %s: empty key", s)
	}
	if value == nil {
		value = []byte{}
	}
	k := sp + string(key)
	t.t.ReplaceOrInsert(item{kv: k + string(value), klen: uint32(len(k)), rev: -1})
	t.write(k, wop{val: string(value)})
	if fenced[s.Kind] {
		t.needFence = true
	}
	if poolScoped[s.Kind] {
		mk := markerKey(s.Pool)
		if !t.t.Has(pivot(mk)) {
			t.t.ReplaceOrInsert(item{kv: mk + s.Pool, klen: uint32(len(mk)), rev: -1})
			t.write(mk, wop{val: s.Pool})
			t.needFence = true
		}
	}
	return nil
}

func (t *tx) Delete(s kv.Space, key []byte) error {
	if !t.writable {
		return fmt.Errorf("delete %s/%x: %w", s, key, kv.ErrReadOnly)
	}
	sp := t.space(s)
	if t.err != nil {
		return t.err
	}
	if sp == "" || len(key) == 0 {
		return nil
	}
	k := sp + string(key)
	if _, had := t.t.Delete(pivot(k)); !had {
		return nil // absent: nothing to write
	}
	t.write(k, wop{del: true})
	if fenced[s.Kind] {
		t.needFence = true
	}
	return nil
}

// EndGroup closes the group of writes since the previous one
// (kv.Grouper): a chunked commit never splits it.
//
// The keys read since the previous group closed belong to this one, unless
// they are more than maxGroupReads (the reads of a sync's plan, made before
// its first write: they stay with the whole Update, compared in its first
// transaction, as ranges if need be).
func (t *tx) EndGroup() {
	if len(t.group) == 0 {
		return // its reads go to the next group that writes
	}
	g := make([]wop, len(t.group))
	for i, k := range t.group {
		g[i] = t.cur[k]
	}
	if n := len(t.groupReads); n > 0 && n <= t.b.maxOps/4 {
		if t.readGroup == nil {
			t.readGroup = map[string]int{}
		}
		for _, k := range t.groupReads {
			t.readGroup[k] = len(t.groups)
		}
	}
	t.groupReads = t.groupReads[:0]
	t.groups = append(t.groups, g)
	t.group = t.group[:0]
	clear(t.inGroup)
}

var _ kv.Grouper = (*tx)(nil)
