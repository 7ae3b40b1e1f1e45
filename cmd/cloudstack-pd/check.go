package main

import (
	"fmt"
	"github.com/cloudstack-pd/cloudstack-pd/statestore"
	"io"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/config"
)

func newCheckCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Verify the store end to end; exit 1 on any violation",
		Long: `Check verifies the whole store (state) against itself and the config's
pools, and prints one line per violation:

  - a prefix allocated twice, or a MAC allocated twice;
  - a prefix outside its pool, of the wrong length or misaligned;
  - an allocation record that does not decode, names another MAC or pool
    than its key, or has an unknown state;
  - prefix-index and MAC-index entries without their allocation, and
    allocations missing from the indexes;
  - bindings and their prefix index out of step;
  - allocations of pools that are not configured (kept, not served;
    'pool forget NAME' quarantines them);
  - held prefixes (quarantined without an allocation) out of step with
    their pool's prefix index; history records that do not decode;
  - a missing or unknown schema;
  - a damaged file: truncated, or a page that does not read (bbolt's own
    check of every page); the message says what to do.

The exit status is 0 when there is none, 1 otherwise. The store is opened
read-only; while serve runs it holds the store's lock, and check says so.
After a crash (even kill -9 during a sync) the store holds either the table
before the sync or the one after it: check passes either way.`,
		Example: `  cloudstack-pd check --config /etc/cloudstack-pd/config.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCheck(cmd.OutOrStdout(), cfgPath)
		},
	}
	addConfigFlag(cmd, &cfgPath)
	return cmd
}

func runCheck(out io.Writer, cfgPath string) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	st, err := openReadOnly(cfg, "check", askServer)
	if err != nil {
		return err
	}
	defer st.Close()
	pools := cfg.Pools()
	lines, err := st.Check(pools)
	if err != nil {
		return statestore.Explain(err, cfg, "check", statestore.Read)
	}
	for _, l := range lines {
		fmt.Fprintln(out, l)
	}
	if len(lines) > 0 {
		return fmt.Errorf("store %s: %d violation(s)", st.Path(), len(lines))
	}
	allocs, err := readAllocations(st, pools)
	if err != nil {
		return err
	}
	bindings, err := st.Bindings()
	if err != nil {
		return err
	}
	counts := map[allocator.State]int{}
	for _, a := range allocs {
		counts[a.State]++
	}
	_, err = fmt.Fprintf(out, "store %s: no violation: %d allocation(s) (%d active, %d gone, %d quarantined) in %d pool(s), %d binding(s)\n",
		st.Path(), len(allocs), counts[allocator.StateActive], counts[allocator.StateGone], counts[allocator.StateQuarantined], len(pools), len(bindings))
	return err
}
