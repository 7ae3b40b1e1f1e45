package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/cluster"
	"github.com/cloudstack-pd/cloudstack-pd/config"
)

// newBenchEtcdCmd runs a one-member etcd for the cluster benchmarks, so
// that they need no etcd package (Debian's is older than the client).
func newBenchEtcdCmd() *cobra.Command {
	var (
		dir          string
		client, peer int
		maxOps       int
	)
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "Run a one-member etcd on 127.0.0.1 for the cluster benchmarks, until SIGTERM",
		Long: `Etcd runs the etcd member that cloudstack-pd embeds (cluster.embedded), alone,
in the foreground: the external etcd of 'make bench''s cluster runs. It prints
"ready" once it serves clients on http://127.0.0.1:--client-port and stops on
SIGTERM or SIGINT. Not for production: one member, no TLS.`,
		Example: `  cloudstack-pd bench etcd --dir /tmp/bench-etcd --client-port 10651 --peer-port 10652`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
			c := config.Cluster{
				Name: "bench", Etcd: config.ClusterEtcd{Prefix: config.DefaultClusterPrefix},
				LeaseTTL: config.DefaultClusterLeaseTTL, Timeout: 30 * time.Second, MaxTxnOps: maxOps,
				Embedded: config.ClusterEmbedded{
					DataDir: filepath.Join(dir, "member"), PeerListen: peerURL,
					ClientListen:   fmt.Sprintf("http://127.0.0.1:%d", client),
					InitialCluster: "bench=" + peerURL, InitialClusterState: "new",
				},
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			sctx, cancel := context.WithTimeout(ctx, time.Minute)
			node, err := cluster.Start(sctx, c, log)
			cancel()
			if err != nil {
				return err
			}
			defer node.Close()
			fmt.Fprintln(cmd.OutOrStdout(), "ready")
			<-ctx.Done()
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dir, "dir", "", "the member's data folder (required)")
	fl.IntVar(&client, "client-port", 2379, "the client port on 127.0.0.1")
	fl.IntVar(&peer, "peer-port", 2380, "the peer port on 127.0.0.1")
	fl.IntVar(&maxOps, "max-txn-ops", config.DefaultClusterMaxTxnOps, "the member's --max-txn-ops (give the servers cluster.max-txn-ops up to it)")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}
