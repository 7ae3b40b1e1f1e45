package allocator

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// A targeted sync applies a full sync's rules to the NICs it lists, and
// never takes anything away: a VM missing from its listings is only
// reported, whatever the state of its allocation.
func TestReconcileVMsRules(t *testing.T) {
	now := t0.Add(1000 * time.Hour)
	tests := []struct {
		name    string
		stored  []Allocation
		listed  map[string][]NIC
		vms     []string
		want    []string
		report  string
		missing []string
	}{
		{
			name:   "a new VM's NIC gets the lowest free prefix; the others are left alone",
			stored: []Allocation{stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateActive, now)},
			listed: map[string][]NIC{"pod-a": {vmNIC("02", "06:00:00:00:00:02", "Running")}},
			vms:    []string{"vm-02"},
			want: []string{
				"pod-a 06:00:00:00:00:01 2001:db8:200::/60 active",
				"pod-a 06:00:00:00:00:02 2001:db8:200:10::/60 active",
			},
			report: "pod-a: added 1 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0",
		},
		{
			name:    "a missing VM is only noted: its allocation stays active",
			stored:  []Allocation{stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateActive, now)},
			vms:     []string{"vm-01"},
			want:    []string{"pod-a 06:00:00:00:00:01 2001:db8:200::/60 active"},
			missing: []string{"vm-01"},
		},
		{
			name: "gone and quarantined long ago, missing: nothing is quarantined or released",
			stored: []Allocation{
				stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateGone, now.Add(-100*time.Hour)),
				stored("pod-a", "06:00:00:00:00:02", "2001:db8:200:10::/60", StateQuarantined, now.Add(-100*time.Hour)),
			},
			vms: []string{"vm-01", "vm-02"},
			want: []string{
				"pod-a 06:00:00:00:00:01 2001:db8:200::/60 gone",
				"pod-a 06:00:00:00:00:02 2001:db8:200:10::/60 quarantined",
			},
			missing: []string{"vm-01", "vm-02"},
		},
		{
			name:   "gone and listed again: back, same prefix",
			stored: []Allocation{stored("pod-a", "06:00:00:00:00:01", "2001:db8:200:50::/60", StateGone, now.Add(-time.Hour))},
			listed: map[string][]NIC{"pod-a": {vmNIC("01", "06:00:00:00:00:01", "Running")}},
			vms:    []string{"vm-01"},
			want:   []string{"pod-a 06:00:00:00:00:01 2001:db8:200:50::/60 active"},
			report: "pod-a: added 0 kept 0 refreshed 0 back 1 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0",
		},
		{
			name:   "quarantined and listed with its VM Destroyed: the quarantine runs on",
			stored: []Allocation{stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateQuarantined, now.Add(-time.Hour))},
			listed: map[string][]NIC{"pod-a": {vmNIC("01", "06:00:00:00:00:01", "Destroyed")}},
			vms:    []string{"vm-01"},
			want:   []string{"pod-a 06:00:00:00:00:01 2001:db8:200::/60 quarantined"},
			report: "pod-a: added 0 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 1 not-eligible 0 conflicts 0",
		},
		{
			name:   "a listed NIC is refreshed with its VM's fields",
			stored: []Allocation{stored("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60", StateActive, now)},
			listed: map[string][]NIC{"pod-a": {withIP6(vmNIC("01", "06:00:00:00:00:01", "Running"), "2001:db8:100::1")}},
			vms:    []string{"vm-01"},
			want:   []string{"pod-a 06:00:00:00:00:01 2001:db8:200::/60 active"},
			report: "pod-a: added 0 kept 1 refreshed 1 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 0",
		},
		{
			name:   "a Destroyed VM gets no new prefix",
			listed: map[string][]NIC{"pod-a": {vmNIC("01", "06:00:00:00:00:01", "Destroyed")}},
			vms:    []string{"vm-01"},
			report: "pod-a: added 0 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 1 conflicts 0",
		},
		{
			name:   "a MAC allocated in another pool is a conflict, not moved",
			stored: []Allocation{stored("pod-b", "06:00:00:00:00:01", "2001:db8:300::/60", StateActive, now)},
			listed: map[string][]NIC{"pod-a": {vmNIC("01", "06:00:00:00:00:01", "Running")}},
			vms:    []string{"vm-01"},
			want:   []string{"pod-b 06:00:00:00:00:01 2001:db8:300::/60 active"},
			report: "pod-a: added 0 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 1",
		},
		{
			name:   "a MAC listed twice gets nothing",
			listed: map[string][]NIC{"pod-a": {vmNIC("01", "06:00:00:00:00:01", "Running"), vmNIC("02", "06:00:00:00:00:01", "Running")}},
			vms:    []string{"vm-01", "vm-02"},
			report: "pod-a: added 0 kept 0 refreshed 0 back 0 gone 0 quarantined 0 released 0 still-gone 0 in-quarantine 0 not-eligible 0 conflicts 2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t)
			if len(tt.stored) > 0 {
				mustPut(t, s, tt.stored...)
			}
			before := describeTable(t, s)
			opts := syncOptions
			opts.Now = func() time.Time { return now }
			dry := opts
			dry.DryRun = true
			if _, err := s.ReconcileVMs(syncPools, listings(tt.listed), tt.vms, dry); err != nil {
				t.Fatalf("dry run: %v", err)
			}
			if got := describeTable(t, s); !slices.Equal(got, before) {
				t.Fatalf("dry run wrote:\n%s", strings.Join(got, "\n"))
			}
			rep, err := s.ReconcileVMs(syncPools, listings(tt.listed), tt.vms, opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := describeTable(t, s); !slices.Equal(got, tt.want) {
				t.Errorf("table:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if got := describeReport(&rep.SyncReport); got != tt.report {
				t.Errorf("report %q\nwant   %q", got, tt.report)
			}
			if !slices.Equal(rep.Missing, tt.missing) {
				t.Errorf("missing %v, want %v", rep.Missing, tt.missing)
			}
			if rep.Written != rep.Changed() {
				t.Errorf("written %v, changed %v", rep.Written, rep.Changed())
			}
			mustCheckPools(t, s, syncPools)
		})
	}
}

type vmLister struct {
	nics  map[string][]NIC
	err   error
	calls int
}

func (l *vmLister) ListVMNICs(_ context.Context, pod string, ids []string) ([]NIC, error) {
	l.calls++
	if l.err != nil {
		return nil, l.err
	}
	var out []NIC
	for _, n := range l.nics[pod] {
		if slices.Contains(ids, n.VMID) {
			out = append(out, n)
		}
	}
	return out, nil
}

// SyncVMs lists the VMs in every pool and reconciles; a listing error
// changes nothing.
func TestSyncVMs(t *testing.T) {
	s := openTest(t)
	inv := &vmLister{nics: map[string][]NIC{"pod-a": {vmNIC("01", "06:00:00:00:00:01", "Running"), vmNIC("02", "06:00:00:00:00:02", "Running")}}}
	rep, err := s.SyncVMs(t.Context(), syncPools, inv, []string{"vm-02"}, syncOptions)
	if err != nil {
		t.Fatal(err)
	}
	if got := describeTable(t, s); !slices.Equal(got, []string{"pod-a 06:00:00:00:00:02 2001:db8:200::/60 active"}) {
		t.Errorf("table %v", got)
	}
	if inv.calls != len(syncPools) || !rep.Written {
		t.Errorf("%d calls, written %v", inv.calls, rep.Written)
	}
	inv.err = errors.New("boom")
	if _, err := s.SyncVMs(t.Context(), syncPools, inv, []string{"vm-01"}, syncOptions); err == nil || !strings.Contains(err.Error(), "nothing changed: boom") {
		t.Errorf("err = %v", err)
	}
	if got := describeTable(t, s); len(got) != 1 {
		t.Errorf("table after a failed listing: %v", got)
	}
}
