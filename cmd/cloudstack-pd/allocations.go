package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cloudstack-pd/cloudstack-pd/statestore"
	"io"
	"slices"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/httpapi"
	"github.com/cloudstack-pd/cloudstack-pd/report"
)

func newAllocationsCmd() *cobra.Command {
	var (
		cfgPath string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "allocations",
		Short: "Print the allocation table: which MAC has which prefix",
		Long: `Allocations prints the allocation table of the store (state): one line
per allocation, sorted by pool and prefix, with its MAC, prefix, pool
(mapping key) and interface-id, state (active; gone, still served; or
quarantined, not served) and since when, and what CloudStack said of its
NIC: VM name, VM id, NIC id, IPv6 address (--json adds the pool's ip6-cidr
as stored with the allocation). Allocations of pools that are no
longer configured are listed too (kept, not served), with a warning.

--json prints one JSON array of objects, the fields of the HTTP API's
/v1/allocations:

  [{"mac": "06:32:b2:00:04:79", "prefix": "2001:db8:200::/60",
    "pool": "77828509-…", "interface-id": "VLAN2701", "vm-id": "…",
    "vm-name": "web-1", "nic-id": "…", "state": "active",
    "since": "2026-01-02T03:04:05Z", "gone-at": null, "quarantined-at": null,
    "ip6": "2001:db8:100:0:432:b2ff:fe00:479",
    "ip6-cidr": "2001:db8:100::/64", "source": "sync"}]

The store is opened read-only. While serve runs it holds the store's lock;
then the table is read from the running server's local HTTP API
(http.listen, GET /v1/allocations, the same fields), and when serve offers
none, the command says so and exits 1.`,
		Example: `  cloudstack-pd allocations --config /etc/cloudstack-pd/config.yaml
  cloudstack-pd allocations -c /etc/cloudstack-pd/config.yaml --json | jq '.[] | select(.state != "active")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAllocations(cmd.OutOrStdout(), cmd.ErrOrStderr(), cfgPath, asJSON)
		},
	}
	addConfigFlag(cmd, &cfgPath)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON array of objects")
	return cmd
}

// openReadOnly opens the store for reading, explaining a store that does
// not exist, is refused or damaged, or that a running server holds;
// instead says what to do then. It never creates a file.
func openReadOnly(cfg *config.Config, what, instead string) (*allocator.Store, error) {
	st, err := statestore.Open(cfg, what, statestore.Read)
	if errors.Is(err, allocator.ErrLocked) {
		return nil, fmt.Errorf("%w\n%s reads the store, and cannot while 'cloudstack-pd serve' (or a sync or import) holds it: %s", err, what, instead)
	}
	return st, err
}

// askServer is what to do instead of reading a store that serve holds.
const askServer = "ask the running server over its local HTTP API (GET /v1/allocations) where serve offers it"

// readAllocations returns every allocation of the store, configured
// pools or not, sorted by pool and prefix.
func readAllocations(st *allocator.Store, pools []allocator.Pool) ([]allocator.Allocation, error) {
	var out []allocator.Allocation
	err := st.View(pools, func(tx *allocator.Tx) error {
		for _, name := range tx.StoredPools() {
			if err := tx.ForEach(name, func(a allocator.Allocation) error {
				out = append(out, a)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	slices.SortFunc(out, func(a, b allocator.Allocation) int {
		return cmp.Or(cmp.Compare(a.Pool, b.Pool), a.Prefix.Addr().Compare(b.Prefix.Addr()))
	})
	return out, err
}

func runAllocations(out, stderr io.Writer, cfgPath string, asJSON bool) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	views, err := storeAllocations(cfg, stderr)
	if errors.Is(err, allocator.ErrLocked) && cfg.HTTP.Listen != "" {
		// serve holds the store: ask it.
		remote, herr := httpapi.GetAllocations(cfg.HTTP.Listen)
		if herr != nil {
			err = fmt.Errorf("%w\n(asking the running server instead failed: %v)", err, herr)
		} else {
			views, err = remote, nil
			fmt.Fprintf(stderr, "the store is held by the running server: table read from http://%s/v1/allocations\n", cfg.HTTP.Listen)
		}
	}
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(views)
	}

	return report.Allocations(out, views)
}

// storeAllocations reads the table from the store, as the HTTP API's views.
func storeAllocations(cfg *config.Config, stderr io.Writer) ([]httpapi.Allocation, error) {
	st, err := openReadOnly(cfg, "allocations", askServer)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	pools := cfg.Pools()
	allocs, err := readAllocations(st, pools)
	if err != nil {
		return nil, err
	}
	views, orphaned := httpapi.AllocationsOf(allocs, pools)
	if len(orphaned) > 0 {
		fmt.Fprintf(stderr, "warning: allocations of pools that are not configured (kept, not served): %v\n", orphaned)
	}
	return views, nil
}
