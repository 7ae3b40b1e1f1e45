package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/control"
	"github.com/cloudstack-pd/cloudstack-pd/daemon"
	"github.com/cloudstack-pd/cloudstack-pd/statestore"
)

func newBackupCmd() *cobra.Command {
	var cfgPath, to string
	cmd := &cobra.Command{
		Use:   "backup --to FILE",
		Short: "Write a consistent, checked copy of the store, also while serve runs",
		Long: `Backup writes a consistent copy of the store (state) to FILE: while serve
runs, the server writes it through its control socket (bbolt's hot copy: one
read transaction, serve goes on answering and writing); with no server
running, the store is opened read-only.

The copy is written under a temporary name beside FILE, synced, opened and
checked as 'check' does (a copy that does not open or read is refused; the
violations it finds are the store's own, printed as warnings), and only then
renamed to FILE, replacing an older one: when backup says done, FILE is a
store that opens and has been checked. FILE is written by the process
that holds the store: while serve runs, by its user, so FILE's folder must
be writable by it (/var/lib/cloudstack-pd/backups, say).

Restore a copy with 'cloudstack-pd restore --from FILE' while serve is
stopped (docs/operations.md).`,
		Example: `  cloudstack-pd backup --to /var/lib/cloudstack-pd/backups/state-$(date +%F).db`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBackup(cmd.Context(), cmd.OutOrStdout(), cfgPath, to)
		},
	}
	addConfigFlag(cmd, &cfgPath)
	cmd.Flags().StringVar(&to, "to", "", "the file to write (required)")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

func runBackup(ctx context.Context, out io.Writer, cfgPath, to string) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	if to, err = filepath.Abs(to); err != nil {
		return err
	}
	var rep allocator.BackupReport
	asked, err := askRunningServer(ctx, cfg, control.Request{Action: control.ActionBackup, To: to, Note: "backup --to " + to}, &rep)
	if !asked && err == nil {
		var st *allocator.Store
		st, err = statestore.Open(cfg, "backup", statestore.Read)
		if errors.Is(err, allocator.ErrLocked) {
			return storeHeldError(err, cfg, "backup")
		}
		if err != nil {
			return err
		}
		defer st.Close()
		var r *allocator.BackupReport
		if r, err = statestore.Backup(st, cfg, to); r != nil {
			rep = *r
		}
	}
	if err != nil {
		return err
	}
	for _, v := range rep.Violations {
		fmt.Fprintf(out, "warning: the store (and so the copy) has a violation: %s\n", v)
	}
	_, err = fmt.Fprintf(out, "backup %s: %d bytes, %d allocation(s), %d history event(s); opened and checked\n", rep.Path, rep.Bytes, rep.Allocations, rep.Events)
	return err
}

func newRestoreCmd() *cobra.Command {
	var (
		cfgPath, from string
		yes, force    bool
	)
	cmd := &cobra.Command{
		Use:   "restore --from FILE --yes",
		Short: "Replace the store with a backup; serve must be stopped",
		Long: `Restore replaces the store (state) with the backup FILE. It refuses while a
server answers on the control socket or any process holds the store: stop
serve first, restore, start serve again.

FILE is opened read-only and checked against the config's pools first: a
damaged file, or one that is not a store, is refused; one with violations
(a pool no longer mapped, …) is refused unless --force. The store in place
is not deleted: it is moved to <state>.before-restore-<UTC time>. The copy
is written under a temporary name, synced, then renamed into place.

Everything written since the backup (allocations, the history) is lost: the
first sync after the restore brings the allocations back in line with
CloudStack (new VMs get the lowest free prefixes, which may differ from
those they had after the backup).`,
		Example: `  systemctl stop cloudstack-pd
  cloudstack-pd restore --from /var/lib/cloudstack-pd/backups/state-2026-03-03.db --yes
  systemctl start cloudstack-pd`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRestore(cmd.Context(), cmd.OutOrStdout(), cfgPath, from, yes, force)
		},
	}
	addConfigFlag(cmd, &cfgPath)
	cmd.Flags().StringVar(&from, "from", "", "the backup to restore (required)")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do it (required: the store in place is replaced)")
	cmd.Flags().BoolVar(&force, "force", false, "restore a backup that check finds violations in")
	_ = cmd.MarkFlagRequired("from")
	return cmd
}

func runRestore(ctx context.Context, out io.Writer, cfgPath, from string, yes, force bool) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	var st daemon.Status
	if asked, err := askRunningServer(ctx, cfg, control.Request{Action: control.ActionPing}, &st); asked {
		if err != nil {
			return fmt.Errorf("something answers on the control socket %s (%v): stop serve before restoring", cfg.Control.Socket, err)
		}
		return fmt.Errorf("serve is running (pid %d, state %s): stop it first (systemctl stop cloudstack-pd), restore, then start it", st.PID, st.State)
	}
	if !yes {
		return fmt.Errorf("restore replaces the store %s with %s: give --yes to do it", cfg.State, from)
	}
	rep, err := statestore.Restore(cfg, from, force, cliClock.Now())
	if rep != nil {
		for _, v := range rep.Violations {
			fmt.Fprintf(out, "violation: %s\n", v)
		}
	}
	if errors.Is(err, allocator.ErrLocked) {
		return fmt.Errorf("%w\nstop serve (and any sync or import) before restoring", err)
	}
	if err != nil {
		return err
	}
	if rep.Kept != "" {
		fmt.Fprintf(out, "the store that was in place is kept as %s\n", rep.Kept)
	}
	_, err = fmt.Fprintf(out, "restored %s from %s: %d allocation(s), %d history event(s)\n", rep.State, rep.From, rep.Allocations, rep.Events)
	return err
}
