package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Fence is a leadership: the election key the leader holds and the
// revision that created it. A write fenced on it (a compare on the key's
// create revision) commits only while that leadership lasts: a syncer
// deposed by a lost lease, however long it was paused, cannot write.
type Fence struct {
	Key            string
	CreateRevision int64
}

// TablePrefix is where the table itself lives (allocator/etcdstore), apart
// from the cluster's own keys (election, holds, servers), so that the table
// is watched, loaded and emptied without them.
func TablePrefix(prefix string) string { return prefix + "table/" }

// ElectionPrefix is where the syncer is elected, under the cluster prefix.
func ElectionPrefix(prefix string) string { return prefix + "cluster/syncer/" }

// EventsPrefix is where a server hands the webhook events it received
// over to the syncer.
func EventsPrefix(prefix string) string { return prefix + "cluster/events/" }

// HoldPrefix is where a one-off command (Lead) asks the serving servers to
// step aside: while a key lies there, no server campaigns, and a syncer
// resigns.
func HoldPrefix(prefix string) string { return prefix + "cluster/hold/" }

// Elector keeps this server a candidate for syncer: it campaigns, runs
// OnLead while elected, and campaigns again once the leadership is lost
// (a lease that expired, a leader key deleted by hand, etcd out of reach
// for longer than the lease).
type Elector struct {
	Client *clientv3.Client
	Prefix string
	// Name is the value of the leader key: the server's member name.
	Name string
	// TTL is the lease of the leadership (at least 2 s).
	TTL time.Duration
	Log *slog.Logger
	// OnLead runs while this server is the syncer; its context is cancelled
	// when the leadership is lost, and the Elector waits for it to return
	// before it campaigns again.
	OnLead func(ctx context.Context, f Fence)

	leader atomic.Bool
	mu     sync.Mutex
	fence  Fence
}

// Leader reports whether this server holds the leadership now.
func (e *Elector) Leader() bool { return e.leader.Load() }

// Fence returns the leadership held, ok false when there is none.
func (e *Elector) Fence() (Fence, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fence, e.leader.Load()
}

// Run campaigns until ctx ends. It retries a session etcd refused after a
// second, for ever: a server out of reach of etcd is simply not a
// candidate.
func (e *Elector) Run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := e.term(ctx); err != nil && ctx.Err() == nil {
			e.Log.Warn("syncer election", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// term is one candidacy: a session, a campaign, a leadership.
func (e *Elector) term(ctx context.Context) error {
	rev, err := waitNoHold(ctx, e.Client, e.Prefix, e.Log)
	if err != nil {
		return err
	}
	sess, err := concurrency.NewSession(e.Client, concurrency.WithTTL(ttlSeconds(e.TTL)), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("open a session: %w", err)
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, ElectionPrefix(e.Prefix))
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-lctx.Done():
		}
	}()
	// A hold (a one-off command) ends the candidacy and the leadership.
	go watchHold(lctx, e.Client, e.Prefix, rev+1, cancel)
	if err := el.Campaign(lctx, e.Name); err != nil {
		if lctx.Err() != nil && ctx.Err() == nil {
			return nil // a hold, or the session lost: campaign again
		}
		return fmt.Errorf("campaign: %w", err)
	}
	f := Fence{Key: el.Key(), CreateRevision: el.Rev()}
	// A leader key deleted by hand (etcdctl del) ends the leadership as a
	// lost lease does.
	go watchGone(lctx, e.Client, f, cancel)
	e.mu.Lock()
	e.fence = f
	e.leader.Store(true)
	e.mu.Unlock()
	e.Log.Info("elected syncer", "member", e.Name, "key", f.Key, "revision", f.CreateRevision)
	e.OnLead(lctx, f)
	e.mu.Lock()
	e.leader.Store(false)
	e.fence = Fence{}
	e.mu.Unlock()
	cancel()
	if ctx.Err() == nil {
		e.Log.Warn("no longer the syncer", "member", e.Name)
	}
	// Resign when the session still stands, so that another server takes
	// over at once rather than after the lease.
	rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
	defer rcancel()
	_ = el.Resign(rctx)
	return nil
}

// waitNoHold returns once no hold key is left under prefix, with the
// revision at which there was none.
func waitNoHold(ctx context.Context, cli *clientv3.Client, prefix string, log *slog.Logger) (int64, error) {
	logged := false
	for {
		r, err := cli.Get(ctx, HoldPrefix(prefix), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return 0, fmt.Errorf("read the holds: %w", err)
		}
		if r.Count == 0 {
			return r.Header.Revision, nil
		}
		if !logged {
			log.Info("a one-off command holds the syncer's role; waiting for it to finish")
			logged = true
		}
		wctx, cancel := context.WithCancel(ctx)
		wc := cli.Watch(clientv3.WithRequireLeader(wctx), HoldPrefix(prefix), clientv3.WithPrefix(), clientv3.WithRev(r.Header.Revision+1), clientv3.WithFilterPut())
		select {
		case <-wc:
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
		}
		cancel()
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
}

// watchHold calls cancel when a hold key is put from revision rev on.
func watchHold(ctx context.Context, cli *clientv3.Client, prefix string, rev int64, cancel func()) {
	wc := cli.Watch(clientv3.WithRequireLeader(ctx), HoldPrefix(prefix), clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithFilterDelete())
	for resp := range wc {
		if len(resp.Events) > 0 || resp.Canceled {
			cancel()
			return
		}
	}
}

// watchGone calls cancel once f's key is deleted or recreated.
func watchGone(ctx context.Context, cli *clientv3.Client, f Fence, cancel func()) {
	wc := cli.Watch(clientv3.WithRequireLeader(ctx), f.Key, clientv3.WithRev(f.CreateRevision+1))
	for resp := range wc {
		if resp.Canceled {
			// Compacted past the key's creation: look at it directly.
			gr, err := cli.Get(ctx, f.Key)
			if err == nil && (len(gr.Kvs) == 0 || gr.Kvs[0].CreateRevision != f.CreateRevision) {
				cancel()
			}
			return
		}
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypeDelete || ev.Kv.CreateRevision != f.CreateRevision {
				cancel()
				return
			}
		}
	}
}

func ttlSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 2)
}

// Leadership is a leadership taken by a one-off command (Lead).
type Leadership struct {
	Fence
	// Lost is closed when the leadership is lost before Release.
	Lost <-chan struct{}
	sess *concurrency.Session
	el   *concurrency.Election
}

// Release resigns, lifts the hold and ends the session (its lease takes
// the hold key with it).
func (l *Leadership) Release() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := l.el.Resign(ctx)
	if cerr := l.sess.Close(); err == nil {
		err = cerr
	}
	return err
}

// ErrLeaderBusy: a one-off command could not become the syncer in time,
// because a server holds the leadership.
var ErrLeaderBusy = errors.New("another server is the syncer")

// Lead makes a one-off command (sync, import-kea, cluster migrate) the
// syncer, so that its writes are fenced like a serving syncer's. It puts a
// hold, on which the serving syncer resigns and no server campaigns, then
// campaigns, waiting at most wait; when the leadership is still held then
// (by another one-off command, or a server that does not step aside), the
// error names the holder and wraps ErrLeaderBusy. Release lifts the hold;
// a command that dies lifts it when its lease expires.
func Lead(ctx context.Context, cli *clientv3.Client, prefix, name string, ttl, wait time.Duration) (*Leadership, error) {
	// The session outlives ctx (it bounds the wait only): its lease is kept
	// alive until Release.
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(ttlSeconds(ttl)))
	if err != nil {
		return nil, fmt.Errorf("cluster: open a session: %w", err)
	}
	hold := fmt.Sprintf("%s%s/%x", HoldPrefix(prefix), name, sess.Lease())
	if _, err := cli.Put(ctx, hold, name, clientv3.WithLease(sess.Lease())); err != nil {
		sess.Close()
		return nil, fmt.Errorf("cluster: put the hold %s: %w", hold, err)
	}
	el := concurrency.NewElection(sess, ElectionPrefix(prefix))
	cctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := el.Campaign(cctx, name); err != nil {
		holder := "unknown"
		lctx, lcancel := context.WithTimeout(context.Background(), 2*time.Second)
		if r, lerr := el.Leader(lctx); lerr == nil && len(r.Kvs) > 0 {
			holder = string(r.Kvs[0].Value)
		}
		lcancel()
		sess.Close()
		if cctx.Err() != nil && ctx.Err() == nil {
			return nil, fmt.Errorf("cluster: %q is the syncer and stayed so for %v: %w (run `cloudstack-pd sync --now` on it, or stop it first)", holder, wait, ErrLeaderBusy)
		}
		return nil, fmt.Errorf("cluster: campaign for syncer: %w", err)
	}
	return &Leadership{Fence: Fence{Key: el.Key(), CreateRevision: el.Rev()}, Lost: sess.Done(), sess: sess, el: el}, nil
}

// LeaderName returns the member name of the current syncer, "" when none.
func LeaderName(ctx context.Context, cli *clientv3.Client, prefix string) (name string, rev int64, err error) {
	r, err := cli.Get(ctx, ElectionPrefix(prefix), clientv3.WithFirstCreate()...)
	if err != nil {
		return "", 0, err
	}
	if len(r.Kvs) == 0 {
		return "", 0, nil
	}
	return string(r.Kvs[0].Value), r.Kvs[0].CreateRevision, nil
}
