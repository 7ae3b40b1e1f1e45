package allocator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// The reads Leasequery answers from (server/leasequery.go): a binding by
// any address of its prefix, a client's bindings, and pages of the
// bindings a relay recorded. They read the store, not this server's
// memory, so that any server sharing a store answers for every binding.

// BindingByAddress returns the binding whose prefix holds a (the prefix's
// own address included). Bindings' prefixes do not overlap (a prefix is
// allocated once, and pools do not overlap), so the candidate is the
// binding-prefix entry with the greatest address at or below a.
func (s *Store) BindingByAddress(a netip.Addr) (Binding, bool, error) {
	var (
		b  Binding
		ok bool
	)
	if !a.Is6() || a.Is4In6() {
		return b, false, nil
	}
	a16 := a.As16()
	// Every key of address a sorts before a's bytes followed by 129 (a
	// length byte is at most 128).
	bound := append(a16[:], 129)
	err := s.b.View(func(kt kv.Tx) error {
		ok = false // a backend may run the function again
		k, key := kt.Last(spaceBindingPrefix, bound)
		if k == nil {
			return nil
		}
		p, valid := ParsePrefixKey(k)
		if !valid || !p.Contains(a) {
			return nil
		}
		v := kt.Get(spaceBindings, key)
		if v == nil {
			return fmt.Errorf("binding-prefix/%s names binding %x, which does not exist: store is inconsistent, run check", p, key)
		}
		if err := json.Unmarshal(v, &b); err != nil {
			return fmt.Errorf("bindings/%x: %w", key, err)
		}
		ok = true
		return nil
	})
	if err != nil {
		return Binding{}, false, s.wrap(err)
	}
	return b, ok, nil
}

// BindingsOfClient returns the bindings of the client with DUID duid, in
// IAID order (its keys are adjacent).
func (s *Store) BindingsOfClient(duid []byte) ([]Binding, error) {
	if !StorableClientDUID(duid) {
		return nil, nil
	}
	start := append([]byte{byte(len(duid))}, duid...)
	var out []Binding
	err := s.b.View(func(kt kv.Tx) error {
		out = out[:0] // a backend may run the function again
		return kt.Scan(spaceBindings, start, func(k, v []byte) error {
			if !bytes.HasPrefix(k, start) || len(k) != len(start)+4 {
				if bytes.HasPrefix(k, start) {
					return nil // cannot be: a key is the DUID and 4 bytes
				}
				return kv.ErrStop
			}
			var b Binding
			if err := json.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("bindings/%x: %w", k, err)
			}
			out = append(out, b)
			return nil
		})
	})
	if err != nil {
		return nil, s.wrap(err)
	}
	return out, nil
}

// BindingQuery selects bindings by what their relay recorded. A zero
// field matches any binding; the fields set must all match.
type BindingQuery struct {
	// LinkAddress is the relay's link-address.
	LinkAddress netip.Addr
	// RelayID is the relay-id option's data (a DUID).
	RelayID []byte
	// RemoteID is the remote-id option's data, enterprise number included.
	RemoteID []byte
}

// Matches reports whether b is selected by q.
func (q *BindingQuery) Matches(b *Binding) bool {
	return (!q.LinkAddress.IsValid() || b.LinkAddress == q.LinkAddress) &&
		(q.RelayID == nil || bytes.Equal(b.RelayID, q.RelayID)) &&
		(q.RemoteID == nil || bytes.Equal(b.RemoteID, q.RemoteID))
}

// needles are byte strings the stored form of every matching binding
// holds (it is written as json.Marshal writes it): a record without them
// is skipped without decoding it.
func (q *BindingQuery) needles() [][]byte {
	var out [][]byte
	if q.LinkAddress.IsValid() {
		out = append(out, []byte(`"link-address":"`+q.LinkAddress.String()+`"`))
	}
	if q.RelayID != nil {
		out = append(out, []byte(`"relay-id":"`+hexString(q.RelayID)+`"`))
	}
	if q.RemoteID != nil {
		out = append(out, []byte(`"remote-id":"`+hexString(q.RemoteID)+`"`))
	}
	return out
}

// BindingsPage returns, in key order, up to limit bindings that q
// selects, whose keys come after the key after (nil: from the first).
// next is the key to pass as after for the following page; nil when the
// scan reached the end. A caller streams every binding in pages, so that
// neither memory nor a read transaction grows with the table.
func (s *Store) BindingsPage(after []byte, limit int, q BindingQuery) (page []Binding, next []byte, err error) {
	if limit <= 0 {
		limit = 1
	}
	var from []byte
	if after != nil {
		from = append(bytes.Clone(after), 0) // the first key after it
	}
	needles := q.needles()
	page = make([]Binding, 0, min(limit, 1024))
	err = s.b.View(func(kt kv.Tx) error {
		page, next = page[:0], next[:0] // a backend may run the function again
		return kt.Scan(spaceBindings, from, func(k, v []byte) error {
			if len(page) == limit {
				return kv.ErrStop // k is left for the next page
			}
			next = append(next[:0], k...)
			for _, n := range needles {
				if !bytes.Contains(v, n) {
					return nil
				}
			}
			var b Binding
			if err := json.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("bindings/%x: %w", k, err)
			}
			if q.Matches(&b) {
				page = append(page, b)
			}
			return nil
		})
	})
	if err != nil {
		return nil, nil, s.wrap(err)
	}
	if len(page) < limit {
		next = nil // the scan reached the end
	}
	return page, next, nil
}

// BindingTouch brings the last exchange of a stored binding forward
// without rewriting what did not change: the binding of client DUID
// ClientDUID and IAID, if it still has MAC and Prefix, gets LastExchange,
// LastMessage and Expires (LastExchange plus its valid lifetime).
type BindingTouch struct {
	ClientDUID   []byte
	IAID         uint32
	MAC          []byte
	Prefix       netip.Prefix
	LastExchange time.Time
	LastMessage  string
}

// TouchBindings applies touches in one transaction. A touch whose binding
// already holds a later exchange (a server sharing the store wrote it)
// changes nothing. One whose binding is gone, has another MAC or prefix,
// or, when same is not nil, is not the one the caller means (same(i,
// stored) is false: the caller compares what it wrote with what is
// stored) changes nothing either, and its index is returned in stale: the
// caller should write that binding in full. It returns how many bindings
// it rewrote.
func (s *Store) TouchBindings(touches []BindingTouch, same func(i int, stored *Binding) bool) (n int, stale []int, err error) {
	err = s.b.Update(func(kt kv.Tx) error {
		n, stale = 0, stale[:0]
		var arena []byte
		for i := range touches {
			t := &touches[i]
			if !StorableClientDUID(t.ClientDUID) || !storableTime(t.LastExchange) {
				continue
			}
			key := AppendBindingKey(nil, t.ClientDUID, t.IAID)
			v := kt.Get(spaceBindings, key)
			if v == nil {
				stale = append(stale, i)
				continue
			}
			var b Binding
			if err := json.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("bindings/%x: %w", key, err)
			}
			if b.Prefix != t.Prefix || !bytes.Equal(b.MAC, t.MAC) || same != nil && !same(i, &b) {
				stale = append(stale, i)
				continue
			}
			if !t.LastExchange.After(b.LastExchange) {
				continue
			}
			b.LastExchange, b.LastMessage = t.LastExchange, t.LastMessage
			b.Expires = t.LastExchange.Add(time.Duration(b.ValidLifetime) * time.Second)
			if b.Problem() != "" {
				continue
			}
			a := arenaRoom(&arena, 1024)
			m := len(a)
			a, err := appendBindingJSON(a, &b)
			if err != nil {
				return fmt.Errorf("encode binding of %s: %w", b.Prefix, err)
			}
			arena = a
			if err := kt.Put(spaceBindings, key, a[m:len(a):len(a)]); err != nil {
				return fmt.Errorf("put bindings/%x: %w", key, err)
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, nil, s.wrap(err)
	}
	return n, stale, nil
}
