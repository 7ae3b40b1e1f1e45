package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/server"
	"github.com/cloudstack-pd/cloudstack-pd/server/config"
	"github.com/cloudstack-pd/cloudstack-pd/server/httpapi"
)

func newServeCmd() *cobra.Command {
	var (
		cfgPath   string
		initStore bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Answer relayed DHCPv6 prefix-delegation requests",
		Long: `Serve answers the DHCPv6 Relay-Forwards that the routers send to the
addresses in server.listen, in the foreground, logging to standard error.

For each relayed request it picks the pool by the innermost relay's
interface-id, reads the client MAC from the sources in server.mac-sources
(remote-id: the MAC the router inserted, which a VM cannot forge), and
answers the MAC's reserved prefix from the allocation table in the store
(state). Messages that reach it unrelayed are dropped: their MAC cannot be
trusted.

Signals:
  SIGTERM, SIGINT  /readyz turns not ready; after server.shutdown-delay
                   (default 0) stop reading, answer what is queued, write
                   the recorded bindings, close the store, exit 0
  SIGHUP           re-read the config; if it is valid, put the new pools,
                   mac-sources, lifetimes and trusted-relays in force and
                   reload the table; if not, log why and keep the old one;
                   then sync from CloudStack

With api.url, api.apikey and api.secretkey set, serve syncs the table from
CloudStack (as 'cloudstack-pd sync' does, docs/sync.md) in the background:
at start-up, every api.interval (60s) after the last sync ends, and on
SIGHUP. Packets are answered from the table in force all along; a sync that
changed the table swaps the new one in at once. When CloudStack is down or
answers wrongly, the sync changes nothing and logs an error naming the pod,
the call and CloudStack's errortext; serve keeps answering.

The store is locked while serve runs: a second serve on the same state file
exits at once with an error instead of waiting.

The store must exist: serve refuses to start on a missing state file
unless given --init (a new cloud; 'import-kea' also creates it), and
refuses a file that is empty, not a store, or damaged, whatever the flags.
A serve that created the store with --init and then fails to start
removes it again.`,
		Example: `  cloudstack-pd serve --config /etc/cloudstack-pd/config.yaml

  # A new cloud: create the store on the first start.
  cloudstack-pd serve --config /etc/cloudstack-pd/config.yaml --init
  CLOUDSTACK_PD_LOG_LEVEL=debug cloudstack-pd serve -c example/cloudstack-pd.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd.Context(), cfgPath, initStore, cmd.ErrOrStderr())
		},
	}
	addConfigFlag(cmd, &cfgPath)
	addInitFlag(cmd, &initStore)
	return cmd
}

// addInitFlag adds --init, which lets serve and sync create the store.
func addInitFlag(cmd *cobra.Command, init *bool) {
	cmd.Flags().BoolVar(init, "init", false, "create the store (state) if it does not exist: for a new cloud only. "+
		"Without it a missing store is an error, so that a typo in state or an unmounted folder never numbers every VM afresh")
}

// newLogger builds the slog logger the config asks for.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config.Load
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(c.Format, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// handlerOptions converts the config's server section.
func handlerOptions(c *config.Config) server.Options {
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

// openStore opens the state store for what (serve, sync) to write,
// failing fast when another process holds it; it creates a missing store
// only with init (--init). opts adds NoVerify.
func openStore(cfg *config.Config, what string, init bool, opts boltstore.Options) (*allocator.Store, error) {
	mode := storeWrite
	if init {
		mode = storeCreate
	}
	return openStateOpts(cfg, what, mode, opts)
}

// loadVerified loads the table, as loadTable, while another goroutine
// reads every other page of the store (Store.VerifyIndexes): serve starts
// on a store that is sound throughout, in about the time of the load
// alone.
func loadVerified(st *allocator.Store, cfg *config.Config, log *slog.Logger) (*allocator.Table, error) {
	verified := make(chan error, 1)
	go func() { verified <- st.VerifyIndexes() }()
	tbl, err := loadTable(st, cfg, log)
	if verr := <-verified; verr != nil {
		return nil, explainStoreError(verr, cfg, "serve", storeWrite)
	}
	return tbl, err
}

// loadTable reads the table for cfg's pools and logs allocations kept for
// pools that are no longer configured.
func loadTable(st *allocator.Store, cfg *config.Config, log *slog.Logger) (*allocator.Table, error) {
	tbl, rep, err := st.LoadTable(cfg.Pools())
	if errors.Is(err, allocator.ErrDamaged) {
		return nil, explainStoreError(err, cfg, "serve", storeWrite)
	}
	if err != nil {
		return nil, fmt.Errorf("load allocation table from %s: %w", cfg.State, err)
	}
	if pools := rep.OrphanedByPool(); pools != nil {
		log.Warn("the store holds allocations of pools that are not configured; they are kept, not served",
			"allocations-by-pool", pools)
	}
	return tbl, nil
}

// runServe serves until ctx ends; init lets it create the store. A store
// it created and could not start on is removed again.
func runServe(ctx context.Context, cfgPath string, init bool, stderr io.Writer) (err error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	addrs, err := cfg.ListenAddrs()
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)

	st, err := openStore(cfg, "serve", init, boltstore.Options{NoVerify: true})
	if err != nil {
		return err
	}
	started := false
	defer func() {
		closeStore := st.Close
		if err != nil && !started {
			closeStore = st.Discard // a store --init made for nothing
		}
		if err := closeStore(); err != nil {
			log.Error("closing the store", "err", err)
		}
	}()
	tbl, err := loadVerified(st, cfg, log)
	if err != nil {
		return err
	}
	live := allocator.NewLive(tbl)
	duid, err := st.ServerDUID(func() ([]byte, error) { return server.NewServerDUID(rand.Reader, time.Now()) })
	if err != nil {
		return fmt.Errorf("server DUID: %w", err)
	}

	reg := prometheus.NewRegistry()
	metrics := server.NewMetrics(reg)
	if err := httpapi.NewCollectors(reg, live, st, version); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	rec := server.NewRecorder(st, server.DefaultFlushInterval, log)
	reg.MustRegister(rec.Collectors()...)
	h, err := server.NewHandler(server.HandlerConfig{
		Table: live, ServerID: duid, Options: handlerOptions(cfg),
		Bindings: rec, Logger: log, Metrics: metrics,
	})
	if err != nil {
		return err
	}
	l, err := server.Listen(server.ListenerConfig{
		Addrs: addrs, Workers: cfg.Server.Workers, QueueLength: cfg.Server.QueueLength,
		Logger: log, Metrics: metrics,
	}, h)
	if err != nil {
		return err
	}
	var httpLn net.Listener
	if cfg.HTTP.Listen != "" {
		if httpLn, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
			return fmt.Errorf("http.listen %s: %w", cfg.HTTP.Listen, err)
		}
	}
	// From here on serve runs: the store, even one --init made, holds
	// what it answered and synced, and is kept whatever happens.
	started = true

	recCtx, stopRec := context.WithCancel(context.Background())
	recDone := make(chan struct{})
	go func() { defer close(recDone); rec.Run(recCtx) }()

	// The CloudStack sync: in the background, one at a time, at start-up,
	// every api.interval and after each reload; it swaps its table in
	// under swapMu, which reload holds too.
	var (
		current atomic.Pointer[config.Config]
		swapMu  sync.Mutex
	)
	current.Store(cfg)
	syncer := newServeSync(st, live, &current, &swapMu, log)
	var syncMetrics *httpapi.SyncMetrics
	if cfg.API.SyncConfigured() {
		syncMetrics = httpapi.NewSyncMetrics(reg)
		syncer.observe = func(outcome string, took time.Duration, rep *allocator.SyncReport, at time.Time) {
			syncMetrics.Observe(outcome, took, syncChanges(rep), at)
		}
	}
	syncCtx, stopSync := context.WithCancel(ctx)
	syncDone := make(chan struct{})
	go func() { defer close(syncDone); syncer.Run(syncCtx) }()

	// The local HTTP API: ready while the listener serves, until shutdown.
	var stopping atomic.Bool
	httpCtx, stopHTTP := context.WithCancel(context.Background())
	httpDone := make(chan struct{})
	if httpLn != nil {
		api := httpapi.New(httpapi.Config{
			Table: live, Bindings: st, Registry: reg, Logger: log, Version: version,
			SyncStaleAfter: syncStaleAfter(cfg),
			Ready: func() httpapi.Readiness {
				r := httpapi.Readiness{SyncEnabled: syncMetrics != nil}
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
		log.Info("http api", "listen", httpLn.Addr().String())
	} else {
		close(httpDone)
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				swapMu.Lock()
				current.Store(reload(cfgPath, current.Load(), st, live, h, log))
				swapMu.Unlock()
				syncer.Trigger()
			}
		}
	}()

	log.Info("serving", "listen", l.Addrs(), "pools", len(tbl.Pools()), "allocations", tbl.Len(),
		"mac-sources", cfg.Server.MACSources, "state", cfg.State, "server-duid", fmt.Sprintf("%x", duid))
	// On SIGTERM/SIGINT: not ready at once; answering stops after
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
		if d := current.Load().Server.ShutdownDelay; d > 0 {
			log.Info("stopping: not ready; still answering", "for", d)
			select {
			case <-time.After(d):
			case <-serveCtx.Done():
			}
		}
		stopServe()
	}()
	err = l.Serve(serveCtx)
	stopping.Store(true)
	stopSync()
	<-syncDone // a sync in progress stops listing, or finishes writing
	stopRec()
	<-recDone // the recorder flushes once more on the way out
	stopHTTP()
	<-httpDone // before the store closes: the API reads it
	if err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// syncChanges counts a sync's changes by the kinds of
// cloudstack_pd_sync_changes_total.
func syncChanges(rep *allocator.SyncReport) map[string]int {
	if rep == nil {
		return map[string]int{}
	}
	t := rep.Totals()
	return map[string]int{"added": t.Added, "kept": t.Kept, "gone": t.Gone,
		"returned": t.Back, "quarantined": t.Quarantined, "released": t.Released}
}

// syncStaleAfter is when /readyz starts warning that no sync succeeded:
// three sync intervals, or the API's default when syncs are not periodic.
func syncStaleAfter(cfg *config.Config) time.Duration {
	if cfg.API.Interval > 0 {
		return 3 * cfg.API.Interval
	}
	return 0
}

// reload re-reads the config at path. A valid one is put in force (pools,
// table, handler options) and returned; an invalid one is logged and the
// old one returned, still in force.
func reload(path string, old *config.Config, st *allocator.Store, live *allocator.Live, h *server.Handler, log *slog.Logger) *config.Config {
	cfg, err := config.Load(path)
	if err == nil {
		_, err = cfg.ListenAddrs()
	}
	if err != nil {
		log.Error("reload refused: the old config stays in force", "err", err)
		return old
	}
	tbl, err := loadTable(st, cfg, log)
	if err != nil {
		log.Error("reload refused: the old config stays in force", "err", err)
		return old
	}
	if !slices.Equal(cfg.Server.Listen, old.Server.Listen) || cfg.State != old.State ||
		cfg.Server.Workers != old.Server.Workers || cfg.Server.QueueLength != old.Server.QueueLength {
		log.Warn("server.listen, state, server.workers and server.queue-length change only at restart")
	}
	live.Swap(tbl)
	h.SetOptions(handlerOptions(cfg))
	log.Info("reloaded", "config", path, "pools", len(tbl.Pools()), "allocations", tbl.Len())
	return cfg
}
