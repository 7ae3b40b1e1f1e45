package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/cloudstack-pd/cloudstack-pd/statestore"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/kea"
	"github.com/cloudstack-pd/cloudstack-pd/keaexport"
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
	res, err := keaexport.Export(ctx, cfg, st, src, keaexport.Options{
		Offline: f.offline, Stderr: stderr, Now: time.Now(), Sync: keaExportSync,
		StoreError: func(err error) error { return statestore.Explain(err, cfg, "kea-export", statestore.Read) },
	})
	if err != nil {
		return err
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
	st, err := statestore.Open(cfg, "kea-export", statestore.Create)
	if errors.Is(err, allocator.ErrLocked) {
		return nil, fmt.Errorf("%w\nkea-export cannot read the store while 'cloudstack-pd serve' holds it: run kea-export where Kea, not cloudstack-pd, serves", err)
	}
	return st, err
}
