package statestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/etcdstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// ErrEtcdUnreachable: a write while serve answers from its local snapshot
// because etcd was out of reach at start.
var ErrEtcdUnreachable = errors.New("etcd is out of reach: answering from the local snapshot, writes wait")

// fallback is serve's table in a cluster when etcd was out of reach at
// start: it reads the local snapshot (the bbolt file at state, which a
// server in a cluster keeps current) and refuses writes (the recorder keeps
// bindings pending, bounded), while it tries etcd again every few seconds;
// once etcd answers, it switches to the table in etcd for good and tells
// its subscribers to load the table again.
type fallback struct {
	snap     kv.Backend
	snapName string
	open     func(ctx context.Context) (*etcdstore.Backend, error)
	log      *slog.Logger
	since    time.Time
	cause    error

	mu    sync.RWMutex
	etcd  *etcdstore.Backend
	fence *etcdstore.Fence
	subs  map[chan etcdstore.Change]struct{}

	stop chan struct{}
	done chan struct{}
}

var _ kv.Backend = (*fallback)(nil)

func newFallback(snapPath string, cause error, open func(ctx context.Context) (*etcdstore.Backend, error), retry time.Duration, log *slog.Logger) (*fallback, error) {
	snap, err := boltstore.Open(snapPath, boltstore.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	f := &fallback{snap: snap, snapName: snapPath, open: open, log: log, since: time.Now(), cause: cause,
		subs: map[chan etcdstore.Change]struct{}{}, stop: make(chan struct{}), done: make(chan struct{})}
	go f.retry(retry)
	return f, nil
}

// retry opens the table in etcd every interval until it opens.
func (f *fallback) retry(interval time.Duration) {
	defer close(f.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
		}
		eb, err := f.open(context.Background()) // each request bounded by cluster.timeout
		if err != nil {
			f.log.Debug("etcd still out of reach", "err", err)
			continue
		}
		f.mu.Lock()
		f.etcd = eb
		eb.SetFence(f.fence)
		subs := f.subs
		f.subs = nil
		f.mu.Unlock()
		f.log.Info("etcd answers again: serving the table in etcd", "store", eb.Name(), "revision", eb.Revision(), "after", time.Since(f.since).Round(time.Second))
		// Subscribers now follow etcd's changes, starting with a reload.
		for ch := range subs {
			go f.forward(eb, ch)
		}
		return
	}
}

// forward passes etcd's changes on to ch, first a reload.
func (f *fallback) forward(eb *etcdstore.Backend, ch chan etcdstore.Change) {
	in, stop := eb.Changes()
	defer stop()
	defer close(ch)
	ch <- etcdstore.Change{Revision: eb.Revision(), Reload: true}
	for c := range in {
		select {
		case ch <- c:
		case <-f.stop:
			return
		}
	}
}

func (f *fallback) current() (kv.Backend, *etcdstore.Backend) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.etcd != nil {
		return f.etcd, f.etcd
	}
	return f.snap, nil
}

func (f *fallback) Name() string {
	b, _ := f.current()
	return b.Name()
}

func (f *fallback) ReadOnly() bool { return false }

func (f *fallback) View(fn func(kv.Tx) error) error {
	b, _ := f.current()
	return b.View(fn)
}

func (f *fallback) Update(fn func(kv.Tx) error) error {
	_, eb := f.current()
	if eb == nil {
		return fmt.Errorf("%w (since %s: %v)", ErrEtcdUnreachable, f.since.UTC().Format(time.RFC3339), f.cause)
	}
	return eb.Update(fn)
}

func (f *fallback) Close() error {
	close(f.stop)
	<-f.done
	err := f.snap.Close()
	if _, eb := f.current(); eb != nil {
		err = errors.Join(err, eb.Close())
	}
	return err
}

// SetFence keeps the fence for the table in etcd, now or once it opens.
func (f *fallback) SetFence(fc *etcdstore.Fence) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fence = fc
	if f.etcd != nil {
		f.etcd.SetFence(fc)
	}
}

// Changes subscribes to the table's changes: none while on the snapshot,
// a reload when etcd opens, then etcd's.
func (f *fallback) Changes() (<-chan etcdstore.Change, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.etcd != nil {
		return f.etcd.Changes()
	}
	ch := make(chan etcdstore.Change, 1)
	f.subs[ch] = struct{}{}
	return ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.subs, ch)
	}
}

// State is etcd's watch state, or, on the snapshot, why not.
func (f *fallback) State() etcdstore.WatchState {
	if _, eb := f.current(); eb != nil {
		return eb.State()
	}
	return etcdstore.WatchState{Since: f.since,
		Err: fmt.Errorf("etcd out of reach at start (%v): answering from the local snapshot %s", f.cause, f.snapName)}
}

// Revision is etcd's, 0 on the snapshot.
func (f *fallback) Revision() int64 {
	if _, eb := f.current(); eb != nil {
		return eb.Revision()
	}
	return 0
}

// OpenServeFallback is OpenServe's way out when etcd does not answer at
// start: the local snapshot at cfg.State, until etcd answers.
func openServeFallback(statePath string, cause error, open func(ctx context.Context) (*etcdstore.Backend, error), log *slog.Logger) (*allocator.Store, error) {
	f, err := newFallback(statePath, cause, open, 5*time.Second, log)
	if err != nil {
		return nil, err
	}
	log.Warn("etcd is out of reach: answering from the local snapshot until it answers; bindings wait, no sync runs",
		"snapshot", statePath, "err", cause)
	return allocator.NewStore(f), nil
}
