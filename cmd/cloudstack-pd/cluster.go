package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/cluster"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/statestore"
)

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Several servers sharing one table in etcd: status, migration from one server and back",
		Long: `With a cluster section in the config, the allocation table lives in etcd and
every server answers from it (docs/ha.md). These commands show the cluster
and move a table between a single server's store (state, bbolt) and etcd,
never renumbering a prefix.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newClusterStatusCmd(), newClusterMigrateCmd(), newClusterExportCmd())
	return cmd
}

// loadClusterConfig loads the config and insists it names a cluster.
func loadClusterConfig(path, what string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if !cfg.Cluster.Enabled() {
		return nil, fmt.Errorf("%s: %s names no cluster: set cluster.etcd.endpoints (an etcd cluster) or cluster.embedded (a member in each server); see docs/ha.md", what, path)
	}
	return cfg, nil
}

func newClusterStatusCmd() *cobra.Command {
	var (
		cfgPath string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the etcd members, the syncer, the table's revision and each server's lag",
		Long: `Status asks etcd for its members (reachable or not, which one leads raft),
the elected syncer, the revision of the table, and what each running server
published in the last seconds: the revision of the table it answers from (its
lag behind the cluster), its table's size, whether it follows etcd, and its
last sync. A server that stopped leaves the list when its lease expires
(cluster.lease-ttl).`,
		Example: `  cloudstack-pd cluster status -c /etc/cloudstack-pd/config.yaml
  cloudstack-pd cluster status -c /etc/cloudstack-pd/config.yaml --json | jq .syncer`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadClusterConfig(cfgPath, "cluster status")
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 3*cfg.Cluster.Timeout)
			defer cancel()
			node, err := cluster.Connect(ctx, cfg.Cluster)
			if err != nil {
				return err
			}
			defer node.Close()
			st, err := cluster.ReadStatus(ctx, node.Client, node.Prefix)
			if err != nil {
				return fmt.Errorf("cluster status from %s: %w", node.Where(), err)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printClusterStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	addConfigFlag(cmd, &cfgPath)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

func printClusterStatus(out io.Writer, st *cluster.Status) {
	syncer := st.Syncer
	if syncer == "" {
		syncer = "(none elected)"
	}
	fmt.Fprintf(out, "table:    prefix %s, revision %d, %d keys\n", st.Prefix, st.Revision, st.TableKeys)
	fmt.Fprintf(out, "syncer:   %s\n", syncer)
	if len(st.Holds) > 0 {
		fmt.Fprintf(out, "held by:  %s (servers do not sync meanwhile)\n", strings.Join(st.Holds, ", "))
	}
	fmt.Fprintln(out, "\netcd members:")
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tCLIENT URLS\tSTATE\tRAFT LEADER\tDB SIZE")
	for _, m := range st.Members {
		state := "up"
		if !m.Reachable {
			state = "UNREACHABLE: " + m.Err
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%v\t%d\n", m.Name, strings.Join(m.ClientURLs, ","), state, m.RaftLeader, m.DBSize)
	}
	tw.Flush()
	fmt.Fprintln(out, "\nservers:")
	tw = tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tSYNCER\tREVISION\tLAG\tALLOCATIONS\tFOLLOWING\tLAST SYNC\tSEEN")
	for _, s := range st.Servers {
		last := "-"
		if !s.LastSync.IsZero() {
			last = s.LastSync.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "  %s\t%v\t%d\t%d\t%d\t%v\t%s\t%s ago\n", s.Name, s.Syncer, s.Revision, s.Lag, s.Allocations, s.Watching, last, s.Age.Round(100*time.Millisecond))
	}
	tw.Flush()
	if len(st.Servers) == 0 {
		fmt.Fprintln(out, "  (no server running)")
	}
}

func newClusterMigrateCmd() *cobra.Command {
	var (
		cfgPath string
		from    string
	)
	cmd := &cobra.Command{
		Use:   "migrate --from STATE.db",
		Short: "Copy a single server's store into the cluster's table, without renumbering",
		Long: `Migrate copies every key of a single server's bbolt store (allocations, their
indexes, bindings, the server DUID) into the cluster's table in etcd, byte for
byte: no prefix changes, and every server of the cluster answers with the same
server DUID as the single server did.

The cluster table is created when it does not exist. Keys it already holds
with the same value are kept (migrate can be run again, and completes a copy
that was cut short); when it holds any key with another value (another
server's table), migrate writes nothing and lists the conflicts. A copy cut
short leaves the table marked incomplete: serve refuses it and check reports
it until migrate is run again.

Migrate takes the syncer's role for its duration (servers of the cluster
keep answering, but do not sync meanwhile). The source store is only read;
stop the single server first so that nothing changes it meanwhile.`,
		Example: `  cloudstack-pd cluster migrate -c /etc/cloudstack-pd/config.yaml --from /var/lib/cloudstack-pd/state.db`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadClusterConfig(cfgPath, "cluster migrate")
			if err != nil {
				return err
			}
			src, err := statestore.OpenBolt(from, boltstore.Options{ReadOnly: true})
			if err != nil {
				bc := *cfg
				bc.State, bc.Cluster = from, config.Cluster{}
				return statestore.Explain(err, &bc, "cluster migrate", statestore.Read)
			}
			defer src.Close()
			dst, err := statestore.OpenCluster(cfg, "cluster migrate", statestore.Create)
			if err != nil {
				return err
			}
			return copyTable(cmd.OutOrStdout(), cmd.ErrOrStderr(), dst, src, cfg.Pools(), "cluster migrate")
		},
	}
	addConfigFlag(cmd, &cfgPath)
	cmd.Flags().StringVar(&from, "from", "", "the single server's store (its state file) to copy into the cluster (required)")
	_ = cmd.MarkFlagRequired("from")
	return cmd
}

func newClusterExportCmd() *cobra.Command {
	var (
		cfgPath string
		to      string
	)
	cmd := &cobra.Command{
		Use:   "export --to FILE",
		Short: "Write the cluster's table to a new bbolt store, for a rollback to a single server",
		Long: `Export copies every key of the cluster's table into a new bbolt store at FILE,
byte for byte: a single server given that file as its state answers exactly
what the cluster answered (same prefixes, same server DUID). FILE must not
exist; it appears only once the copy is complete and checked.`,
		Example: `  cloudstack-pd cluster export -c /etc/cloudstack-pd/config.yaml --to /var/lib/cloudstack-pd/state.db`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadClusterConfig(cfgPath, "cluster export")
			if err != nil {
				return err
			}
			if _, err := os.Stat(to); err == nil {
				return fmt.Errorf("cluster export: %s exists: export writes a new store only; move it away or name another file", to)
			}
			src, err := statestore.OpenCluster(cfg, "cluster export", statestore.Read)
			if err != nil {
				return err
			}
			defer src.Close()
			tmp := to + ".export-tmp"
			_ = os.Remove(tmp)
			dst, err := statestore.OpenBolt(tmp, boltstore.Options{Create: true})
			if err != nil {
				return fmt.Errorf("cluster export: create %s: %w", tmp, err)
			}
			start := time.Now()
			n, err := allocator.CopyInto(dst, src)
			var lines []string
			if err == nil {
				lines, err = dst.Check(cfg.Pools())
			}
			if cerr := dst.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				_ = os.Remove(tmp)
				return fmt.Errorf("cluster export: %w", err)
			}
			for _, l := range lines {
				fmt.Fprintln(cmd.OutOrStdout(), "check:", l)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster export: %d keys copied from %s in %s\n", n, src.Path(), time.Since(start).Round(time.Millisecond))
			if err := os.Link(tmp, to); err != nil {
				_ = os.Remove(tmp)
				return fmt.Errorf("cluster export: put %s in place: %w", to, err)
			}
			_ = os.Remove(tmp)
			fmt.Fprintf(cmd.ErrOrStderr(), "%s written\n", to)
			return nil
		},
	}
	addConfigFlag(cmd, &cfgPath)
	cmd.Flags().StringVar(&to, "to", "", "the new bbolt store to write (required; must not exist)")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// copyTable copies src into dst (allocator.CopyStore), checks dst and
// closes it, printing progress and the result.
func copyTable(out, stderr io.Writer, dst, src *allocator.Store, pools []allocator.Pool, what string) (err error) {
	defer func() {
		if cerr := dst.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("%s: close %s: %w", what, dst.Path(), cerr)
		}
	}()
	start := time.Now()
	rep, err := allocator.CopyStore(dst, src, func(n int) {
		fmt.Fprintf(stderr, "%s: %d keys copied (%s)\n", what, n, time.Since(start).Round(100*time.Millisecond))
	})
	if errors.Is(err, allocator.ErrCopyConflict) {
		for _, c := range rep.Conflicts {
			fmt.Fprintln(out, "conflict:", c)
		}
		return fmt.Errorf("%s: %s holds data that differs from %s: nothing was written. If it is another cloud's table, use another cluster.etcd.prefix: %w", what, dst.Path(), src.Path(), err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	lines, err := dst.Check(pools)
	if err != nil {
		return fmt.Errorf("%s: check %s: %w", what, dst.Path(), err)
	}
	for _, l := range lines {
		fmt.Fprintln(out, "check:", l)
	}
	fmt.Fprintf(out, "%s: %d keys copied, %d already there, from %s to %s in %s\n", what, rep.Copied, rep.Present, src.Path(), dst.Path(), time.Since(start).Round(time.Millisecond))
	if len(lines) > 0 {
		return fmt.Errorf("%s: the copy is complete but check finds %d problem(s) in %s, as in the source", what, len(lines), dst.Path())
	}
	return nil
}
