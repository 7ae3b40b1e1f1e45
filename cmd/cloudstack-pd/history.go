package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/control"
	"github.com/cloudstack-pd/cloudstack-pd/daemon"
	"github.com/cloudstack-pd/cloudstack-pd/report"
	"github.com/cloudstack-pd/cloudstack-pd/statestore"
)

type historyFlags struct {
	config, prefix, mac, at string
	asJSON                  bool
}

func newHistoryCmd() *cobra.Command {
	var f historyFlags
	cmd := &cobra.Command{
		Use:   "history --prefix P | --mac M [--at TIME]",
		Short: "Who had a prefix, or what a MAC had, and when (the allocation history)",
		Long: `History prints the allocation history kept in the store: every change of an
allocation (allocated, adopted by import-kea, updated VM fields, gone, back,
quarantined, released, moved, and the operator's actions with who ran them),
oldest first, for the prefixes overlapping --prefix (a prefix or an address)
or for --mac, or both.

With --at it answers "who held it at that instant": every allocation
overlapping --prefix (or of --mac) that existed then, with its state (active
or gone: served; quarantined: not served, given to nobody else), known from
the history or, for allocations whose events are older than
history.retention (400 days by default), from the store as it is now.

TIME is RFC 3339 (2026-03-03T14:00:00Z, 2026-03-03T15:00:00+01:00), a date
and time in UTC (2026-03-03 14:00) or a date (its start, UTC).

While serve runs it answers through the control socket; otherwise the store
is opened read-only.`,
		Example: `  # Who had 2001:db8:200:30::/60 on 3 March?
  cloudstack-pd history --prefix 2001:db8:200:30::/60 --at 2026-03-03
  cloudstack-pd history --prefix 2001:db8:200:30::1 --at "2026-03-03 14:05"
  cloudstack-pd history --mac 06:32:b2:00:04:79 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runHistory(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	addConfigFlag(cmd, &f.config)
	cmd.Flags().StringVar(&f.prefix, "prefix", "", "a prefix or an address: the events of every prefix overlapping it")
	cmd.Flags().StringVar(&f.mac, "mac", "", "a MAC: its events")
	cmd.Flags().StringVar(&f.at, "at", "", "an instant: who held it then")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print a JSON array of events (with --at: of holdings)")
	return cmd
}

func runHistory(ctx context.Context, out io.Writer, f historyFlags) error {
	req := control.Request{Action: control.ActionHistory, MAC: f.mac, Prefix: f.prefix, At: f.at}
	q, at, err := daemon.HistoryRequest(req) // the flags, checked before anything opens
	if err != nil {
		return err
	}
	cfg, err := config.Load(f.config)
	if err != nil {
		return err
	}
	var ans daemon.HistoryAnswer
	var asked bool
	if !cfg.Cluster.Enabled() { // a cluster's history is read from etcd
		asked, err = askRunningServer(ctx, cfg, req, &ans)
	}
	if !asked && err == nil {
		ans, err = historyDirect(cfg, q, at)
	}
	if err != nil {
		return err
	}
	if f.asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if !at.IsZero() {
			return enc.Encode(nonNil(ans.Holdings))
		}
		return enc.Encode(nonNil(ans.Events))
	}
	if !at.IsZero() {
		return report.Holdings(out, at, ans.Holdings)
	}
	return report.History(out, ans.Events)
}

func historyDirect(cfg *config.Config, q allocator.HistoryQuery, at time.Time) (daemon.HistoryAnswer, error) {
	var ans daemon.HistoryAnswer
	st, err := statestore.Open(cfg, "history", statestore.Read)
	if errors.Is(err, allocator.ErrLocked) {
		return ans, storeHeldError(err, cfg, "history")
	}
	if err != nil {
		return ans, err
	}
	defer st.Close()
	if !at.IsZero() {
		ans.Holdings, err = st.HeldAt(q, at)
	} else {
		ans.Events, err = st.History(q)
	}
	return ans, err
}

// nonNil makes an empty list print as [], not null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
