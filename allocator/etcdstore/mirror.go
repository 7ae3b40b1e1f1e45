package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/google/btree"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// item is one key of the mirror: the relative key (the backend's prefix
// stripped) and the value in one string, and the key's mod revision; -1
// marks a write of the Update running on a clone. 32 bytes and one
// allocation per key.
type item struct {
	kv   string
	klen uint32
	rev  int64
}

func (i item) key() string { return i.kv[:i.klen] }
func (i item) val() string { return i.kv[i.klen:] }

func pivot(k string) item { return item{kv: k, klen: uint32(len(k))} }

func itemLess(a, b item) bool { return a.kv[:a.klen] < b.kv[:b.klen] }

// btreeDegree: nodes of up to 63 items (2 KiB).
const btreeDegree = 32

func newTree() *btree.BTreeG[item] { return btree.NewG(btreeDegree, itemLess) }

// bytesOf returns s's bytes without copying them: the kv.Tx contract says
// callers never modify what a Tx returns. A present empty value is
// non-nil.
func bytesOf(s string) []byte {
	if len(s) == 0 {
		return []byte{}
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// pageSize is the number of keys a paged load reads per request.
const pageSize = 10000

// load reads the whole prefix at one revision into a new tree and swaps
// it in: the mirror then reflects that revision. It streams the range
// (etcd 3.7's RangeStream, linear in the keys) and falls back to pages of
// Get on an older etcd, where each page also counts every key after it
// (quadratic: some 15 s for 600,000 keys against 1 s streamed).
func (b *Backend) load(ctx context.Context) error {
	start := time.Now()
	t, rev, err := b.loadStream(ctx)
	if status.Code(errors.Unwrap(err)) == codes.Unimplemented || status.Code(err) == codes.Unimplemented {
		b.log.Info("etcd without RangeStream (older than 3.7): loading the table page by page")
		t, rev, err = b.loadPages(ctx)
	}
	if err != nil {
		return b.wrap(fmt.Errorf("load the table: %w", err))
	}
	b.mu.Lock()
	b.tree = t
	b.rev = rev
	b.loaded = b.clock.Now()
	// Subscribers hear of it before waiters wake: an Update returns
	// after its change is published.
	b.publish(Change{Revision: rev, Reload: true})
	b.advance()
	b.mu.Unlock()
	b.stats.reloads.Add(1)
	b.log.Debug("etcd table loaded", "keys", t.Len(), "revision", rev, "took", time.Since(start))
	return nil
}

// add puts the keys of a response into t.
func (b *Backend) add(t *btree.BTreeG[item], kvs []*mvccpb.KeyValue, buf []byte) []byte {
	for _, kv := range kvs {
		if len(kv.Key) < len(b.prefix) {
			continue
		}
		rel := kv.Key[len(b.prefix):]
		buf = append(append(buf[:0], rel...), kv.Value...)
		t.ReplaceOrInsert(item{kv: string(buf), klen: uint32(len(rel)), rev: kv.ModRevision})
	}
	return buf
}

// loadStream reads the prefix in one RangeStream, pinned by etcd to the
// revision it started at. It gives up when no chunk came for b.timeout.
func (b *Backend) loadStream(ctx context.Context) (*btree.BTreeG[item], int64, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stall := time.AfterFunc(b.timeout, cancel)
	defer stall.Stop()
	ch, err := b.cli.GetStream(sctx, b.prefix, clientv3.WithRange(prefixEnd(b.prefix)))
	if err != nil {
		return nil, 0, err
	}
	t := newTree()
	var buf []byte
	var rev int64
	for resp := range ch {
		if err := resp.Err(); err != nil {
			return nil, 0, err
		}
		stall.Reset(b.timeout)
		buf = b.add(t, resp.Kvs, buf)
		if resp.Header != nil && resp.Header.Revision != 0 {
			rev = resp.Header.Revision
		}
	}
	if err := sctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("range stream stalled for %s: %w", b.timeout, err)
	}
	if rev == 0 {
		return nil, 0, errors.New("range stream ended without its final chunk")
	}
	return t, rev, nil
}

// loadPages reads the prefix page by page at one revision.
func (b *Backend) loadPages(ctx context.Context) (*btree.BTreeG[item], int64, error) {
	t := newTree()
	end := prefixEnd(b.prefix)
	from := b.prefix
	var rev int64
	var buf []byte
	for {
		// Linearizable reads: a load never goes back in time.
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		cctx, cancel := context.WithTimeout(ctx, b.timeout)
		resp, err := b.cli.Get(cctx, from, opts...)
		cancel()
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		buf = b.add(t, resp.Kvs, buf)
		if !resp.More || len(resp.Kvs) == 0 {
			return t, rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// advance wakes the waiters of waitRev; b.mu held.
func (b *Backend) advance() {
	close(b.advanced)
	b.advanced = make(chan struct{})
}

// apply applies watch events to the mirror.
func (b *Backend) apply(evs []*clientv3.Event) {
	var ch Change
	b.mu.Lock()
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		if !strings.HasPrefix(key, b.prefix) {
			continue
		}
		rel := key[len(b.prefix):]
		switch ev.Type {
		case mvccpb.PUT:
			b.tree.ReplaceOrInsert(item{kv: rel + string(ev.Kv.Value), klen: uint32(len(rel)), rev: ev.Kv.ModRevision})
		case mvccpb.DELETE:
			b.tree.Delete(pivot(rel))
		}
		if r := ev.Kv.ModRevision; r > b.rev {
			b.rev = r
		}
		p, known, ok := parseKey(rel)
		switch {
		case !known || !ok:
			if b.stats.unknown.Add(1) == 1 {
				b.log.Warn("etcd key that is not of this store's layout, ignored", "key", key)
			}
		case p.marker:
			ch.Pools = append(ch.Pools, p.pool)
		default:
			ch.Kinds |= 1 << p.space.Kind
			if poolScoped[p.space.Kind] {
				ch.Pools = append(ch.Pools, p.pool)
			}
		}
	}
	ch.Revision = b.rev
	b.lastEvent, b.lastSeen = b.clock.Now(), time.Now()
	slices.Sort(ch.Pools)
	ch.Pools = slices.Compact(ch.Pools)
	b.publish(ch) // before waiters wake: see load
	b.advance()
	b.mu.Unlock()
}

// progress records a progress notification: every event up to rev has
// been received.
func (b *Backend) progress(rev int64) {
	b.mu.Lock()
	if rev > b.rev {
		b.rev = rev
		b.advance()
	}
	b.lastEvent, b.lastSeen = b.clock.Now(), time.Now()
	b.mu.Unlock()
}

// setConnected records the watch's state.
func (b *Backend) setConnected(up bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.connected != up {
		b.connected = up
		b.since = b.clock.Now()
		if up {
			b.log.Info("etcd watch connected", "revision", b.rev)
		} else {
			b.log.Warn("etcd watch disconnected", "revision", b.rev, "err", err)
		}
	}
	b.werr = err
}

// Heartbeat settings: the watch asks for a progress notification every
// heartbeat, and is reported disconnected when nothing came back for
// staleAfter.
const (
	heartbeat  = time.Second
	staleAfter = 3 * heartbeat
)

// errStale says that the watch stream answered nothing for a while.
var errStale = errors.New("no answer on the watch stream")

// watch follows the prefix from the mirror's revision until ctx ends:
// after a compaction (or a load that failed) it loads the whole table
// again; after any other end of the watch it resumes from the revision it
// reached, which etcd refuses with ErrCompacted if it is gone.
func (b *Backend) watch(ctx context.Context) {
	defer close(b.done)
	needLoad := false
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if needLoad {
			if err := b.load(ctx); err != nil {
				b.setConnected(false, err)
				b.sleep(ctx, backoff)
				backoff = min(2*backoff, 2*time.Second)
				continue
			}
			needLoad = false
		}
		b.mu.Lock()
		rev := b.rev
		b.mu.Unlock()
		compacted, err := b.watchFrom(ctx, rev+1)
		if ctx.Err() != nil {
			return
		}
		b.setConnected(false, err)
		if compacted {
			b.log.Info("etcd watch: history compacted past the mirror's revision; loading the table again", "revision", rev)
			needLoad = true
			continue
		}
		b.sleep(ctx, backoff)
		backoff = min(2*backoff, 2*time.Second)
	}
}

// watchFrom runs one watch from rev until it ends, and says why.
func (b *Backend) watchFrom(ctx context.Context, rev int64) (compacted bool, err error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := b.cli.Watch(wctx, b.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev),
		clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
	b.mu.Lock()
	b.wctx = wctx
	b.mu.Unlock()
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case resp, ok := <-wch:
			if !ok {
				return false, errors.New("watch closed")
			}
			if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
				return true, resp.Err()
			}
			if err := resp.Err(); err != nil {
				return false, err
			}
			switch {
			case resp.Created:
				b.setConnected(true, nil)
				b.progress(0) // events from rev on are still to come
				b.watchingOnce.Do(func() { close(b.watching) })
			case resp.IsProgressNotify():
				b.setConnected(true, nil)
				b.progress(resp.Header.Revision)
			case len(resp.Events) > 0:
				b.setConnected(true, nil)
				b.apply(resp.Events)
			}
		case <-tick.C:
			b.mu.Lock()
			stale := time.Since(b.lastSeen) > staleAfter
			b.mu.Unlock()
			if stale {
				b.setConnected(false, errStale)
			}
			rctx, rcancel := context.WithTimeout(wctx, heartbeat)
			_ = b.cli.RequestProgress(rctx)
			rcancel()
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

func (b *Backend) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// waitRev waits until the mirror reflects revision rev, asking etcd for
// progress notifications meanwhile, at most until ctx ends.
func (b *Backend) waitRev(ctx context.Context, rev int64) error {
	asked := false
	for {
		b.mu.Lock()
		cur, ch, wctx := b.rev, b.advanced, b.wctx
		b.mu.Unlock()
		if cur >= rev {
			return nil
		}
		if !asked && wctx != nil {
			// The revision may have been reached by writes outside the
			// prefix: only a progress notification tells.
			rctx, cancel := context.WithTimeout(wctx, b.timeout)
			_ = b.cli.RequestProgress(rctx)
			cancel()
			asked = true
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ch:
		case <-t.C:
			asked = false
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("the table mirror is at revision %d, waiting for %d: %w", cur, rev, ctx.Err())
		}
		t.Stop()
	}
}

// KindSet is a set of key space kinds.
type KindSet uint64

// Has reports whether k is in the set.
func (s KindSet) Has(k kv.Kind) bool { return k < 64 && s&(1<<k) != 0 }

// Change tells a subscriber of Changes that the mirror moved. Changes
// coalesce: a subscriber that reads late gets one Change covering every
// change since its last read.
type Change struct {
	// Revision is the revision the mirror reflects.
	Revision int64
	// Kinds are the kinds of the key spaces that changed.
	Kinds KindSet
	// Pools are the pools whose spaces (or markers) changed, sorted.
	Pools []string
	// Reload says that the whole table was loaded again (at start, or
	// after a compaction): anything may have changed.
	Reload bool
}

// Merge returns the Change covering c and d.
func (c Change) Merge(d Change) Change {
	out := Change{Revision: max(c.Revision, d.Revision), Kinds: c.Kinds | d.Kinds, Reload: c.Reload || d.Reload}
	out.Pools = append(slices.Clone(c.Pools), d.Pools...)
	slices.Sort(out.Pools)
	out.Pools = slices.Compact(out.Pools)
	return out
}

// Changes subscribes to the mirror's changes: the channel (buffer 1)
// receives a Change after each batch of watch events and each load,
// merged with the one not yet read, so the watch never waits for a
// subscriber. A Change is sent before Revision moves past it: when an
// Update returns, its Change is in the channel (or was read). The function unsubscribes and closes the channel; Close
// closes every channel too.
func (b *Backend) Changes() (<-chan Change, func()) {
	ch := make(chan Change, 1)
	b.subMu.Lock()
	if b.closed {
		close(ch)
	} else {
		b.subs[ch] = struct{}{}
	}
	b.subMu.Unlock()
	return ch, func() {
		b.subMu.Lock()
		defer b.subMu.Unlock()
		if _, ok := b.subs[ch]; ok {
			delete(b.subs, ch)
			close(ch)
		}
	}
}

// publish hands c to every subscriber without waiting (b.mu held).
func (b *Backend) publish(c Change) {
	b.subMu.Lock()
	defer b.subMu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- c:
		default:
			select {
			case old := <-ch:
				ch <- old.Merge(c)
			default:
				ch <- c
			}
		}
	}
}

// WatchState is how the mirror follows etcd.
type WatchState struct {
	// Connected: the watch stream is established and answered within the
	// last few seconds (it is asked for progress every second).
	Connected bool
	// Since is when Connected last changed (Open's time at first).
	Since time.Time
	// Err is why the watch is not connected, nil when it is.
	Err error
	// Revision is the revision the mirror reflects.
	Revision int64
	// LastEvent is when the watch last delivered events or progress.
	LastEvent time.Time
	// Loaded is when the whole table was last loaded (Open, or a reload
	// after a compaction).
	Loaded time.Time
}

// State returns the watch's state.
func (b *Backend) State() WatchState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return WatchState{Connected: b.connected, Since: b.since, Err: b.werr, Revision: b.rev, LastEvent: b.lastEvent, Loaded: b.loaded}
}

// Revision returns the revision the mirror reflects: every change up to
// it is in what View reads.
func (b *Backend) Revision() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rev
}
