package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kea"
	"github.com/cloudstack-pd/cloudstack-pd/keaexport"
	"github.com/cloudstack-pd/cloudstack-pd/server/config"
)

// keaExportSync, when not nil, brings the store up to date with CloudStack
// before kea-export writes the table out, as the old generator listed the
// VMs on every run. It writes its report to out (standard error: standard
// output carries the Kea config). It is nil in builds without the
// CloudStack sync; kea-export then needs --offline.
var keaExportSync func(ctx context.Context, cfg *config.Config, st *allocator.Store, out io.Writer) error

// errKeaExportNoSync is returned by kea-export without --offline when the
// build has no CloudStack sync.
var errKeaExportNoSync = errors.New("syncing from CloudStack before export is not available in this build; run with --offline to export the stored table")

type keaExportFlags struct {
	config, keacfg, output string
	offline                bool
	changedExitCode        int
}

func newKeaExportCmd() *cobra.Command {
	var f keaExportFlags
	cmd := &cobra.Command{
		Use:   "kea-export",
		Short: "Write the allocation table as an ISC Kea DHCPv6 config (replaces the old generator)",
		Long: `Kea-export is for sites that keep ISC Kea as their DHCPv6 server: it
replaces the old generator script (cloudstack-kea-config), taking the same
--config and --keacfg, and the old config.json unchanged.

First it adopts the reservations of --keacfg that the store does not hold,
exactly as 'cloudstack-pd import-kea' would, so that no reservation Kea
serves is ever renumbered (a missing store is created for them; with
--offline they are exported without being written to the store). If one
would move (the store gives its MAC another prefix, or its prefix to
another MAC, or no pool has its subnet's interface-id), it writes nothing
and names each conflict. Then it syncs the store from CloudStack (unless
--offline: then it exports the stored table as it is; builds without the
CloudStack sync need --offline), and prints the Kea config given by
--keacfg with every key kept, except:

  Dhcp6.subnet6   one entry per mapping entry, in mapping-key order:
                  "subnet" = the mapping's ip6-cidr, "interface-id",
                  "reservations-in-subnet": true and
                  "reservations-out-of-pool": true (so that no setting
                  inherited from Dhcp6 or a shared network can switch the
                  reservations off), "id", and
                  "reservations": one per active or gone allocation, in
                  prefix order: {"hw-address", "prefixes": [prefix],
                  "ip-addresses": [the NIC's IPv6 address, when known]}.
                  A --keacfg subnet6 entry with the same subnet is reused
                  with its other keys (option-data, pools, …); entries no
                  mapping matches are left out, as the old script did.
                  Ids: a reused entry keeps its id, or the id Kea numbered
                  it with when it had none; new entries take the lowest
                  unused id. Kea ties leases to subnet ids: pass the
                  previous output as --keacfg (as in the second example),
                  so that a new pod never renumbers the others.
  reservation-mode                  dropped at every level (Kea 2.6 refuses
                                    it), replaced by the keys Kea 2.2
                                    translates it into, with a warning
  Dhcp6.mac-sources                 server.mac-sources of --config
  Dhcp6.host-reservation-identifiers   made to include hw-address

The same table and files always give the same bytes (keys sorted, two-space
indent). Comments in --keacfg are not carried over.

It refuses, naming each problem and writing nothing, a config with a mapping
without ip6-cidr, an empty or duplicate interface-id, overlapping subnets, a
prefix outside its pool or misaligned, a MAC or prefix reserved twice, or
two subnets with one id: Kea accepts most of these and then misroutes.

Without --output the config goes to standard output. With --output it is
written atomically (a temporary file in the same folder, fsync, rename): a
failed run leaves the old file as it was, and a file whose content would not
change is not touched at all. A new file gets the mode of --keacfg; a
replaced one keeps its mode and owner. Messages go to standard error, ending
with "FILE written" or "FILE unchanged".

Exit status: 0 on success (written, unchanged, or printed); 1 on any error
(nothing written); with --changed-exit-code N (2 to 125), N when --output
was written because its content changed, so that a script can reload Kea
only then.

A run that created the store and then failed removes it again.
'kea-diff OLD NEW' checks that no reservation moved between two configs.

--offline opens the store read-only. A running 'cloudstack-pd serve' holds
the store exclusively, so kea-export fails with "locked" there: run it where
Kea, not cloudstack-pd, serves.`,
		Example: `  # As the old script, from the stored table:
  cloudstack-pd kea-export --config config.json --keacfg /etc/kea/kea-dhcp6.conf --offline

  # Rewrite Kea's config in place and reload Kea only when it changed:
  cloudstack-pd kea-export -c config.json --keacfg /etc/kea/kea-dhcp6.conf \
      --output /etc/kea/kea-dhcp6.conf --offline --changed-exit-code 3
  case $? in 0) ;; 3) kea-dhcp6 -t /etc/kea/kea-dhcp6.conf && systemctl reload kea-dhcp6-server ;; *) exit 1 ;; esac`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runKeaExport(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	addConfigFlag(cmd, &f.config)
	fl := cmd.Flags()
	fl.StringVar(&f.keacfg, "keacfg", "/etc/kea/kea-dhcp6.conf", "the Kea DHCPv6 config to start from (every key is kept but subnet6, mac-sources, host-reservation-identifiers)")
	fl.StringVarP(&f.output, "output", "o", "", "write the config to this file atomically instead of standard output")
	fl.BoolVar(&f.offline, "offline", false, "do not sync from CloudStack: export the stored table (the store is opened read-only)")
	fl.IntVar(&f.changedExitCode, "changed-exit-code", 0, "exit with this status (2 to 125) when --output was written because its content changed; 0: exit 0")
	return cmd
}

// keaExportChanged is the outcome "--output changed" when
// --changed-exit-code asks for a status of its own.
type keaExportChanged struct {
	path string
	code int
}

func (e *keaExportChanged) Error() string {
	return fmt.Sprintf("%s written: its content changed (exit status %d, as --changed-exit-code asks)", e.path, e.code)
}

func (e *keaExportChanged) ExitCode() int { return e.code }

// runKeaExport exports the table: the Kea config to stdout (or f.output),
// messages to stderr. A store it created and then failed on is removed.
func runKeaExport(ctx context.Context, stdout, stderr io.Writer, f keaExportFlags) (err error) {
	if f.changedExitCode != 0 && (f.changedExitCode < 2 || f.changedExitCode > 125) {
		return fmt.Errorf("--changed-exit-code %d: use 2 to 125 (0 and 1 mean success and failure)", f.changedExitCode)
	}
	if f.changedExitCode != 0 && f.output == "" {
		return errors.New("--changed-exit-code needs --output")
	}
	if !f.offline && keaExportSync == nil {
		return errKeaExportNoSync
	}
	cfg, err := config.Load(f.config)
	if err != nil {
		return err
	}
	src, err := kea.Load(f.keacfg)
	if err != nil {
		return err
	}
	for _, w := range src.Warnings {
		fmt.Fprintf(stderr, "warning: %s: %s\n", f.keacfg, w)
	}

	st, err := keaExportOpen(cfg, f.offline)
	if err != nil {
		return err
	}
	defer func() {
		var changed *keaExportChanged
		if err != nil && !errors.As(err, &changed) {
			_ = st.Discard() // removes a store this run created for nothing
		} else if cerr := st.Close(); err == nil {
			err = cerr
		}
	}()
	kept, err := keaExportAdopt(st, cfg, src, f.offline, stderr, time.Now())
	if err != nil {
		return err
	}
	tbl, err := keaExportTable(ctx, cfg, st, f.offline, stderr)
	if err != nil {
		return err
	}
	if tbl.Len()+len(kept) == 0 {
		fmt.Fprintf(stderr, "warning: the table in %s holds no allocation: the export has no reservation\n", cfg.State)
	}
	res, err := kea.Export(src, keaexport.Subnets(tbl, kept...), kea.ExportOptions{MACSources: cfg.Server.MACSources})
	if err != nil {
		return err
	}
	for _, w := range append(res.Warnings, keaexport.LifetimeWarnings(src, cfg)...) {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	for _, s := range res.Subnets {
		from := "new entry"
		if s.Source != "" {
			from = "reuses " + s.Source
		}
		fmt.Fprintf(stderr, "subnet6 id %d (%s) %s interface-id %q, mapping %s: %d reservation(s), %d added, %d removed (%s)\n",
			s.ID, s.IDFrom, s.Subnet, s.InterfaceID, s.Name, s.Reservations, s.Added, s.Removed, from)
	}

	if f.output == "" {
		_, err := stdout.Write(res.Data)
		return err
	}
	mode := fs.FileMode(0o644)
	if fi, err := os.Stat(f.keacfg); err == nil {
		mode = fi.Mode().Perm()
	}
	changed, err := keaexport.WriteFile(f.output, res.Data, mode, os.Rename)
	if err != nil {
		return err
	}
	if !changed {
		fmt.Fprintf(stderr, "%s unchanged\n", f.output)
		return nil
	}
	fmt.Fprintf(stderr, "%s written\n", f.output)
	if f.changedExitCode != 0 {
		return &keaExportChanged{path: f.output, code: f.changedExitCode}
	}
	return nil
}

// keaExportOpen opens the store: with offline read-only (it must exist),
// else for writing, creating it when there is none (the old generator
// needed no store: its state was the --keacfg, which is adopted first).
func keaExportOpen(cfg *config.Config, offline bool) (*allocator.Store, error) {
	if offline {
		st, err := openReadOnly(cfg, "kea-export --offline", "run kea-export where Kea, not cloudstack-pd, serves")
		if errors.Is(err, allocator.ErrNoStore) {
			return nil, fmt.Errorf("%w\nwithout --offline, kea-export creates the store and adopts the --keacfg reservations; 'cloudstack-pd import-kea' adopts them alone", err)
		}
		return st, err
	}
	st, err := openState(cfg, "kea-export", storeCreate)
	if errors.Is(err, allocator.ErrLocked) {
		return nil, fmt.Errorf("%w\nkea-export cannot read the store while 'cloudstack-pd serve' holds it: run kea-export where Kea, not cloudstack-pd, serves", err)
	}
	return st, err
}

// keaExportAdopt adopts the reservations of --keacfg (src) that the store
// does not hold, exactly as import-kea does, so that a reservation Kea
// hands out never moves: not by a sync on a fresh or stale store, not by
// an export that leaves it out. Any conflict (a reservation the store
// gives another prefix, a prefix the store gives another MAC, …) refuses
// the export, naming each one. With offline nothing is written: the
// reservations to adopt are returned, to be exported with the table.
func keaExportAdopt(st *allocator.Store, cfg *config.Config, src *kea.Config, offline bool, stderr io.Writer, now time.Time) ([]allocator.Allocation, error) {
	var rep *allocator.ImportReport
	pools := cfg.Pools()
	adopt := func(tx *allocator.Tx) (err error) {
		if offline {
			rep, err = allocator.PlanImport(tx, src, now)
		} else {
			rep, err = allocator.Import(tx, src, now)
		}
		return err
	}
	var err error
	if offline {
		err = st.View(pools, adopt)
	} else {
		err = st.Update(pools, adopt)
	}
	if errors.Is(err, allocator.ErrImportConflicts) && rep != nil {
		var b strings.Builder
		fmt.Fprintf(&b, "--keacfg %s: %d reservation(s) would move or cannot be kept, nothing exported and nothing written:", src.Path, len(rep.Conflicts))
		for _, c := range rep.Conflicts {
			fmt.Fprintf(&b, "\n  %s", c)
		}
		for _, sk := range rep.SkippedSubnets {
			if sk.WithPrefixes > 0 {
				fmt.Fprintf(&b, "\n  %s", sk)
			}
		}
		fmt.Fprintf(&b, "\nkea-export adopts the --keacfg reservations the store (state %s) does not hold, as 'cloudstack-pd import-kea' does, "+
			"so that no VM's prefix moves: is --keacfg the config Kea serves, and state the store that made it? (%s)", cfg.State, "docs/migration-from-kea.md")
		return nil, errors.New(b.String())
	}
	if err != nil {
		return nil, fmt.Errorf("adopt --keacfg %s: %w", src.Path, err)
	}
	for _, w := range rep.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if len(rep.Added) == 0 {
		return nil, nil
	}
	if !offline {
		fmt.Fprintf(stderr, "--keacfg %s: %d reservation(s) the store did not hold adopted into %s\n", src.Path, len(rep.Added), cfg.State)
		return nil, nil
	}
	fmt.Fprintf(stderr, "--keacfg %s: %d reservation(s) the store does not hold are kept in the export (--offline: the store is not written; 'cloudstack-pd import-kea' adopts them)\n", src.Path, len(rep.Added))
	kept := make([]allocator.Allocation, len(rep.Added))
	for i, it := range rep.Added {
		kept[i] = it.Allocation
	}
	return kept, nil
}

// keaExportTable reads the table to export from st: after a sync, or with
// offline as stored.
func keaExportTable(ctx context.Context, cfg *config.Config, st *allocator.Store, offline bool, stderr io.Writer) (*allocator.Table, error) {
	if !offline {
		if err := keaExportSync(ctx, cfg, st, stderr); err != nil {
			return nil, fmt.Errorf("sync from CloudStack: %w (nothing exported; --offline exports the stored table)", err)
		}
	}
	tbl, rep, err := st.LoadTable(cfg.Pools())
	if err != nil {
		return nil, explainStoreError(err, cfg, "kea-export", storeRead)
	}
	if pools := rep.OrphanedByPool(); pools != nil {
		fmt.Fprintf(stderr, "warning: the store holds allocations of pools that are not configured; they are not exported: %v\n", pools)
	}
	return tbl, nil
}
