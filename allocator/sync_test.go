package allocator

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// syncPools: pod-a takes each VM's default NIC, pod-v every NIC on VLAN
// 2701, small has four prefixes.
var (
	syncPoolV   = Pool{Name: "pod-v", Prefix: netip.MustParsePrefix("2001:db8:600::/40"), PrefixLen: 60, InterfaceID: "VLAN2701-all", VLAN: 2701}
	syncPools   = []Pool{poolA, poolB, syncPoolV, poolSmall}
	syncOptions = SyncOptions{ReleaseAfter: 24 * time.Hour, Quarantine: 48 * time.Hour}
)

// vmNIC is a listed NIC: VM "vm-<id>", NIC "nic-<mac>", default on no VLAN.
func vmNIC(vm, m, state string) NIC {
	return NIC{VMID: "vm-" + vm, VMName: "name-" + vm, VMState: state, NICID: "nic-" + m, MAC: mac(m), IsDefault: true}
}

func onVLAN(n NIC, vlan int, def bool) NIC {
	n.VLAN, n.IsDefault = vlan, def
	return n
}

func withIP6(n NIC, ip string) NIC {
	n.IP6 = netip.MustParseAddr(ip)
	return n
}

// stored is an allocation as an earlier sync left it, with its pool's
// ip6-cidr.
func stored(pool, m, prefix string, state State, at time.Time) Allocation {
	a := alloc(pool, m, prefix)
	a.VMID, a.VMName, a.NICID = "vm-"+m[len(m)-2:], "name-"+m[len(m)-2:], "nic-"+m
	for _, p := range syncPools {
		if p.Name == pool {
			a.IP6CIDR = p.IP6CIDR
		}
	}
	a.State = state
	switch state {
	case StateGone:
		a.GoneAt = at
	case StateQuarantined:
		a.GoneAt, a.QuarantinedAt = at.Add(-24*time.Hour), at
	}
	return a
}

// describeTable lists the store's allocations as "pool mac prefix state".
func describeTable(t *testing.T, s *Store) []string {
	t.Helper()
	var out []string
	for _, a := range allAllocs(t, s) {
		out = append(out, fmt.Sprintf("%s %s %s %s", a.Pool, a.MAC, a.Prefix, a.State))
	}
	slices.Sort(out)
	return out
}

func describeReport(r *SyncReport) string {
	var parts []string
	for _, p := range r.Pools {
		if !p.Changed() && p.Kept == 0 && p.StillGone == 0 && p.InQuarantine == 0 && p.NotEligible == 0 && len(p.Conflicts) == 0 && !p.Refused {
			continue
		}
		s := fmt.Sprintf("%s: added %d kept %d refreshed %d back %d gone %d quarantined %d released %d still-gone %d in-quarantine %d not-eligible %d conflicts %d",
			p.Pool, len(p.Added), p.Kept, p.Refreshed, len(p.Back), len(p.Gone), len(p.Quarantined), len(p.Released),
			p.StillGone, p.InQuarantine, p.NotEligible, len(p.Conflicts))
		if p.Refused {
			s += " REFUSED"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// listings builds the listings of syncPools, empty for pools not given.
func listings(m map[string][]NIC) map[string][]NIC {
	out := map[string][]NIC{}
	for _, p := range syncPools {
		out[p.Name] = m[p.Name]
	}
	return out
}

func TestReconcileRules(t *testing.T) {
	now := t0.Add(1000 * time.Hour)
	tests := []struct {
		name    string
		stored  []Allocation
		listed  map[string][]NIC
		opts    SyncOptions
		want    []string // the table after the sync
		report  string
		wantErr error
	}{
		{
			name:   "new NICs get the lowest free prefixes, in listing order",
			stored: []Allocation{stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateActive, now), stored("pod-a", "06:00:00:00:00:02", "2001:db8:200:20::/60", StateActive, now)},
			listed: map[string][]NIC{"pod-a": {
				vmNIC("01", "06:00:00:00:00:01", "Running"), vmNIC("13", "06:00:00:00:00:13", "Running"),
				vmNIC("02", "06:00:00:00:00:02", "Running"), vmNIC("12", "06:00:00:00:00:12", "Stopped"),
			}},
			want: []string{
				"pod-a 06:00:00:00:00:01 2001:db8:200::/60 active",
				"pod-a 06:00:00:00:00:02 2001:db8:200:20::/60 active",
				"pod-a 06:00:00:00:00:12 2001:db8:200:30::/60 active",
				"pod-a 06:00:00:00:00:13 2001:db8:200:10::/60 active",
			},
			report: "pod-a: added 2 kept 2 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0",
		},
		{
			name:   "Destroyed, Expunging and Error VMs get no new allocation; a Destroyed VM keeps its own",
			stored: []Allocation{stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateActive, now)},
			listed: map[string][]NIC{"pod-a": {
				vmNIC("01", "06:00:00:00:00:01", "Destroyed"), vmNIC("02", "06:00:00:00:00:02", "Destroyed"),
				vmNIC("03", "06:00:00:00:00:03", "Expunging"), vmNIC("04", "06:00:00:00:00:04", "Error"),
			}},
			want:   []string{"pod-a 06:00:00:00:00:01 2001:db8:200::/60 active"},
			report: "pod-a: added 0 kept 1 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 3 conflicts 0",
		},
		{
			name: "vlan 0 takes each VM's default NIC, vlan N every NIC on VLAN N",
			listed: map[string][]NIC{
				"pod-a": {onVLAN(vmNIC("01", "06:00:00:00:00:01", "Running"), 2701, false), onVLAN(vmNIC("01", "06:00:00:00:00:02", "Running"), 2702, true)},
				"pod-v": {onVLAN(vmNIC("11", "06:00:00:00:00:11", "Running"), 2701, true), onVLAN(vmNIC("11", "06:00:00:00:00:12", "Running"), 2701, false),
					onVLAN(vmNIC("11", "06:00:00:00:00:13", "Running"), 2702, false)},
			},
			want: []string{
				"pod-a 06:00:00:00:00:02 2001:db8:200::/60 active",
				"pod-v 06:00:00:00:00:11 2001:db8:600::/60 active",
				"pod-v 06:00:00:00:00:12 2001:db8:600:10::/60 active",
			},
			report: "pod-a: added 1 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0; " +
				"pod-v: added 2 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0",
		},
		{
			name: "missing NICs are marked gone, within the safety valve",
			stored: func() []Allocation {
				var out []Allocation
				for i := range 10 {
					out = append(out, stored("pod-a", fmt.Sprintf("06:00:00:00:00:%02x", i), fmt.Sprintf("2001:db8:200:%x0::/60", i), StateActive, now))
				}
				return out
			}(),
			listed: map[string][]NIC{"pod-a": func() []NIC {
				var out []NIC
				for i := range 9 {
					out = append(out, vmNIC(fmt.Sprintf("%02x", i), fmt.Sprintf("06:00:00:00:00:%02x", i), "Running"))
				}
				return out
			}()},
			report: "pod-a: added 0 kept 9 refreshed 0 back 0 gone 1 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0",
		},
		{
			name:   "gone: back in time keeps its prefix",
			stored: []Allocation{stored("pod-a", "06:00:00:00:00:01", "2001:db8:200:50::/60", StateGone, now.Add(-23*time.Hour))},
			listed: map[string][]NIC{"pod-a": {vmNIC("01", "06:00:00:00:00:01", "Running")}},
			want:   []string{"pod-a 06:00:00:00:00:01 2001:db8:200:50::/60 active"},
			report: "pod-a: added 0 kept 0 refreshed 0 back 1 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0",
		},
		{
			name:   "gone for less than release-after: still gone",
			stored: []Allocation{stored("pod-a", "06:00:00:00:00:01", "2001:db8:200:50::/60", StateGone, now.Add(-23*time.Hour))},
			want:   []string{"pod-a 06:00:00:00:00:01 2001:db8:200:50::/60 gone"},
			report: "pod-a: added 0 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 1 in-quarantine 0 not-eligible 0 conflicts 0",
		},
		{
			name:   "gone for release-after: quarantined, prefix still taken",
			stored: []Allocation{stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateGone, now.Add(-24*time.Hour))},
			listed: map[string][]NIC{"pod-a": {vmNIC("02", "06:00:00:00:00:02", "Running")}},
			want: []string{
				"pod-a 06:00:00:00:00:01 2001:db8:200::/60 quarantined",
				"pod-a 06:00:00:00:00:02 2001:db8:200:10::/60 active",
			},
			report: "pod-a: added 1 kept 0 refreshed 0 back 0 gone 0 quarantined 1 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0",
		},
		{
			name:   "quarantined for less than the quarantine: kept out of use",
			stored: []Allocation{stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateQuarantined, now.Add(-47*time.Hour))},
			want:   []string{"pod-a 06:00:00:00:00:01 2001:db8:200::/60 quarantined"},
			report: "pod-a: added 0 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 1 not-eligible 0 conflicts 0",
		},
		{
			name:   "quarantined for the quarantine: released (its prefix is free from the next sync on)",
			stored: []Allocation{stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateQuarantined, now.Add(-48*time.Hour))},
			listed: map[string][]NIC{"pod-a": {vmNIC("02", "06:00:00:00:00:02", "Running")}},
			want:   []string{"pod-a 06:00:00:00:00:02 2001:db8:200:10::/60 active"},
			report: "pod-a: added 1 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 1 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0",
		},
		{
			name:   "quarantined and listed again: back with the same prefix",
			stored: []Allocation{stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateQuarantined, now.Add(-47*time.Hour))},
			listed: map[string][]NIC{"pod-a": {vmNIC("01", "06:00:00:00:00:01", "Stopped")}},
			want:   []string{"pod-a 06:00:00:00:00:01 2001:db8:200::/60 active"},
			report: "pod-a: added 0 kept 0 refreshed 0 back 1 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0",
		},
		{
			name: "quarantined and listed again, Destroyed: the quarantine runs on",
			stored: []Allocation{
				stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateQuarantined, now.Add(-47*time.Hour)),
				stored("pod-a", "06:00:00:00:00:02", "2001:db8:200:10::/60", StateQuarantined, now.Add(-48*time.Hour)),
			},
			listed: map[string][]NIC{"pod-a": {vmNIC("01", "06:00:00:00:00:01", "Destroyed"), vmNIC("02", "06:00:00:00:00:02", "Destroyed")}},
			want:   []string{"pod-a 06:00:00:00:00:01 2001:db8:200::/60 quarantined"},
			report: "pod-a: added 0 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 1 still-gone 0 in-quarantine 1 not-eligible 0 conflicts 0",
		},
		{
			name: "a MAC that moved to another pod keeps its prefix where it is: a conflict",
			stored: []Allocation{
				stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateActive, now),
				stored("pod-a", "06:00:00:00:00:02", "2001:db8:200:10::/60", StateActive, now),
			},
			listed: map[string][]NIC{"pod-a": {vmNIC("02", "06:00:00:00:00:02", "Running")}, "pod-b": {vmNIC("01", "06:00:00:00:00:01", "Running")}},
			opts:   SyncOptions{MaxReleaseFraction: 0.5},
			want: []string{
				"pod-a 06:00:00:00:00:01 2001:db8:200::/60 gone",
				"pod-a 06:00:00:00:00:02 2001:db8:200:10::/60 active",
			},
			report: "pod-a: added 0 kept 1 refreshed 0 back 0 gone 1 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0; " +
				"pod-b: added 0 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 1",
		},
		{
			name:   "a MAC listed in two pods, or twice in one: no new allocation, the existing one kept",
			stored: []Allocation{stored("pod-a", "06:00:00:00:00:02", "2001:db8:200::/60", StateActive, now)},
			listed: map[string][]NIC{
				"pod-a": {vmNIC("01", "06:00:00:00:00:01", "Running"), vmNIC("02", "06:00:00:00:00:02", "Running"), vmNIC("03", "06:00:00:00:00:03", "Running")},
				"pod-b": {vmNIC("11", "06:00:00:00:00:01", "Running"), vmNIC("12", "06:00:00:00:00:02", "Running")},
			},
			want: []string{
				"pod-a 06:00:00:00:00:02 2001:db8:200::/60 active",
				"pod-a 06:00:00:00:00:03 2001:db8:200:10::/60 active",
			},
			report: "pod-a: added 1 kept 1 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 2; " +
				"pod-b: added 0 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 2",
		},
		{
			name: "a full pool: the NICs left over are conflicts",
			listed: map[string][]NIC{"small": {
				vmNIC("01", "06:00:00:00:00:01", "Running"), vmNIC("02", "06:00:00:00:00:02", "Running"), vmNIC("03", "06:00:00:00:00:03", "Running"),
				vmNIC("04", "06:00:00:00:00:04", "Running"), vmNIC("05", "06:00:00:00:00:05", "Running"),
			}},
			want: []string{
				"small 06:00:00:00:00:01 2001:db8:400::/60 active", "small 06:00:00:00:00:02 2001:db8:400:10::/60 active",
				"small 06:00:00:00:00:03 2001:db8:400:20::/60 active", "small 06:00:00:00:00:04 2001:db8:400:30::/60 active",
			},
			report: "small: added 4 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 1",
		},
		{
			name: "imported reservations follow the same rules",
			stored: func() []Allocation {
				a, b := alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200:50::/60"), alloc("pod-a", "06:00:00:00:00:02", "2001:db8:200:60::/60")
				a.Source, b.Source = ImportSource, ImportSource
				return []Allocation{a, b}
			}(),
			listed: map[string][]NIC{"pod-a": {vmNIC("01", "06:00:00:00:00:01", "Running")}},
			opts:   SyncOptions{Force: true},
			want: []string{
				"pod-a 06:00:00:00:00:01 2001:db8:200:50::/60 active",
				"pod-a 06:00:00:00:00:02 2001:db8:200:60::/60 gone",
			},
			report: "pod-a: added 0 kept 1 refreshed 1 back 0 gone 1 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0",
		},
		{
			name: "safety valve: 2 of 10 missing is refused, nothing changes anywhere",
			stored: func() []Allocation {
				var out []Allocation
				for i := range 10 {
					out = append(out, stored("pod-a", fmt.Sprintf("06:00:00:00:00:%02x", i), fmt.Sprintf("2001:db8:200:%x0::/60", i), StateActive, now))
				}
				return out
			}(),
			listed: map[string][]NIC{
				"pod-a": func() []NIC {
					var out []NIC
					for i := range 8 {
						out = append(out, vmNIC(fmt.Sprintf("%02x", i), fmt.Sprintf("06:00:00:00:00:%02x", i), "Running"))
					}
					return out
				}(),
				"pod-b": {vmNIC("11", "06:00:00:00:00:11", "Running")},
			},
			wantErr: ErrTooManyGone,
			report: "pod-a: added 0 kept 8 refreshed 0 back 0 gone 2 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0 REFUSED; " +
				"pod-b: added 1 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0",
		},
		{
			name:    "safety valve: an empty listing of a pool with allocations is refused",
			stored:  []Allocation{stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateActive, now)},
			wantErr: ErrTooManyGone,
			report:  "pod-a: added 0 kept 0 refreshed 0 back 0 gone 1 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0 REFUSED",
		},
		{
			name:   "safety valve: force overrides it",
			stored: []Allocation{stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateActive, now)},
			opts:   SyncOptions{Force: true},
			want:   []string{"pod-a 06:00:00:00:00:01 2001:db8:200::/60 gone"},
			report: "pod-a: added 0 kept 0 refreshed 0 back 0 gone 1 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0",
		},
		{
			name:   "safety valve: max-release-fraction 1 disables it",
			stored: []Allocation{stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateActive, now)},
			opts:   SyncOptions{MaxReleaseFraction: 1},
			want:   []string{"pod-a 06:00:00:00:00:01 2001:db8:200::/60 gone"},
			report: "pod-a: added 0 kept 0 refreshed 0 back 0 gone 1 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0",
		},
		{
			name: "safety valve: allocations already gone do not count again",
			stored: []Allocation{
				stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateGone, now.Add(-time.Hour)),
				stored("pod-a", "06:00:00:00:00:02", "2001:db8:200:10::/60", StateQuarantined, now.Add(-time.Hour)),
			},
			want: []string{
				"pod-a 06:00:00:00:00:01 2001:db8:200::/60 gone",
				"pod-a 06:00:00:00:00:02 2001:db8:200:10::/60 quarantined",
			},
			report: "pod-a: added 0 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 1 in-quarantine 1 not-eligible 0 conflicts 0",
		},
		{
			name:   "allocations of pools that are not configured are left alone",
			stored: []Allocation{stored("one", "06:00:00:00:00:01", "2001:db8:500::/60", StateActive, now)},
			listed: map[string][]NIC{"pod-a": {vmNIC("01", "06:00:00:00:00:01", "Running")}},
			want:   []string{"one 06:00:00:00:00:01 2001:db8:500::/60 active"},
			report: "pod-a: added 0 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t)
			if len(tt.stored) > 0 {
				mustPut(t, s, tt.stored...)
			}
			before := describeTable(t, s)
			opts := tt.opts
			if opts.ReleaseAfter == 0 {
				opts.ReleaseAfter, opts.Quarantine = syncOptions.ReleaseAfter, syncOptions.Quarantine
			}
			opts.Now = func() time.Time { return now }

			// A dry run reports the same and writes nothing.
			dry := opts
			dry.DryRun = true
			drep, derr := s.Reconcile(syncPools, listings(tt.listed), dry)
			if !errors.Is(derr, tt.wantErr) || (tt.wantErr == nil && derr != nil) {
				t.Fatalf("dry run: err = %v, want %v", derr, tt.wantErr)
			}
			if got := describeTable(t, s); !slices.Equal(got, before) {
				t.Fatalf("dry run wrote:\n%s", strings.Join(got, "\n"))
			}

			rep, err := s.Reconcile(syncPools, listings(tt.listed), opts)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got := describeReport(rep); got != tt.report {
				t.Errorf("report:\n%s\nwant\n%s", got, tt.report)
			}
			if got := describeReport(drep); got != tt.report || !drep.DryRun || drep.Written {
				t.Errorf("dry-run report (written %v):\n%s\nwant\n%s", drep.Written, got, tt.report)
			}
			want := tt.want
			if tt.wantErr != nil {
				want = before
				if rep.Written {
					t.Error("refused sync says written")
				}
			} else if rep.Written != rep.Changed() {
				t.Errorf("written %v, changed %v", rep.Written, rep.Changed())
			}
			if tt.name == "missing NICs are marked gone, within the safety valve" {
				want = nil
				for i := range 10 {
					state := "active"
					if i == 9 {
						state = "gone"
					}
					want = append(want, fmt.Sprintf("pod-a 06:00:00:00:00:%02x %s %s", i, netip.MustParsePrefix(fmt.Sprintf("2001:db8:200:%x0::/60", i)), state))
				}
			}
			if got := describeTable(t, s); !slices.Equal(got, want) {
				t.Errorf("table:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			mustCheckPools(t, s, append(slices.Clone(syncPools), poolOne))
			for _, p := range rep.Pools {
				for _, c := range p.Conflicts {
					if !errors.Is(c.Err, ErrDuplicateMAC) && !errors.Is(c.Err, ErrPoolExhausted) {
						t.Errorf("conflict %s wraps neither ErrDuplicateMAC nor ErrPoolExhausted", c)
					}
				}
			}
		})
	}
}

// The times: gone-at is set the first time only; the clock of release-after
// and quarantine runs from it; VM fields follow the listing; a prefix is
// served while gone and not once quarantined; a released prefix is reused.
func TestReconcileLifecycle(t *testing.T) {
	s := openTest(t)
	clock := t0
	opts := syncOptions
	opts.Now = func() time.Time { return clock }
	opts.MaxReleaseFraction = 1
	sync := func(nics ...NIC) *SyncReport {
		t.Helper()
		rep, err := s.Reconcile(syncPools, listings(map[string][]NIC{"pod-a": nics}), opts)
		if err != nil {
			t.Fatal(err)
		}
		mustCheckPools(t, s, syncPools)
		return rep
	}
	get := func(m string) (Allocation, bool) {
		t.Helper()
		var (
			a  Allocation
			ok bool
		)
		err := s.View(syncPools, func(tx *Tx) (err error) {
			a, ok, err = tx.Get("pod-a", mac(m))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return a, ok
	}
	served := func(m string) bool {
		t.Helper()
		tbl, _, err := s.LoadTable(syncPools)
		if err != nil {
			t.Fatal(err)
		}
		a, ok := tbl.Lookup(mac(m))
		return ok && a.Served()
	}

	web := withIP6(vmNIC("01", "06:00:00:00:00:01", "Running"), "2001:db8:100::1")
	db := vmNIC("02", "06:00:00:00:00:02", "Running")
	sync(web, db)
	a, _ := get("06:00:00:00:00:01")
	if a.State != StateActive || !a.Since.Equal(t0) || a.VMID != "vm-01" || a.VMName != "name-01" || a.NICID != "nic-06:00:00:00:00:01" ||
		a.IP6 != netip.MustParseAddr("2001:db8:100::1") || a.Source != SyncSource || a.Prefix != netip.MustParsePrefix("2001:db8:200::/60") {
		t.Fatalf("new allocation = %+v", a)
	}

	// Renamed, new IPv6 address: refreshed, same prefix, same since.
	clock = clock.Add(time.Hour)
	web.VMName, web.IP6 = "web-renamed", netip.MustParseAddr("2001:db8:100::2")
	if rep := sync(web, db); rep.Pools[0].Refreshed != 1 || !rep.Written {
		t.Errorf("refresh: %s", describeReport(rep))
	}
	if a, _ := get("06:00:00:00:00:01"); a.VMName != "web-renamed" || a.IP6 != netip.MustParseAddr("2001:db8:100::2") || !a.Since.Equal(t0) {
		t.Errorf("refreshed allocation = %+v", a)
	}

	// db vanishes: gone, with the time of this sync, then not again.
	clock = clock.Add(time.Hour)
	goneAt := clock
	sync(web)
	for range 3 {
		clock = clock.Add(7 * time.Hour)
		if rep := sync(web); rep.Written || rep.Pools[0].StillGone != 1 {
			t.Errorf("still gone: written %v: %s", rep.Written, describeReport(rep))
		}
	}
	if a, _ := get("06:00:00:00:00:02"); a.State != StateGone || !a.GoneAt.Equal(goneAt) {
		t.Errorf("gone allocation = %+v, want gone at %v", a, goneAt)
	}
	if !served("06:00:00:00:00:02") {
		t.Error("a gone allocation is not served")
	}

	// 24 h after it went: quarantined, not served, prefix still taken.
	clock = goneAt.Add(24 * time.Hour)
	quarantinedAt := clock
	if rep := sync(web); len(rep.Pools[0].Quarantined) != 1 {
		t.Errorf("quarantine: %s", describeReport(rep))
	}
	if a, _ := get("06:00:00:00:00:02"); a.State != StateQuarantined || !a.QuarantinedAt.Equal(quarantinedAt) || !a.GoneAt.Equal(goneAt) {
		t.Errorf("quarantined allocation = %+v", a)
	}
	if served("06:00:00:00:00:02") {
		t.Error("a quarantined allocation is served")
	}
	newVM := vmNIC("03", "06:00:00:00:00:03", "Running")
	sync(web, newVM)
	if a, _ := get("06:00:00:00:00:03"); a.Prefix != netip.MustParsePrefix("2001:db8:200:20::/60") {
		t.Errorf("a quarantined prefix was reused: %+v", a)
	}

	// 48 h into the quarantine: released; the next new NIC gets its prefix.
	clock = quarantinedAt.Add(48*time.Hour - time.Second)
	sync(web, newVM)
	if _, ok := get("06:00:00:00:00:02"); !ok {
		t.Fatal("released before the quarantine ended")
	}
	clock = clock.Add(time.Second)
	if rep := sync(web, newVM); len(rep.Pools[0].Released) != 1 {
		t.Errorf("release: %s", describeReport(rep))
	}
	if _, ok := get("06:00:00:00:00:02"); ok {
		t.Fatal("not released")
	}
	sync(web, newVM, vmNIC("04", "06:00:00:00:00:04", "Running"))
	if a, _ := get("06:00:00:00:00:04"); a.Prefix != netip.MustParsePrefix("2001:db8:200:10::/60") {
		t.Errorf("the released prefix was not reused: %+v", a)
	}
}

// A second sync of the same listings changes nothing and commits nothing:
// the file stays byte-identical.
func TestReconcileIdempotent(t *testing.T) {
	s := openTest(t)
	mustPut(t, s, stored("pod-a", "06:00:00:00:00:09", "2001:db8:200:90::/60", StateGone, t0.Add(-time.Hour)))
	l := listings(map[string][]NIC{
		"pod-a": {vmNIC("01", "06:00:00:00:00:01", "Running"), vmNIC("02", "06:00:00:00:00:02", "Destroyed")},
		"pod-v": {onVLAN(vmNIC("11", "06:00:00:00:00:11", "Running"), 2701, false)},
	})
	opts := syncOptions
	opts.Now = func() time.Time { return t0 }
	if rep, err := s.Reconcile(syncPools, l, opts); err != nil || !rep.Written {
		t.Fatalf("first sync: %v, written %v", err, rep.Written)
	}
	before, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.Reconcile(syncPools, l, opts)
	if err != nil || rep.Written || rep.Changed() {
		t.Fatalf("second sync: %v, written %v: %s", err, rep.Written, describeReport(rep))
	}
	after, _ := os.ReadFile(s.Path())
	if !slices.Equal(before, after) {
		t.Error("the second sync changed the file")
	}
	if tot := rep.Totals(); tot.Kept != 2 || tot.StillGone != 1 || tot.NotEligible != 1 || tot.Listed != 3 {
		t.Errorf("totals %+v", tot)
	}
}

// TestReconcileStoresPoolIP6CIDR: new allocations get their pool's
// ip6-cidr, a listed one written before it was kept takes it (refreshed),
// and a changed ip6-cidr in the config refreshes the listed allocations;
// a gone one takes it with its next change of state only.
func TestReconcileStoresPoolIP6CIDR(t *testing.T) {
	s := openTest(t)
	legacy := stored("pod-a", "06:00:00:00:00:03", "2001:db8:200:30::/60", StateActive, t0)
	legacy.IP6CIDR = netip.Prefix{} // as written before ip6-cidr was kept
	gone := stored("pod-a", "06:00:00:00:00:09", "2001:db8:200:90::/60", StateGone, t0.Add(-time.Hour))
	mustPut(t, s, legacy, gone)
	l := listings(map[string][]NIC{
		"pod-a": {vmNIC("01", "06:00:00:00:00:01", "Running"), vmNIC("03", "06:00:00:00:00:03", "Running")},
		"pod-v": {onVLAN(vmNIC("11", "06:00:00:00:00:11", "Running"), 2701, false)},
	})
	opts := syncOptions
	opts.Now = func() time.Time { return t0 }
	cidrs := func() map[string]netip.Prefix {
		out := map[string]netip.Prefix{}
		for _, a := range allAllocs(t, s) {
			out[a.MAC.String()] = a.IP6CIDR
		}
		return out
	}
	wantCIDRs := func(step string, want map[string]netip.Prefix) {
		t.Helper()
		got := cidrs()
		for m, w := range want {
			if got[m] != w {
				t.Errorf("%s: %s has ip6-cidr %v, want %v", step, m, got[m], w)
			}
		}
	}

	rep, err := s.Reconcile(syncPools, l, opts)
	if err != nil || !rep.Written {
		t.Fatalf("first sync: %v, written %v", err, rep.Written)
	}
	if got, want := describeReport(rep), "pod-a: added 1 kept 1 refreshed 1 back 0 gone 0 quarantined 0 released 0 still-gone 1 in-quarantine 0 not-eligible 0 conflicts 0; "+
		"pod-v: added 1 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0"; got != want {
		t.Errorf("first sync:\n%s\nwant\n%s", got, want)
	}
	if a := rep.Pools[0].Added; len(a) != 1 || a[0].IP6CIDR != poolA.IP6CIDR {
		t.Errorf("Added = %+v, want pod-a's ip6-cidr", a)
	}
	wantCIDRs("first sync", map[string]netip.Prefix{
		"06:00:00:00:00:01": poolA.IP6CIDR, "06:00:00:00:00:03": poolA.IP6CIDR, "06:00:00:00:00:09": poolA.IP6CIDR,
		"06:00:00:00:00:11": {}, // pod-v has none
	})

	// The config's ip6-cidr of pod-a changes.
	pools := slices.Clone(syncPools)
	newCIDR := netip.MustParsePrefix("2001:db8:1ff::/64")
	pools[0].IP6CIDR = newCIDR
	rep, err = s.Reconcile(pools, l, opts)
	if err != nil || !rep.Written || rep.Pools[0].Refreshed != 2 || rep.Pools[0].Kept != 2 {
		t.Fatalf("sync after the change: %v, written %v: %s", err, rep.Written, describeReport(rep))
	}
	wantCIDRs("after the change", map[string]netip.Prefix{
		"06:00:00:00:00:01": newCIDR, "06:00:00:00:00:03": newCIDR,
		"06:00:00:00:00:09": poolA.IP6CIDR, // gone, still gone: not rewritten for it
		"06:00:00:00:00:11": {},
	})
	tbl, _, err := s.LoadTable(pools)
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := tbl.Lookup(mac("06:00:00:00:00:01")); !ok || a.IP6CIDR != newCIDR {
		t.Errorf("table: %+v", a)
	}

	// Nothing else changes: nothing is written.
	if rep, err = s.Reconcile(pools, l, opts); err != nil || rep.Written || rep.Changed() {
		t.Fatalf("third sync: %v, written %v: %s", err, rep.Written, describeReport(rep))
	}

	// The gone one takes the new ip6-cidr when it is quarantined.
	opts.Now = func() time.Time { return t0.Add(48 * time.Hour) }
	if rep, err = s.Reconcile(pools, l, opts); err != nil || len(rep.Pools[0].Quarantined) != 1 || rep.Pools[0].Quarantined[0].IP6CIDR != newCIDR {
		t.Fatalf("quarantining sync: %v: %+v", err, rep.Pools[0].Quarantined)
	}
	wantCIDRs("quarantined", map[string]netip.Prefix{"06:00:00:00:00:09": newCIDR})
}

func TestReconcileNeedsEveryListing(t *testing.T) {
	s := openTest(t)
	l := listings(nil)
	delete(l, "pod-b")
	if _, err := s.Reconcile(syncPools, l, syncOptions); !errors.Is(err, ErrNoListing) || !strings.Contains(err.Error(), `"pod-b"`) {
		t.Errorf("err = %v", err)
	}
}

func TestRefusedErrorMessage(t *testing.T) {
	s := openTest(t)
	var allocs []Allocation
	for i := range 20 {
		allocs = append(allocs, stored("pod-b", fmt.Sprintf("06:00:00:00:00:%02x", i), fmt.Sprintf("2001:db8:300:%x0::/60", i), StateActive, t0))
	}
	mustPut(t, s, allocs...)
	_, err := s.Reconcile(syncPools, listings(nil), syncOptions)
	var re *RefusedError
	if !errors.As(err, &re) || len(re.Pools) != 1 || re.Pools[0] != (RefusedPool{Pool: "pod-b", Gone: 20, Active: 20}) {
		t.Fatalf("err = %#v", err)
	}
	const want = `sync refused, nothing changed: pool "pod-b": the listing lacks 20 of its 20 active allocations (100.0%); max-release-fraction 0.1 allows at most 2 at once`
	if err.Error() != want {
		t.Errorf("message:\n%s\nwant\n%s", err, want)
	}
}

// lowestFree finds n prefixes in one walk, across gaps, and says when the
// pool runs out.
func TestLowestFreeN(t *testing.T) {
	s := openTest(t)
	mustPut(t, s, alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200:10::/60"), alloc("pod-a", "06:00:00:00:00:02", "2001:db8:200:30::/60"),
		alloc("pod-a", "06:00:00:00:00:03", "2001:db8:200:40::/60"), alloc("small", "06:00:00:00:00:04", "2001:db8:400:10::/60"))
	err := s.View(testPools, func(tx *Tx) error {
		got, err := tx.lowestFree(poolA, 4)
		want := []netip.Prefix{netip.MustParsePrefix("2001:db8:200::/60"), netip.MustParsePrefix("2001:db8:200:20::/60"),
			netip.MustParsePrefix("2001:db8:200:50::/60"), netip.MustParsePrefix("2001:db8:200:60::/60")}
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("pod-a: %v, %v", got, err)
		}
		got, err = tx.lowestFree(poolSmall, 4)
		if !errors.Is(err, ErrPoolExhausted) || len(got) != 3 || got[2] != netip.MustParsePrefix("2001:db8:400:30::/60") {
			t.Errorf("small: %v, %v", got, err)
		}
		got, err = tx.lowestFree(poolTop, 5)
		if !errors.Is(err, ErrPoolExhausted) || len(got) != 4 {
			t.Errorf("top: %v, %v", got, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
