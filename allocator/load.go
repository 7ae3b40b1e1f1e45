package allocator

import (
	"bytes"
	"fmt"
	"net/netip"
	"time"
	"unicode/utf8"
	"unsafe"
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
// hands anything else to encoding/json. Reading, decoding and building
// share two cores (see loadPipe): a million allocations load in about
// half a second. A record that does not decode fails the load before any
// invariant does, as if the table were built after reading. The bbolt
// backend drops the store's pages it read from the process's memory as it
// goes.
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
		pipe := newLoadPipe(b)
		defer pipe.abort() // a read error, or a damaged page's panic
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
				pipe.add(name, i, k, val)
				return nil
			})
			if err != nil {
				return err
			}
		}
		var err error
		tbl, err = pipe.finish()
		return err
	})
	if err != nil {
		return nil, LoadReport{}, s.wrap(err)
	}
	return tbl, rep, nil
}

// loadPipe builds a table from records in three stages, one goroutine
// each, so that two cores share the work: the caller reads the store and
// copies each record into a batch (add), a decoder goroutine decodes the
// batch's records, and a builder goroutine adds them, in order, to the
// tableLoader. Only the caller touches the store's memory (bbolt's mapped
// file, whose pages only it may fault on, under guard); the other two read
// the batches' copies. A record that does not decode stops the decoding
// and fails the load whatever the builder found, as if the table were
// built after reading.
type loadPipe struct {
	b        *tableLoader
	cur      *loadBatch
	toDecode chan *loadBatch
	toBuild  chan *loadBatch
	free     chan *loadBatch
	decoded  chan error // the decoder's first error, once it is done
	built    chan error // the builder's first error, once it is done
	closed   bool
}

// loadBatch is records copied from the store: each item's key and value
// are spans of buf, and once decoded its byte strings point into buf.
type loadBatch struct {
	buf   []byte
	items []loadItem
}

type loadItem struct {
	pool      string
	poolIndex int
	key, val  [2]int // spans of loadBatch.buf
	v         allocView
	a         Allocation // when decodeRecord could not read the record
	viaJS     bool
}

const (
	loadBatchBytes = 256 << 10
	loadBatchItems = 1024
	loadBatches    = 6
)

func newLoadPipe(b *tableLoader) *loadPipe {
	p := &loadPipe{b: b,
		toDecode: make(chan *loadBatch, loadBatches), toBuild: make(chan *loadBatch, loadBatches),
		free: make(chan *loadBatch, loadBatches), decoded: make(chan error, 1), built: make(chan error, 1)}
	for range loadBatches {
		p.free <- &loadBatch{buf: make([]byte, 0, loadBatchBytes), items: make([]loadItem, 0, loadBatchItems)}
	}
	go p.decode()
	go p.build()
	return p
}

// decode decodes the batches and hands them on, until toDecode is closed.
// After an error it only returns the batches.
func (p *loadPipe) decode() {
	var (
		err error
		v   allocView // kept from record to record: see decodeRecord
	)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("decoding the table: %v", r)
			for batch := range p.toDecode { // let the reader finish
				p.recycle(batch)
			}
		}
		close(p.toBuild)
		p.decoded <- err
	}()
	for batch := range p.toDecode {
		if err != nil {
			p.recycle(batch)
			continue
		}
		for i := range batch.items {
			it := &batch.items[i]
			key, val := batch.buf[it.key[0]:it.key[1]:it.key[1]], batch.buf[it.val[0]:it.val[1]]
			if decodeRecord(val, &v) {
				it.v = v
				it.v.pool, it.v.poolIndex, it.v.mac = &p.b.t.pools[it.poolIndex], it.poolIndex, key
				continue
			}
			a, derr := DecodeAllocation(it.pool, key, val)
			if derr != nil {
				err = derr
				batch.items = batch.items[:i]
				break
			}
			it.a, it.viaJS = a, true
		}
		p.toBuild <- batch
	}
}

// build adds the batches to the table, in order, until toBuild is closed.
// After an error it only returns the batches.
func (p *loadPipe) build() {
	var err error
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("building the table: %v", r)
			for batch := range p.toBuild { // let the others finish
				p.recycle(batch)
			}
		}
		p.built <- err
	}()
	for batch := range p.toBuild {
		for i := range batch.items {
			if err != nil {
				break
			}
			it := &batch.items[i]
			if it.viaJS {
				err = p.b.add(&it.a)
			} else {
				err = p.b.addView(&it.v)
			}
		}
		p.recycle(batch)
	}
}

func (p *loadPipe) recycle(batch *loadBatch) {
	clear(batch.items) // the Allocations' strings
	batch.buf, batch.items = batch.buf[:0], batch.items[:0]
	p.free <- batch
}

// add copies the record (k, val) of pool i into the current batch.
func (p *loadPipe) add(pool string, i int, k, val []byte) {
	if p.cur == nil {
		p.cur = <-p.free
	}
	c := p.cur
	if len(c.buf)+len(k)+len(val) > cap(c.buf) && len(c.items) > 0 {
		p.send()
		p.add(pool, i, k, val)
		return
	}
	off := len(c.buf)
	c.buf = append(c.buf, k...)
	c.buf = append(c.buf, val...)
	c.items = append(c.items, loadItem{pool: pool, poolIndex: i,
		key: [2]int{off, off + len(k)}, val: [2]int{off + len(k), len(c.buf)}})
	if len(c.items) == cap(c.items) {
		p.send()
	}
}

func (p *loadPipe) send() {
	p.toDecode <- p.cur
	p.cur = nil
}

// finish waits for the decoder and the builder and returns the table, or
// the first record that does not decode, or the builder's first error.
func (p *loadPipe) finish() (*Table, error) {
	if p.cur != nil && len(p.cur.items) > 0 {
		p.send()
	}
	p.closed = true
	close(p.toDecode)
	derr, berr := <-p.decoded, <-p.built
	if derr != nil {
		return nil, derr
	}
	if berr != nil {
		return nil, berr
	}
	return p.b.finish()
}

// abort stops the decoder and the builder after a read error, and waits
// for them.
func (p *loadPipe) abort() {
	if !p.closed {
		p.closed = true
		close(p.toDecode)
		<-p.decoded
		<-p.built
	}
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
			if len(s) > 0 { // "" is the zero Prefix, as Prefix.UnmarshalText reads it
				p, err := netip.ParsePrefix(viewString(s)) // keeps nothing of s
				if err != nil {
					return false
				}
				v.prefix = p
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
			if len(s) == 0 {
				v.ip6 = netip.Addr{} // as Addr.UnmarshalText reads ""
				break
			}
			a, err := netip.ParseAddr(viewString(s)) // a zone is copied (unique.Make)
			if err != nil {
				return false
			}
			v.ip6 = a
		case fieldIP6CIDR:
			c := &v.lastCIDR // at first nil and the zero Prefix: "" is right
			if !bytes.Equal(s, c.text) {
				var p netip.Prefix
				if len(s) > 0 {
					var err error
					if p, err = netip.ParsePrefix(viewString(s)); err != nil {
						return false
					}
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

// viewString views b as a string without copying, for a parser that keeps
// nothing of its input: b must not change while the string is in use.
func viewString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
