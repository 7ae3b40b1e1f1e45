package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/etcdstore"
	"github.com/cloudstack-pd/cloudstack-pd/buildinfo"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
	"github.com/cloudstack-pd/cloudstack-pd/cluster"
	"github.com/cloudstack-pd/cloudstack-pd/cluster/follower"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/control"
	"github.com/cloudstack-pd/cloudstack-pd/httpapi"
	"github.com/cloudstack-pd/cloudstack-pd/server"
	"github.com/cloudstack-pd/cloudstack-pd/webhook"
)

// Deps is what Run is given besides the config: how to open the store,
// the clock, the logger, the reload signal and the CloudStack client.
type Deps struct {
	// OpenStore opens cfg's store for writing, failing fast when another
	// process holds it, and explains a refusal (required).
	OpenStore func(cfg *config.Config) (*allocator.Store, error)
	// StoreError explains an error of the store found after it opened
	// (a damaged page found by the verification or the table's load);
	// nil: the error as it is.
	StoreError func(err error, cfg *config.Config) error
	// Clock gives Now and every timer; nil: clock.Real.
	Clock clock.Clock
	// Log is the logger; nil: NewLogger(cfg.Log, Stderr).
	Log *slog.Logger
	// LogLevel, when set, is Log's level, which a reload sets to the new
	// log.level (NewLoggerLevel returns both); the default logger has one.
	LogLevel *slog.LevelVar
	// Stderr is where the default logger writes; nil: os.Stderr.
	Stderr io.Writer
	// Reload asks for a reload of the config at cfg.Path with each value
	// received (the binary sends SIGHUP); nil: never.
	Reload <-chan os.Signal
	// Inventory makes the CloudStack client of a config; nil:
	// NewInventory.
	Inventory func(cfg *config.Config, log *slog.Logger) allocator.Inventory
	// Version is the version /metrics and the API report.
	Version string
	// Backup writes a consistent copy of the store to a file and checks
	// it (statestore.Backup), for the control socket's backup; nil: the
	// server cannot write backups.
	Backup func(st *allocator.Store, cfg *config.Config, to string) (*allocator.BackupReport, error)
	// Serving, when set, is told the addresses the daemon serves on once
	// it serves (for tests and callers that listen on port 0).
	Serving func(Addrs)
	// Cluster is this server's node when the config names a cluster
	// (OpenStore then opens the table in etcd); nil for a single server.
	// Run does not close it.
	Cluster *cluster.Node
	// Snapshot, in a cluster, writes the table to the local snapshot
	// (state) that the next start answers from if etcd is out of reach:
	// the allocations of tbl, the table in force, and the other spaces of
	// st (statestore.WriteSnapshot); nil: no snapshot.
	Snapshot func(st *allocator.Store, tbl *allocator.Table) (keys int, err error)
	// WebhookSink, when set, gets the events of the webhook listener
	// (webhook.listen) instead of this server's own sync loop: in a
	// cluster, the hand-over to the server that syncs, which calls its
	// syncer's TriggerVMs. Nil: standalone, the events trigger this
	// server's targeted and full syncs.
	WebhookSink webhook.Sink
}

// Addrs are the addresses a running daemon serves on.
type Addrs struct {
	// DHCPv6 are the listener's addresses.
	DHCPv6 []netip.AddrPort
	// Leasequery are the Bulk Leasequery TCP addresses (the same).
	Leasequery []netip.AddrPort
	// HTTP is the HTTP API's address; empty without http.listen.
	HTTP string
	// Control is the control socket's path; empty without control.socket.
	Control string
	// Webhook is the webhook listener's address; empty without
	// webhook.listen.
	Webhook string
}

// NewLogger builds the slog logger the config's log section asks for.
func NewLogger(c config.Log, w io.Writer) *slog.Logger {
	log, _ := NewLoggerLevel(c, w)
	return log
}

// NewLoggerLevel is NewLogger with the level the logger reads, so that a
// reload can change it.
func NewLoggerLevel(c config.Log, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	setLevel(level, c)
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(c.Format, "json") {
		return slog.New(slog.NewJSONHandler(w, opts)), level
	}
	return slog.New(slog.NewTextHandler(w, opts)), level
}

// setLevel puts c's log.level in v; config.Load has validated it.
func setLevel(v *slog.LevelVar, c config.Log) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	v.Set(level)
}

// HandlerOptions converts the config's server section into the handler's
// options: at start-up, on every reload, and for an offline replay.
func HandlerOptions(c *config.Config) server.Options {
	s := c.Server
	return server.Options{
		MACSources:        c.MACSources(),
		TrustedRelays:     c.TrustedRelays(),
		RelayDepth:        s.RelayDepth,
		PoolSelection:     poolSelection(s.PoolSelection),
		RapidCommit:       s.RapidCommit,
		PreferredLifetime: uint32(s.PreferredLifetime),
		ValidLifetime:     uint32(s.ValidLifetime),
		RenewTimer:        uint32(s.RenewTimer),
		RebindTimer:       uint32(s.RebindTimer),

		LeasequeryRequestors: c.LeasequeryRequestors(),
	}
}

// poolSelection converts server.pool-selection, which config.Load has
// checked.
func poolSelection(names []string) []server.PoolRule {
	rules := make([]server.PoolRule, 0, len(names))
	for _, n := range names {
		if r, err := server.ParsePoolRule(n); err == nil {
			rules = append(rules, r)
		}
	}
	return rules
}

// daemon is what Run's parts share.
type daemon struct {
	deps  Deps
	clock clock.Clock
	log   *slog.Logger
	st    *allocator.Store
	// fol, in a cluster, reads the table from etcd (loadTable) and
	// follows it.
	fol *follower.Follower
	// historyStore, in a cluster, is the store the history is pruned in:
	// the syncer's (an error on the other servers).
	historyStore func(ctx context.Context) (*allocator.Store, error)
}

func (d *daemon) storeError(err error, cfg *config.Config) error {
	if d.deps.StoreError != nil {
		return d.deps.StoreError(err, cfg)
	}
	return err
}

// loadTable reads the table for cfg's pools and logs allocations kept for
// pools that are no longer configured.
func (d *daemon) loadTable(cfg *config.Config) (*allocator.Table, error) {
	if d.fol != nil {
		return d.followTable(cfg)
	}
	tbl, rep, err := d.st.LoadTable(cfg.Pools())
	if errors.Is(err, allocator.ErrDamaged) {
		return nil, d.storeError(err, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("load allocation table from %s: %w", cfg.State, err)
	}
	if pools := rep.OrphanedByPool(); pools != nil {
		d.log.Warn("the store holds allocations of pools that are not configured; they are kept, not served",
			"allocations-by-pool", pools)
	}
	return tbl, nil
}

// followTable reads the table for cfg's pools from etcd and makes it the
// one the follower follows. While serve answers from its local snapshot
// (etcd out of reach at start: the store is not the table in etcd), the
// table is the snapshot's.
func (d *daemon) followTable(cfg *config.Config) (*allocator.Table, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tbl, err := d.fol.Load(ctx, cfg.Pools())
	if err == nil {
		return tbl, nil
	}
	ferr := fmt.Errorf("load the allocation table from etcd (cluster.etcd): %w", err)
	if _, inEtcd := d.st.Backend().(*etcdstore.Backend); inEtcd {
		return nil, ferr
	}
	tbl, rep, serr := d.st.LoadTable(cfg.Pools())
	if serr != nil {
		return nil, errors.Join(ferr, fmt.Errorf("and from %s: %w", d.st.Path(), serr))
	}
	if pools := rep.OrphanedByPool(); pools != nil {
		d.log.Warn("the store holds allocations of pools that are not configured; they are kept, not served",
			"allocations-by-pool", pools)
	}
	d.log.Warn("the table in etcd does not load: answering from the local snapshot's until it does", "err", err)
	return tbl, nil
}

// Run serves cfg until ctx ends, then stops in order (the package
// comment) and returns nil; it returns an error when it cannot start or
// the listener fails. A store that Deps.OpenStore created and that Run
// could not start on is discarded (removed again); once serving, the
// store is kept.
func Run(ctx context.Context, cfg *config.Config, deps Deps) (err error) {
	addrs, err := cfg.ListenAddrs()
	if err != nil {
		return err
	}
	d := &daemon{deps: deps, clock: clock.OrReal(deps.Clock), log: deps.Log}
	if d.log == nil {
		w := deps.Stderr
		if w == nil {
			w = os.Stderr
		}
		d.log, d.deps.LogLevel = NewLoggerLevel(cfg.Log, w)
	}
	log := d.log

	st, err := deps.OpenStore(cfg)
	if err != nil {
		return err
	}
	d.st = st
	// The swap lock and the table in force: in a cluster the follower
	// swaps in what it reads from etcd.
	var (
		current atomic.Pointer[config.Config]
		swapMu  sync.Mutex
		live    = allocator.NewLive(nil)
		snapReq = make(chan struct{}, 1)
	)
	if deps.Cluster != nil {
		d.fol = follower.New(follower.Options{Client: deps.Cluster.Client, Prefix: cluster.TablePrefix(deps.Cluster.Prefix),
			Timeout: cfg.Cluster.Timeout, Live: live, Lock: &swapMu, Log: log, Clock: d.clock,
			OnChange: func() {
				select {
				case snapReq <- struct{}{}:
				default:
				}
			}})
	}
	started := false
	if from, incomplete, ierr := st.Incomplete(); ierr == nil && incomplete {
		_ = st.Close()
		return fmt.Errorf("the table in %s is incomplete: a %s did not finish; run it again before serving (docs/ha.md)", st.Path(), from)
	}
	defer func() {
		closeStore := st.Close
		if err != nil && !started {
			closeStore = st.Discard // a store --init made for nothing
		}
		if err := closeStore(); err != nil {
			log.Error("closing the store", "err", err)
		}
	}()
	tbl, err := d.loadTable(cfg)
	if err != nil {
		return err
	}
	// The rest of the store (its indexes, bindings and history; the load
	// read the allocations) is checked in the background rather than
	// beside the load, on the same cores: serve answers from the table it
	// has read, every write to the store waits for the check, and a
	// damaged store stops serve as it would have refused to start.
	verified := st.VerifyIndexesBeforeWrites()
	live.Swap(tbl)
	duid, err := st.ServerDUID(func() ([]byte, error) { return server.NewServerDUID(rand.Reader, d.clock.Now()) })
	if errors.Is(err, allocator.ErrDamaged) {
		return d.storeError(err, cfg)
	}
	if err != nil {
		return fmt.Errorf("server DUID: %w", err)
	}

	reg := prometheus.NewRegistry()
	metrics := server.NewMetrics(reg)
	if err := httpapi.NewCollectors(reg, live, st, deps.Version); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	reloads := httpapi.NewReloadMetrics(reg)
	reloads.Observe(true, d.clock.Now())
	rec := server.NewRecorder(st, server.DefaultFlushInterval, log)
	rec.SetClock(d.clock)
	rec.SetExchangeStaleness(cfg.ExchangeStaleness())
	reg.MustRegister(rec.Collectors()...)
	h, err := server.NewHandler(server.HandlerConfig{
		Table: live, ServerID: duid, Options: HandlerOptions(cfg),
		Bindings: rec, Logger: log, Metrics: metrics, Now: d.clock.Now,
		Leases: st, Exchanges: rec,
	})
	if err != nil {
		return err
	}
	l, err := server.Listen(server.ListenerConfig{
		Addrs: addrs, Workers: cfg.Server.Workers, QueueLength: cfg.Server.QueueLength,
		ReadBuffer: cfg.Server.ReceiveBuffer, Logger: log, Metrics: metrics,
	}, h)
	if err != nil {
		return err
	}
	reg.MustRegister(l.Collectors()...)
	// Bulk Leasequery: TCP on the addresses and ports the UDP listener
	// got (RFC 5460).
	bulk, err := server.ListenBulk(server.BulkConfig{
		Addrs: l.Addrs(), MaxConnections: cfg.Server.Leasequery.MaxConnections,
		IdleTimeout: cfg.Server.Leasequery.IdleTimeout, Logger: log, Metrics: metrics,
	}, h)
	if err != nil {
		l.Close()
		return err
	}
	var httpLn net.Listener
	if cfg.HTTP.Listen != "" {
		if httpLn, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
			l.Close()
			bulk.Close()
			return fmt.Errorf("http.listen %s: %w", cfg.HTTP.Listen, err)
		}
	}
	hookLn, err := listenWebhook(cfg)
	if err != nil {
		if httpLn != nil {
			httpLn.Close()
		}
		l.Close()
		bulk.Close()
		return err
	}
	var ctlLn *control.Listener
	if cfg.Control.Socket != "" {
		if ctlLn, err = control.Listen(cfg.Control.Socket); err != nil {
			if httpLn != nil {
				httpLn.Close()
			}
			if hookLn != nil {
				hookLn.ln.Close()
			}
			return err
		}
	}
	// From here on serve runs: the store, even one --init made, holds
	// what it answered and synced, and is kept whatever happens.
	started = true

	bulkCtx, stopBulk := context.WithCancel(context.Background())
	bulkDone := make(chan error, 1)
	go func() { bulkDone <- bulk.Serve(bulkCtx) }()

	recCtx, stopRec := context.WithCancel(context.Background())
	recDone := make(chan struct{})
	go func() { defer close(recDone); rec.Run(recCtx) }()

	// The CloudStack sync: in the background, one at a time, at start-up,
	// every api.interval and after each reload; it swaps its table in
	// under swapMu, which reload holds too.
	current.Store(cfg)
	syncer := newSyncer(d, live, &current, &swapMu)
	// In a cluster, the syncer runs only on the elected server, and every
	// server follows the table in etcd.
	var cr *clusterRun
	if deps.Cluster != nil {
		cr = newClusterRun(d, deps.Cluster, d.fol, live, &current, &swapMu, syncer, reg)
		cr.snap = snapReq
	}
	// The webhook listener: CloudStack's events trigger targeted syncs (in
	// a cluster, the syncer's, handed over through etcd).
	sink := deps.WebhookSink
	if sink == nil && cr != nil {
		sink = cr.webhookSink()
	}
	hookCtx, stopHook := context.WithCancel(context.Background())
	hook, hookDone := d.startWebhook(hookCtx, hookLn, cfg, reg, syncer, sink)
	var syncMetrics *httpapi.SyncMetrics
	if cfg.API.SyncConfigured() {
		syncMetrics = httpapi.NewSyncMetrics(reg)
		syncer.observe = func(outcome string, took time.Duration, rep *allocator.SyncReport, at time.Time) {
			syncMetrics.Observe(outcome, took, syncChanges(rep), at)
			if outcome == httpapi.SyncOK && rep != nil {
				syncMetrics.SetConflicts(syncConflicts(rep))
			}
		}
	}
	syncCtx, stopSync := context.WithCancel(ctx)
	syncDone := make(chan struct{})
	go func() {
		defer close(syncDone)
		if cr != nil {
			stopCluster := cr.run(syncCtx, deps.Version)
			<-syncCtx.Done()
			stopCluster()
			return
		}
		syncer.Run(syncCtx)
	}()

	// The local HTTP API: ready while the listener serves, until shutdown.
	var stopping atomic.Bool
	httpCtx, stopHTTP := context.WithCancel(context.Background())
	httpDone := make(chan struct{})
	served := Addrs{DHCPv6: l.Addrs(), Leasequery: bulk.Addrs()}
	if hook != nil {
		served.Webhook = hookLn.ln.Addr().String()
	}
	if httpLn != nil {
		api := httpapi.New(httpapi.Config{
			Table: live, Bindings: st, Registry: reg, Logger: log, Version: deps.Version,
			SyncStaleAfter: syncStaleAfter(cfg), Now: d.clock.Now,
			Ready: func() httpapi.Readiness {
				r := httpapi.Readiness{SyncEnabled: syncMetrics != nil}
				if cr != nil {
					// Only the syncer syncs; the others do not go stale.
					r.SyncEnabled = r.SyncEnabled && cr.elector.Leader()
					r.Degraded = cr.degraded()
				}
				if !stopping.Load() {
					r.Listening = l.Addrs()
				}
				if syncMetrics != nil {
					r.LastSync = syncMetrics.LastSuccessTime()
				}
				return r
			},
		})
		go func() { defer close(httpDone); httpapi.Serve(httpCtx, httpLn, api, log) }()
		served.HTTP = httpLn.Addr().String()
		log.Info("http api", "listen", served.HTTP)
	} else {
		close(httpDone)
	}

	// The control socket: the CLI's write commands, until shutdown.
	ctlCtx, stopCtl := context.WithCancel(context.Background())
	ctlDone := make(chan struct{})
	if ctlLn != nil {
		adm := &admin{d: d, live: live, cfg: &current, swapMu: &swapMu, syncer: syncer, runDone: syncDone}
		go func() { defer close(ctlDone); control.Serve(ctlCtx, ctlLn, adm.handle, log) }()
		served.Control = ctlLn.Path()
		log.Info("control socket", "path", ctlLn.Path())
	} else {
		close(ctlDone)
	}

	// The history's retention: pruned at start-up and daily.
	histCtx, stopHist := context.WithCancel(context.Background())
	histDone := make(chan struct{})
	if cr != nil {
		d.historyStore = syncer.writeStore
	}
	go func() { defer close(histDone); d.historyLoop(histCtx, &current) }()

	reloadCtx, stopReload := context.WithCancel(ctx)
	reloadDone := make(chan struct{})
	go func() {
		defer close(reloadDone)
		for {
			select {
			case <-reloadCtx.Done():
				return
			case <-deps.Reload:
				swapMu.Lock()
				old := current.Load()
				next := d.reload(old, live, h)
				current.Store(next)
				swapMu.Unlock()
				reloads.Observe(next != old, d.clock.Now())
				if secret := current.Load().Webhook.Secret; hook != nil && secret != "" {
					hook.SetSecret([]byte(secret))
				}
				syncer.Trigger()
			}
		}
	}()

	build := buildinfo.Get(deps.Version)
	where := []any{"state", cfg.State}
	if deps.Cluster != nil {
		where = []any{"cluster", deps.Cluster.Where(), "member", deps.Cluster.Name}
	}
	log.Info("serving", append(append([]any{"listen", l.Addrs(), "pools", len(tbl.Pools()), "allocations", tbl.Len(),
		"mac-sources", cfg.Server.MACSources}, where...), "server-duid", fmt.Sprintf("%x", duid),
		"version", build.Version, "revision", build.Revision)...)
	if deps.Serving != nil {
		deps.Serving(served)
	}
	// When ctx ends: not ready at once; answering stops after
	// server.shutdown-delay, so that health checks see the server go first.
	serveCtx, stopServe := context.WithCancel(context.Background())
	defer stopServe()
	go func() {
		select {
		case <-ctx.Done():
		case <-serveCtx.Done():
			return
		}
		stopping.Store(true)
		if delay := current.Load().Server.ShutdownDelay; delay > 0 {
			log.Info("stopping: not ready; still answering", "for", delay)
			t := d.clock.NewTimer(delay)
			defer t.Stop()
			select {
			case <-t.C():
			case <-serveCtx.Done():
			}
		}
		stopServe()
	}()
	// A damaged store, found by the check begun after the load, stops
	// serve with the error it would have refused to start with.
	var damaged error
	damagedSet := make(chan struct{})
	go func() {
		defer close(damagedSet)
		select {
		case verr := <-verified:
			if verr != nil {
				damaged = verr
				log.Error("the store is damaged: stopping", "state", st.Path(), "err", verr)
				stopServe()
			}
		case <-serveCtx.Done():
		}
	}()
	err = l.Serve(serveCtx)
	stopServe()
	<-damagedSet
	stopBulk()
	if berr := <-bulkDone; berr != nil && err == nil {
		err = berr
	}
	stopping.Store(true)
	stopReload()
	<-reloadDone // a reload in progress finishes; none starts
	stopHook()
	<-hookDone // deliveries in progress are answered; none is taken
	stopCtl()
	<-ctlDone // an action in progress finishes (a sync asked for is cancelled)
	stopHist()
	<-histDone
	stopSync()
	<-syncDone // a sync in progress stops listing, or finishes writing
	stopRec()
	<-recDone // the recorder flushes once more on the way out
	stopHTTP()
	<-httpDone // before the store closes: the API reads it
	if damaged != nil {
		return d.storeError(damaged, cfg)
	}
	if err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// syncChanges counts a sync's changes by the kinds of
// cloudstack_pd_sync_changes_total, and what it kept (httpapi.SyncKept).
func syncChanges(rep *allocator.SyncReport) map[string]int {
	if rep == nil {
		return map[string]int{}
	}
	t := rep.Totals()
	return map[string]int{"added": t.Added, httpapi.SyncKept: t.Kept, "gone": t.Gone,
		"returned": t.Back, "quarantined": t.Quarantined, "released": t.Released}
}

// syncConflicts counts a sync's conflicts by pool, 0 for a pool it went
// through without any, for cloudstack_pd_sync_conflicts.
func syncConflicts(rep *allocator.SyncReport) map[string]int {
	out := make(map[string]int, len(rep.Pools))
	for i := range rep.Pools {
		out[rep.Pools[i].Pool] += len(rep.Pools[i].Conflicts)
	}
	return out
}

// syncStaleAfter is when /readyz starts warning that no sync succeeded:
// three sync intervals, or the API's default when syncs are not periodic.
func syncStaleAfter(cfg *config.Config) time.Duration {
	if cfg.API.Interval > 0 {
		return 3 * cfg.API.Interval
	}
	return 0
}
