package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/control"
	"github.com/cloudstack-pd/cloudstack-pd/httpapi"
	"github.com/cloudstack-pd/cloudstack-pd/report"
	"github.com/cloudstack-pd/cloudstack-pd/statestore"
)

// cliClock is the commands' clock (history stamps of a direct write).
var cliClock clock.Clock = clock.Real{}

// askRunningServer sends req to the server on cfg's control socket and
// decodes its result into result. It reports false, with no error, when
// no server runs there (or control.socket is off): the caller then
// opens the store itself.
func askRunningServer(ctx context.Context, cfg *config.Config, req control.Request, result any) (bool, error) {
	if cfg.Control.Socket == "" {
		return false, nil
	}
	req.User = requestUser()
	err := control.Call(ctx, cfg.Control.Socket, req, result)
	if errors.Is(err, control.ErrNoServer) {
		return false, nil
	}
	return true, err
}

// requestUser is who runs the command, as the client says it: the user
// who ran sudo, else the OS user.
func requestUser() string {
	if s := os.Getenv("SUDO_USER"); s != "" {
		return s
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}

// localWho is who runs a command that writes the store itself, for the
// history: as control.Who says it of a client.
func localWho() string {
	peer := control.Peer{}
	if u, err := user.Current(); err == nil {
		peer.User = u.Username
	}
	return control.Who(peer, control.Request{User: requestUser()})
}

// storeHeldError explains a store that a process holds although no
// server answers on the control socket.
func storeHeldError(err error, cfg *config.Config, what string) error {
	sock := cfg.Control.Socket
	if sock == "" {
		sock = "(control.socket is off)"
	}
	return fmt.Errorf("%w\nno server answers on the control socket %s, yet another process holds the store: a serve started with another control.socket, "+
		"or a sync or import running; %s goes through the server's control socket when one runs", err, sock, what)
}

// adminFlags are the flags of the operator's write actions.
type adminFlags struct {
	config      string
	yes, dryRun bool
}

func addAdminFlags(cmd *cobra.Command, f *adminFlags) {
	addConfigFlag(cmd, &f.config)
	cmd.Flags().BoolVarP(&f.yes, "yes", "y", false, "do it (without it, the command only shows what it would do, and exits 1)")
	cmd.Flags().BoolVarP(&f.dryRun, "dry-run", "n", false, "show what it would do, write nothing")
}

// runAdmin runs an operator's action: through the running server's
// control socket (req), or, with no server running, on the store itself
// (direct). Without --yes it is a dry run that exits 1.
func runAdmin(ctx context.Context, out io.Writer, f adminFlags, req control.Request, direct func(tx *allocator.Tx) error) error {
	if f.yes && f.dryRun {
		return errors.New("--yes and --dry-run: give one")
	}
	cfg, err := config.Load(f.config)
	if err != nil {
		return err
	}
	req.DryRun = !f.yes
	var rep allocator.AdminReport
	asked, err := askRunningServer(ctx, cfg, req, &rep)
	if !asked && err == nil {
		var r *allocator.AdminReport
		r, err = adminDirect(cfg, req, direct)
		if r != nil {
			rep = *r
		}
	}
	if err != nil {
		return err
	}
	if err := report.Admin(out, &rep); err != nil {
		return err
	}
	if !f.yes && !f.dryRun {
		return errors.New("nothing done: give --yes to do it (or --dry-run to only show it)")
	}
	return nil
}

// adminDirect runs an action on the store itself (no server runs): for
// writing, also for a dry run, which rolls back.
func adminDirect(cfg *config.Config, req control.Request, fn func(tx *allocator.Tx) error) (*allocator.AdminReport, error) {
	st, err := statestore.Open(cfg, req.Note, statestore.Write)
	if errors.Is(err, allocator.ErrLocked) {
		return nil, storeHeldError(err, cfg, req.Note)
	}
	if err != nil {
		return nil, err
	}
	defer st.Close()
	actor := allocator.Actor{At: cliClock.Now(), By: "admin " + localWho(), Note: req.Note}
	return st.Admin(cfg.Pools(), actor, req.DryRun, fn)
}

func newAllocationCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "allocation",
		Short: "Change one MAC's allocation by hand: release it, move it to another pool",
		Long: `The operator's actions on one allocation. Each shows what it would do and
exits 1 unless given --yes (--dry-run only shows it); each change is written
to the allocation history with who ran it and the command.

While serve runs they go through its control socket (control.socket) and the
table in force changes at once; with no server running they open the store
(state) themselves.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newAllocationReleaseCmd(), newAllocationMoveCmd())
	return cmd
}

func newAllocationReleaseCmd() *cobra.Command {
	var (
		f   adminFlags
		mac string
	)
	cmd := &cobra.Command{
		Use:   "release --mac MAC",
		Short: "Quarantine a MAC's allocation now, knowingly",
		Long: `Release quarantines the MAC's allocation at once, without waiting for
allocation.release-after: its prefix is no longer served, and is kept out of
use for allocation.quarantine, after which the sync deletes it and the prefix
is free. A NIC that CloudStack still lists (and whose VM is not Destroyed,
Expunging or in Error) comes back at the next sync with the same prefix, as
any quarantined allocation does: release is for a VM that is gone.`,
		Example: `  cloudstack-pd allocation release --mac 06:32:b2:00:04:79 --dry-run
  cloudstack-pd allocation release --mac 06:32:b2:00:04:79 --yes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := httpapi.ParseMAC(mac)
			if err != nil {
				return fmt.Errorf("--mac: %w", err)
			}
			req := control.Request{Action: control.ActionRelease, MAC: m.String(), Note: "allocation release --mac " + m.String()}
			return runAdmin(cmd.Context(), cmd.OutOrStdout(), f, req, func(tx *allocator.Tx) error { return tx.Release(m) })
		},
	}
	addAdminFlags(cmd, &f)
	cmd.Flags().StringVar(&mac, "mac", "", "the MAC whose allocation to release (required)")
	_ = cmd.MarkFlagRequired("mac")
	return cmd
}

func newAllocationMoveCmd() *cobra.Command {
	var (
		f         adminFlags
		mac, pool string
	)
	cmd := &cobra.Command{
		Use:   "move --mac MAC --pool POOL",
		Short: "Give a MAC a prefix in another pool now (a VM that moved pods)",
		Long: `Move gives the MAC the lowest free prefix of POOL (a mapping key) at once,
active, instead of after allocation.release-after and allocation.quarantine
(three days by default) as the sync's rules would. The prefix it had is
quarantined, held without an allocation: not served, and not given to anyone
else until allocation.quarantine has passed; then the sync frees it.`,
		Example: `  cloudstack-pd allocation move --mac 06:32:b2:00:04:79 --pool 0f3a1a2e-9d1c-4f7e-8a51-2b6c1d9e4f10 --yes`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := httpapi.ParseMAC(mac)
			if err != nil {
				return fmt.Errorf("--mac: %w", err)
			}
			req := control.Request{Action: control.ActionMove, MAC: m.String(), Pool: pool,
				Note: "allocation move --mac " + m.String() + " --pool " + pool}
			return runAdmin(cmd.Context(), cmd.OutOrStdout(), f, req, func(tx *allocator.Tx) error { return tx.Move(m, pool) })
		},
	}
	addAdminFlags(cmd, &f)
	cmd.Flags().StringVar(&mac, "mac", "", "the MAC to move (required)")
	cmd.Flags().StringVar(&pool, "pool", "", "the pool (mapping key, the pod UUID) to move it to (required)")
	_ = cmd.MarkFlagRequired("mac")
	_ = cmd.MarkFlagRequired("pool")
	return cmd
}

func newPoolCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pool",
		Short: "Act on a whole pool: forget one removed from mapping",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newPoolForgetCmd())
	return cmd
}

func newPoolForgetCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "forget NAME",
		Short: "Quarantine the allocations of a pool removed from mapping",
		Long: `Forget quarantines every allocation of the pool NAME, which the config no
longer maps (remove it from mapping, and reload serve, first). Each prefix is
held without an allocation: not served, not given to anyone for
allocation.quarantine, then freed by the sync; each MAC may get a prefix in
another pool at once. Afterwards check no longer reports the pool.`,
		Example: `  cloudstack-pd pool forget 77828509-4043-40bc-8756-7745c8ec7a99 --dry-run
  cloudstack-pd pool forget 77828509-4043-40bc-8756-7745c8ec7a99 --yes`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			req := control.Request{Action: control.ActionForget, Pool: name, Note: "pool forget " + name}
			return runAdmin(cmd.Context(), cmd.OutOrStdout(), f, req, func(tx *allocator.Tx) error {
				_, err := tx.ForgetPool(name)
				return err
			})
		},
	}
	addAdminFlags(cmd, &f)
	return cmd
}
