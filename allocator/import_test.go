package allocator

import (
	"errors"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/kea"
)

// The pools of example/cloudstack-pd.yaml.
var (
	pod1 = Pool{Name: "77828509-4043-40bc-8756-7745c8ec7a99", Prefix: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60,
		InterfaceID: "VLAN2701", IP6CIDR: netip.MustParsePrefix("2001:db8:100::/64")}
	pod2 = Pool{Name: "0f3a1a2e-9d1c-4f7e-8a51-2b6c1d9e4f10", Prefix: netip.MustParsePrefix("2001:db8:300::/40"), PrefixLen: 60,
		InterfaceID: "VLAN2702", IP6CIDR: netip.MustParsePrefix("2001:db8:101::/64")}
	examplePools = []Pool{pod1, pod2}
)

func loadKea(t *testing.T, name string) *kea.Config {
	t.Helper()
	c, err := kea.Load(filepath.Join("../testdata/kea", name))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func importInto(t *testing.T, s *Store, cfg *kea.Config, now time.Time) (*ImportReport, error) {
	t.Helper()
	var rep *ImportReport
	err := s.Update(examplePools, func(tx *Tx) (err error) {
		rep, err = Import(tx, cfg, now)
		return err
	})
	return rep, err
}

func storeAllocs(t *testing.T, s *Store) map[string]Allocation {
	t.Helper()
	out := map[string]Allocation{}
	for _, a := range allAllocs(t, s) {
		out[a.MAC.String()] = a
	}
	return out
}

func TestImportOldGeneratorOutput(t *testing.T) {
	s := openTest(t)
	cfg := loadKea(t, "old-generator-output.json")
	rep, err := importInto(t, s, cfg, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Added) != 6 || len(rep.Present) != 0 || len(rep.Conflicts) != 0 || rep.NoPrefix != 0 {
		t.Errorf("report: %d added, %d present, %d conflicts, %d without prefix", len(rep.Added), len(rep.Present), len(rep.Conflicts), rep.NoPrefix)
	}
	wantSkipped := []SkippedSubnet{{Path: "Dhcp6.subnet6[2]", Subnet: "2001:db8:102::/64"}}
	if !reflect.DeepEqual(rep.SkippedSubnets, wantSkipped) {
		t.Errorf("SkippedSubnets = %+v", rep.SkippedSubnets)
	}
	if got := rep.SkippedSubnets[0].String(); got != "Dhcp6.subnet6[2]: subnet 2001:db8:102::/64, no interface-id: no configured pool has this interface-id (0 reservation(s), 0 with prefixes)" {
		t.Errorf("SkippedSubnet.String() = %q", got)
	}
	got := storeAllocs(t, s)
	want := map[string]Allocation{
		"06:32:b2:00:04:79": {Pool: pod1.Name, Prefix: netip.MustParsePrefix("2001:db8:200::/60"), IP6: netip.MustParseAddr("2001:db8:100:0:432:b2ff:fe00:479")},
		"06:a5:de:00:04:47": {Pool: pod1.Name, Prefix: netip.MustParsePrefix("2001:db8:200:10::/60"), IP6: netip.MustParseAddr("2001:db8:100:0:4a5:deff:fe00:447")},
		"06:32:b2:00:04:80": {Pool: pod1.Name, Prefix: netip.MustParsePrefix("2001:db8:200:20::/60"), IP6: netip.MustParseAddr("2001:db8:100:0:432:b2ff:fe00:480")},
		"1e:00:91:00:00:0c": {Pool: pod1.Name, Prefix: netip.MustParsePrefix("2001:db8:200:40::/60"), IP6: netip.MustParseAddr("2001:db8:100:0:1c00:91ff:fe00:c")},
		"06:51:34:00:00:5e": {Pool: pod2.Name, Prefix: netip.MustParsePrefix("2001:db8:300::/60"), IP6: netip.MustParseAddr("2001:db8:101:0:451:34ff:fe00:5e")},
		"06:51:34:00:00:5f": {Pool: pod2.Name, Prefix: netip.MustParsePrefix("2001:db8:300:10::/60")},
	}
	if len(got) != len(want) {
		t.Fatalf("store holds %d allocations, want %d", len(got), len(want))
	}
	for m, w := range want {
		w.MAC, w.State, w.Since, w.Source = mac(m), StateActive, t0, ImportSource
		w.IP6CIDR = pod1.IP6CIDR // the pool's ip6-cidr is stored with each
		if w.Pool == pod2.Name {
			w.IP6CIDR = pod2.IP6CIDR
		}
		if !equalAlloc(got[m], w) {
			t.Errorf("%s:\n got %+v\nwant %+v", m, got[m], w)
		}
	}
	mustCheckPools(t, s, examplePools)

	// Again, later: nothing changes.
	rep, err = importInto(t, s, cfg, t0.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Added) != 0 || len(rep.Present) != 6 {
		t.Errorf("second import: %d added, %d present", len(rep.Added), len(rep.Present))
	}
	again := storeAllocs(t, s)
	for m := range got {
		if !equalAlloc(again[m], got[m]) {
			t.Errorf("%s changed by the second import: %+v", m, again[m])
		}
	}
	// The table the server loads agrees.
	tab, lr, err := s.LoadTable(examplePools)
	if err != nil || len(tab.Allocations()) != 6 || len(lr.Orphaned) != 0 {
		t.Errorf("LoadTable: %v", err)
	}
}

func TestImportCommented(t *testing.T) {
	s := openTest(t)
	rep, err := importInto(t, s, loadKea(t, "commented.conf"), t0)
	if err != nil {
		t.Fatal(err)
	}
	var added []string
	for _, it := range rep.Added {
		added = append(added, it.Path+" "+it.Allocation.MAC.String()+" "+it.Allocation.Prefix.String())
	}
	wantAdded := []string{
		"Dhcp6.subnet6[0].reservations[0] 06:51:34:00:00:5e 2001:db8:300::/60",
		"Dhcp6.shared-networks[0].subnet6[0].reservations[0] 06:32:b2:00:04:79 2001:db8:200::/60",
		"Dhcp6.shared-networks[0].subnet6[0].reservations[1] 06:32:b2:00:04:80 2001:db8:200:10::/60",
	}
	if !reflect.DeepEqual(added, wantAdded) {
		t.Errorf("added:\n got %q\nwant %q", added, wantAdded)
	}
	if rep.NoPrefix != 3 || len(rep.SkippedSubnets) != 1 || rep.SkippedSubnets[0].InterfaceID != "VLAN999" || rep.SkippedSubnets[0].Reservations != 1 {
		t.Errorf("NoPrefix %d, skipped %+v", rep.NoPrefix, rep.SkippedSubnets)
	}
	if len(rep.Warnings) != 0 {
		t.Errorf("Warnings = %q", rep.Warnings)
	}
}

func TestImportConflictsFile(t *testing.T) {
	s := openTest(t)
	mustPutPools(t, s, examplePools,
		Allocation{Pool: pod1.Name, MAC: mac("06:00:00:00:00:aa"), Prefix: netip.MustParsePrefix("2001:db8:200:200::/60"), State: StateActive, Since: t0},
		Allocation{Pool: pod1.Name, MAC: mac("06:00:00:00:00:bb"), Prefix: netip.MustParsePrefix("2001:db8:200:300::/60"), State: StateActive, Since: t0},
	)
	before := storeAllocs(t, s)
	rep, err := importInto(t, s, loadKea(t, "conflicts.json"), t0)
	if !errors.Is(err, ErrImportConflicts) {
		t.Fatalf("Import: %v, want ErrImportConflicts", err)
	}
	if want := "import ../testdata/kea/conflicts.json: 13 conflict(s), nothing written: import conflicts"; err.Error() != want {
		t.Errorf("err = %q\nwant  %q", err, want)
	}
	const s0, s1, s2 = "Dhcp6.subnet6[0].reservations", "Dhcp6.subnet6[1].reservations", "Dhcp6.subnet6[2].reservations"
	want := []struct {
		path string
		err  error
		msg  string
	}{
		{s0 + "[1].prefixes[0]", ErrOutsidePool, "06:00:00:00:00:02: prefix 2001:db8:999::/60 not in pool"},
		{s0 + "[2].prefixes[0]", ErrPrefixLength, "06:00:00:00:00:03: prefix 2001:db8:200:30::/64 in pool"},
		{s0 + "[3].prefixes[0]", ErrPrefixLength, "06:00:00:00:00:04: prefix 2001:db8:200:48::/60 in pool"},
		{s0 + "[5].prefixes[0]", ErrDuplicatePrefix, "prefix 2001:db8:200:50::/60 for 06:00:00:00:00:06 is also reserved at " + s0 + "[4].prefixes[0] for 06:00:00:00:00:05"},
		{s0 + "[7]", ErrInvalidReservation, `no hw-address (duid "00:03:00:01:06:00:00:00:00:08")`},
		{s0 + "[8].prefixes", ErrInvalidReservation, "2 prefixes for 06:00:00:00:00:09: a MAC gets exactly one"},
		{s0 + "[9].prefixes[0]", ErrPrefixMoved, "06:00:00:00:00:aa has 2001:db8:200:200::/60 in the store, not 2001:db8:200:100::/60"},
		{s0 + "[10].prefixes[0]", ErrDuplicatePrefix, "prefix 2001:db8:200:300::/60 for 06:00:00:00:00:cc is allocated to 06:00:00:00:00:bb in the store"},
		{s1 + "[0].hw-address", ErrDuplicateMAC, "06:00:00:00:00:07 gets 2001:db8:300:60::/60 here but 2001:db8:200:60::/60 at " + s0 + "[6]"},
		{s2 + "[0]", ErrUnknownPool, `subnet 2001:db8:999::/64: interface-id "VLAN999" names no configured pool: 2001:db8:400::/60 cannot be adopted`},
		{"Dhcp6.reservations[0]", ErrUnknownPool, "global reservation: no subnet, so no pool"},
		{"Dhcp6.reservations[1]", ErrUnknownPool, "global reservation"},
		{"Dhcp6.reservations[1].prefixes", ErrInvalidReservation, "2 prefixes for 06:00:00:00:00:0d"},
	}
	for i, w := range want {
		if i >= len(rep.Conflicts) {
			t.Errorf("missing conflict %s (%v)", w.path, w.err)
			continue
		}
		c := rep.Conflicts[i]
		if c.Path != w.path || !errors.Is(c.Err, w.err) || !strings.Contains(c.Err.Error(), w.msg) {
			t.Errorf("conflict %d = %s\nwant   %s: …%s…: %v", i, c, w.path, w.msg, w.err)
		}
	}
	for _, c := range rep.Conflicts[min(len(want), len(rep.Conflicts)):] {
		t.Errorf("unexpected conflict %s", c)
	}
	if len(rep.SkippedSubnets) != 1 || rep.SkippedSubnets[0].WithPrefixes != 1 {
		t.Errorf("SkippedSubnets = %+v", rep.SkippedSubnets)
	}
	if !reflect.DeepEqual(storeAllocs(t, s), before) {
		t.Error("an import with conflicts wrote to the store")
	}
}

func TestImportAgainstStore(t *testing.T) {
	const r0 = "Dhcp6.subnet6[0].reservations[0]"
	file := func(hw, prefix, ip string) string {
		r := `{"hw-address": "` + hw + `", "prefixes": ["` + prefix + `"]`
		if ip != "" {
			r += `, "ip-addresses": ["` + ip + `"]`
		}
		return `{"Dhcp6": {"subnet6": [{"subnet": "2001:db8:100::/64", "interface-id": "VLAN2701", "reservations": [` + r + `}]}]}}`
	}
	stored := []Allocation{
		{Pool: pod1.Name, MAC: mac("06:00:00:00:00:01"), Prefix: netip.MustParsePrefix("2001:db8:200::/60"), State: StateActive, Since: t0},
		{Pool: pod2.Name, MAC: mac("06:00:00:00:00:02"), Prefix: netip.MustParsePrefix("2001:db8:300::/60"), State: StateQuarantined, Since: t0},
	}
	for _, tc := range []struct {
		name, file  string
		wantErr     error // of the one conflict
		wantPresent bool
	}{
		{"new", file("06:00:00:00:00:03", "2001:db8:200:10::/60", "2001:db8:100::3"), nil, false},
		{"present", file("06:00:00:00:00:01", "2001:db8:200::/60", ""), nil, true},
		{"prefix of another MAC", file("06:00:00:00:00:03", "2001:db8:200::/60", ""), ErrDuplicatePrefix, false},
		{"moved", file("06:00:00:00:00:01", "2001:db8:200:10::/60", ""), ErrPrefixMoved, false},
		{"MAC in another pool", file("06:00:00:00:00:02", "2001:db8:200:10::/60", ""), ErrDuplicateMAC, false},
		{"bad ip-address", file("06:00:00:00:00:03", "2001:db8:200:10::/60", "192.0.2.1"), ErrInvalidReservation, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t)
			mustPutPools(t, s, examplePools, stored...)
			// The parser refuses the IPv4 address; build the config by hand then.
			cfg, err := kea.Parse("t.json", []byte(tc.file))
			if tc.name != "bad ip-address" && err != nil {
				t.Fatal(err)
			}
			if err != nil {
				cfg = &kea.Config{Path: "t.json", Subnets: []kea.Subnet{{Path: "Dhcp6.subnet6[0]", Subnet: "2001:db8:100::/64", InterfaceID: "VLAN2701",
					Reservations: []kea.Reservation{{Path: r0, HWAddress: "06:00:00:00:00:03", Prefixes: []string{"2001:db8:200:10::/60"}, IPAddresses: []string{"192.0.2.1"}}}}}}
			}
			// A plan in a read-only transaction writes nothing.
			var plan *ImportReport
			perr := s.View(examplePools, func(tx *Tx) (err error) {
				plan, err = PlanImport(tx, cfg, t0)
				return err
			})
			rep, err := importInto(t, s, cfg, t0)
			if !reflect.DeepEqual(plan, rep) || (perr == nil) != (err == nil) {
				t.Errorf("PlanImport %+v, %v\ndiffers from Import %+v, %v", plan, perr, rep, err)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, ErrImportConflicts) || len(rep.Conflicts) != 1 || !errors.Is(rep.Conflicts[0].Err, tc.wantErr) {
					t.Fatalf("Import: %v, conflicts %v; want one %v", err, rep.Conflicts, tc.wantErr)
				}
				if n := len(storeAllocs(t, s)); n != len(stored) {
					t.Errorf("store holds %d allocations after a failed import", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantPresent != (len(rep.Present) == 1) || tc.wantPresent == (len(rep.Added) == 1) {
				t.Errorf("added %v, present %v", rep.Added, rep.Present)
			}
			mustCheckPools(t, s, examplePools)
		})
	}
}

func TestImportWarnsAboutSubnetMismatch(t *testing.T) {
	s := openTest(t)
	cfg, err := kea.Parse("t.json", []byte(`{"Dhcp6": {"subnet6": [{"subnet": "2001:db8:1::/64", "interface-id": "VLAN2701",
		"reservations": [{"hw-address": "06:00:00:00:00:01", "prefixes": ["2001:db8:200::/60"]}]}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := importInto(t, s, cfg, t0)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`Dhcp6.subnet6[0]: subnet 2001:db8:1::/64 differs from pool "77828509-4043-40bc-8756-7745c8ec7a99"'s ip6-cidr 2001:db8:100::/64`}
	if !reflect.DeepEqual(rep.Warnings, want) || len(rep.Added) != 1 {
		t.Errorf("Warnings = %q, added %d", rep.Warnings, len(rep.Added))
	}
}
