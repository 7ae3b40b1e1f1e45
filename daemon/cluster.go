package daemon

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/etcdstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/cluster"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/httpapi"
)

// clusterTable is the etcd backend as serve uses it: the fence of the
// syncer's writes, the mirror's changes and its watch state.
type clusterTable interface {
	SetFence(*etcdstore.Fence)
	Changes() (<-chan etcdstore.Change, func())
	State() etcdstore.WatchState
	Revision() int64
}

// clusterRun is what serve runs in a cluster besides what a single server
// runs: the election of the syncer, the following of the table and the
// publication of this server's state.
type clusterRun struct {
	d      *daemon
	node   *cluster.Node
	table  clusterTable
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
}

// snapshotEvery is the least time between two local snapshots, and
// snapshotRefresh the most.
const (
	snapshotEvery   = 30 * time.Second
	snapshotRefresh = 5 * time.Minute
)

func newClusterRun(d *daemon, node *cluster.Node, st *allocator.Store, live *allocator.Live, cfg *atomic.Pointer[config.Config], swapMu *sync.Mutex, syn *syncer, reg prometheus.Registerer) (*clusterRun, error) {
	ct, ok := st.Backend().(clusterTable)
	if !ok {
		return nil, fmt.Errorf("cluster: the store %s is not kept in etcd", st.Path())
	}
	c := &clusterRun{d: d, node: node, table: ct, live: live, cfg: cfg, swapMu: swapMu, syncer: syn, snap: make(chan struct{}, 1)}
	c.leader = httpapi.NewClusterMetrics(reg, func() httpapi.ClusterState {
		s := ct.State()
		return httpapi.ClusterState{Watching: s.Connected, Revision: s.Revision, Confirmed: s.LastEvent}
	}, d.clock.Now)
	c.elector = &cluster.Elector{
		Client: node.Client, Prefix: node.Prefix, Name: node.Name, TTL: cfg.Load().Cluster.LeaseTTL, Log: d.log,
		OnLead: c.lead,
	}
	syn.afterSync = func(at time.Time) { c.lastSync.Store(&at) }
	return c, nil
}

// lead runs the syncer while this server is elected; every write of its
// syncs is fenced on the leadership.
func (c *clusterRun) lead(ctx context.Context, f cluster.Fence) {
	c.table.SetFence(&etcdstore.Fence{Key: f.Key, CreateRevision: f.CreateRevision})
	c.leader.Set(1)
	defer func() {
		c.leader.Set(0)
		c.table.SetFence(nil)
	}()
	taken := make(chan struct{})
	go func() { defer close(taken); c.takeHandedOver(ctx) }()
	defer func() { <-taken }()
	c.syncer.Run(ctx)
}

// follow loads the table again whenever the allocations in etcd change
// (a sync by the syncer, an admin command, a reload of the mirror), so
// that every server answers what any server wrote.
func (c *clusterRun) follow(ctx context.Context) {
	ch, stop := c.table.Changes()
	defer stop()
	// The table in force was loaded before this subscription: a change
	// committed in between published nothing to it. Load once now.
	loaded := int64(-1)
	c.reloadTable(&loaded)
	for {
		select {
		case <-ctx.Done():
			return
		case ch1, ok := <-ch:
			if !ok {
				return
			}
			if !ch1.Reload && !ch1.Kinds.Has(kv.Alloc) && !ch1.Kinds.Has(kv.Prefix) && !ch1.Kinds.Has(kv.MACs) {
				continue
			}
			if ch1.Revision <= loaded && !ch1.Reload {
				continue
			}
			c.reloadTable(&loaded)
		}
	}
}

// reloadTable loads the table from the store's mirror and swaps it in,
// setting *loaded to the revision it reflects.
func (c *clusterRun) reloadTable(loaded *int64) {
	c.swapMu.Lock()
	rev := c.table.Revision()
	tbl, err := c.d.loadTable(c.cfg.Load())
	if err == nil {
		c.live.Swap(tbl)
		*loaded = rev
	}
	c.swapMu.Unlock()
	if err != nil {
		c.d.log.Error("the table changed in etcd but does not load; the old one stays in force", "err", err)
		return
	}
	c.d.log.Debug("table reloaded from etcd", "revision", rev, "allocations", tbl.Len())
	c.snapshotSoon()
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
		if !c.table.State().Connected {
			// Not from a table etcd does not keep current: try again later.
			c.d.clock.AfterFunc(5*time.Second, c.snapshotSoon)
			continue
		}
		start := c.d.clock.Now()
		n, err := write(c.d.st)
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
	si := cluster.ServerInfo{Name: c.node.Name, Version: version, Revision: c.table.Revision(),
		Allocations: c.live.Current().Len(), Syncer: c.elector.Leader(), Watching: c.table.State().Connected}
	if t := c.lastSync.Load(); t != nil {
		si.LastSync = *t
	}
	return si
}

// degraded says why this server answers from a table etcd does not keep
// current, "" while it follows etcd.
func (c *clusterRun) degraded() string {
	s := c.table.State()
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
	go func() { defer wg.Done(); c.follow(ctx) }()
	go func() { defer wg.Done(); c.snapshots(ctx) }()
	c.snapshotSoon()
	go func() {
		defer wg.Done()
		ttl := c.cfg.Load().Cluster.LeaseTTL
		cluster.Publish(ctx, c.node.Client, c.node.Prefix, c.node.Name, ttl, 2*time.Second, func() cluster.ServerInfo { return c.info(version) }, c.d.log)
	}()
	return func() { cancel(); wg.Wait() }
}
