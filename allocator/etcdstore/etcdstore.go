package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/btree"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
)

// Defaults of Options.
const (
	DefaultPrefix  = "/cloudstack-pd/"
	DefaultMaxOps  = 128 // etcd's --max-txn-ops default
	DefaultTimeout = 5 * time.Second
)

// maxTxnBytes bounds the estimated size of one transaction request, below
// etcd's default --max-request-bytes (1.5 MiB) with room for framing.
const maxTxnBytes = 1 << 20

// maxTries is how many times Update runs its function against fresh reads
// before it gives up with ErrConflict.
const maxTries = 8

// These errors can occur when an Update commits.
var (
	// ErrFenced is returned by an Update whose fence no longer holds: the
	// fence key is gone or was created again (the leadership it stood
	// for is lost). Nothing of the transaction (or of the chunk that
	// failed) was written, and it is never retried.
	ErrFenced = errors.New("fenced: the leadership this writer held is gone")
	// ErrConflict is returned by an Update whose reads other writers kept
	// changing: it ran its function maxTries (8) times without committing.
	// Also by a chunked Update whose later chunk found a key it writes
	// changed (the chunks before it are committed).
	ErrConflict = errors.New("conflicting writes by another server: retries exhausted")
	// ErrNotFenced is returned by an Update that writes the allocation
	// table (the Alloc, Prefix, MACs or Held spaces) on a backend without a
	// fence (SetFence): only the elected syncer writes it.
	ErrNotFenced = errors.New("write to the allocation table without a fence")
	// ErrNotMirrored is returned by a transaction that read or wrote a key
	// space of a kind the backend does not mirror (Options.Kinds).
	ErrNotMirrored = errors.New("key space not mirrored by this backend")
)

// Options tunes Open.
type Options struct {
	// Client is the etcd client; required. The backend does not close it.
	Client *clientv3.Client
	// Prefix is the key prefix of the store; "" means DefaultPrefix
	// ("/cloudstack-pd/"). A '/' is added when it lacks one at the end.
	Prefix string
	// Create makes an empty key prefix (no key at all under it) a new
	// store, with its schema marker (what --init asks for). False (the
	// default): an empty prefix gives kv.ErrNoStore. A prefix holding
	// keys but no schema marker is refused (kv.ErrNotStore) whatever
	// Create says. Create with ReadOnly is an error.
	Create bool
	// ReadOnly refuses Update (kv.ErrReadOnly). False (the default)
	// allows it.
	ReadOnly bool
	// MaxOps is the most compares, or operations, per etcd transaction;
	// 0 means DefaultMaxOps (128, etcd's --max-txn-ops default). An
	// Update that needs more is committed in several transactions
	// (see the package doc).
	MaxOps int
	// Timeout bounds each request to etcd (a commit, a page of a load) and
	// the wait for the mirror to reflect a commit; 0 means DefaultTimeout
	// (5 s).
	Timeout time.Duration
	// Log receives the backend's own lines (reloads, watch state); nil
	// discards them.
	Log *slog.Logger
	// Kinds are the kinds of key spaces the mirror holds: it loads and
	// watches only those (with the pool markers); keys of other kinds are
	// skipped, not counted as unknown, and a transaction touching their
	// spaces fails with ErrNotMirrored. nil: every kind. A server that
	// does not sync leaves out Alloc, Prefix and MACs (its table comes
	// from a follower of the Alloc spaces): most of the keys.
	Kinds []kv.Kind
	// Clock stamps the watch state (WatchState's times); nil means the
	// real clock. Timeouts, retries and the watch's heartbeat run on real
	// time whatever it is: they pace network requests.
	Clock clock.Clock
}

// Fence is the leadership an Update of the allocation table is made
// under: an etcd key (the election's leader key) and its create revision.
// Every transaction writing the Alloc, Prefix, MACs or Held spaces compares it,
// so that a writer that lost the leadership writes nothing.
type Fence struct {
	Key            string
	CreateRevision int64
}

// Backend keeps the key spaces of package kv under a key prefix in etcd,
// with an in-memory mirror that follows etcd by watch. It implements
// kv.Backend, kv.Verifier, kv.Checker and kv.Creator, and its Tx
// kv.Grouper. It is safe for concurrent use.
type Backend struct {
	cli      *clientv3.Client
	prefix   string
	name     string
	readOnly bool
	// mirrored are the kinds the mirror holds; all reports every kind.
	mirrored KindSet
	all      bool
	maxOps   int
	timeout  time.Duration
	log      *slog.Logger
	clock    clock.Clock

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	done   chan struct{} // closed when the watch goroutine ends
	// watching is closed when the first watch is established.
	watching     chan struct{}
	watchingOnce sync.Once
	ops          sync.WaitGroup
	closed       bool // under subMu

	mu        sync.Mutex
	tree      *btree.BTreeG[item]
	rev       int64
	advanced  chan struct{} // closed and replaced when rev moves
	wctx      context.Context
	connected bool
	since     time.Time
	werr      error
	lastEvent time.Time // by b.clock, for State
	lastSeen  time.Time // real time, for the watch's staleness
	loaded    time.Time
	fence     *Fence
	// created is the revision at which Open made the store, 0 if it did
	// not; lastCommit the revision of this backend's last commit.
	created, lastCommit int64

	subMu sync.Mutex
	subs  map[chan Change]struct{}

	stats struct {
		commits, txns, retries, conflicts, fenced, reloads, unknown atomic.Int64
	}
}

var (
	_ kv.Backend  = (*Backend)(nil)
	_ kv.Verifier = (*Backend)(nil)
	_ kv.Checker  = (*Backend)(nil)
	_ kv.Creator  = (*Backend)(nil)
)

// Open opens the store under o.Prefix: it makes it with o.Create when the
// prefix is empty, checks its schema, loads every key into the mirror at
// one revision and starts the watch from the next. It fails with an error
// wrapping kv.ErrNoStore (empty prefix, no Create), kv.ErrNotStore (keys
// but no schema marker), kv.ErrSchema (another schema), or the etcd error
// (unreachable, timeout), each naming the endpoints and the prefix.
func Open(ctx context.Context, o Options) (*Backend, error) {
	if o.Client == nil {
		return nil, errors.New("etcd store: no client")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(o.Prefix, "/") {
		o.Prefix += "/"
	}
	if o.MaxOps <= 0 {
		o.MaxOps = DefaultMaxOps
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	b := &Backend{
		cli:      o.Client,
		prefix:   o.Prefix,
		name:     fmt.Sprintf("etcd %s prefix %s", strings.Join(o.Client.Endpoints(), ","), o.Prefix),
		readOnly: o.ReadOnly,
		maxOps:   max(o.MaxOps, 4),
		timeout:  o.Timeout,
		log:      o.Log,
		clock:    clock.OrReal(o.Clock),
		done:     make(chan struct{}),
		watching: make(chan struct{}),
		advanced: make(chan struct{}),
		subs:     map[chan Change]struct{}{},
	}
	b.all = o.Kinds == nil
	for _, k := range o.Kinds {
		if !knownKind(k) {
			return nil, b.wrap(fmt.Errorf("Options.Kinds: kind %d has no name (known: %s)", k, strings.Join(kindNames(), ", ")))
		}
		b.mirrored |= 1 << k
	}
	if o.ReadOnly && o.Create {
		return nil, b.wrap(errors.New("cannot create a store read-only"))
	}
	if err := b.init(ctx, o.Create); err != nil {
		return nil, err
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if err := b.load(ctx); err != nil {
		b.cancel()
		return nil, err
	}
	b.since = b.clock.Now()
	go b.watch(b.ctx)
	// Return with the watch established, so that nothing written from
	// now on is missed by a caller that reads State; a watch that takes
	// longer keeps trying in the background.
	t := time.NewTimer(b.timeout)
	defer t.Stop()
	select {
	case <-b.watching:
	case <-t.C:
		b.log.Warn("etcd watch not established yet; the table is loaded, following it is retried", "store", b.name)
	case <-ctx.Done():
	}
	return b, nil
}

var schemaKey = spacePrefix(kv.Space{Kind: kv.Meta}) + "schema"

// init checks the schema marker, and makes it on an empty prefix with
// create.
func (b *Backend) init(ctx context.Context, create bool) error {
	cctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	key := b.prefix + schemaKey
	resp, err := b.cli.Get(cctx, key)
	if err != nil {
		return b.wrap(fmt.Errorf("read %s: %w", key, err))
	}
	if len(resp.Kvs) > 0 {
		if v := string(resp.Kvs[0].Value); v != kv.SchemaVersion {
			return b.wrap(fmt.Errorf("schema %q, this cloudstack-pd reads %q: %w", v, kv.SchemaVersion, kv.ErrSchema))
		}
		return nil
	}
	some, err := b.cli.Get(cctx, b.prefix, clientv3.WithRange(prefixEnd(b.prefix)), clientv3.WithLimit(1), clientv3.WithKeysOnly())
	if err != nil {
		return b.wrap(fmt.Errorf("read %s: %w", b.prefix, err))
	}
	if len(some.Kvs) > 0 && string(some.Kvs[0].Key) == key {
		// Another server made the store between the two reads.
		return b.init(ctx, false)
	}
	if len(some.Kvs) > 0 {
		return b.wrap(fmt.Errorf("keys under the prefix (%q, …) but no schema marker %s: %w", some.Kvs[0].Key, key, kv.ErrNotStore))
	}
	if !create {
		return b.wrap(fmt.Errorf("nothing under the prefix: %w (start with --init to make a new store there)", kv.ErrNoStore))
	}
	// Create-only, and only while the prefix is still empty: two servers
	// started with --init together make one store.
	tresp, err := b.cli.Txn(cctx).
		If(clientv3.Compare(clientv3.CreateRevision(b.prefix).WithRange(prefixEnd(b.prefix)), "=", 0)).
		Then(clientv3.OpPut(key, kv.SchemaVersion)).
		Commit()
	if err != nil {
		return b.wrap(fmt.Errorf("create %s: %w", key, err))
	}
	if tresp.Succeeded {
		b.created = tresp.Header.Revision
		b.lastCommit = tresp.Header.Revision
		b.log.Info("etcd store created", "store", b.name, "revision", tresp.Header.Revision)
		return nil
	}
	return b.init(ctx, false) // another server made it meanwhile: check what it made
}

// mirrors reports whether the mirror holds the spaces of kind k.
func (b *Backend) mirrors(k kv.Kind) bool { return b.all || b.mirrored.Has(k) }

// ranges returns the ranges of keys the mirror loads, [start, end) each:
// the whole prefix, or with Options.Kinds each mirrored kind's and the
// pool markers'.
func (b *Backend) ranges() [][2]string {
	if b.all {
		return [][2]string{{b.prefix, prefixEnd(b.prefix)}}
	}
	names := []string{markerKind}
	for name, k := range kindByName {
		if b.mirrored.Has(k) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var out [][2]string
	for _, n := range names {
		p := b.prefix + n + "/"
		out = append(out, [2]string{p, prefixEnd(p)})
	}
	return out
}

// wrap names the store in err.
func (b *Backend) wrap(err error) error { return fmt.Errorf("store %s: %w", b.name, err) }

// Name returns "etcd <endpoints> prefix <prefix>".
func (b *Backend) Name() string { return b.name }

// Prefix returns the key prefix of the store, ending in '/'.
func (b *Backend) Prefix() string { return b.prefix }

// ReadOnly reports whether Update is refused.
func (b *Backend) ReadOnly() bool { return b.readOnly }

// SetFence sets the fence every later Update writing the allocation table
// is made under; nil removes it (such an Update then fails with
// ErrNotFenced).
func (b *Backend) SetFence(f *Fence) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if f != nil {
		c := *f
		f = &c
	}
	b.fence = f
}

// Close stops the watch and closes the Changes channels. Transactions in
// progress finish first. The client stays open.
func (b *Backend) Close() error {
	b.subMu.Lock()
	if b.closed {
		b.subMu.Unlock()
		return nil
	}
	b.closed = true
	for ch := range b.subs {
		close(ch)
	}
	b.subs = nil
	b.subMu.Unlock()
	b.ops.Wait()
	b.cancel()
	<-b.done
	return nil
}

// begin registers a transaction; false once the backend is closed.
func (b *Backend) begin() bool {
	b.subMu.Lock()
	defer b.subMu.Unlock()
	if b.closed {
		return false
	}
	b.ops.Add(1)
	return true
}

var errClosed = errors.New("store is closed")

// snapshot returns a copy-on-write clone of the mirror and its revision.
func (b *Backend) snapshot() (*btree.BTreeG[item], int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tree.Clone(), b.rev
}

// View runs fn on a snapshot of the mirror: it sees every change up to
// Revision(), including this backend's committed Updates, and never waits
// for etcd (it works while etcd is unreachable).
func (b *Backend) View(fn func(kv.Tx) error) error {
	if !b.begin() {
		return b.wrap(errClosed)
	}
	defer b.ops.Done()
	t, rev := b.snapshot()
	x := &tx{b: b, t: t, rev: rev}
	err := fn(x)
	if x.err != nil {
		return errors.Join(x.err, err)
	}
	return err
}

// Stats are the backend's counters since Open.
type Stats struct {
	// Commits counts the Updates committed, Txns their etcd
	// transactions (more than Commits when Updates were chunked).
	Commits, Txns int64
	// Retries counts the runs of an Update's function again after a
	// compare failed; Conflicts the Updates that gave up (ErrConflict);
	// Fenced those refused by their fence (ErrFenced).
	Retries, Conflicts, Fenced int64
	// Reloads counts the full loads of the table (1 at Open, one per
	// compaction the watch fell behind).
	Reloads int64
	// UnknownKeys counts the keys under the prefix the watch delivered
	// that are not of this layout (ignored).
	UnknownKeys int64
}

// Stats returns the backend's counters.
func (b *Backend) Stats() Stats {
	s := &b.stats
	return Stats{Commits: s.commits.Load(), Txns: s.txns.Load(), Retries: s.retries.Load(), Conflicts: s.conflicts.Load(),
		Fenced: s.fenced.Load(), Reloads: s.reloads.Load(), UnknownKeys: s.unknown.Load()}
}

// Created reports whether Open made the store (Options.Create on an empty
// prefix).
func (b *Backend) Created() bool { return b.created != 0 }

// Discard closes the backend and, when Open made the store and nothing
// but this backend wrote under the prefix since, deletes every key under
// it: for a command that created the store and then failed. Otherwise it
// only closes.
func (b *Backend) Discard() error {
	b.mu.Lock()
	created, last := b.created, b.lastCommit
	b.mu.Unlock()
	err := b.Close()
	if created == 0 {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	end := prefixEnd(b.prefix)
	_, derr := b.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(b.prefix+schemaKey), "=", created),
			clientv3.Compare(clientv3.ModRevision(b.prefix).WithRange(end), "<", last+1)).
		Then(clientv3.OpDelete(b.prefix, clientv3.WithRange(end))).
		Commit()
	if derr != nil {
		return errors.Join(err, b.wrap(fmt.Errorf("remove the store it created: %w", derr)))
	}
	return err
}
