package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/buildinfo"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/control"
	"github.com/cloudstack-pd/cloudstack-pd/httpapi"
	"github.com/cloudstack-pd/cloudstack-pd/report"
)

// admin executes the requests of the control socket on the running
// server: one method per action, each the one place where that action
// runs in serve (a cluster's rules – only the elected syncer writes
// allocations – go there). A written change swaps a freshly loaded table
// in, as a sync does.
type admin struct {
	d       *daemon
	live    *allocator.Live
	cfg     *atomic.Pointer[config.Config]
	swapMu  *sync.Mutex
	syncer  *syncer
	runDone <-chan struct{} // closed when the sync loop has stopped
}

// Status is the answer to a ping: which server runs.
type Status struct {
	Version string `json:"version"`
	PID     int    `json:"pid"`
	State   string `json:"state"`
	Config  string `json:"config"`
}

// SyncAnswer is the answer to a sync: the report as the sync command
// prints it, and the outcome (ok, failed, refused).
type SyncAnswer struct {
	Outcome string `json:"outcome"`
	Report  string `json:"report,omitempty"`
	Error   string `json:"error,omitempty"`
}

// HistoryAnswer is the answer to a history request: the events, or with
// an instant, who held what then.
type HistoryAnswer struct {
	Events   []allocator.HistoryEvent `json:"events,omitempty"`
	Holdings []allocator.Holding      `json:"holdings,omitempty"`
}

// handle dispatches one request of the control socket.
func (a *admin) handle(ctx context.Context, req control.Request, peer control.Peer) (any, error) {
	who := control.Who(peer, req)
	switch req.Action {
	case control.ActionPing:
		cfg := a.cfg.Load()
		return Status{Version: buildinfo.Get(a.d.deps.Version).Version, PID: os.Getpid(), State: cfg.State, Config: cfg.Path}, nil
	case control.ActionRelease:
		return a.release(req, who)
	case control.ActionMove:
		return a.move(req, who)
	case control.ActionForget:
		return a.forget(req, who)
	case control.ActionSync:
		return a.sync(ctx, req, who)
	case control.ActionBackup:
		return a.backup(req, who)
	case control.ActionHistory:
		return a.history(req)
	}
	return nil, fmt.Errorf("unknown action %q", req.Action)
}

// actor is who runs a request, for the history.
func (a *admin) actor(req control.Request, who string) allocator.Actor {
	return allocator.Actor{At: a.d.clock.Now(), By: "admin " + who, Note: req.Note}
}

// run runs an operator's action in one transaction and, when it wrote,
// swaps the table; it logs what it did.
func (a *admin) run(req control.Request, who string, fn func(tx *allocator.Tx) error) (*allocator.AdminReport, error) {
	cfg := a.cfg.Load()
	// In a cluster only the syncer writes allocations, through its copy
	// of the whole table; elsewhere writeStore says so.
	ctx := context.Background()
	st, err := a.syncer.writeStore(ctx)
	if err == nil {
		var rep *allocator.AdminReport
		if rep, err = st.Admin(cfg.Pools(), a.actor(req, who), req.DryRun, fn); err == nil {
			return a.done(ctx, req, who, st, rep)
		}
	}
	a.d.log.Warn("control: "+req.Action+" refused", "by", who, "mac", req.MAC, "pool", req.Pool, "err", err)
	return nil, err
}

// done logs what an action wrote and puts it in force.
func (a *admin) done(ctx context.Context, req control.Request, who string, st *allocator.Store, rep *allocator.AdminReport) (*allocator.AdminReport, error) {
	if !rep.Written {
		return rep, nil
	}
	for _, e := range rep.Events {
		a.d.log.Info("control: "+req.Action, "by", who, "event", e.Event, "pool", e.Pool, "mac", e.MAC.String(), "prefix", e.Prefix.String())
	}
	if err := a.syncer.applied(ctx, st); err != nil {
		return rep, fmt.Errorf("written, but the table in force does not show it yet (it will after a sync or a reload): %w", err)
	}
	return rep, nil
}

// release quarantines a MAC's allocation (allocation release).
func (a *admin) release(req control.Request, who string) (*allocator.AdminReport, error) {
	mac, err := httpapi.ParseMAC(req.MAC)
	if err != nil {
		return nil, fmt.Errorf("--mac: %w", err)
	}
	return a.run(req, who, func(tx *allocator.Tx) error { return tx.Release(mac) })
}

// move gives a MAC a prefix in another pool now (allocation move).
func (a *admin) move(req control.Request, who string) (*allocator.AdminReport, error) {
	mac, err := httpapi.ParseMAC(req.MAC)
	if err != nil {
		return nil, fmt.Errorf("--mac: %w", err)
	}
	return a.run(req, who, func(tx *allocator.Tx) error { return tx.Move(mac, req.Pool) })
}

// forget quarantines the allocations of an unmapped pool (pool forget).
func (a *admin) forget(req control.Request, who string) (*allocator.AdminReport, error) {
	return a.run(req, who, func(tx *allocator.Tx) error {
		_, err := tx.ForgetPool(req.Pool)
		return err
	})
}

// sync runs a sync now (sync --now, or sync while serve runs) and
// answers its report: through the sync loop, one at a time with the
// others; a dry run lists and plans beside it, writing nothing.
func (a *admin) sync(ctx context.Context, req control.Request, who string) (*SyncAnswer, error) {
	cfg := a.cfg.Load()
	if why := cfg.API.WhyNoSync(); why != "" {
		return nil, fmt.Errorf("config %s: nothing to sync from: %s", cfg.Path, why)
	}
	a.d.log.Info("control: sync asked for", "by", who, "force", req.Force, "dry-run", req.DryRun)
	var r syncResult
	if req.DryRun {
		inv := a.d.deps.Inventory
		if inv == nil {
			inv = NewInventory
		}
		opts := SyncOptions(cfg)
		opts.Force, opts.DryRun = req.Force, true
		st, err := a.syncer.writeStore(ctx)
		if err != nil {
			return nil, err
		}
		rep, err := st.Sync(ctx, cfg.Pools(), inv(cfg, a.d.log), opts)
		r = syncResult{rep: rep, outcome: httpapi.SyncOK, err: err}
	} else {
		r = a.syncer.RunNow(ctx, req.Force, a.runDone)
	}
	ans := &SyncAnswer{Outcome: r.outcome}
	if r.rep != nil {
		var b bytes.Buffer
		report.Sync(&b, r.rep, cfg, req.Quiet)
		ans.Report = b.String()
	}
	if r.err != nil {
		if ans.Report == "" {
			return nil, r.err
		}
		ans.Error = r.err.Error()
	}
	return ans, nil
}

// backup writes a consistent copy of the store to req.To, checked
// before it is reported (Deps.Backup).
func (a *admin) backup(req control.Request, who string) (*allocator.BackupReport, error) {
	if a.d.deps.Backup == nil {
		return nil, errors.New("this server cannot write backups")
	}
	if a.d.deps.Cluster != nil {
		return nil, errors.New("in a cluster the table is in etcd, and a server holds only part of it: write a copy of the whole table with 'cloudstack-pd cluster export --to FILE' (docs/ha.md)")
	}
	if !filepath.IsAbs(req.To) {
		return nil, fmt.Errorf("--to %q: give an absolute path (the server writes it, from its own working directory)", req.To)
	}
	a.d.log.Info("control: backup", "by", who, "to", req.To)
	rep, err := a.d.deps.Backup(a.d.st, a.cfg.Load(), req.To)
	if err != nil {
		a.d.log.Error("control: backup failed", "to", req.To, "err", err)
		return nil, err
	}
	a.d.log.Info("control: backup written and checked", "to", rep.Path, "bytes", rep.Bytes, "allocations", rep.Allocations)
	return rep, nil
}

// history answers a history query: the events of a MAC or a prefix, or
// with At, who held what then.
func (a *admin) history(req control.Request) (*HistoryAnswer, error) {
	q, at, err := HistoryRequest(req)
	if err != nil {
		return nil, err
	}
	if a.d.deps.Cluster != nil {
		return nil, errors.New("in a cluster a server does not keep the history in memory: 'cloudstack-pd history' reads it from etcd by itself")
	}
	if !at.IsZero() {
		hs, err := a.d.st.HeldAt(q, at)
		return &HistoryAnswer{Holdings: hs}, err
	}
	es, err := a.d.st.History(q)
	return &HistoryAnswer{Events: es}, err
}

// HistoryRequest reads a history query from a request's MAC, Prefix and
// At: the one parser of the history command's flags, whether the server
// or the command answers.
func HistoryRequest(req control.Request) (allocator.HistoryQuery, time.Time, error) {
	var q allocator.HistoryQuery
	var at time.Time
	if req.MAC == "" && req.Prefix == "" {
		return q, at, errors.New("give --prefix or --mac")
	}
	if req.MAC != "" {
		mac, err := httpapi.ParseMAC(req.MAC)
		if err != nil {
			return q, at, fmt.Errorf("--mac: %w", err)
		}
		q.MAC = mac
	}
	if req.Prefix != "" {
		p, err := parsePrefixOrAddr(req.Prefix)
		if err != nil {
			return q, at, fmt.Errorf("--prefix %q: %w", req.Prefix, err)
		}
		q.Prefix = p
	}
	if req.At != "" {
		t, err := ParseInstant(req.At)
		if err != nil {
			return q, at, fmt.Errorf("--at: %w", err)
		}
		at = t
	}
	return q, at, nil
}

// parsePrefixOrAddr reads a prefix, or an address as its /128.
func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseInstant reads an instant: RFC 3339 (2026-03-03T14:00:00Z), a date
// and time in UTC (2026-03-03 14:00, 2026-03-03T14:00:00), or a date (its
// start, UTC).
func ParseInstant(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q: not an instant: write 2026-03-03T14:00:00Z, 2026-03-03 14:00 (UTC) or 2026-03-03", s)
}

// historyBatch bounds the events one pruning transaction deletes.
var historyBatch = 10000

// pruneHistory deletes the events older than history.retention, in
// transactions of historyBatch: serve runs it at start-up and daily.
func (d *daemon) pruneHistory(cfg *config.Config) {
	st := d.st
	if d.historyStore != nil {
		// In a cluster the history is the syncer's to prune, through its
		// copy of the whole table; the other servers skip the pass.
		var err error
		if st, err = d.historyStore(context.Background()); err != nil {
			d.log.Debug("allocation history not pruned here", "reason", err)
			return
		}
	}
	before := d.clock.Now().Add(-cfg.History.Retention)
	total := 0
	for {
		n, err := st.PruneHistory(before, historyBatch)
		total += n
		if err != nil {
			d.log.Error("pruning the allocation history", "err", err, "pruned", total)
			return
		}
		if n < historyBatch {
			break
		}
	}
	if total > 0 {
		d.log.Info("allocation history pruned", "events", total, "older-than", before.UTC().Format(time.RFC3339))
	}
}

// historyLoop prunes the history at once, then every day, until ctx ends.
func (d *daemon) historyLoop(ctx context.Context, cfg *atomic.Pointer[config.Config]) {
	t := d.clock.NewTicker(24 * time.Hour)
	defer t.Stop()
	for {
		d.pruneHistory(cfg.Load())
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}
