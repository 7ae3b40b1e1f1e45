package daemon

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/etcdstore"
	"github.com/cloudstack-pd/cloudstack-pd/cluster"
	"github.com/cloudstack-pd/cloudstack-pd/cluster/follower"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/httpapi"
)

// clusterRun is what serve runs in a cluster besides what a single server
// runs: the election of the syncer, the following of the table and the
// publication of this server's state.
//
// The table comes from the follower (package cluster/follower), which
// reads the allocations straight from etcd; the daemon's store mirrors
// the other spaces only (bindings, the server DUID: statestore.ServeKinds).
// The elected syncer writes through a store of its own, a full mirror of
// the table fenced on its leadership, opened at its first sync and closed
// when the leadership ends: a server that does not sync never loads the
// allocation keys.
type clusterRun struct {
	d      *daemon
	node   *cluster.Node
	fol    *follower.Follower
	live   *allocator.Live
	cfg    *atomic.Pointer[config.Config]
	swapMu *sync.Mutex
	syncer *syncer

	elector  *cluster.Elector
	lastSync atomic.Pointer[time.Time]
	leader   prometheus.Gauge
	// snap asks the snapshot loop for a new local snapshot.
	snap chan struct{}
	// handover queues the webhook events for the syncer (handover.go);
	// handoverFull says some did not fit.
	handover     chan handedEvent
	handoverFull atomic.Bool

	// fullMu guards the syncer's store: the fence of the leadership in
	// force (nil while not elected) and the store opened under it.
	fullMu sync.Mutex
	fence  *etcdstore.Fence
	full   *etcdstore.Backend
}

// snapshotGCPercent is the garbage collector's GOGC while a snapshot is
// written.
const snapshotGCPercent = 25

// snapshotEvery is the least time between two local snapshots, and
// snapshotRefresh the most.
const (
	snapshotEvery   = 30 * time.Second
	snapshotRefresh = 5 * time.Minute
)

func newClusterRun(d *daemon, node *cluster.Node, fol *follower.Follower, live *allocator.Live, cfg *atomic.Pointer[config.Config], swapMu *sync.Mutex, syn *syncer, reg prometheus.Registerer) *clusterRun {
	c := &clusterRun{d: d, node: node, fol: fol, live: live, cfg: cfg, swapMu: swapMu, syncer: syn, snap: make(chan struct{}, 1)}
	c.leader = httpapi.NewClusterMetrics(reg, func() httpapi.ClusterState {
		s := fol.State()
		return httpapi.ClusterState{Watching: s.Connected, Revision: s.Revision, Confirmed: s.LastEvent}
	}, d.clock.Now)
	c.elector = &cluster.Elector{
		Client: node.Client, Prefix: node.Prefix, Name: node.Name, TTL: cfg.Load().Cluster.LeaseTTL, Log: d.log,
		OnLead: c.lead,
	}
	syn.afterSync = func(at time.Time) { c.lastSync.Store(&at) }
	syn.store = c.syncStore
	syn.written = c.written
	return c
}

// lead runs the syncer while this server is elected; every write of its
// syncs is fenced on the leadership.
func (c *clusterRun) lead(ctx context.Context, f cluster.Fence) {
	c.fullMu.Lock()
	c.fence = &etcdstore.Fence{Key: f.Key, CreateRevision: f.CreateRevision}
	c.fullMu.Unlock()
	c.leader.Set(1)
	defer func() {
		c.leader.Set(0)
		c.fullMu.Lock()
		full := c.full
		c.fence, c.full = nil, nil
		c.fullMu.Unlock()
		if full != nil {
			_ = full.Close()
			c.d.log.Debug("the syncer's copy of the table closed: the leadership ended")
		}
	}()
	taken := make(chan struct{})
	go func() { defer close(taken); c.takeHandedOver(ctx) }()
	defer func() { <-taken }()
	c.syncer.Run(ctx)
}

// syncStore returns the syncer's store: the whole table in etcd, fenced on
// the leadership in force, opened at the leadership's first sync.
func (c *clusterRun) syncStore(ctx context.Context) (*allocator.Store, error) {
	c.fullMu.Lock()
	defer c.fullMu.Unlock()
	if c.fence == nil {
		return nil, fmt.Errorf("cluster: this server is not the syncer: %w", etcdstore.ErrNotFenced)
	}
	if c.full == nil {
		cc := c.cfg.Load().Cluster
		start := c.d.clock.Now()
		b, err := etcdstore.Open(ctx, etcdstore.Options{Client: c.node.Client, Prefix: cluster.TablePrefix(c.node.Prefix),
			Timeout: cc.Timeout, MaxOps: cc.MaxTxnOps, Log: c.d.log, Clock: c.d.clock})
		if err != nil {
			return nil, fmt.Errorf("cluster: open the table in etcd for the syncer: %w", err)
		}
		b.SetFence(c.fence)
		c.full = b
		c.d.log.Info("the syncer's copy of the table loaded from etcd", "revision", b.Revision(), "took", c.d.clock.Now().Sub(start).Round(time.Millisecond))
	}
	return allocator.NewStore(c.full), nil
}

// written waits until the table in force reflects what a sync wrote
// through st (the follower applies it from the watch), so that the VMs it
// added are answered when the sync is reported done.
func (c *clusterRun) written(ctx context.Context, st *allocator.Store) error {
	b, ok := st.Backend().(*etcdstore.Backend)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*c.cfg.Load().Cluster.Timeout)
	defer cancel()
	return c.fol.WaitRevision(ctx, b.Revision())
}

func (c *clusterRun) snapshotSoon() {
	select {
	case c.snap <- struct{}{}:
	default:
	}
}

// snapshots writes the local snapshot when asked, at most every
// snapshotEvery, and only from the table in etcd (never from the snapshot
// itself, while etcd is out of reach).
func (c *clusterRun) snapshots(ctx context.Context) {
	write := c.d.deps.Snapshot
	if write == nil {
		return
	}
	var last time.Time
	// Bindings change without a reload of the table: a snapshot at least
	// every snapshotRefresh keeps them too.
	refresh := c.d.clock.NewTicker(snapshotRefresh)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.snap:
		case <-refresh.C():
		}
		if wait := snapshotEvery - c.d.clock.Now().Sub(last); !last.IsZero() && wait > 0 {
			t := c.d.clock.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C():
			}
		}
		if !c.fol.State().Connected {
			// Not from a table etcd does not keep current: try again later.
			c.d.clock.AfterFunc(5*time.Second, c.snapshotSoon)
			continue
		}
		start := c.d.clock.Now()
		// The copy makes garbage fast (a transient Allocation per
		// allocation, bbolt's pages): collect it sooner while it runs, so
		// that the server's peak stays near its table's size.
		old := debug.SetGCPercent(snapshotGCPercent)
		n, err := write(c.d.st, c.live.Current())
		debug.SetGCPercent(old)
		// The copy's garbage (a transient Allocation per allocation, the
		// bbolt transactions' pages) goes back to the system now rather
		// than over the next minutes: a server's memory stays that of its
		// table between snapshots.
		debug.FreeOSMemory()
		last = c.d.clock.Now()
		if err != nil {
			c.d.log.Error("local snapshot not written; the previous one stays", "err", err)
			continue
		}
		c.d.log.Debug("local snapshot written", "keys", n, "took", last.Sub(start).Round(time.Millisecond))
	}
}

// info is what this server publishes for `cluster status`.
func (c *clusterRun) info(version string) cluster.ServerInfo {
	si := cluster.ServerInfo{Name: c.node.Name, Version: version, Revision: c.fol.Revision(),
		Allocations: c.live.Current().Len(), Syncer: c.elector.Leader(), Watching: c.fol.State().Connected}
	if t := c.lastSync.Load(); t != nil {
		si.LastSync = *t
	}
	return si
}

// degraded says why this server answers from a table etcd does not keep
// current, "" while it follows etcd.
func (c *clusterRun) degraded() string {
	s := c.fol.State()
	if s.Connected {
		return ""
	}
	why := "the watch is not connected"
	if s.Err != nil {
		why = s.Err.Error()
	}
	return fmt.Sprintf("etcd out of reach since %s (%s): answering from the table of revision %d; bindings queue, no sync runs",
		s.Since.UTC().Format(time.RFC3339), why, s.Revision)
}

// run starts the cluster's goroutines and returns a function that stops
// them and waits for them.
func (c *clusterRun) run(ctx context.Context, version string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(5)
	go func() { defer wg.Done(); c.handOver(ctx) }()
	go func() { defer wg.Done(); c.elector.Run(ctx) }()
	go func() { defer wg.Done(); c.fol.Run(ctx) }()
	go func() { defer wg.Done(); c.snapshots(ctx) }()
	c.snapshotSoon()
	go func() {
		defer wg.Done()
		ttl := c.cfg.Load().Cluster.LeaseTTL
		cluster.Publish(ctx, c.node.Client, c.node.Prefix, c.node.Name, ttl, 2*time.Second, func() cluster.ServerInfo { return c.info(version) }, c.d.log)
	}()
	return func() { cancel(); wg.Wait() }
}
