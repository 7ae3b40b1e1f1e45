package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/cloudstack"
	"github.com/cloudstack-pd/cloudstack-pd/server/config"
	"github.com/cloudstack-pd/cloudstack-pd/server/httpapi"
)

type syncFlags struct {
	config        string
	dryRun, force bool
	quiet         bool
	// init lets sync create the store (--init).
	init bool
}

func newSyncCmd() *cobra.Command {
	var f syncFlags
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Bring the allocation table in line with CloudStack, once",
		Long: `Sync lists the VMs of every mapped pod from the CloudStack API (api.url,
listVirtualMachines podid=… listall=true, page by page) and reconciles the
allocation table in the store (state) with the listings, in one
transaction:

  added        a NIC without a prefix gets the lowest free prefix of its pool
               (each VM's default NIC, or every NIC on the mapping's vlan;
               Destroyed, Expunging and Error VMs get none)
  kept         a listed NIC keeps its prefix; its VM id, VM name, NIC id and
               IPv6 address are refreshed
  marked gone  a NIC missing from the listing keeps its prefix, still served,
               for allocation.release-after (24h)
  came back    a gone (or quarantined) NIC listed again: same prefix
  quarantined  gone for release-after: the prefix is no longer served, and
               kept out of use for allocation.quarantine (the valid lifetime)
  released     quarantined for the quarantine: the prefix is free
  conflicts    NICs that get nothing: a MAC allocated in another pool (a VM
               moved between pods keeps its prefix until that one is
               released), a MAC listed twice, a full pool

Any CloudStack failure (HTTP error, 401, 431, 530, timeout, a truncated or
non-JSON answer, a listing that ends before its count) aborts the sync with
an error naming the pod, the page and CloudStack's errortext, and changes
nothing. A sync that would mark more than allocation.max-release-fraction
(0.1) of a pool's active allocations gone is refused as a whole: an empty
or partial listing must not wipe the cloud; --force overrides it when the
VMs really are gone.

serve syncs by itself (at start-up, every api.interval, on SIGHUP) and
holds the store meanwhile: this command is for when serve does not run
(a first fill, a Kea site using kea-export, a forced sync). The exit status
is 0 when the sync was done (conflicts included), 1 when it failed or was
refused.

The store must exist: sync refuses a missing state file unless given
--init (a new cloud), also with --dry-run, and refuses a file that is
empty, not a store, or damaged, whatever the flags. A sync that created the
store with --init and then failed removes it again.`,
		Example: `  # What would change, without writing:
  cloudstack-pd sync --config /etc/cloudstack-pd/config.yaml --dry-run
  cloudstack-pd sync --config /etc/cloudstack-pd/config.yaml

  # A new cloud: create the store and number its VMs for the first time.
  cloudstack-pd sync --config /etc/cloudstack-pd/config.yaml --init

  # Many VMs really were deleted at once (the safety valve refused):
  cloudstack-pd sync --config /etc/cloudstack-pd/config.yaml --force`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSync(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	addConfigFlag(cmd, &f.config)
	cmd.Flags().BoolVarP(&f.dryRun, "dry-run", "n", false, "list and report, write nothing (the store is opened read-only; with --init and no store yet, not at all)")
	cmd.Flags().BoolVar(&f.force, "force", false, "override the safety valve (allocation.max-release-fraction)")
	cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, "print the counts only, not each MAC")
	addInitFlag(cmd, &f.init)
	return cmd
}

// newInventory returns the CloudStack client the config describes.
func newInventory(cfg *config.Config, log *slog.Logger) *cloudstack.Client {
	a := cfg.API
	return cloudstack.New(a.URL, a.APIKey, a.SecretKey, cloudstack.Options{
		PageSize:           a.PageSize,
		Timeout:            a.Timeout,
		InsecureSkipVerify: !a.VerifyTLS,
		Logger:             log,
	})
}

// syncOptions are the config's allocation rules.
func syncOptions(cfg *config.Config) allocator.SyncOptions {
	al := cfg.Allocation
	return allocator.SyncOptions{
		ReleaseAfter:       al.ReleaseAfter,
		Quarantine:         al.Quarantine,
		MaxReleaseFraction: al.MaxReleaseFraction,
	}
}

// storeLockedError explains a store another process holds.
func storeLockedError(err error, what string) error {
	return fmt.Errorf("%w\n%s cannot open the store while another cloudstack-pd (serve, sync, import-kea) holds it. "+
		"serve syncs by itself at start-up, every api.interval and on SIGHUP (systemctl reload cloudstack-pd); "+
		"its log has one line per sync", err, what)
}

func runSync(ctx context.Context, out, stderr io.Writer, f syncFlags) (err error) {
	cfg, err := config.Load(f.config)
	if err != nil {
		return err
	}
	if why := cfg.API.WhyNoSync(); why != "" {
		return fmt.Errorf("config %s: nothing to sync from: %s", cfg.Path, why)
	}
	var st *allocator.Store
	if f.dryRun {
		st, err = openForDryRun(cfg, "sync --dry-run", f.init)
	} else {
		st, err = openStore(cfg, "sync", f.init, boltstore.Options{})
	}
	if errors.Is(err, allocator.ErrLocked) {
		return storeLockedError(err, "sync")
	}
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = st.Discard() // removes a store --init made for nothing
		} else {
			err = st.Close()
		}
	}()

	opts := syncOptions(cfg)
	opts.Force, opts.DryRun = f.force, f.dryRun
	rep, err := st.Sync(ctx, cfg.Pools(), newInventory(cfg, newLogger(cfg.Log, stderr)), opts)
	var refused *allocator.RefusedError
	switch {
	case err == nil:
		printSyncReport(out, rep, cfg, f.quiet)
	case errors.As(err, &refused):
		printSyncReport(out, rep, cfg, f.quiet)
		return fmt.Errorf("%w\nif CloudStack's listing is right (the VMs really are gone), run again with --force", err)
	}
	return err
}

// printSyncReport prints what a sync did, pool by pool.
func printSyncReport(w io.Writer, rep *allocator.SyncReport, cfg *config.Config, quiet bool) {
	pools := map[string]allocator.Pool{}
	for _, p := range cfg.Pools() {
		pools[p.Name] = p
	}
	fmt.Fprintf(w, "sync from %s at %s into %s\n", cfg.API.URL, rep.At.UTC().Format(time.RFC3339), cfg.State)
	for i := range rep.Pools {
		ps := &rep.Pools[i]
		p := pools[ps.Pool]
		nics := "default NICs"
		if p.VLAN != 0 {
			nics = fmt.Sprintf("NICs on VLAN %d", p.VLAN)
		}
		fmt.Fprintf(w, "pool %s (%s, %s, %s): %d NIC(s) listed, %d active allocation(s) before\n",
			ps.Pool, p.InterfaceID, p.Prefix, nics, ps.Listed, ps.Active)
		section := func(name string, n int, extra string) {
			fmt.Fprintf(w, "  %-13s %d%s\n", name, n, extra)
		}
		list := func(mark string, allocs []allocator.Allocation, note func(a *allocator.Allocation) string) {
			if quiet {
				return
			}
			for i := range allocs {
				a := &allocs[i]
				fmt.Fprintf(w, "    %s %s %s %s%s\n", mark, a.MAC, a.Prefix, describeVM(a), note(a))
			}
		}
		none := func(*allocator.Allocation) string { return "" }
		section("added", len(ps.Added), "")
		list("+", ps.Added, none)
		section("kept", ps.Kept, fmt.Sprintf(" (%d refreshed)", ps.Refreshed))
		section("marked gone", len(ps.Gone), "")
		list("-", ps.Gone, func(a *allocator.Allocation) string {
			return fmt.Sprintf(", still served until %s", a.GoneAt.Add(cfg.Allocation.ReleaseAfter).UTC().Format(time.RFC3339))
		})
		section("came back", len(ps.Back), "")
		list("^", ps.Back, none)
		section("quarantined", len(ps.Quarantined), "")
		list("~", ps.Quarantined, func(a *allocator.Allocation) string {
			return fmt.Sprintf(", not served, free after %s", a.QuarantinedAt.Add(cfg.Allocation.Quarantine).UTC().Format(time.RFC3339))
		})
		section("released", len(ps.Released), "")
		list("x", ps.Released, func(*allocator.Allocation) string { return ", prefix free" })
		section("waiting", ps.StillGone+ps.InQuarantine, fmt.Sprintf(" (%d gone, %d in quarantine)", ps.StillGone, ps.InQuarantine))
		section("not eligible", ps.NotEligible, " (new NICs of Destroyed, Expunging or Error VMs: no prefix)")
		section("conflicts", len(ps.Conflicts), "")
		for _, c := range ps.Conflicts {
			fmt.Fprintf(w, "    ! %s (VM %s %s, NIC %s): %v\n", c.NIC.MAC, c.NIC.VMName, c.NIC.VMID, c.NIC.NICID, c.Err)
		}
		if ps.Refused {
			fmt.Fprintf(w, "  REFUSED: %d of %d active allocations would be marked gone, more than allocation.max-release-fraction %g allows\n",
				len(ps.Gone), ps.Active, cfg.Allocation.MaxReleaseFraction)
		}
	}
	t := rep.Totals()
	fmt.Fprintf(w, "total: %d added, %d kept, %d marked gone, %d came back, %d quarantined, %d released, %d conflict(s)\n",
		t.Added, t.Kept, t.Gone, t.Back, t.Quarantined, t.Released, t.Conflicts)
	refused := slices.ContainsFunc(rep.Pools, func(p allocator.PoolSync) bool { return p.Refused })
	switch {
	case refused:
		fmt.Fprintln(w, "refused: nothing written")
	case rep.DryRun:
		fmt.Fprintln(w, "dry run: nothing written")
	case rep.Written:
		fmt.Fprintf(w, "written to %s\n", cfg.State)
	default:
		fmt.Fprintln(w, "nothing to change")
	}
}

func describeVM(a *allocator.Allocation) string {
	if a.VMID == "" {
		return "(no VM known: " + a.Source + ")"
	}
	return fmt.Sprintf("%s (VM %s, NIC %s)", a.VMName, a.VMID, a.NICID)
}

// syncForKeaExport is kea-export's sync (keaExportSync): the same
// reconciliation as the sync command, on the store kea-export opened, its
// report in counts on out.
func syncForKeaExport(ctx context.Context, cfg *config.Config, st *allocator.Store, out io.Writer) error {
	if why := cfg.API.WhyNoSync(); why != "" {
		return fmt.Errorf("nothing to sync from: %s", why)
	}
	rep, err := st.Sync(ctx, cfg.Pools(), newInventory(cfg, newLogger(cfg.Log, out)), syncOptions(cfg))
	var refused *allocator.RefusedError
	if err == nil || errors.As(err, &refused) {
		printSyncReport(out, rep, cfg, true)
	}
	return err
}

// serveSync runs serve's CloudStack syncs, one at a time: at start-up,
// every api.interval after the end of the last one, and when triggered
// (SIGHUP, after the reload). A sync that wrote changes swaps a table
// freshly loaded from the store into live. Packets are answered from the
// table in force all along; a failed sync changes nothing and is logged.
type serveSync struct {
	st   *allocator.Store
	live *allocator.Live
	// cfg is the config in force; swapMu serialises table swaps with
	// serve's reload.
	cfg    *atomic.Pointer[config.Config]
	swapMu *sync.Mutex
	log    *slog.Logger
	// inventory makes the CloudStack client of a config; nil:
	// newInventory.
	inventory func(*config.Config) allocator.Inventory
	// observe, when set, is told of each sync run (for metrics).
	observe func(outcome string, took time.Duration, rep *allocator.SyncReport, at time.Time)

	trigger   chan struct{}
	lastWhy   string   // the last reason for not syncing, logged once
	conflicts []string // the conflicts of the last sync, to log changes only
	// client is kept from sync to sync (and its connections with it)
	// while the api section stays the same.
	client    allocator.Inventory
	clientAPI config.API
}

func newServeSync(st *allocator.Store, live *allocator.Live, cfg *atomic.Pointer[config.Config], swapMu *sync.Mutex, log *slog.Logger) *serveSync {
	return &serveSync{st: st, live: live, cfg: cfg, swapMu: swapMu, log: log, trigger: make(chan struct{}, 1)}
}

// Trigger asks for a sync as soon as the one running (if any) is done.
func (s *serveSync) Trigger() {
	select {
	case s.trigger <- struct{}{}:
	default: // one is pending already
	}
}

// Run syncs until ctx ends.
func (s *serveSync) Run(ctx context.Context) {
	for {
		s.once(ctx)
		var (
			tick  <-chan time.Time
			timer *time.Timer
		)
		if d := s.cfg.Load().API.Interval; d > 0 {
			timer = time.NewTimer(d)
			tick = timer.C
		}
		select {
		case <-ctx.Done():
		case <-s.trigger:
		case <-tick:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// once runs one sync.
func (s *serveSync) once(ctx context.Context) {
	cfg := s.cfg.Load()
	if why := cfg.API.WhyNoSync(); why != "" {
		if why != s.lastWhy {
			s.log.Info("no CloudStack sync: serving the stored table as it is", "reason", why)
			s.lastWhy = why
		}
		return
	}
	s.lastWhy = ""
	if s.client == nil || s.clientAPI != cfg.API {
		if s.inventory != nil {
			s.client = s.inventory(cfg)
		} else {
			s.client = newInventory(cfg, s.log)
		}
		s.clientAPI = cfg.API
	}
	start := time.Now()
	rep, err := s.st.Sync(ctx, cfg.Pools(), s.client, syncOptions(cfg))
	took := time.Since(start)
	var refused *allocator.RefusedError
	switch {
	case ctx.Err() != nil:
		return // shutting down
	case errors.As(err, &refused):
		s.log.Error("sync refused by the safety valve; the table stays as it is", "err", err, "took", took.Round(time.Millisecond),
			"hint", "if CloudStack's listing is right, raise allocation.max-release-fraction and reload (SIGHUP), or stop serve and run 'cloudstack-pd sync --force'")
		s.observed(httpapi.SyncRefused, took, rep, start)
		return
	case err != nil:
		s.log.Error("sync failed; the table stays as it is", "err", err, "took", took.Round(time.Millisecond))
		s.observed(httpapi.SyncFailed, took, rep, start)
		return
	}
	if rep.Written {
		s.swapMu.Lock()
		tbl, err := loadTable(s.st, s.cfg.Load(), s.log)
		if err == nil {
			s.live.Swap(tbl)
		}
		s.swapMu.Unlock()
		if err != nil {
			s.log.Error("sync written, but the table does not load; the old one stays in force", "err", err)
			s.observed(httpapi.SyncFailed, took, rep, start)
			return
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
}

func (s *serveSync) observed(outcome string, took time.Duration, rep *allocator.SyncReport, at time.Time) {
	if s.observe != nil {
		s.observe(outcome, took, rep, at)
	}
}

// logDetails logs each change at debug level, and the conflicts, at warn
// level, when they differ from the last sync's.
func (s *serveSync) logDetails(ctx context.Context, rep *allocator.SyncReport) {
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
