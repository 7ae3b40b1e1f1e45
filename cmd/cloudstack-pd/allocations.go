package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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
	st, err := openState(cfg, what, storeRead)
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
		remote, herr := serverAllocations(cfg)
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

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MAC\tPREFIX\tSTATE\tSINCE\tPOOL\tINTERFACE-ID\tVM-NAME\tVM-ID\tNIC-ID\tIP6")
	counts := map[allocator.State]int{}
	for _, v := range views {
		counts[v.State]++
		state := string(v.State)
		switch v.State {
		case allocator.StateGone:
			state += " " + stamp(v.GoneAt)
		case allocator.StateQuarantined:
			state += " " + stamp(v.QuarantinedAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.MAC, v.Prefix, state, stamp(v.Since), v.Pool,
			dash(v.InterfaceID), dash(v.VMName), dash(v.VMID), dash(v.NICID), dash(v.IP6))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%d allocation(s): %d active, %d gone, %d quarantined\n", len(views),
		counts[allocator.StateActive], counts[allocator.StateGone], counts[allocator.StateQuarantined])
	return err
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
	byName := map[string]*allocator.Pool{}
	for i := range pools {
		byName[pools[i].Name] = &pools[i]
	}
	orphaned := map[string]int{}
	views := make([]httpapi.Allocation, 0, len(allocs))
	for i := range allocs {
		p := byName[allocs[i].Pool]
		if p == nil {
			orphaned[allocs[i].Pool]++
		}
		views = append(views, httpapi.AllocationOf(&allocs[i], p))
	}
	if len(orphaned) > 0 {
		fmt.Fprintf(stderr, "warning: allocations of pools that are not configured (kept, not served): %v\n", orphaned)
	}
	return views, nil
}

// serverAllocations asks the running server's HTTP API for the table.
func serverAllocations(cfg *config.Config) ([]httpapi.Allocation, error) {
	host, port, _ := net.SplitHostPort(cfg.HTTP.Listen) // validated by config.Load
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	url := "http://" + net.JoinHostPort(host, port) + "/v1/allocations"
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, fmt.Errorf("its HTTP API does not answer: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var views []httpapi.Allocation
	if err := json.NewDecoder(resp.Body).Decode(&views); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return views, nil
}

func stamp(t *time.Time) string {
	if t == nil || t.IsZero() {
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
