package main

import (
	"fmt"
	"github.com/cloudstack-pd/cloudstack-pd/statestore"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/kea"
	"github.com/cloudstack-pd/cloudstack-pd/report"
)

func newImportKeaCmd() *cobra.Command {
	var (
		cfgPath         string
		dryRun, verbose bool
	)
	cmd := &cobra.Command{
		Use:   "import-kea KEA.json",
		Short: "Adopt the prefix reservations of a Kea DHCPv6 config into the store",
		Long: `Import-kea reads a Kea DHCPv6 config, such as the one the old generator
(cloudstack-kea-config) printed, and adopts its reservations into the
allocation store (state), so that every VM keeps the prefix Kea gave it.

Each subnet6 (also inside shared-networks) is matched to the pool whose
interface-id equals the subnet's "interface-id"; each reservation's
"hw-address" gets its one "prefixes" entry, as an active allocation, with
"ip-addresses"[0] as the NIC's address. Kea's comments and extraneous commas
are accepted. Reservations without prefixes are ignored; subnets that match
no pool are listed as skipped.

Every conflict is collected before anything is written: a prefix outside its
pool, of the wrong length or misaligned; a prefix listed twice; a MAC listed
twice with different prefixes; a reservation without hw-address or with
several prefixes; reservations with prefixes in a subnet that matches no
pool; a prefix the store already gives another MAC; a MAC the store already
gives another prefix. If there is any, nothing is written, each conflict is
printed with its JSON path, and the exit status is 1. Otherwise all
allocations are written in one transaction.

Importing the same file again changes nothing: its reservations are then
"already present". Stop the server first: it holds the store's lock.`,
		Example: `  # See what would be adopted, then adopt it:
  cloudstack-pd import-kea --config /etc/cloudstack-pd/config.yaml --dry-run /etc/kea/kea-dhcp6.conf
  cloudstack-pd import-kea --config /etc/cloudstack-pd/config.yaml /etc/kea/kea-dhcp6.conf

  # The example files of the source tree:
  cloudstack-pd import-kea -c example/cloudstack-pd.yaml example/kea-dhcp6.conf`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImportKea(cmd.OutOrStdout(), cfgPath, args[0], dryRun, verbose, time.Now)
		},
	}
	addConfigFlag(cmd, &cfgPath)
	cmd.Flags().BoolVarP(&dryRun, "dry-run", "n", false, "check and report, write nothing (the store is opened read-only, or not at all if it does not exist)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "list every reservation added or already present")
	return cmd
}

// runImportKea imports keaPath into the store of the config at cfgPath,
// reporting to out; now is the clock (Since of the new allocations).
func runImportKea(out io.Writer, cfgPath, keaPath string, dryRun, verbose bool, now func() time.Time) (err error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	kcfg, err := kea.Load(keaPath)
	if err != nil {
		return err
	}
	pools := cfg.Pools()

	var (
		rep *allocator.ImportReport
		st  *allocator.Store
	)
	if dryRun {
		st, err = statestore.OpenDryRun(cfg, "import-kea --dry-run", true)
	} else {
		st, err = statestore.Open(cfg, "import-kea", statestore.Create)
	}
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = st.Discard() // removes a store this import created for nothing
		} else {
			err = st.Close()
		}
	}()
	rep, err = allocator.ImportInto(st, pools, kcfg, now(), dryRun)
	for _, w := range kcfg.Warnings {
		fmt.Fprintf(out, "warning: %s: %s\n", keaPath, w)
	}
	if rep != nil {
		report.Import(out, rep, st.Path(), dryRun, verbose)
	}
	if err != nil {
		return err
	}
	if !dryRun {
		// What the server will load: a last check that the store and the
		// config agree.
		tbl, _, err := st.LoadTable(pools)
		if err != nil {
			return fmt.Errorf("imported, but the table does not load: %w", err)
		}
		fmt.Fprintf(out, "store %s now holds %d allocation(s)\n", st.Path(), tbl.Len())
	}
	return nil
}
