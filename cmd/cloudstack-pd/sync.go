package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/cloudstack-pd/cloudstack-pd/statestore"
	"io"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/control"
	"github.com/cloudstack-pd/cloudstack-pd/daemon"
	"github.com/cloudstack-pd/cloudstack-pd/httpapi"
	"github.com/cloudstack-pd/cloudstack-pd/report"
)

type syncFlags struct {
	config        string
	dryRun, force bool
	quiet         bool
	// init lets sync create the store (--init).
	init bool
	// now asks the running server to sync (--now).
	now bool
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
holds the store meanwhile. While serve runs, this command asks it to sync
now through its control socket (control.socket): the sync runs in serve's
sync loop (after the one in progress, if any), its table is swapped in at
once, and its report printed when it is done; --dry-run and --force go with
it. --now insists on that and fails when no server answers. With no server
running, the command syncs the store itself (a first fill, a Kea site using
kea-export). The exit status is 0 when the sync was done (conflicts
included), 1 when it failed or was refused.

The store must exist: sync refuses a missing state file unless given
--init (a new cloud), also with --dry-run, and refuses a file that is
empty, not a store, or damaged, whatever the flags. A sync that created the
store with --init and then failed removes it again.`,
		Example: `  # serve runs: sync now instead of waiting for api.interval.
  cloudstack-pd sync --config /etc/cloudstack-pd/config.yaml --now

  # What would change, without writing:
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
	cmd.Flags().BoolVar(&f.now, "now", false, "have the running server sync now (through control.socket); fail when none answers")
	addInitFlag(cmd, &f.init)
	return cmd
}

// storeLockedError explains a store another process holds.
func storeLockedError(err error, what string) error {
	return fmt.Errorf("%w\n%s cannot open the store while another cloudstack-pd (serve, sync, import-kea) holds it. "+
		"While serve runs, sync asks it to sync through its control socket (control.socket), and none answered: "+
		"a serve started with another control.socket, or a sync or import running? "+
		"and serve syncs by itself at start-up, every api.interval and on SIGHUP; its log has one line per sync", err, what)
}

func runSync(ctx context.Context, out, stderr io.Writer, f syncFlags) (err error) {
	cfg, err := config.Load(f.config)
	if err != nil {
		return err
	}
	if why := cfg.API.WhyNoSync(); why != "" {
		return fmt.Errorf("config %s: nothing to sync from: %s", cfg.Path, why)
	}
	if done, err := syncThroughServer(ctx, out, cfg, f); done || err != nil {
		return err
	}
	var st *allocator.Store
	if f.dryRun {
		st, err = statestore.OpenDryRun(cfg, "sync --dry-run", f.init)
	} else {
		st, err = statestore.OpenForWrite(cfg, "sync", f.init, boltstore.Options{})
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

	opts := daemon.SyncOptions(cfg)
	opts.Force, opts.DryRun = f.force, f.dryRun
	rep, err := st.Sync(ctx, cfg.Pools(), daemon.NewInventory(cfg, daemon.NewLogger(cfg.Log, stderr)), opts)
	var refused *allocator.RefusedError
	switch {
	case err == nil:
		report.Sync(out, rep, cfg, f.quiet)
	case errors.As(err, &refused):
		report.Sync(out, rep, cfg, f.quiet)
		return fmt.Errorf("%w\nif CloudStack's listing is right (the VMs really are gone), run again with --force", err)
	}
	return err
}

// syncThroughServer asks the running server to sync; done is false when
// no server answers and --now was not given.
func syncThroughServer(ctx context.Context, out io.Writer, cfg *config.Config, f syncFlags) (done bool, err error) {
	var ans daemon.SyncAnswer
	req := control.Request{Action: control.ActionSync, Force: f.force, DryRun: f.dryRun, Quiet: f.quiet, Note: "sync"}
	asked, err := askRunningServer(ctx, cfg, req, &ans)
	switch {
	case err != nil:
		return true, err
	case !asked && f.now:
		sock := cfg.Control.Socket
		if sock == "" {
			sock = "(control.socket is off)"
		}
		return true, fmt.Errorf("sync --now: no server answers on the control socket %s; without --now, sync syncs the store itself", sock)
	case !asked:
		return false, nil
	}
	fmt.Fprint(out, ans.Report)
	switch {
	case ans.Outcome == httpapi.SyncRefused:
		return true, fmt.Errorf("%s\nif CloudStack's listing is right (the VMs really are gone), run again with --force", ans.Error)
	case ans.Error != "":
		return true, errors.New(ans.Error)
	}
	return true, nil
}

// syncForKeaExport is kea-export's sync (keaExportSync): the same
// reconciliation as the sync command, on the store kea-export opened, its
// report in counts on out.
func syncForKeaExport(ctx context.Context, cfg *config.Config, st *allocator.Store, out io.Writer) error {
	if why := cfg.API.WhyNoSync(); why != "" {
		return fmt.Errorf("nothing to sync from: %s", why)
	}
	rep, err := st.Sync(ctx, cfg.Pools(), daemon.NewInventory(cfg, daemon.NewLogger(cfg.Log, out)), daemon.SyncOptions(cfg))
	var refused *allocator.RefusedError
	if err == nil || errors.As(err, &refused) {
		report.Sync(out, rep, cfg, true)
	}
	return err
}
