// Command cloudstack-pd is a DHCPv6 prefix-delegation server for Apache
// CloudStack clouds: every VM NIC gets a stable, routed prefix out of its
// pod's pool, answered to the relays of the cloud's routers.
//
// This file holds only the wiring of the subcommands; each lives in its own
// file.
package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/cloudstack-pd/cloudstack-pd/buildinfo"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// kea-export syncs from CloudStack first, as the old generator did.
	keaExportSync = syncForKeaExport
	root := newRootCmd()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "cloudstack-pd:", err)
		var ec exitCoder
		if errors.As(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
// Empty, the module's build information is shown instead.
var version string

// exitCoder is an error that asks for a particular exit status.
type exitCoder interface{ ExitCode() int }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "cloudstack-pd",
		Short: "DHCPv6 prefix delegation for CloudStack VMs, behind relaying routers",
		Long: `cloudstack-pd gives every CloudStack VM NIC its own stable IPv6 prefix
(a /60 out of its pod's /40 by default) by DHCPv6 prefix delegation.

The routers relay DHCPv6 to it by unicast, naming the VLAN in the
interface-id (option 18) and the client MAC in the remote-id (option 37).
cloudstack-pd looks the MAC up in its allocation table and answers with the
MAC's reserved prefix; the router snoops the reply and routes the prefix to
the VM. A VM's prefix never moves.

Start with:  cloudstack-pd serve --config example/cloudstack-pd.yaml`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.Get(version).String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(
		newVersionCmd(),
		newServeCmd(),
		newImportKeaCmd(),
		newProbeCmd(),
		newLeasequeryCmd(),
		newKeaExportCmd(),
		newKeaDiffCmd(),
		newCheckConfigCmd(),
		newSyncCmd(),
		newWebhookCmd(),
		newAllocationsCmd(),
		newCheckCmd(),
		newAllocationCmd(),
		newPoolCmd(),
		newHistoryCmd(),
		newBackupCmd(),
		newRestoreCmd(),
		bench.NewCommand(),
		newReplayCmd(),
		newClusterCmd(),
		newGenManCmd(),
	)
	return root
}

// addConfigFlag adds the --config flag shared by every subcommand.
func addConfigFlag(cmd *cobra.Command, path *string) {
	cmd.Flags().StringVarP(path, "config", "c", "/etc/cloudstack-pd/config.yaml",
		"config file (YAML or JSON; the old generator's config.json is accepted unchanged)")
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, the VCS revision and the Go version of this build",
		Long: `Version prints which build this is: the release (set at link time with
-ldflags "-X main.version=v1.2.3"), else the version Go stamps from the
checkout it was built in; the VCS revision ("+modified" when the checkout had
uncommitted changes); and the Go version. The same as --version, serve's
"serving" log line, the HTTP API's / and cloudstack_pd_build_info.`,
		Args: cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), buildinfo.Get(version))
		},
	}
}
