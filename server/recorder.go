package server

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
)

// BindingStore is where recorded bindings are written, a batch per call.
// *allocator.Store is one.
type BindingStore interface {
	// PutBindings writes put and applies the releases in del. An error
	// wrapping allocator.ErrInvalidBinding means the rest of the batch was
	// written; any other error, that nothing was. It must not keep the
	// slices: the Recorder reuses them.
	PutBindings(put []allocator.Binding, del []allocator.BindingRelease) error
}

// Recorder collects the bindings the handler makes and ends, and writes
// them to the store in batches, so that the packet path never waits for an
// fsync.
//
// What is pending between two flushes is one entry per MAC and IAID: a
// newer record of the same IA replaces the older, whatever client DUID it
// carries, so a client that sends a new DUID with every message (or a
// flood of them) takes one entry, as it takes one binding in the store.
// The entries are capped (DefaultMaxPending), so that memory stays
// bounded under any flood: the cap pending, plus the batch a flush writes.
// When half the cap is pending, Run flushes at once instead of waiting for
// its interval.
//
// Back-pressure: a record (or release) of a new IA that finds the cap
// reached waits, at most DefaultMaxRecordWait (SetMaxRecordWait), for the
// next flush to take the pending set (it asks Run to flush as soon as the
// running flush ends), instead of being dropped. During a storm (a pod's
// VMs all asking within a second) the packet path then answers at the
// rate the store writes, requests wait in the socket's receive buffer,
// and every binding is recorded. It waits only while the store keeps up:
// while Run runs, and unless the last flush failed or a wait has run out
// since the last flush that succeeded; and only for a VM's first pending
// IA (a VM flooding new IAIDs does not slow the packet path down). So a
// store that fails (a full disk, etcd without quorum) or hangs costs at
// most one wait per packet-path goroutine; then records beyond the cap
// are dropped at once and counted (DropPendingFull), as they are without
// Run, until a flush succeeds. Waits are counted in binding_waits_total
// and binding_wait_seconds_total.
//
// A record that can never be stored (allocator.Binding.Problem) is dropped
// and counted at once; the rest of its batch is stored. Drops are counted
// in cloudstack_pd_bindings_dropped_total by reason (the Drop constants)
// and logged once per reason.
type Recorder struct {
	store    BindingStore
	interval time.Duration
	clock    clock.Clock // for Run's ticker
	log      *slog.Logger
	max      int

	dropped      *prometheus.CounterVec
	drops        map[string]*dropReason // by reason; read-only once made
	pendingGauge prometheus.GaugeFunc
	flushErrors  prometheus.Counter

	mu      sync.Mutex
	pending map[iaKey]pendingOp
	kick    chan struct{} // Run flushes now: half the cap is pending
	flushMu sync.Mutex    // one flush (or persist) at a time

	// Back-pressure, under mu: whether a record may wait for room in
	// pending (waitForRoom), and the channel closed (then replaced) when
	// there may be room or waiting stops being allowed.
	maxWait   time.Duration
	running   bool // Run is flushing
	keepingUp bool // the last flush did not fail, and no wait ran out since the last one that succeeded
	changed   chan struct{}
	// The MACs (macKey) with an IA in pending: a record of another IA of
	// one of them does not wait.
	pendingMACs map[iaKey]struct{}
	waits       prometheus.Counter
	waited      prometheus.Counter // seconds

	// Last exchanges kept in memory (exchanges.go); toucher is nil when
	// the store cannot touch, and then every record is written.
	toucher                   BindingToucher
	staleness                 time.Duration
	maxSeen                   int
	seen                      map[iaKey]seenEntry // under mu
	releasing                 map[iaKey]pendingOp // the releases a flush is writing, under mu
	unchangedCount, persisted prometheus.Counter
}

// dropReason is the counter of one reason for dropping, and whether a drop
// for it was logged: the packet path counts drops without taking a lock.
type dropReason struct {
	count  prometheus.Counter
	logged atomic.Bool
}

// maxMAC is the longest MAC a pending entry holds (allocator.ErrInvalidMAC).
const maxMAC = 20

// iaKey names one IA of one VM: its MAC and the IAID.
type iaKey struct {
	mac  [maxMAC]byte
	n    uint8
	iaid uint32
}

func keyOf(mac []byte, iaid uint32) iaKey {
	k := iaKey{n: uint8(len(mac)), iaid: iaid}
	copy(k.mac[:], mac)
	return k
}

// pendingOp is a binding to write, or (release) the binding to end named
// by b's client DUID, IAID and MAC.
type pendingOp struct {
	b       allocator.Binding
	release bool
}

// DefaultFlushInterval is how often recorded bindings reach the store.
const DefaultFlushInterval = time.Second

// DefaultMaxPending is the most IAs (MAC and IAID) a Recorder holds
// between two flushes: 20,000, some 12 MB (and as much again while a flush
// writes them). That is hundreds of times the renewals per second of a
// cloud of 100,000 VMs. A record of a new IA beyond it waits for the next
// flush while the store keeps up (a storm of a pod's 100,000 VMs within a
// second is then recorded at the store's pace), and is dropped and counted
// (DropPendingFull) when the store does not. A larger cap would not hold
// a storm within make flood's memory bound (docs/BENCHMARKS.md, "A
// storm": 120,000 took its serve to 481 MB).
const DefaultMaxPending = 20_000

// DefaultMaxRecordWait is the longest a record of a new IA waits for room
// when DefaultMaxPending IAs are pending: 2 s. A waiter may have to wait
// for the whole of the running flush, and one flush of the cap took
// 0.2–0.5 s on the two-core machine of docs/BENCHMARKS.md (an fsync per
// 1,000 records), more with the other core busy answering; a store slower
// than that is not keeping up.
const DefaultMaxRecordWait = 2 * time.Second

// Reasons a Recorder drops a record, besides the allocator.Problem
// constants (a binding the store can never hold).
const (
	// DropPendingFull: DefaultMaxPending IAs are already waiting for the
	// next flush, the record is of another one, and the store does not
	// keep up (a flush failed, or a wait for room ran out) or Run is not
	// running.
	DropPendingFull = "pending-full"
	// DropMAC: the record names no MAC, or one longer than 20 bytes.
	DropMAC = "mac"
)

// dropReasons are the label values of bindings_dropped_total.
var dropReasons = []string{DropPendingFull, DropMAC, allocator.ProblemClientDUID, allocator.ProblemPrefix, allocator.ProblemTime}

// NewRecorder returns a Recorder writing to store every interval (0:
// DefaultFlushInterval), holding at most DefaultMaxPending IAs, a record
// beyond them waiting at most DefaultMaxRecordWait.
func NewRecorder(store BindingStore, interval time.Duration, log *slog.Logger) *Recorder {
	if interval <= 0 {
		interval = DefaultFlushInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Recorder{store: store, interval: interval, clock: clock.Real{}, log: log, max: DefaultMaxPending,
		pending: map[iaKey]pendingOp{}, drops: map[string]*dropReason{}, kick: make(chan struct{}, 1),
		staleness: DefaultExchangeStaleness, maxSeen: MaxRemembered, seen: map[iaKey]seenEntry{},
		maxWait: DefaultMaxRecordWait, keepingUp: true, changed: make(chan struct{}), pendingMACs: map[iaKey]struct{}{}}
	r.toucher, _ = store.(BindingToucher)
	r.unchangedCount = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "bindings_unchanged_total",
		Help: "Bindings recorded that only repeat, with a later last exchange, what the store holds: not written (their last exchange is persisted lazily).",
	})
	r.persisted = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "binding_exchanges_persisted_total",
		Help: "Bindings rewritten in the store only to bring their last exchange forward (every exchange-staleness interval and at shutdown).",
	})
	r.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "bindings_dropped_total",
		Help: "Bindings (or releases) not recorded in the store, by reason: pending-full (too many IAs waiting for the next flush, and the store not keeping up), mac, client-duid-length, prefix, time (a record the store can never hold).",
	}, []string{"reason"})
	for _, reason := range dropReasons {
		r.drops[reason] = &dropReason{count: r.dropped.WithLabelValues(reason)}
	}
	r.pendingGauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "bindings_pending",
		Help: "IAs whose binding or release waits for the next write to the store.",
	}, func() float64 { return float64(r.Pending()) })
	r.flushErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "bindings_flush_errors_total",
		Help: "Writes of pending bindings to the store that failed; what was not written waits for the next flush.",
	})
	r.waits = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "binding_waits_total",
		Help: "Bindings (or releases) of a new IA that found the pending bindings at their cap and waited for the next flush to make room, instead of being dropped.",
	})
	r.waited = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "binding_wait_seconds_total",
		Help: "Time the packet path spent waiting for room among the pending bindings (binding_waits_total).",
	})
	return r
}

// Collectors returns the Recorder's metrics, to register:
// bindings_dropped_total, bindings_pending, bindings_flush_errors_total,
// bindings_unchanged_total, binding_exchanges_persisted_total,
// binding_waits_total and binding_wait_seconds_total.
func (r *Recorder) Collectors() []prometheus.Collector {
	return []prometheus.Collector{r.dropped, r.pendingGauge, r.flushErrors, r.unchangedCount, r.persisted, r.waits, r.waited}
}

// SetMaxRecordWait sets the longest a record of a new IA waits for room
// when the cap is reached (0: DefaultMaxRecordWait; negative: never
// wait, drop at once). Call it before Run.
func (r *Recorder) SetMaxRecordWait(d time.Duration) {
	if d == 0 {
		d = DefaultMaxRecordWait
	}
	r.maxWait = d
}

// Pending returns how many IAs wait for the next flush.
func (r *Recorder) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// Record implements BindingSink.
func (r *Recorder) Record(b allocator.Binding) {
	if len(b.MAC) == 0 || len(b.MAC) > maxMAC {
		r.drop(DropMAC, &b)
		return
	}
	if p := b.Problem(); p != "" {
		r.drop(p, &b)
		return
	}
	k := keyOf(b.MAC, b.IAID)
	var fp uint64
	if r.toucher != nil {
		fp = fingerprint(&b) // outside the lock
	}
	var w roomWait
	defer r.endWait(&w)
	r.mu.Lock()
	for {
		_, queued := r.pending[k]
		if !queued && r.unchanged(fp, &b) {
			r.mu.Unlock()
			r.unchangedCount.Inc()
			return
		}
		if queued || len(r.pending) < r.max {
			break
		}
		if !r.waitForRoom(&w, b.MAC) {
			r.mu.Unlock()
			r.drop(DropPendingFull, &b)
			return
		}
	}
	r.addPending(k, pendingOp{b: b})
	half := len(r.pending) >= r.max/2
	r.mu.Unlock()
	if half {
		r.kickFlush()
	}
}

// roomWait is one record's wait for room in pending: when it began, and
// the timer that ends it (nil: not waiting).
type roomWait struct {
	start time.Time
	timer clock.Timer
}

// waitForRoom waits, with r.mu held (released while waiting), until a
// flush takes the pending set or waiting stops being allowed, and reports
// whether the caller may look for room again. False: drop the record.
// The wait of one record (w) is bounded by r.maxWait in all; when it runs
// out, the store is taken as not keeping up: no record waits again until
// a flush succeeds.
//
// A record of a MAC that already has an IA pending does not wait: a VM
// has one prefix, so one IA of it is enough to record, and a VM flooding
// new IAIDs (each a new IA) fills the cap once, then is dropped without
// slowing the packet path down to the store's pace.
func (r *Recorder) waitForRoom(w *roomWait, mac []byte) bool {
	if !r.running || !r.keepingUp || r.maxWait < 0 {
		return false
	}
	if _, other := r.pendingMACs[macKey(mac)]; other {
		return false
	}
	if w.timer == nil {
		w.start, w.timer = r.clock.Now(), r.clock.NewTimer(r.maxWait)
		r.waits.Inc()
	}
	changed := r.changed
	r.mu.Unlock()
	r.kickFlush()
	select {
	case <-changed:
		r.mu.Lock()
		// Look again for room, unless Run has stopped: its last flush
		// may have taken the pending set already, and nothing would
		// write this record.
		return r.running
	case <-w.timer.C():
	}
	r.mu.Lock()
	if r.keepingUp {
		r.keepingUp = false
		r.wake() // the others waiting drop at once too
		r.log.Warn("the store does not keep up with new bindings: further ones beyond the pending cap are dropped without waiting (bindings_dropped_total{reason=\"pending-full\"}) until a flush succeeds",
			"waited", r.maxWait, "pending", len(r.pending))
	}
	return false
}

// addPending adds op, of an IA not pending yet, to pending. r.mu is held.
func (r *Recorder) addPending(k iaKey, op pendingOp) {
	r.pending[k] = op
	r.pendingMACs[macKey(op.b.MAC)] = struct{}{}
}

// endWait counts the time a record waited, if it did.
func (r *Recorder) endWait(w *roomWait) {
	if w.timer == nil {
		return
	}
	w.timer.Stop()
	r.waited.Add(r.clock.Now().Sub(w.start).Seconds())
}

// wake tells the records waiting for room to look again. r.mu is held.
func (r *Recorder) wake() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// setRunning notes whether Run is flushing: records wait for room only
// while it is.
func (r *Recorder) setRunning(on bool) {
	r.mu.Lock()
	r.running = on
	r.wake()
	r.mu.Unlock()
}

// kickFlush has Run flush now, without waiting.
func (r *Recorder) kickFlush() {
	select {
	case r.kick <- struct{}{}:
	default: // already asked
	}
}

// Release implements BindingSink. A release replaces what is pending for
// its MAC and IAID, except a binding of another client DUID: the store
// would hold that binding once written, and a release by this DUID would
// then end nothing.
func (r *Recorder) Release(rel allocator.BindingRelease) {
	b := allocator.Binding{ClientDUID: rel.ClientDUID, IAID: rel.IAID, MAC: rel.MAC}
	if len(b.MAC) == 0 || len(b.MAC) > maxMAC {
		r.drop(DropMAC, &b)
		return
	}
	if !allocator.StorableClientDUID(b.ClientDUID) {
		r.drop(allocator.ProblemClientDUID, &b)
		return
	}
	k := keyOf(b.MAC, b.IAID)
	var w roomWait
	defer r.endWait(&w)
	r.mu.Lock()
	for {
		old, ok := r.pending[k]
		if ok && !old.release && string(old.b.ClientDUID) != string(b.ClientDUID) {
			r.mu.Unlock()
			return
		}
		if ok || len(r.pending) < r.max {
			break
		}
		if !r.waitForRoom(&w, b.MAC) {
			r.mu.Unlock()
			r.drop(DropPendingFull, &b)
			return
		}
	}
	r.addPending(k, pendingOp{b: b, release: true})
	r.forget(b.MAC, b.IAID) // the binding ends: no time of it to persist
	half := len(r.pending) >= r.max/2
	r.mu.Unlock()
	if half {
		r.kickFlush()
	}
}

// drop counts a record not kept, and logs the first of each reason.
func (r *Recorder) drop(reason string, b *allocator.Binding) {
	d, ok := r.drops[reason]
	if !ok {
		// A Problem of the allocator's that dropReasons does not list
		// yet: counted, and logged every time.
		d = &dropReason{count: r.dropped.WithLabelValues(reason)}
	}
	d.count.Inc()
	if !d.logged.Swap(true) {
		r.log.Warn("binding not recorded; further ones dropped for this reason are only counted in cloudstack_pd_bindings_dropped_total",
			"reason", reason, "mac", b.MAC.String(), "iaid", b.IAID, "client-duid-bytes", len(b.ClientDUID), "prefix", b.Prefix)
	}
}

// SetClock sets the clock whose ticker Run flushes by (nil: the system
// clock). Call it before Run.
func (r *Recorder) SetClock(c clock.Clock) { r.clock = clock.OrReal(c) }

// Run flushes every interval, and at once when half the cap of pending
// IAs is reached or a record waits for room, and persists the last
// exchanges kept in memory every ExchangeStaleness until ctx is done, then
// does both once more. Records wait for room only while Run runs: when ctx
// is done, those waiting are dropped (and counted) at once.
func (r *Recorder) Run(ctx context.Context) {
	r.setRunning(true)
	t := r.clock.NewTicker(r.interval)
	defer t.Stop()
	p := r.clock.NewTicker(r.staleness)
	defer p.Stop()
	for {
		select {
		case <-ctx.Done():
			r.setRunning(false)
			r.Flush()
			r.PersistExchanges()
			return
		case <-t.C():
			r.Flush()
		case <-r.kick:
			r.Flush()
		case <-p.C():
			r.PersistExchanges()
		}
	}
}

// flushChunk is the most records Flush writes in one store transaction:
// a bbolt transaction holds every page it rewrites until its commit, so
// one transaction for a large batch would take hundreds of megabytes.
const flushChunk = 1000

// Flush writes what is pending, flushChunk records per store transaction,
// in the order of the store's binding keys (client DUID, IAID): each
// transaction then rewrites a few neighbouring pages of the store instead
// of one page per record scattered over it, which made a flush of the cap
// three times faster (docs/BENCHMARKS.md, "A storm"). On a store failure
// what was not written is put back (newer records of the same IA win, the
// cap still holds) and retried at the next flush, so a store error loses
// nothing while the process lives and the cap is not reached. A record
// the store can never hold is dropped and counted, not retried.
//
// Taking the pending set wakes the records waiting for room; a flush that
// fails stops records from waiting, one that writes lets them wait again.
func (r *Recorder) Flush() (err error) {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	r.mu.Lock()
	batch := r.pending
	r.pending = make(map[iaKey]pendingOp, min(len(batch), r.max))
	clear(r.pendingMACs)
	r.wake()
	// Until they are written, the releases still end their bindings in
	// Leasequery answers (Fresh).
	for k, op := range batch {
		if op.release {
			if r.releasing == nil {
				r.releasing = map[iaKey]pendingOp{}
			}
			r.releasing[k] = op
		}
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		clear(r.releasing)
		r.mu.Unlock()
	}()
	if len(batch) == 0 {
		return nil
	}
	defer func() {
		r.mu.Lock()
		if r.keepingUp = err == nil; !r.keepingUp {
			r.wake() // the records waiting drop at once
		}
		r.mu.Unlock()
	}()
	put := make([]allocator.Binding, 0, min(len(batch), flushChunk))
	del := make([]allocator.BindingRelease, 0, min(len(batch), flushChunk))
	for _, k := range inKeyOrder(batch) {
		if err != nil {
			break
		}
		op := batch[k]
		if op.release {
			del = append(del, allocator.BindingRelease{ClientDUID: op.b.ClientDUID, IAID: op.b.IAID, MAC: op.b.MAC})
		} else {
			put = append(put, op.b)
		}
		delete(batch, k) // what is left in batch is what is not written
		if len(put)+len(del) == flushChunk {
			err = r.write(batch, put, del)
			put, del = put[:0], del[:0]
		}
	}
	if err == nil && len(put)+len(del) > 0 {
		err = r.write(batch, put, del)
	}
	if err != nil {
		r.flushErrors.Inc()
		r.log.Error("cannot record bindings; will retry", "bindings", len(batch), "err", err)
	}
	return err
}

// inKeyOrder returns the keys of batch in the order of the store's keys
// of their bindings: client DUID (its length first), then IAID.
func inKeyOrder(batch map[iaKey]pendingOp) []iaKey {
	type item struct {
		k    iaKey
		duid []byte
		iaid uint32
	}
	items := make([]item, 0, len(batch))
	for k, op := range batch {
		items = append(items, item{k, op.b.ClientDUID, op.b.IAID})
	}
	slices.SortFunc(items, func(a, b item) int { return compareBindingKeys(a.duid, a.iaid, b.duid, b.iaid) })
	keys := make([]iaKey, len(items))
	for i := range items {
		keys[i] = items[i].k
	}
	return keys
}

// compareBindingKeys compares the store's keys of two bindings
// (allocator.AppendBindingKey) without building them: client DUID by
// length then bytes, then IAID.
func compareBindingKeys(duidA []byte, iaidA uint32, duidB []byte, iaidB uint32) int {
	return cmp.Or(cmp.Compare(len(duidA), len(duidB)), bytes.Compare(duidA, duidB), cmp.Compare(iaidA, iaidB))
}

// write writes one chunk of Flush. On a store failure it puts the chunk
// back into batch (what Flush has not written yet) and returns the error,
// and puts batch back into pending.
func (r *Recorder) write(batch map[iaKey]pendingOp, put []allocator.Binding, del []allocator.BindingRelease) error {
	err := r.store.PutBindings(put, del)
	if err == nil || errors.Is(err, allocator.ErrInvalidBinding) {
		r.mu.Lock()
		for i := range put {
			if put[i].Problem() == "" {
				r.written(&put[i])
			}
		}
		r.mu.Unlock()
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, allocator.ErrInvalidBinding):
		// The rest was written; Record keeps such records out, so this
		// is a store rule Record does not know of yet.
		for i := range put {
			if p := put[i].Problem(); p != "" {
				r.drop(p, &put[i])
			}
		}
		r.log.Error("bindings left out of the store", "err", err)
		return nil
	}
	for _, b := range put {
		batch[keyOf(b.MAC, b.IAID)] = pendingOp{b: b}
	}
	for _, d := range del {
		batch[keyOf(d.MAC, d.IAID)] = pendingOp{b: allocator.Binding{ClientDUID: d.ClientDUID, IAID: d.IAID, MAC: d.MAC}, release: true}
	}
	var full []allocator.Binding
	r.mu.Lock()
	for k, op := range batch {
		if _, newer := r.pending[k]; newer {
			continue
		}
		if len(r.pending) >= r.max {
			full = append(full, op.b)
			continue
		}
		r.addPending(k, op)
	}
	r.mu.Unlock()
	for i := range full {
		r.drop(DropPendingFull, &full[i])
	}
	return err
}
