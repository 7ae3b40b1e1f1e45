package allocator

import (
	"bytes"
	"net/netip"
	"time"
	"unicode/utf8"
)

// LoadTable reads the allocations of the configured pools and builds the
// table from them. An allocation that no longer fits its pool (the pool's
// prefix or prefix-len was changed in the config) makes it fail: a prefix
// never moves silently. Allocations of pools that are not configured are
// left in the store and listed in the report.
//
// The backend streams each pool's Alloc space (kv.Tx.Scan) and the
// records are read straight into the table (see Table) by decodeRecord,
// which reads the JSON EncodeAllocation writes without reflection and
// hands anything else to encoding/json: a million allocations load in
// well under a second. A record that does not decode fails the load
// before any invariant does, as if the table were built after reading.
// The bbolt backend drops the store's pages it read from the process's
// memory as it goes.
func (s *Store) LoadTable(pools []Pool) (*Table, LoadReport, error) {
	var (
		rep LoadReport
		tbl *Table
	)
	err := s.View(pools, func(tx *Tx) error {
		// How many allocations there are is not known without reading
		// them: the MAC index is built at the end, in one go. View has
		// checked the pools.
		b := newTableLoader(pools, 0)
		b.deferred = true
		var (
			buildErr error
			v        allocView
		)
		for _, name := range tx.StoredPools() {
			i, configured := b.poolIdx[name]
			err := tx.kt.Scan(allocSpace(name), nil, func(k, val []byte) error {
				if !configured {
					a, err := DecodeAllocation(name, k, val)
					if err != nil {
						return err
					}
					rep.Orphaned = append(rep.Orphaned, a)
					return nil
				}
				if decodeRecord(val, &v) {
					if buildErr == nil {
						v.pool, v.poolIndex, v.mac = &b.t.pools[i], i, k
						buildErr = b.addView(&v)
					}
					return nil
				}
				a, err := DecodeAllocation(name, k, val)
				if err != nil {
					return err
				}
				if buildErr == nil {
					buildErr = b.add(&a)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		if buildErr != nil {
			return buildErr
		}
		var err error
		tbl, err = b.finish()
		return err
	})
	if err != nil {
		return nil, LoadReport{}, s.wrap(err)
	}
	return tbl, rep, nil
}

// Fields of an allocation record, as bits of decodeRecord's seen set.
const (
	fieldMAC = 1 << iota
	fieldPool
	fieldPrefix
	fieldState
	fieldSince
	fieldGoneAt
	fieldQuarantinedAt
	fieldVMID
	fieldVMName
	fieldNICID
	fieldIP6
	fieldIP6CIDR
	fieldSource
)

// recordField returns the bit of key, 0 for an unknown key.
func recordField(key []byte) int {
	switch string(key) {
	case "mac":
		return fieldMAC
	case "pool":
		return fieldPool
	case "prefix":
		return fieldPrefix
	case "state":
		return fieldState
	case "since":
		return fieldSince
	case "gone-at":
		return fieldGoneAt
	case "quarantined-at":
		return fieldQuarantinedAt
	case "vm-id":
		return fieldVMID
	case "vm-name":
		return fieldVMName
	case "nic-id":
		return fieldNICID
	case "ip6":
		return fieldIP6
	case "ip6-cidr":
		return fieldIP6CIDR
	case "source":
		return fieldSource
	}
	return 0
}

// decodeRecord reads an allocation record into v (all but pool and MAC,
// which the bucket and the key give), as json.Unmarshal into an allocRecord
// would, when the record is a flat object of known keys, each once, with
// string values without escapes. Otherwise it returns false and the caller
// asks encoding/json, which also reports the errors. v's byte strings
// point into val. Reusing v for the next record spares parsing the same
// ip6-cidr again.
func decodeRecord(val []byte, v *allocView) bool {
	*v = allocView{lastCIDR: v.lastCIDR}
	d := recordDecoder{b: val}
	if !d.skipSpace() || d.b[d.i] != '{' {
		return false
	}
	d.i++
	seen := 0
	for first := true; ; first = false {
		if !d.skipSpace() {
			return false
		}
		if d.b[d.i] == '}' && first {
			d.i++
			break
		}
		key, ok := d.string()
		if !ok || !d.skipSpace() || d.b[d.i] != ':' {
			return false
		}
		d.i++
		if !d.skipSpace() {
			return false
		}
		f := recordField(key)
		if f == 0 || seen&f != 0 {
			return false // unknown (or differently cased) or repeated key
		}
		seen |= f
		start := d.i
		s, ok := d.string()
		if !ok {
			return false // null, a number, an object...
		}
		switch f {
		case fieldPrefix:
			if v.prefix.UnmarshalText(s) != nil {
				return false
			}
		case fieldState:
			v.state = s
		case fieldSince, fieldGoneAt, fieldQuarantinedAt:
			var t time.Time
			if t.UnmarshalJSON(val[start:d.i]) != nil {
				return false
			}
			switch f {
			case fieldSince:
				v.since = t
			case fieldGoneAt:
				v.goneAt = t
			default:
				v.quarantinedAt = t
			}
		case fieldVMID:
			v.vmID = s
		case fieldVMName:
			v.vmName = s
		case fieldNICID:
			v.nicID = s
		case fieldIP6:
			var a netip.Addr
			if a.UnmarshalText(s) != nil {
				return false
			}
			v.ip6 = a
		case fieldIP6CIDR:
			c := &v.lastCIDR // at first nil and the zero Prefix: "" is right
			if !bytes.Equal(s, c.text) {
				var p netip.Prefix
				if p.UnmarshalText(s) != nil {
					return false
				}
				c.text, c.p = append(c.text[:0], s...), p
			}
			v.ip6CIDR = c.p
		case fieldSource:
			v.source = s
		}
		if !d.skipSpace() {
			return false
		}
		if d.b[d.i] == ',' {
			d.i++
			continue
		}
		if d.b[d.i] != '}' {
			return false
		}
		d.i++
		break
	}
	// Only white space may follow.
	for ; d.i < len(d.b); d.i++ {
		if !isSpace(d.b[d.i]) {
			return false
		}
	}
	return true
}

type recordDecoder struct {
	b []byte
	i int
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// skipSpace skips white space and reports whether a byte follows.
func (d *recordDecoder) skipSpace() bool {
	for d.i < len(d.b) && isSpace(d.b[d.i]) {
		d.i++
	}
	return d.i < len(d.b)
}

// string reads a string without escapes or control characters, in valid
// UTF-8, and returns its content.
func (d *recordDecoder) string() ([]byte, bool) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return nil, false
	}
	start := d.i + 1
	ascii := true
	for j := start; j < len(d.b); j++ {
		switch c := d.b[j]; {
		case c == '"':
			d.i = j + 1
			s := d.b[start:j:j]
			return s, ascii || utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= 0x80:
			ascii = false
		}
	}
	return nil, false
}
