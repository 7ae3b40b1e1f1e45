// Package follower keeps a server's allocation table current with the
// cluster's table in etcd without mirroring its keys: it reads the Alloc
// spaces at one revision R straight from etcd into an allocator.Table
// (allocator.Store.LoadTable over a read-only backend that streams each
// pool's range at R), then watches the Alloc spaces from R+1 and applies
// each batch of events with allocator.TableBuilder, swapping the result
// into the server's allocator.Live. A compaction past its revision, or a
// batch that does not apply, makes it load the table again at a new
// revision. The Prefix and MACs spaces are indexes of the Alloc spaces:
// the Table rebuilds them, so they are never read.
//
//	f := follower.New(follower.Options{Client: cli, Prefix: cluster.TablePrefix(p), Live: live, Lock: &swapMu})
//	tbl, err := f.Load(ctx, pools) // the first table; then
//	go f.Run(ctx)                  // follows and swaps
//
// Memory: the Table only (about 150 bytes per allocation), against the
// three keys per allocation of a full mirror (allocator/etcdstore).
package follower

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/etcdstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
)

// Options configures a Follower.
type Options struct {
	// Client is the etcd client; required, not closed.
	Client *clientv3.Client
	// Prefix is the table's key prefix (cluster.TablePrefix), ending in '/'.
	Prefix string
	// Timeout bounds each request to etcd (and a pause of a load's
	// stream); 0: etcdstore.DefaultTimeout.
	Timeout time.Duration
	// Live receives each new table, swapped in under Lock (the server's
	// swap lock, which its reload and sync hold too); required for Run.
	Live *allocator.Live
	Lock sync.Locker
	// Log receives the follower's lines; nil discards them.
	Log *slog.Logger
	// OnChange, when set, is called after each swap into Live (not to
	// block: it runs under Lock).
	OnChange func()
	// Clock stamps the state (WatchState's times); nil: the real clock.
	Clock clock.Clock
}

// Follower follows the allocations of the table in etcd (the package doc).
// It is safe for concurrent use.
type Follower struct {
	o     Options
	log   *slog.Logger
	clock clock.Clock

	// mu guards the table followed and its revision; taken after
	// o.Lock.
	mu     sync.Mutex
	pools  []allocator.Pool
	base   *allocator.Table // nil until the first load
	rev    int64            // the revision base reflects
	broken error            // a batch that did not apply: load again

	stMu      sync.Mutex
	connected bool
	since     time.Time
	werr      error
	lastEvent time.Time
	lastSeen  time.Time
	loaded    time.Time
	advanced  chan struct{}

	loads, applied, skipped atomic.Int64
}

// New returns a follower; nothing is read until Load or Run.
func New(o Options) *Follower {
	if o.Timeout <= 0 {
		o.Timeout = etcdstore.DefaultTimeout
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Follower{o: o, log: log, clock: clock.OrReal(o.Clock), advanced: make(chan struct{})}
	f.since = f.clock.Now()
	return f
}

// Load reads the table for pools at the current revision and makes it
// the one followed (Run applies changes to it from the next revision). It
// does not swap it into Live: the caller puts it in force (a server's
// start, or its reload under the swap lock).
func (f *Follower) Load(ctx context.Context, pools []allocator.Pool) (*allocator.Table, error) {
	f.mu.Lock()
	if f.base == nil {
		f.pools = pools // what Run loads if this load fails
	}
	f.mu.Unlock()
	tbl, rev, err := f.read(ctx, pools)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.pools, f.base, f.rev, f.broken = pools, tbl, rev, nil
	f.mu.Unlock()
	f.markLoaded()
	return tbl, nil
}

// read loads the table for pools at one revision; a compaction during the
// load makes it start again at a newer one.
func (f *Follower) read(ctx context.Context, pools []allocator.Pool) (*allocator.Table, int64, error) {
	for {
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, f.o.Timeout)
		resp, err := f.o.Client.Get(cctx, f.o.Prefix+"meta/schema")
		cancel()
		if err != nil {
			return nil, 0, fmt.Errorf("read the table under %s: %w", f.o.Prefix, err)
		}
		if len(resp.Kvs) == 0 {
			return nil, 0, fmt.Errorf("read the table under %s: no schema marker: %w", f.o.Prefix, kv.ErrNoStore)
		}
		rev := resp.Header.Revision
		st := allocator.NewStore(&atRevision{f: f, ctx: ctx, rev: rev})
		tbl, rep, err := st.LoadTable(pools)
		if errors.Is(err, rpctypes.ErrCompacted) {
			f.log.Info("etcd compacted the table's history during its load; loading it again", "revision", rev)
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		if byPool := rep.OrphanedByPool(); byPool != nil {
			f.log.Warn("the table holds allocations of pools that are not configured; they are kept, not served",
				"allocations-by-pool", byPool)
		}
		f.loads.Add(1)
		f.log.Debug("table loaded from etcd", "allocations", tbl.Len(), "revision", rev, "took", time.Since(start))
		return tbl, rev, nil
	}
}

// Run follows the table until ctx ends: it watches the Alloc spaces from
// the revision loaded and swaps each new table into Options.Live. Without
// a table loaded (Load failed: etcd out of reach), or after a compaction
// past its revision, it loads one first.
func (f *Follower) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		f.mu.Lock()
		need := f.base == nil || f.broken != nil
		rev := f.rev
		f.mu.Unlock()
		if need {
			if err := f.reload(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				f.log.Error("the table in etcd does not load; the one in force stays", "err", err)
				f.setConnected(false, err)
				sleep(ctx, backoff)
				// Without a table, etcd is awaited; with one in force, a
				// table that does not load is not read again too often.
				limit := 30 * time.Second
				if f.Table() == nil {
					limit = 5 * time.Second
				}
				backoff = min(2*backoff, limit)
				continue
			}
			backoff = 100 * time.Millisecond
			continue
		}
		compacted, err := f.watchFrom(ctx, rev+1)
		if ctx.Err() != nil {
			return
		}
		f.setConnected(false, err)
		if compacted {
			f.log.Info("etcd compacted the table's history past the follower's revision; loading it again", "revision", rev)
			f.mu.Lock()
			f.broken = err
			f.mu.Unlock()
			continue
		}
		sleep(ctx, backoff)
		backoff = min(2*backoff, 2*time.Second)
	}
}

// reload loads the table again for the pools followed and swaps it in.
func (f *Follower) reload(ctx context.Context) error {
	f.o.Lock.Lock()
	defer f.o.Lock.Unlock()
	f.mu.Lock()
	pools := f.pools
	f.mu.Unlock()
	tbl, err := f.Load(ctx, pools)
	if err != nil {
		return err
	}
	f.o.Live.Swap(tbl)
	f.changed()
	return nil
}

func (f *Follower) changed() {
	if f.o.OnChange != nil {
		f.o.OnChange()
	}
}

// watchFrom runs one watch of the Alloc spaces from rev until it ends.
func (f *Follower) watchFrom(ctx context.Context, rev int64) (compacted bool, err error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	key := etcdstore.KindPrefix(f.o.Prefix, kv.Alloc)
	wch := f.o.Client.Watch(wctx, key, clientv3.WithRange(etcdstore.PrefixEnd(key)), clientv3.WithRev(rev),
		clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case resp, ok := <-wch:
			if !ok {
				return false, errors.New("watch closed")
			}
			if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
				return true, fmt.Errorf("watch from revision %d: %w", rev, rpctypes.ErrCompacted)
			}
			if err := resp.Err(); err != nil {
				return false, err
			}
			f.setConnected(true, nil)
			switch {
			case resp.Created:
			case resp.IsProgressNotify():
				f.progress(resp.Header.Revision)
			case len(resp.Events) > 0:
				if err := f.apply(resp.Events); err != nil {
					f.log.Error("a change of the table in etcd does not apply; loading the table again", "err", err)
					f.mu.Lock()
					f.broken = err
					f.mu.Unlock()
					return false, err
				}
			}
		case <-tick.C:
			f.stMu.Lock()
			stale := time.Since(f.lastSeen) > staleAfter
			f.stMu.Unlock()
			if stale {
				f.setConnected(false, errStale)
			}
			rctx, rcancel := context.WithTimeout(wctx, heartbeat)
			_ = f.o.Client.RequestProgress(rctx)
			rcancel()
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// Heartbeat settings, as allocator/etcdstore's watch: progress asked for
// every heartbeat, disconnected when nothing came back for staleAfter.
const (
	heartbeat  = time.Second
	staleAfter = 3 * heartbeat
)

var errStale = errors.New("no answer on the watch stream")

// apply applies a batch of watch events to the table and swaps the result
// in. The batch is reduced to each key's last event, deletions go first,
// and a put refused for a MAC or a prefix another allocation still holds
// is tried again after the others: the batch ends at a revision whose
// table holds every invariant, whatever the order of its events. A batch
// that does not apply changes nothing, and the table is loaded again.
func (f *Follower) apply(evs []*clientv3.Event) error {
	f.o.Lock.Lock()
	defer f.o.Lock.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.base == nil {
		return nil
	}
	type op struct {
		pool string
		key  []byte
		val  []byte
		del  bool
	}
	last := map[string]int{}
	var ops []op
	top := f.rev
	for _, ev := range evs {
		if ev.Kv.ModRevision <= f.rev {
			continue // already in the table (a reload went past it)
		}
		top = max(top, ev.Kv.ModRevision)
		s, k, ok := etcdstore.ParseKey(f.o.Prefix, string(ev.Kv.Key))
		if !ok || s.Kind != kv.Alloc {
			f.skipped.Add(1)
			continue
		}
		o := op{pool: s.Pool, key: k, val: ev.Kv.Value, del: ev.Type == mvccpb.DELETE}
		id := s.Pool + "\x00" + string(k)
		if i, seen := last[id]; seen {
			ops[i] = o
			continue
		}
		last[id] = len(ops)
		ops = append(ops, o)
	}
	if top == f.rev {
		return nil
	}
	configured := map[string]bool{}
	for _, p := range f.pools {
		configured[p.Name] = true
	}
	b := allocator.NewTableBuilder(f.base)
	var puts []allocator.Allocation
	for _, o := range ops {
		if !configured[o.pool] {
			f.skipped.Add(1) // kept in etcd, not served (as LoadTable)
			continue
		}
		if o.del {
			b.Delete(o.pool, net.HardwareAddr(o.key))
			continue
		}
		a, err := allocator.DecodeAllocation(o.pool, o.key, o.val)
		if err != nil {
			return fmt.Errorf("revision %d: %w", top, err)
		}
		puts = append(puts, a)
	}
	for len(puts) > 0 {
		var again []allocator.Allocation
		var last error
		for _, a := range puts {
			if err := b.Put(a); err != nil {
				if !errors.Is(err, allocator.ErrDuplicateMAC) && !errors.Is(err, allocator.ErrDuplicatePrefix) {
					return fmt.Errorf("revision %d: %w", top, err)
				}
				again, last = append(again, a), err
			}
		}
		if len(again) == len(puts) {
			return fmt.Errorf("revision %d: %w", top, last)
		}
		puts = again
	}
	f.base = b.Build()
	f.rev = top
	f.o.Live.Swap(f.base)
	f.changed()
	f.applied.Add(int64(len(ops)))
	f.markEvent()
	return nil
}

// progress records that every event up to rev has been received.
func (f *Follower) progress(rev int64) {
	f.mu.Lock()
	if f.base != nil && rev > f.rev {
		f.rev = rev
	}
	f.mu.Unlock()
	f.markEvent()
}

func (f *Follower) markEvent() {
	f.stMu.Lock()
	f.lastEvent, f.lastSeen = f.clock.Now(), time.Now()
	close(f.advanced)
	f.advanced = make(chan struct{})
	f.stMu.Unlock()
}

func (f *Follower) markLoaded() {
	f.stMu.Lock()
	f.loaded = f.clock.Now()
	close(f.advanced)
	f.advanced = make(chan struct{})
	f.stMu.Unlock()
}

func (f *Follower) setConnected(up bool, err error) {
	rev := f.Revision() // f.mu is never taken under f.stMu
	f.stMu.Lock()
	defer f.stMu.Unlock()
	if up {
		f.lastSeen = time.Now()
	}
	if f.connected != up {
		f.connected = up
		f.since = f.clock.Now()
		if up {
			f.log.Info("following the table in etcd", "revision", rev)
		} else {
			f.log.Warn("not following the table in etcd", "revision", rev, "err", err)
		}
	}
	f.werr = err
}

// Revision returns the revision the table followed reflects (0 before a
// load).
func (f *Follower) Revision() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rev
}

// Table returns the table followed (nil before a load).
func (f *Follower) Table() *allocator.Table {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.base
}

// State returns how the follower follows etcd, as etcdstore's State.
func (f *Follower) State() etcdstore.WatchState {
	rev := f.Revision()
	f.stMu.Lock()
	defer f.stMu.Unlock()
	return etcdstore.WatchState{Connected: f.connected, Since: f.since, Err: f.werr, Revision: rev, LastEvent: f.lastEvent, Loaded: f.loaded}
}

// WaitRevision waits until the table followed reflects rev (a commit of
// the syncer), or ctx ends.
func (f *Follower) WaitRevision(ctx context.Context, rev int64) error {
	for {
		f.stMu.Lock()
		ch := f.advanced
		f.stMu.Unlock()
		cur := f.Revision()
		if cur >= rev {
			return nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ch:
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, heartbeat)
			_ = f.o.Client.RequestProgress(rctx)
			cancel()
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("the table followed is at revision %d, waiting for %d: %w", cur, rev, ctx.Err())
		}
		t.Stop()
	}
}

// Stats are the follower's counters.
type Stats struct {
	// Loads counts the loads of the whole table; Applied the events
	// applied (each key's last of a batch); Skipped the events of pools
	// not configured or keys that are not allocations.
	Loads, Applied, Skipped int64
}

// Stats returns the follower's counters.
func (f *Follower) Stats() Stats {
	return Stats{Loads: f.loads.Load(), Applied: f.applied.Load(), Skipped: f.skipped.Load()}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
