package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/httpapi"
	"github.com/cloudstack-pd/cloudstack-pd/webhook"
)

// NewInventory returns the CloudStack client the config describes.
func NewInventory(cfg *config.Config, log *slog.Logger) allocator.Inventory {
	a := cfg.API
	return cloudstack.New(a.URL, a.APIKey, a.SecretKey, cloudstack.Options{
		PageSize:           a.PageSize,
		Timeout:            a.Timeout,
		InsecureSkipVerify: !a.VerifyTLS,
		Logger:             log,
	})
}

// SyncOptions are the config's allocation rules.
func SyncOptions(cfg *config.Config) allocator.SyncOptions {
	al := cfg.Allocation
	return allocator.SyncOptions{
		ReleaseAfter:       al.ReleaseAfter,
		Quarantine:         al.Quarantine,
		MaxReleaseFraction: al.MaxReleaseFraction,
	}
}

// syncer runs serve's CloudStack syncs, one at a time: at start-up,
// every api.interval after the end of the last one, and when triggered
// (SIGHUP, after the reload). A sync that wrote changes swaps a table
// freshly loaded from the store into live. Packets are answered from the
// table in force all along; a failed sync changes nothing and is logged.
type syncer struct {
	d    *daemon
	live *allocator.Live
	// cfg is the config in force; swapMu serialises table swaps with
	// serve's reload.
	cfg    *atomic.Pointer[config.Config]
	swapMu *sync.Mutex
	log    *slog.Logger
	// observe, when set, is told of each sync run (for metrics).
	observe func(outcome string, took time.Duration, rep *allocator.SyncReport, at time.Time)
	// afterSync, when set, is told when a sync succeeded.
	afterSync func(at time.Time)
	// store, when set, gives the store a sync writes (in a cluster, the
	// syncer's own, opened at its first sync); nil: the daemon's.
	store func(ctx context.Context) (*allocator.Store, error)
	// written, when set, puts a sync's writes in force instead of a load
	// of the table from the store (in a cluster, the follower's table
	// catching up with them); it holds no lock.
	written func(ctx context.Context, st *allocator.Store) error

	trigger   chan struct{}
	vmTrigger chan struct{}
	vmMu      sync.Mutex
	vms       vmQueue
	// hookMetrics, when set, observe the time from an event to its sync.
	hookMetrics *webhook.Metrics
	// now carries the syncs asked for through the control socket;
	// running is set while Run runs (in a cluster, while this server is
	// the elected syncer), stopped is closed when that Run returns.
	now       chan syncNow
	running   atomic.Bool
	stopMu    sync.Mutex
	stopped   chan struct{}
	lastWhy   string   // the last reason for not syncing, logged once
	conflicts []string // the conflicts of the last sync, to log changes only
	// client is kept from sync to sync (and its connections with it)
	// while the api section stays the same.
	client    allocator.Inventory
	clientAPI config.API
}

func newSyncer(d *daemon, live *allocator.Live, cfg *atomic.Pointer[config.Config], swapMu *sync.Mutex) *syncer {
	return &syncer{d: d, live: live, cfg: cfg, swapMu: swapMu, log: d.log, trigger: make(chan struct{}, 1),
		vmTrigger: make(chan struct{}, 1), vms: vmQueue{pending: map[string]time.Time{}}, now: make(chan syncNow)}
}

// syncNow is a sync asked for through the control socket: force
// overrides the safety valve; the result goes to reply.
type syncNow struct {
	force bool
	reply chan syncResult
}

// syncResult is what one sync did: its report (nil when it did not run
// or failed before reconciling), its outcome (httpapi.SyncOK, …; "" when
// no sync is configured) and its error.
type syncResult struct {
	rep     *allocator.SyncReport
	outcome string
	err     error
}

// errNotSyncing is RunNow's answer on a server whose sync loop does not
// run.
var errNotSyncing = errors.New("this server does not run the sync (in a cluster only the elected syncer does: ask it, 'cloudstack-pd cluster status' names it)")

// stoppedCh returns the channel closed when the current Run returns.
func (s *syncer) stoppedCh() <-chan struct{} {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	return s.stopped
}

// RunNow runs a full sync as soon as the one running (if any) is done,
// and returns what it did; force overrides the safety valve. It returns
// ctx's error when ctx ends first, and an error when the loop does not
// run or has stopped (runDone closed).
func (s *syncer) RunNow(ctx context.Context, force bool, runDone <-chan struct{}) syncResult {
	if !s.running.Load() {
		return syncResult{err: errNotSyncing}
	}
	req := syncNow{force: force, reply: make(chan syncResult, 1)}
	select {
	case s.now <- req:
	case <-ctx.Done():
		return syncResult{err: ctx.Err()}
	case <-runDone:
		return syncResult{err: errors.New("the server is stopping")}
	case <-s.stoppedCh():
		return syncResult{err: errNotSyncing}
	}
	select {
	case r := <-req.reply:
		return r
	case <-ctx.Done():
		return syncResult{err: ctx.Err()}
	}
}

// Trigger asks for a sync as soon as the one running (if any) is done.
func (s *syncer) Trigger() {
	select {
	case s.trigger <- struct{}{}:
	default: // one is pending already
	}
}

// Run syncs until ctx ends: a full sync at once, then after each
// api.interval and each Trigger; in between, the targeted syncs that
// TriggerVMs asks for, one at a time (they do not move the interval);
// and at once when the control socket asks (RunNow).
func (s *syncer) Run(ctx context.Context) {
	s.running.Store(true)
	stopped := make(chan struct{})
	s.stopMu.Lock()
	s.stopped = stopped
	s.stopMu.Unlock()
	defer func() {
		s.running.Store(false)
		close(stopped)
	}()
	var asked *syncNow
	for {
		r := s.once(ctx, asked != nil && asked.force)
		if asked != nil {
			asked.reply <- r
			asked = nil
		}
		var (
			tick  <-chan time.Time
			timer clock.Timer
		)
		if d := s.cfg.Load().API.Interval; d > 0 {
			timer = s.d.clock.NewTimer(d)
			tick = timer.C()
		}
	wait:
		for {
			select {
			case <-ctx.Done():
			case <-s.trigger:
			case <-tick:
			case req := <-s.now:
				asked = &req
			case <-s.vmTrigger:
				// Gather the events of a burst for a moment, then sync
				// their VMs in one go.
				if s.pause(ctx, VMSyncDelay) && !s.onceVMs(ctx) {
					continue wait
				}
			}
			break
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// pause waits d on the daemon's clock; false if ctx ended first.
func (s *syncer) pause(ctx context.Context, d time.Duration) bool {
	t := s.d.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-ctx.Done():
		return false
	}
}

// ensureClient makes the CloudStack client of cfg, unless the one kept
// is of the same api section.
func (s *syncer) ensureClient(cfg *config.Config) {
	if s.client == nil || s.clientAPI != cfg.API {
		if s.d.deps.Inventory != nil {
			s.client = s.d.deps.Inventory(cfg, s.log)
		} else {
			s.client = NewInventory(cfg, s.log)
		}
		s.clientAPI = cfg.API
	}
}

// writeStore is the store a sync writes: the daemon's, or in a cluster the
// syncer's (the whole table, fenced on the leadership).
func (s *syncer) writeStore(ctx context.Context) (*allocator.Store, error) {
	if s.store != nil {
		return s.store(ctx)
	}
	return s.d.st, nil
}

// applied puts in force what a sync wrote to st: in a cluster the
// follower's table catching up with it, else the table loaded again.
func (s *syncer) applied(ctx context.Context, st *allocator.Store) error {
	if s.written != nil {
		return s.written(ctx, st)
	}
	return s.swap()
}

// swap loads the table from the store and puts it in force, under the
// lock that reload holds too.
func (s *syncer) swap() error {
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	tbl, err := s.d.loadTable(s.cfg.Load())
	if err == nil {
		s.live.Swap(tbl)
	}
	return err
}

// once runs one full sync; force overrides the safety valve.
func (s *syncer) once(ctx context.Context, force bool) syncResult {
	cfg := s.cfg.Load()
	if why := cfg.API.WhyNoSync(); why != "" {
		if why != s.lastWhy {
			s.log.Info("no CloudStack sync: serving the stored table as it is", "reason", why)
			s.lastWhy = why
		}
		return syncResult{err: fmt.Errorf("config %s: nothing to sync from: %s", cfg.Path, why)}
	}
	s.lastWhy = ""
	s.ensureClient(cfg)
	st, err := s.writeStore(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("sync not run: the table does not open for writing", "err", err)
			s.observed(httpapi.SyncFailed, 0, nil, s.d.clock.Now())
		}
		return syncResult{outcome: httpapi.SyncFailed, err: fmt.Errorf("sync not run: the table does not open for writing: %w", err)}
	}
	start := s.d.clock.Now()
	opts := SyncOptions(cfg)
	opts.Force = force
	rep, err := st.Sync(ctx, cfg.Pools(), s.client, opts)
	took := s.d.clock.Now().Sub(start)
	var refused *allocator.RefusedError
	switch {
	case ctx.Err() != nil:
		return syncResult{err: ctx.Err()} // shutting down
	case errors.As(err, &refused):
		s.log.Error("sync refused by the safety valve; the table stays as it is", "err", err, "took", took.Round(time.Millisecond),
			"hint", "if CloudStack's listing is right, raise allocation.max-release-fraction and reload (SIGHUP), or run 'cloudstack-pd sync --force'")
		s.observed(httpapi.SyncRefused, took, rep, start)
		s.fullDone(start, s.d.clock.Now(), false)
		return syncResult{rep, httpapi.SyncRefused, err}
	case err != nil:
		s.log.Error("sync failed; the table stays as it is", "err", err, "took", took.Round(time.Millisecond))
		s.observed(httpapi.SyncFailed, took, rep, start)
		s.fullDone(start, s.d.clock.Now(), false)
		return syncResult{rep, httpapi.SyncFailed, err}
	}
	if rep.Written && s.written != nil {
		if err := s.written(ctx, st); err != nil {
			s.log.Error("sync written, but the table in force does not reflect it yet", "err", err)
		}
	} else if rep.Written {
		if err := s.swap(); err != nil {
			s.log.Error("sync written, but the table does not load; the old one stays in force", "err", err)
			s.observed(httpapi.SyncFailed, took, rep, start)
			s.fullDone(start, s.d.clock.Now(), false)
			return syncResult{rep, httpapi.SyncFailed, fmt.Errorf("sync written, but the table does not load; the old one stays in force: %w", err)}
		}
	}
	t := rep.Totals()
	level := slog.LevelInfo
	if t.Conflicts > 0 {
		level = slog.LevelWarn
	}
	s.log.Log(ctx, level, "synced", "took", took.Round(time.Millisecond), "pools", len(rep.Pools), "listed", t.Listed,
		"added", t.Added, "kept", t.Kept, "refreshed", t.Refreshed, "gone", t.Gone, "back", t.Back,
		"quarantined", t.Quarantined, "released", t.Released, "still-gone", t.StillGone, "in-quarantine", t.InQuarantine,
		"not-eligible", t.NotEligible, "conflicts", t.Conflicts, "written", rep.Written)
	s.logDetails(ctx, rep)
	s.observed(httpapi.SyncOK, took, rep, start.Add(took))
	if s.afterSync != nil {
		s.afterSync(start.Add(took))
	}
	s.fullDone(start, s.d.clock.Now(), true)
	return syncResult{rep, httpapi.SyncOK, nil}
}

func (s *syncer) observed(outcome string, took time.Duration, rep *allocator.SyncReport, at time.Time) {
	if s.observe != nil {
		s.observe(outcome, took, rep, at)
	}
}

// logDetails logs each change at debug level, and the conflicts, at warn
// level, when they differ from the last sync's.
func (s *syncer) logDetails(ctx context.Context, rep *allocator.SyncReport) {
	if s.log.Enabled(ctx, slog.LevelDebug) {
		for i := range rep.Pools {
			ps := &rep.Pools[i]
			for _, ch := range []struct {
				what   string
				allocs []allocator.Allocation
			}{{"added", ps.Added}, {"gone", ps.Gone}, {"back", ps.Back}, {"quarantined", ps.Quarantined}, {"released", ps.Released}} {
				for _, a := range ch.allocs {
					s.log.Debug("sync: "+ch.what, "pool", a.Pool, "mac", a.MAC.String(), "prefix", a.Prefix.String(),
						"vm-id", a.VMID, "vm-name", a.VMName, "nic-id", a.NICID)
				}
			}
		}
	}
	var conflicts []string
	for i := range rep.Pools {
		for _, c := range rep.Pools[i].Conflicts {
			conflicts = append(conflicts, c.String())
		}
	}
	if slices.Equal(conflicts, s.conflicts) {
		return
	}
	for _, c := range conflicts {
		if !slices.Contains(s.conflicts, c) {
			s.log.Warn("sync: conflict: NIC without a prefix", "conflict", c)
		}
	}
	s.conflicts = conflicts
}
