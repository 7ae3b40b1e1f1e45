package report

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/config"
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
