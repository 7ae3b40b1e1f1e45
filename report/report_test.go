package report

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/httpapi"
)

func TestSync(t *testing.T) {
	cfg, err := config.Parse("c.yaml", []byte("mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\nstate: /var/lib/s.db\n"))
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("06:32:b2:00:04:79")
	added := allocator.Allocation{Pool: "pod-a", MAC: mac, Prefix: netip.MustParsePrefix("2001:db8:200::/60"), VMID: "vm-1", VMName: "web-1", NICID: "nic-1"}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name  string
		rep   allocator.SyncReport
		quiet bool
		want  []string
		lack  []string
	}{
		{"written", allocator.SyncReport{At: at, Written: true, Pools: []allocator.PoolSync{{Pool: "pod-a", Listed: 1, Added: []allocator.Allocation{added}}}}, false,
			[]string{"at 2026-01-02T03:04:05Z into /var/lib/s.db", "pool pod-a (VLAN2701, 2001:db8:200::/40, default NICs): 1 NIC(s) listed",
				"    + 06:32:b2:00:04:79 2001:db8:200::/60 web-1 (VM vm-1, NIC nic-1)", "total: 1 added", "written to /var/lib/s.db"}, nil},
		{"quiet dry run", allocator.SyncReport{At: at, DryRun: true, Pools: []allocator.PoolSync{{Pool: "pod-a", Added: []allocator.Allocation{added}}}}, true,
			[]string{"  added         1", "dry run: nothing written"}, []string{"    +"}},
		{"refused", allocator.SyncReport{At: at, Pools: []allocator.PoolSync{{Pool: "pod-a", Active: 2, Gone: []allocator.Allocation{added, added}, Refused: true}}}, true,
			[]string{"REFUSED: 2 of 2 active allocations would be marked gone", "refused: nothing written"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			Sync(&out, &tt.rep, cfg, tt.quiet)
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("lacks %q:\n%s", w, out.String())
				}
			}
			for _, l := range tt.lack {
				if strings.Contains(out.String(), l) {
					t.Errorf("has %q:\n%s", l, out.String())
				}
			}
		})
	}
}

func TestImport(t *testing.T) {
	mac, _ := net.ParseMAC("06:32:b2:00:04:79")
	a := allocator.Allocation{Pool: "pod-a", MAC: mac, Prefix: netip.MustParsePrefix("2001:db8:200::/60")}
	rep := &allocator.ImportReport{File: "kea.conf", Added: []allocator.ImportItem{{Path: "Dhcp6.subnet6[0].reservations[0]", Allocation: a}}}
	var out strings.Builder
	Import(&out, rep, "s.db", true, true)
	for _, w := range []string{"import-kea kea.conf into s.db", "  to add:                  1", "  + Dhcp6.subnet6[0].reservations[0]: 06:32:b2:00:04:79 2001:db8:200::/60 pool pod-a", "dry run: nothing written"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("lacks %q:\n%s", w, out.String())
		}
	}
}

// TestAllocationWriterAlignsAsTabwriter: printed one line at a time, the
// table is what text/tabwriter makes of it whole, for tables up to the
// rows held (here 1,500 rows: the first 1,000 size the columns, a longer
// cell below widens its column from there on), and counts by state.
func TestAllocationWriterAlignsAsTabwriter(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	view := func(i int, name string) httpapi.Allocation {
		st := allocator.StateActive
		var gone *time.Time
		if i%3 == 1 {
			st, gone = allocator.StateGone, &since
		}
		return httpapi.Allocation{MAC: fmt.Sprintf("06:00:00:00:%02x:%02x", i>>8, i&0xff), Prefix: netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x::/60", i)),
			Pool: "pod-a", InterfaceID: "VLAN2701", VMName: name, State: st, Since: &since, GoneAt: gone}
	}
	tabwritten := func(views []httpapi.Allocation) string {
		var b strings.Builder
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "MAC\tPREFIX\tSTATE\tSINCE\tPOOL\tINTERFACE-ID\tVM-NAME\tVM-ID\tNIC-ID\tIP6")
		for _, v := range views {
			state := string(v.State)
			if v.GoneAt != nil {
				state += " " + v.GoneAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t-\t-\t-\n", v.MAC, v.Prefix, state, v.Since.Format(time.RFC3339), v.Pool, v.InterfaceID, v.VMName)
		}
		tw.Flush()
		return b.String()
	}
	for _, n := range []int{0, 1, 5, 1000} {
		var views []httpapi.Allocation
		for i := range n {
			views = append(views, view(i, fmt.Sprintf("vm-%d", i*37%n)))
		}
		var got strings.Builder
		if err := Allocations(&got, views); err != nil {
			t.Fatal(err)
		}
		gone := (n + 1) / 3
		want := tabwritten(views) + fmt.Sprintf("%d allocation(s): %d active, %d gone, 0 quarantined\n", n, n-gone, gone)
		if got.String() != want {
			t.Errorf("%d rows:\n got %q\nwant %q", n, got.String(), want)
		}
	}

	// Past the rows held: a longer VM name widens its column from its row on.
	var views []httpapi.Allocation
	for i := range 1500 {
		name := "vm"
		if i == 1200 {
			name = "a-much-longer-vm-name"
		}
		views = append(views, view(i, name))
	}
	var got strings.Builder
	if err := Allocations(&got, views); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(got.String(), "\n")
	if w := tabwritten(views[:999]); !strings.HasPrefix(got.String(), w) {
		t.Errorf("the first 1,000 lines are not tabwriter's")
	}
	// lines[k] is views[k-1]: the long name is on line 1201; the lines
	// after it are aligned to it, the ones before are as they were.
	if !strings.Contains(lines[1201], "a-much-longer-vm-name  -") || len(lines[1202]) != len(lines[1201]) ||
		len(lines[1500]) != len(lines[1201]) || len(lines[1200]) >= len(lines[1201]) || len(lines[1200]) != len(lines[2]) {
		t.Errorf("widening:\n%s\n%s\n%s", lines[1200], lines[1201], lines[1202])
	}
	if lines[1501] != "1500 allocation(s): 1000 active, 500 gone, 0 quarantined" {
		t.Errorf("counts line %q", lines[1501])
	}
}
