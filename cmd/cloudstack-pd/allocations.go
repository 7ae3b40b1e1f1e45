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
(http.listen, GET /v1/allocations page by page, the same fields), and when
serve offers none, the command says so and exits 1. Either way each line
is printed as it is read: the table is never held whole, whatever its size.`,
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
	// Allocations are printed as they are read, from the store or page by
	// page from the server: the table is never held whole.
	var sink allocationSink
	if asJSON {
		sink = &jsonArray{out: out}
	} else {
		sink = report.NewAllocationWriter(out)
	}
	err = storeAllocations(cfg, stderr, sink.Write)
	if errors.Is(err, allocator.ErrLocked) && cfg.HTTP.Listen != "" {
		// serve holds the store: ask it.
		herr := httpapi.EachAllocation(cfg.HTTP.Listen, func(a httpapi.Allocation) error { return sink.Write(&a) })
		if herr != nil {
			err = fmt.Errorf("%w\n(asking the running server instead failed: %v)", err, herr)
		} else {
			err = nil
			fmt.Fprintf(stderr, "the store is held by the running server: table read from http://%s/v1/allocations\n", cfg.HTTP.Listen)
		}
	}
	if err != nil {
		return err
	}
	return sink.Close()
}

// allocationSink prints allocations one at a time.
type allocationSink interface {
	Write(*httpapi.Allocation) error
	Close() error
}

// jsonArray prints one JSON array, indented as encoding/json's Encoder
// with SetIndent("", "  ") would, one element at a time.
type jsonArray struct {
	out io.Writer
	n   int
}

func (j *jsonArray) Write(v *httpapi.Allocation) error {
	b, err := json.MarshalIndent(v, "  ", "  ")
	if err != nil {
		return err
	}
	sep := ",\n  "
	if j.n == 0 {
		sep = "[\n  "
	}
	j.n++
	if _, err := io.WriteString(j.out, sep); err != nil {
		return err
	}
	_, err = j.out.Write(b)
	return err
}

func (j *jsonArray) Close() error {
	end := "\n]\n"
	if j.n == 0 {
		end = "[]\n"
	}
	_, err := io.WriteString(j.out, end)
	return err
}

// storeAllocations reads the table from the store, configured pools or
// not, and calls emit with the HTTP API's view of each allocation, sorted
// by pool and prefix, one at a time.
func storeAllocations(cfg *config.Config, stderr io.Writer, emit func(*httpapi.Allocation) error) error {
	st, err := openReadOnly(cfg, "allocations", askServer)
	if err != nil {
		return err
	}
	defer st.Close()
	pools := cfg.Pools()
	byName := map[string]*allocator.Pool{}
	for i := range pools {
		byName[pools[i].Name] = &pools[i]
	}
	orphaned := map[string]int{}
	err = st.View(pools, func(tx *allocator.Tx) error {
		for _, name := range tx.StoredPools() { // in byte order
			p := byName[name]
			if err := tx.ForEachByPrefix(name, func(a allocator.Allocation) error {
				if p == nil {
					orphaned[name]++
				}
				v := httpapi.AllocationOf(&a, p)
				return emit(&v)
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(orphaned) > 0 {
		fmt.Fprintf(stderr, "warning: allocations of pools that are not configured (kept, not served): %v\n", orphaned)
	}
	return nil
}
