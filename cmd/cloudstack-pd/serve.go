package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/cluster"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/daemon"
	"github.com/cloudstack-pd/cloudstack-pd/statestore"
)

func newServeCmd() *cobra.Command {
	var (
		cfgPath   string
		initStore bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Answer relayed DHCPv6 prefix-delegation requests",
		Long: `Serve answers the DHCPv6 Relay-Forwards that the routers send to the
addresses in server.listen, in the foreground, logging to standard error.

For each relayed request it picks the pool by the innermost relay's
interface-id, reads the client MAC from the sources in server.mac-sources
(remote-id: the MAC the router inserted, which a VM cannot forge), and
answers the MAC's reserved prefix from the allocation table in the store
(state). Messages that reach it unrelayed are dropped: their MAC cannot be
trusted.

Signals:
  SIGTERM, SIGINT  /readyz turns not ready; after server.shutdown-delay
                   (default 0) stop reading, answer what is queued, write
                   the recorded bindings, close the store, exit 0
  SIGHUP           re-read the config; if it is valid, put the new pools,
                   mac-sources, lifetimes and trusted-relays in force and
                   reload the table; if not, log why and keep the old one;
                   then sync from CloudStack

With api.url, api.apikey and api.secretkey set, serve syncs the table from
CloudStack (as 'cloudstack-pd sync' does, docs/sync.md) in the background:
at start-up, every api.interval (60s) after the last sync ends, and on
SIGHUP. Packets are answered from the table in force all along; a sync that
changed the table swaps the new one in at once. When CloudStack is down or
answers wrongly, the sync changes nothing and logs an error naming the pod,
the call and CloudStack's errortext; serve keeps answering.

The store is locked while serve runs: a second serve on the same state file
exits at once with an error instead of waiting. The CLI's write commands
(allocation release and move, pool forget, sync, backup) and history reach
the running server through its control socket (control.socket, default
/run/cloudstack-pd/control.sock, mode 0600): nothing needs a stop. A socket
left by a server that died is replaced; one a live server answers on makes
serve exit.

With a cluster section (docs/ha.md) the table is in etcd instead, shared by
every server: each answers from memory and follows etcd; one of them, elected,
runs the CloudStack sync; --init allows starting on an empty cluster table.

The store must exist: serve refuses to start on a missing state file
unless given --init (a new cloud; 'import-kea' also creates it), and
refuses a file that is empty, not a store, or damaged, whatever the flags.
It answers as soon as the allocations are loaded, and checks the rest of
the store (indexes, bindings, history) meanwhile: until that check passes
nothing is written to the store, and a damaged page found then stops serve
with exit status 1.
A serve that created the store with --init and then fails to start
removes it again.`,
		Example: `  cloudstack-pd serve --config /etc/cloudstack-pd/config.yaml

  # A new cloud: create the store on the first start.
  cloudstack-pd serve --config /etc/cloudstack-pd/config.yaml --init
  CLOUDSTACK_PD_LOG_LEVEL=debug cloudstack-pd serve -c example/cloudstack-pd.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd.Context(), cfgPath, initStore, cmd.ErrOrStderr())
		},
	}
	addConfigFlag(cmd, &cfgPath)
	addInitFlag(cmd, &initStore)
	return cmd
}

// addInitFlag adds --init, which lets serve and sync create the store.
func addInitFlag(cmd *cobra.Command, init *bool) {
	cmd.Flags().BoolVar(init, "init", false, "create the store (state) if it does not exist: for a new cloud only. "+
		"Without it a missing store is an error, so that a typo in state or an unmounted folder never numbers every VM afresh")
}

// runServe serves until ctx ends; init lets it create the store, and
// SIGHUP reloads the config.
func runServe(ctx context.Context, cfgPath string, init bool, stderr io.Writer) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	log, level := daemon.NewLoggerLevel(cfg.Log, stderr)
	open := func(cfg *config.Config) (*allocator.Store, error) {
		// The table's load verifies the pages it reads, and Run the others.
		return statestore.OpenForWrite(cfg, "serve", init, boltstore.Options{NoVerify: true})
	}
	var node *cluster.Node
	if cfg.Cluster.Enabled() {
		// The embedded member (if any) starts first: the table is in it.
		if node, err = cluster.Start(ctx, cfg.Cluster, log); err != nil {
			return err
		}
		defer node.Close()
		open = func(cfg *config.Config) (*allocator.Store, error) {
			return statestore.OpenServe(cfg, node, init, log)
		}
	}
	var snapshot func(st *allocator.Store, tbl *allocator.Table) (int, error)
	if node != nil {
		snapshot = func(st *allocator.Store, tbl *allocator.Table) (int, error) {
			return statestore.WriteSnapshot(st, tbl, cfg.State)
		}
	}
	return daemon.Run(ctx, cfg, daemon.Deps{
		OpenStore: open,
		Cluster:   node,
		Snapshot:  snapshot,
		StoreError: func(err error, cfg *config.Config) error {
			return statestore.Explain(err, cfg, "serve", statestore.Write)
		},
		Backup:   statestore.Backup,
		Log:      log,
		LogLevel: level,
		Reload:   hup,
		Version:  version,
	})
}
