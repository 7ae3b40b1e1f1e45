package server

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"slices"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
)

// A renewal that changes nothing writes nothing.
//
// Most exchanges are Renews that hand a VM the binding it already has:
// same prefix, lifetimes and relay data, only a later last exchange (and
// so a later expiry). Writing each would rewrite every binding of the
// cloud every renew-timer. Instead, the Recorder remembers what it last
// wrote of each IA (a fingerprint of everything but the times) and, for a
// record that matches it, only keeps the new last-exchange time in memory.
// The store is written when a binding changes (prefix, lifetimes, MAC,
// pool, relay data, client DUID) as before, and the last-exchange times
// kept in memory are persisted lazily, every ExchangeStaleness (and at
// shutdown), with Store.TouchBindings: a stored binding's last exchange
// (and expiry) is at most ExchangeStaleness older than what this server
// answered, and never newer.
//
// A binding the persist finds gone from the store, or rewritten by
// another server sharing it (other relay data, say), is forgotten: the
// IA's next renewal writes its binding in full again.
//
// Leasequery answers still use the freshest time this server knows
// (Recorder.Fresh). A server sharing the store that did not answer the
// renewal sees a last exchange up to ExchangeStaleness old: remaining
// lifetimes it reports are that much short, never long, and a binding
// looks expired to it at most that much early, only when the client has
// stopped renewing.
//
// Memory: one entry per MAC whose binding was written (about 180 bytes
// with the map's own), at most MaxRemembered; a MAC beyond that is written
// at every renewal, as before. Entries of expired bindings are dropped at each persist.

// DefaultExchangeStaleness is how long a last-exchange time may stay in
// memory only: 1 hour. With the default renew-timer (1000 s), a binding
// that only renews is written about once an hour instead of 3.6 times.
const DefaultExchangeStaleness = time.Hour

// MaxRemembered is the most MACs whose last write the Recorder remembers:
// 2,000,000 (some 370 MB at most; 100,000 VMs take 18 MB).
const MaxRemembered = 2_000_000

// BindingToucher is a BindingStore that can bring a binding's last
// exchange forward without rewriting it (*allocator.Store is one). With a
// store that is not one, every record is written.
type BindingToucher interface {
	TouchBindings(touches []allocator.BindingTouch, same func(i int, stored *allocator.Binding) bool) (n int, stale []int, err error)
}

// seenEntry is what the Recorder remembers of the IA it last wrote for a
// MAC. Entries are by MAC, not by IA: the store keeps one binding per MAC
// and prefix, and a MAC has one prefix, so a VM that changes IAIDs (or a
// flood of them) replaces its entry instead of adding one.
type seenEntry struct {
	iaid   uint32
	fp     uint64 // fingerprint of the written binding, times left out
	stored int64  // last exchange in the store (unix nanoseconds)
	latest int64  // freshest last exchange answered
	valid  uint32 // valid lifetime, for the expiry
	msg    string // type of the freshest exchange
	duid   string
	prefix [17]byte // allocator.PrefixKey
}

var fingerprintSeed = maphash.MakeSeed()

// fingerprint hashes what a binding says but its times (LastExchange,
// LastMessage, Expires): two records with the same fingerprint differ
// only by when they were made. It does not allocate.
func fingerprint(b *allocator.Binding) uint64 {
	var h maphash.Hash
	h.SetSeed(fingerprintSeed)
	hashBytes(&h, b.ClientDUID)
	hashBytes(&h, b.MAC)
	h.WriteString(b.Pool)
	h.WriteByte(0)
	hashAddr(&h, b.Prefix.Addr())
	var nums [15]byte
	nums[0] = byte(b.Prefix.Bits())
	binary.BigEndian.PutUint32(nums[1:], b.IAID)
	binary.BigEndian.PutUint32(nums[5:], b.PreferredLifetime)
	binary.BigEndian.PutUint32(nums[9:], b.ValidLifetime)
	binary.BigEndian.PutUint16(nums[13:], b.RelaySource.Port())
	h.Write(nums[:])
	hashAddr(&h, b.RelaySource.Addr())
	hashAddr(&h, b.LinkAddress)
	hashAddr(&h, b.PeerAddress)
	hashBytes(&h, b.InterfaceID)
	hashBytes(&h, b.RemoteID)
	hashBytes(&h, b.RelayID)
	return h.Sum64()
}

// hashBytes writes p with its length, so that fields cannot run together.
func hashBytes(h *maphash.Hash, p []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(p)))
	h.Write(n[:])
	h.Write(p)
}

// hashAddr writes a, and whether it is set.
func hashAddr(h *maphash.Hash, a netip.Addr) {
	var b [17]byte
	if a.IsValid() {
		b[0] = 1
		a16 := a.As16()
		copy(b[1:], a16[:])
	}
	h.Write(b[:])
}

func prefixKey17(b *allocator.Binding) (k [17]byte) {
	a16 := b.Prefix.Addr().As16()
	copy(k[:], a16[:])
	k[16] = byte(b.Prefix.Bits())
	return k
}

// unchanged reports whether b, whose fingerprint is fp, only repeats, with
// a new time, what was last written for its IA; if so it keeps the time.
// r.mu is held.
func (r *Recorder) unchanged(fp uint64, b *allocator.Binding) bool {
	if r.toucher == nil {
		return false
	}
	k := macKey(b.MAC)
	e, ok := r.seen[k]
	if !ok || e.fp != fp || e.iaid != b.IAID {
		return false
	}
	if t := b.LastExchange.UnixNano(); t > e.latest {
		e.latest, e.msg = t, b.LastMessage
		r.seen[k] = e
	}
	return true
}

// macKey is the key of a MAC's entry in Recorder.seen.
func macKey(mac []byte) iaKey { return keyOf(mac, 0) }

// forget drops what the Recorder remembers of the IA iaid of mac (its
// binding ended). r.mu is held.
func (r *Recorder) forget(mac []byte, iaid uint32) {
	k := macKey(mac)
	if e, ok := r.seen[k]; ok && e.iaid == iaid {
		delete(r.seen, k)
	}
}

// written notes that b reached the store. r.mu is held.
func (r *Recorder) written(b *allocator.Binding) {
	if r.toucher == nil {
		return
	}
	k := macKey(b.MAC)
	t := b.LastExchange.UnixNano()
	e, ok := r.seen[k]
	fp := fingerprint(b)
	if !ok && len(r.seen) >= r.maxSeen {
		return
	}
	latest, msg := t, b.LastMessage
	if ok && e.fp == fp && e.latest > t {
		latest, msg = e.latest, e.msg // a renewal answered while it was written
	}
	r.seen[k] = seenEntry{iaid: b.IAID, fp: fp, stored: t, latest: latest, valid: b.ValidLifetime, msg: msg,
		duid: string(b.ClientDUID), prefix: prefixKey17(b)}
}

// Fresh brings b, read from the store, up to date with what this server
// knows and has not written yet: a later last exchange (and expiry) of
// the same binding, kept in memory or waiting for the next flush. It
// returns false when this server has ended the binding (a Release waiting
// for the flush, or being written): answers leave it out at once.
func (r *Recorder) Fresh(b *allocator.Binding) bool {
	if len(b.MAC) == 0 || len(b.MAC) > maxMAC {
		return true
	}
	k := keyOf(b.MAC, b.IAID)
	pk := prefixKey17(b)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range []map[iaKey]pendingOp{r.pending, r.releasing} {
		op, ok := m[k]
		if !ok || !bytes.Equal(op.b.ClientDUID, b.ClientDUID) {
			continue
		}
		if op.release {
			return false
		}
		if op.b.Prefix == b.Prefix && op.b.LastExchange.After(b.LastExchange) {
			setExchange(b, op.b.LastExchange, op.b.LastMessage)
		}
	}
	if e, ok := r.seen[macKey(b.MAC)]; ok && e.iaid == b.IAID && e.duid == string(b.ClientDUID) && e.prefix == pk && e.latest > b.LastExchange.UnixNano() {
		setExchange(b, time.Unix(0, e.latest).In(b.LastExchange.Location()), e.msg)
	}
	return true
}

func setExchange(b *allocator.Binding, t time.Time, msg string) {
	b.LastExchange, b.LastMessage = t, msg
	b.Expires = t.Add(time.Duration(b.ValidLifetime) * time.Second)
}

// PersistExchanges writes the last-exchange times kept in memory that the
// store does not have yet (Store.TouchBindings), flushChunk per
// transaction in the order of the store's keys, and forgets the IAs whose binding has expired. Run calls
// it every ExchangeStaleness and at shutdown.
func (r *Recorder) PersistExchanges() error {
	if r.toucher == nil {
		return nil
	}
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	now := r.clock.Now().UnixNano()
	var touches []allocator.BindingTouch
	var keys []iaKey
	var fps []uint64
	r.mu.Lock()
	for k, e := range r.seen {
		if e.latest+int64(e.valid)*int64(time.Second) < now {
			delete(r.seen, k) // expired: nothing to answer or keep
			continue
		}
		if e.latest <= e.stored {
			continue
		}
		p, _ := allocator.ParsePrefixKey(e.prefix[:])
		touches = append(touches, allocator.BindingTouch{ClientDUID: []byte(e.duid), IAID: e.iaid, MAC: bytes.Clone(k.mac[:k.n]),
			Prefix: p, LastExchange: time.Unix(0, e.latest).UTC(), LastMessage: e.msg})
		keys = append(keys, k)
		fps = append(fps, e.fp)
	}
	r.mu.Unlock()
	sortTouches(touches, keys, fps)
	for start := 0; start < len(touches); start += flushChunk {
		end := min(start+flushChunk, len(touches))
		// The stored binding must still be the one this server wrote:
		// another server sharing the store may have written it since,
		// with other relay data, or ended it.
		same := func(i int, stored *allocator.Binding) bool { return fingerprint(stored) == fps[start+i] }
		n, stale, err := r.toucher.TouchBindings(touches[start:end], same)
		if err != nil {
			r.log.Error("cannot persist last-exchange times; will retry", "bindings", len(touches)-start, "err", err)
			return err
		}
		r.persisted.Add(float64(n))
		r.mu.Lock()
		for i := start; i < end; i++ {
			if e, ok := r.seen[keys[i]]; ok && e.fp == fps[i] {
				e.stored = max(e.stored, touches[i].LastExchange.UnixNano())
				r.seen[keys[i]] = e
			}
		}
		// Gone from the store or changed by another writer: forget it, so
		// that the IA's next renewal writes its binding in full.
		for _, i := range stale {
			if e, ok := r.seen[keys[start+i]]; ok && e.fp == fps[start+i] {
				delete(r.seen, keys[start+i])
			}
		}
		r.mu.Unlock()
	}
	return nil
}

// sortTouches puts touches (and the keys and fingerprints beside them) in
// the order of the store's binding keys, as Flush does its records: each
// transaction of PersistExchanges then rewrites neighbouring pages.
func sortTouches(touches []allocator.BindingTouch, keys []iaKey, fps []uint64) {
	order := make([]int, len(touches))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return compareBindingKeys(touches[a].ClientDUID, touches[a].IAID, touches[b].ClientDUID, touches[b].IAID)
	})
	t2, k2, f2 := make([]allocator.BindingTouch, len(order)), make([]iaKey, len(order)), make([]uint64, len(order))
	for i, j := range order {
		t2[i], k2[i], f2[i] = touches[j], keys[j], fps[j]
	}
	copy(touches, t2)
	copy(keys, k2)
	copy(fps, f2)
}

// SetExchangeStaleness sets how long a last-exchange time may stay in
// memory only (0: DefaultExchangeStaleness). Call it before Run.
func (r *Recorder) SetExchangeStaleness(d time.Duration) {
	if d <= 0 {
		d = DefaultExchangeStaleness
	}
	r.staleness = d
}

// ExchangeStaleness returns the bound set by SetExchangeStaleness.
func (r *Recorder) ExchangeStaleness() time.Duration { return r.staleness }
