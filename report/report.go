// Package report prints what the table's commands did, for the operator:
// a sync from CloudStack (Sync), an import of a Kea config (Import), the
// allocation table (Allocations, or AllocationWriter one line at a time),
// an operator's action (Admin) and the allocation history (History,
// Holdings).
// The words and layout are the commands' output; scripts read the JSON
// of the HTTP API, not these.
package report

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/httpapi"
)

// Sync prints what a sync did, pool by pool, as the sync command does;
// quiet prints the counts only, not each MAC.
func Sync(w io.Writer, rep *allocator.SyncReport, cfg *config.Config, quiet bool) {
	pools := map[string]allocator.Pool{}
	for _, p := range cfg.Pools() {
		pools[p.Name] = p
	}
	fmt.Fprintf(w, "sync from %s at %s into %s\n", cfg.API.URL, rep.At.UTC().Format(time.RFC3339), cfg.State)
	for i := range rep.Pools {
		ps := &rep.Pools[i]
		p := pools[ps.Pool]
		nics := "default NICs"
		if p.VLAN != 0 {
			nics = fmt.Sprintf("NICs on VLAN %d", p.VLAN)
		}
		fmt.Fprintf(w, "pool %s (%s, %s, %s): %d NIC(s) listed, %d active allocation(s) before\n",
			ps.Pool, p.InterfaceID, p.Prefix, nics, ps.Listed, ps.Active)
		section := func(name string, n int, extra string) {
			fmt.Fprintf(w, "  %-13s %d%s\n", name, n, extra)
		}
		list := func(mark string, allocs []allocator.Allocation, note func(a *allocator.Allocation) string) {
			if quiet {
				return
			}
			for i := range allocs {
				a := &allocs[i]
				fmt.Fprintf(w, "    %s %s %s %s%s\n", mark, a.MAC, a.Prefix, describeVM(a), note(a))
			}
		}
		none := func(*allocator.Allocation) string { return "" }
		section("added", len(ps.Added), "")
		list("+", ps.Added, none)
		section("kept", ps.Kept, fmt.Sprintf(" (%d refreshed)", ps.Refreshed))
		section("marked gone", len(ps.Gone), "")
		list("-", ps.Gone, func(a *allocator.Allocation) string {
			return fmt.Sprintf(", still served until %s", a.GoneAt.Add(cfg.Allocation.ReleaseAfter).UTC().Format(time.RFC3339))
		})
		section("came back", len(ps.Back), "")
		list("^", ps.Back, none)
		section("quarantined", len(ps.Quarantined), "")
		list("~", ps.Quarantined, func(a *allocator.Allocation) string {
			return fmt.Sprintf(", not served, free after %s", a.QuarantinedAt.Add(cfg.Allocation.Quarantine).UTC().Format(time.RFC3339))
		})
		section("released", len(ps.Released), "")
		list("x", ps.Released, func(*allocator.Allocation) string { return ", prefix free" })
		section("waiting", ps.StillGone+ps.InQuarantine, fmt.Sprintf(" (%d gone, %d in quarantine)", ps.StillGone, ps.InQuarantine))
		section("not eligible", ps.NotEligible, " (new NICs of Destroyed, Expunging or Error VMs: no prefix)")
		section("conflicts", len(ps.Conflicts), "")
		for _, c := range ps.Conflicts {
			fmt.Fprintf(w, "    ! %s (VM %s %s, NIC %s): %v\n", c.NIC.MAC, c.NIC.VMName, c.NIC.VMID, c.NIC.NICID, c.Err)
		}
		if ps.Refused {
			fmt.Fprintf(w, "  REFUSED: %d of %d active allocations would be marked gone, more than allocation.max-release-fraction %g allows\n",
				len(ps.Gone), ps.Active, cfg.Allocation.MaxReleaseFraction)
		}
	}
	if n := len(rep.ReleasedHeld); n > 0 {
		fmt.Fprintf(w, "held prefixes (moved away from, forgotten pools) released after their quarantine: %d\n", n)
		if !quiet {
			for i := range rep.ReleasedHeld {
				a := &rep.ReleasedHeld[i]
				fmt.Fprintf(w, "    x %s %s pool %s, prefix free\n", a.MAC, a.Prefix, a.Pool)
			}
		}
	}
	t := rep.Totals()
	fmt.Fprintf(w, "total: %d added, %d kept, %d marked gone, %d came back, %d quarantined, %d released, %d conflict(s)\n",
		t.Added, t.Kept, t.Gone, t.Back, t.Quarantined, t.Released, t.Conflicts)
	refused := slices.ContainsFunc(rep.Pools, func(p allocator.PoolSync) bool { return p.Refused })
	switch {
	case refused:
		fmt.Fprintln(w, "refused: nothing written")
	case rep.DryRun:
		fmt.Fprintln(w, "dry run: nothing written")
	case rep.Written:
		fmt.Fprintf(w, "written to %s\n", cfg.State)
	default:
		fmt.Fprintln(w, "nothing to change")
	}
}

func describeVM(a *allocator.Allocation) string {
	if a.VMID == "" {
		return "(no VM known: " + a.Source + ")"
	}
	return fmt.Sprintf("%s (VM %s, NIC %s)", a.VMName, a.VMID, a.NICID)
}

// Import prints what an import of a Kea config did (or, with dryRun,
// would do) into the store state, as import-kea does; verbose lists each
// reservation added or present.
func Import(out io.Writer, rep *allocator.ImportReport, state string, dryRun, verbose bool) {
	verb := "added"
	if dryRun {
		verb = "to add"
	}
	fmt.Fprintf(out, "import-kea %s into %s\n", rep.File, state)
	fmt.Fprintf(out, "  %-24s %d\n", verb+":", len(rep.Added))
	fmt.Fprintf(out, "  %-24s %d\n", "already present:", len(rep.Present))
	fmt.Fprintf(out, "  %-24s %d\n", "without prefix (ignored):", rep.NoPrefix)
	fmt.Fprintf(out, "  %-24s %d\n", "skipped subnets:", len(rep.SkippedSubnets))
	for _, s := range rep.SkippedSubnets {
		fmt.Fprintf(out, "    %s\n", s)
	}
	if verbose {
		for _, it := range rep.Added {
			a := it.Allocation
			fmt.Fprintf(out, "  + %s: %s %s pool %s\n", it.Path, a.MAC, a.Prefix, a.Pool)
		}
		for _, it := range rep.Present {
			a := it.Allocation
			fmt.Fprintf(out, "  = %s: %s %s pool %s\n", it.Path, a.MAC, a.Prefix, a.Pool)
		}
	}
	for _, w := range rep.Warnings {
		fmt.Fprintf(out, "warning: %s\n", w)
	}
	if len(rep.Conflicts) > 0 {
		fmt.Fprintf(out, "%d conflict(s), nothing written:\n", len(rep.Conflicts))
		for _, c := range rep.Conflicts {
			fmt.Fprintf(out, "  %s\n", c)
		}
		return
	}
	if dryRun {
		fmt.Fprintln(out, "dry run: nothing written")
	}
}

// Allocations prints the allocation table as the allocations command
// does: one line per allocation, then the counts by state.
func Allocations(out io.Writer, views []httpapi.Allocation) error {
	w := NewAllocationWriter(out)
	for i := range views {
		if err := w.Write(&views[i]); err != nil {
			return err
		}
	}
	return w.Close()
}

// alignRows is how many rows an AllocationWriter holds to size its
// columns before it prints them.
const alignRows = 1000

// allocationHeader names the columns of the allocation table.
var allocationHeader = []string{"MAC", "PREFIX", "STATE", "SINCE", "POOL", "INTERFACE-ID", "VM-NAME", "VM-ID", "NIC-ID", "IP6"}

// AllocationWriter prints the allocation table one allocation at a time,
// as Allocations does, without holding the table: the columns are sized
// by the first 1,000 rows (exactly as text/tabwriter would align a table
// of that size) and widen, from the row that needs it, for a longer cell
// further down. Close prints the counts by state.
type AllocationWriter struct {
	out    io.Writer
	rows   [][]string // held until alignRows, then nil
	widths []int
	held   bool // still holding rows
	counts map[allocator.State]int
	n      int
	err    error
}

// NewAllocationWriter returns a writer printing to out.
func NewAllocationWriter(out io.Writer) *AllocationWriter {
	return &AllocationWriter{out: out, rows: [][]string{allocationHeader}, held: true,
		widths: make([]int, len(allocationHeader)), counts: map[allocator.State]int{}}
}

// Write prints (or holds) one allocation's line.
func (w *AllocationWriter) Write(v *httpapi.Allocation) error {
	w.n++
	w.counts[v.State]++
	state := string(v.State)
	switch v.State {
	case allocator.StateGone:
		state += " " + stamp(v.GoneAt)
	case allocator.StateQuarantined:
		state += " " + stamp(v.QuarantinedAt)
	}
	row := []string{v.MAC, v.Prefix.String(), state, stamp(v.Since), v.Pool,
		dash(v.InterfaceID), dash(v.VMName), dash(v.VMID), dash(v.NICID), dash(v.IP6)}
	if w.held {
		w.rows = append(w.rows, row)
		if len(w.rows) > alignRows {
			w.release()
		}
		return w.err
	}
	w.line(row)
	return w.err
}

// release sizes the columns by the rows held and prints them.
func (w *AllocationWriter) release() {
	for _, r := range w.rows {
		w.widen(r)
	}
	for _, r := range w.rows {
		w.line(r)
	}
	w.rows, w.held = nil, false
}

func (w *AllocationWriter) widen(row []string) {
	for i, c := range row[:len(row)-1] { // the last column is not padded
		w.widths[i] = max(w.widths[i], utf8.RuneCountInString(c))
	}
}

// line prints one row with two spaces after the widest cell of each
// column but the last.
func (w *AllocationWriter) line(row []string) {
	if w.err != nil {
		return
	}
	w.widen(row)
	var b strings.Builder
	for i, c := range row {
		b.WriteString(c)
		if i < len(row)-1 {
			b.WriteString(strings.Repeat(" ", w.widths[i]-utf8.RuneCountInString(c)+2))
		}
	}
	b.WriteByte('\n')
	_, w.err = io.WriteString(w.out, b.String())
}

// Close prints what is held and the counts by state.
func (w *AllocationWriter) Close() error {
	if w.held {
		w.release()
	}
	if w.err != nil {
		return w.err
	}
	_, err := fmt.Fprintf(w.out, "%d allocation(s): %d active, %d gone, %d quarantined\n", w.n,
		w.counts[allocator.StateActive], w.counts[allocator.StateGone], w.counts[allocator.StateQuarantined])
	return err
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

// Admin prints what an operator's action did (or, for a dry run, would
// do): one line per history event.
func Admin(out io.Writer, rep *allocator.AdminReport) error {
	if len(rep.Events) == 0 {
		_, err := fmt.Fprintln(out, "nothing to change")
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, e := range rep.Events {
		what := e.Event
		switch {
		case e.Event == allocator.EventMoved:
			what += fmt.Sprintf(" (from %s in pool %s)", e.FromPrefix, e.FromPool)
		case e.PrevState != "" && e.PrevState != e.State:
			what += fmt.Sprintf(" (was %s)", e.PrevState)
		}
		fmt.Fprintf(tw, "%s\t%s\tpool %s\t%s\t%s\n", e.MAC, e.Prefix, e.Pool, dash(e.VMName), what)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var err error
	switch {
	case rep.DryRun:
		_, err = fmt.Fprintln(out, "dry run: nothing written")
	case rep.Written:
		_, err = fmt.Fprintln(out, "written; the table in force is updated")
	}
	return err
}

// History prints history events, oldest first, one line each.
func History(out io.Writer, events []allocator.HistoryEvent) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tEVENT\tMAC\tPREFIX\tPOOL\tSTATE\tVM-NAME\tVM-ID\tBY\tNOTE")
	for _, e := range events {
		ev := e.Event
		if e.Event == allocator.EventMoved {
			ev += " from " + e.FromPrefix.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.At.UTC().Format(time.RFC3339), ev, e.MAC, e.Prefix, e.Pool,
			dash(string(e.State)), dash(e.VMName), dash(e.VMID), dash(e.By), dash(e.Note))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(out, "%d event(s)\n", len(events))
	return err
}

// Holdings prints who held what at an instant.
func Holdings(out io.Writer, at time.Time, hs []allocator.Holding) error {
	if len(hs) == 0 {
		_, err := fmt.Fprintf(out, "nobody held it at %s\n", at.UTC().Format(time.RFC3339))
		return err
	}
	fmt.Fprintf(out, "held at %s:\n", at.UTC().Format(time.RFC3339))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MAC\tPREFIX\tPOOL\tSTATE\tSINCE\tVM-NAME\tVM-ID\tNIC-ID\tIP6\tKNOWN-FROM")
	for _, h := range hs {
		ip6 := ""
		if h.IP6.IsValid() {
			ip6 = h.IP6.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.MAC, h.Prefix, h.Pool, h.State, stamp(&h.Since),
			dash(h.VMName), dash(h.VMID), dash(h.NICID), dash(ip6), h.Basis)
	}
	return tw.Flush()
}
