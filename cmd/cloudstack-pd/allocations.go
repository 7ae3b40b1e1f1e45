package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/server/config"
	"github.com/cloudstack-pd/cloudstack-pd/server/httpapi"
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
NIC: VM name, VM id, NIC id, IPv6 address. Allocations of pools that are no
longer configured are listed too (kept, not served), with a warning.

--json prints one JSON array of objects, the fields of the HTTP API's
/v1/allocations:

  [{"mac": "06:32:b2:00:04:79", "prefix": "2001:db8:200::/60",
    "pool": "77828509-…", "interface-id": "VLAN2701", "vm-id": "…",
    "vm-name": "web-1", "nic-id": "…", "state": "active",
    "since": "2026-01-02T03:04:05Z", "gone-at": null, "quarantined-at": null,
    "ip6": "2001:db8:100:0:432:b2ff:fe00:479", "source": "sync"}]

The store is opened read-only. While serve runs it holds the store's lock,
and this command says so and exits 1: ask the running server instead, over
its local HTTP API (GET /v1/allocations, same fields) where serve offers
it.`,
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
// not exist or that a running server holds.
func openReadOnly(cfg *config.Config, what string) (*allocator.Store, error) {
	if _, err := os.Stat(cfg.State); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("store %s does not exist: there is no table yet (serve, sync and import-kea create it); is state right in %s?", cfg.State, cfg.Path)
	}
	st, err := allocator.Open(cfg.State, allocator.StoreOptions{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, allocator.ErrLocked) {
		return nil, fmt.Errorf("%w\n%s reads the store, and cannot while 'cloudstack-pd serve' (or a sync or import) holds it: "+
			"ask the running server over its local HTTP API (GET /v1/allocations) where serve offers it", err, what)
	}
	return st, err
}

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
	st, err := openReadOnly(cfg, "allocations")
	if err != nil {
		return err
	}
	defer st.Close()
	pools := cfg.Pools()
	allocs, err := readAllocations(st, pools)
	if err != nil {
		return err
	}
	byName := map[string]*allocator.Pool{}
	for i := range pools {
		byName[pools[i].Name] = &pools[i]
	}
	orphaned := map[string]int{}
	for _, a := range allocs {
		if byName[a.Pool] == nil {
			orphaned[a.Pool]++
		}
	}
	if len(orphaned) > 0 {
		fmt.Fprintf(stderr, "warning: allocations of pools that are not configured (kept, not served): %v\n", orphaned)
	}

	if asJSON {
		views := make([]httpapi.Allocation, 0, len(allocs))
		for i := range allocs {
			views = append(views, httpapi.AllocationOf(&allocs[i], byName[allocs[i].Pool]))
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(views)
	}

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MAC\tPREFIX\tSTATE\tSINCE\tPOOL\tINTERFACE-ID\tVM-NAME\tVM-ID\tNIC-ID\tIP6")
	counts := map[allocator.State]int{}
	for i := range allocs {
		a := &allocs[i]
		counts[a.State]++
		state := string(a.State)
		switch a.State {
		case allocator.StateGone:
			state += " " + stamp(a.GoneAt)
		case allocator.StateQuarantined:
			state += " " + stamp(a.QuarantinedAt)
		}
		iid := "(not configured)"
		if p := byName[a.Pool]; p != nil {
			iid = p.InterfaceID
		}
		ip6 := ""
		if a.IP6.IsValid() {
			ip6 = a.IP6.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.MAC, a.Prefix, state, stamp(a.Since), a.Pool, iid,
			dash(a.VMName), dash(a.VMID), dash(a.NICID), dash(ip6))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%d allocation(s): %d active, %d gone, %d quarantined\n", len(allocs),
		counts[allocator.StateActive], counts[allocator.StateGone], counts[allocator.StateQuarantined])
	return err
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
