package main

import (
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
	"github.com/cloudstack-pd/cloudstack-pd/kea"
)

// withKeaExportSync makes kea-export sync from CloudStack, as main does,
// for the test.
func withKeaExportSync(t *testing.T) {
	t.Helper()
	keaExportSync = syncForKeaExport
	t.Cleanup(func() { keaExportSync = nil })
}

// earlierKeaConfig writes the Kea config an earlier kea-export made for the
// site s (the old script's output would do as well), with comments added
// by hand as Kea allows, and returns its path. The site's store then had a
// VM that is gone since (06:00:00:00:00:01, the lowest prefix) and had
// numbered the fixture pod's VMs after it: a fresh store would number
// them from the pool's first prefix instead.
func earlierKeaConfig(t *testing.T, s *cloudstacktest.Site) string {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "cloudstack-pd.yaml")
	state := filepath.Join(dir, "state.db")
	testenv.WriteFile(t, cfgPath, cloudstacktest.SiteConfig(s.Fake.URL, state))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := allocator.OpenStore(boltstore.Open(state, boltstore.Options{Create: true, NoSync: true}))
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(cfg.Pools(), func(tx *allocator.Tx) error {
		return tx.Put(allocator.Allocation{Pool: cloudstacktest.SitePod, MAC: net.HardwareAddr{6, 0, 0, 0, 0, 1},
			Prefix: netip.MustParsePrefix("2001:db8:200::/60"), State: allocator.StateGone, Since: time.Unix(1700000000, 0),
			GoneAt: time.Now(), Source: "sync"})
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "kea-base.conf")
	testenv.WriteFile(t, base, `{"Dhcp6": {"valid-lifetime": 172800, "subnet6": []}}`)
	out := filepath.Join(dir, "kea-dhcp6.conf")
	if _, stderr, err := exportKea(t, keaExportFlags{config: cfgPath, keacfg: base, output: out}); err != nil {
		t.Fatalf("the earlier kea-export: %v\n%s", err, stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// An operator's notes, in the three comment styles Kea reads.
	commented := "# kea-dhcp6.conf, written by cloudstack-pd kea-export\n// do not edit the reservations by hand\n" +
		strings.Replace(string(data), `"subnet6": [`, `"subnet6": [ /* one entry per pod */`, 1)
	if commented == "# kea-dhcp6.conf, written by cloudstack-pd kea-export\n// do not edit the reservations by hand\n"+string(data) {
		t.Fatal("no subnet6 list to comment in the earlier config")
	}
	testenv.WriteFile(t, out, commented)
	return out
}

// TestKeaExportKeepsKeacfgReservations is the old script's use: a fresh
// store (no state yet), --keacfg the config Kea serves, CloudStack listing
// the VMs. Every reservation of --keacfg comes out unchanged, the gone VM's
// included, and kea-diff, on the commented input, finds none moved.
func TestKeaExportKeepsKeacfgReservations(t *testing.T) {
	s := newSyncSite(t)
	withKeaExportSync(t)
	keacfg := earlierKeaConfig(t, s)
	in, err := kea.Load(keacfg)
	if err != nil {
		t.Fatal(err)
	}
	want := reservedPrefixes(t, in, map[string]bool{"VLAN2701": true})
	if len(want) != 6 || want["06:00:00:00:00:01"] != "2001:db8:200::/60" {
		t.Fatalf("the earlier config reserves %v, want the gone VM's 2001:db8:200::/60 and 5 more", want)
	}

	s.State = filepath.Join(t.TempDir(), "new", "state.db") // fresh: does not exist
	// The gone VM's reservation is adopted as active, and the sync then
	// marks it gone: one of six, more than the default safety valve lets
	// a sync do at once (docs/migration-from-kea.md).
	s.WriteConfig(t, "allocation:\n  max-release-fraction: 0.5\n")
	outPath := filepath.Join(t.TempDir(), "kea-dhcp6.new.conf")
	_, stderr, err := exportKea(t, keaExportFlags{config: s.ConfigPath, keacfg: keacfg, output: outPath})
	if err != nil {
		t.Fatalf("kea-export: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "6 reservation(s) the store did not hold adopted") {
		t.Errorf("stderr does not report the adoption:\n%s", stderr)
	}
	out, err := kea.Load(outPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := reservedPrefixes(t, out, map[string]bool{"VLAN2701": true}); !equalMaps(got, want) {
		t.Errorf("kea-export moved reservations:\n got %v\nwant %v", got, want)
	}

	// The migration guide's check, on the commented input.
	diff, err := runCLI(t, "kea-diff", keacfg, outPath)
	if err != nil || !strings.Contains(diff, ": 6 reservation(s) kept, 0 moved, 0 added, 0 removed\n") {
		t.Errorf("kea-diff: %v\n%s", err, diff)
	}
	for _, f := range []string{keacfg, outPath} {
		if out, err := runCLI(t, "kea-diff", "--normalize", f); err != nil || !strings.HasPrefix(out, "{\n  \"Dhcp6\": {") {
			t.Errorf("kea-diff --normalize %s: %v\n%s", f, err, out)
		}
	}
}

// TestKeaExportOfflineKeepsKeacfg: --offline on a store that holds nothing
// exports the --keacfg reservations, and writes nothing to the store.
func TestKeaExportOfflineKeepsKeacfg(t *testing.T) {
	s := newSyncSite(t)
	withKeaExportSync(t)
	keacfg := earlierKeaConfig(t, s)
	in, err := kea.Load(keacfg)
	if err != nil {
		t.Fatal(err)
	}
	want := reservedPrefixes(t, in, map[string]bool{"VLAN2701": true})

	s.State = filepath.Join(t.TempDir(), "state.db")
	s.WriteConfig(t, "")
	st, err := allocator.OpenStore(boltstore.Open(s.State, boltstore.Options{Create: true}))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	before := storeBytes(t, s)
	stdout, stderr, err := exportKea(t, keaExportFlags{config: s.ConfigPath, keacfg: keacfg, offline: true})
	if err != nil {
		t.Fatalf("kea-export --offline: %v\n%s", err, stderr)
	}
	out, err := kea.Parse("stdout", []byte(stdout))
	if err != nil {
		t.Fatal(err)
	}
	if got := reservedPrefixes(t, out, map[string]bool{"VLAN2701": true}); !equalMaps(got, want) {
		t.Errorf("kea-export --offline dropped or moved reservations:\n got %v\nwant %v", got, want)
	}
	if string(storeBytes(t, s)) != string(before) {
		t.Error("kea-export --offline wrote to the store")
	}
}

// TestKeaExportRefusesMoves: a store that gives a --keacfg MAC another
// prefix (or the prefix to another MAC) makes kea-export fail, naming each
// conflict, with the output file and the store untouched; on a fresh
// store that fails, no store is left behind.
func TestKeaExportRefusesMoves(t *testing.T) {
	s := newSyncSite(t)
	withKeaExportSync(t)
	keacfg := earlierKeaConfig(t, s)

	s.State = filepath.Join(t.TempDir(), "state.db")
	s.WriteConfig(t, "")
	cfg, err := config.Load(s.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := allocator.OpenStore(boltstore.Open(s.State, boltstore.Options{Create: true}))
	if err != nil {
		t.Fatal(err)
	}
	// What a fresh sync numbers: the fixture's web-01 at the pool's first
	// prefix, which --keacfg reserves for the gone 06:00:00:00:00:01.
	web01 := net.HardwareAddr{0x1e, 0, 0x5d, 0, 1, 0x7a}
	err = st.Update(cfg.Pools(), func(tx *allocator.Tx) error {
		return tx.Put(allocator.Allocation{Pool: cloudstacktest.SitePod, MAC: web01, Prefix: netip.MustParsePrefix("2001:db8:200::/60"),
			State: allocator.StateActive, Since: time.Unix(1700000000, 0), Source: "sync"})
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	before := storeBytes(t, s)
	outPath := filepath.Join(t.TempDir(), "kea-dhcp6.conf")
	testenv.WriteFile(t, outPath, "the running config\n")
	for _, offline := range []bool{false, true} {
		_, stderr, err := exportKea(t, keaExportFlags{config: s.ConfigPath, keacfg: keacfg, output: outPath, offline: offline})
		if err == nil {
			t.Fatalf("offline %v: kea-export succeeded on a store that moves reservations\n%s", offline, stderr)
		}
		msg := err.Error()
		for _, w := range []string{
			"reservation(s) would move or cannot be kept, nothing exported and nothing written",
			"1e:00:5d:00:01:7a", "06:00:00:00:00:01", "2001:db8:200::/60", "Dhcp6.subnet6[0].reservations[",
		} {
			if !strings.Contains(msg, w) {
				t.Errorf("offline %v: the error does not name %q:\n%s", offline, w, msg)
			}
		}
		if b, _ := os.ReadFile(outPath); string(b) != "the running config\n" {
			t.Errorf("offline %v: --output changed to %q", offline, b)
		}
		if string(storeBytes(t, s)) != string(before) {
			t.Errorf("offline %v: the store changed", offline)
		}
	}

	// A fresh store on which kea-export fails (CloudStack is down) is not
	// left behind.
	s.State = filepath.Join(t.TempDir(), "fresh", "state.db")
	s.WriteConfig(t, "")
	s.Fake.Inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultInternal})
	if _, stderr, err := exportKea(t, keaExportFlags{config: s.ConfigPath, keacfg: keacfg, output: outPath}); err == nil {
		t.Fatalf("kea-export with CloudStack down succeeded\n%s", stderr)
	}
	if _, err := os.Stat(filepath.Dir(s.State)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the failed kea-export left %s behind: %v", filepath.Dir(s.State), err)
	}
}

// TestKeaDiff: kea-diff names a moved reservation and fails, on Kea files
// with comments.
func TestKeaDiff(t *testing.T) {
	dir := t.TempDir()
	oldPath, newPath := filepath.Join(dir, "old.conf"), filepath.Join(dir, "new.conf")
	testenv.WriteFile(t, oldPath, `# old
{"Dhcp6": {"subnet6": [{"subnet": "2001:db8:100::/64", "interface-id": "VLAN2701", "reservations": [
  {"hw-address": "06:00:00:00:00:0a", "prefixes": ["2001:db8:200::/60"]}, // a VM
  {"hw-address": "06:00:00:00:00:02", "prefixes": ["2001:db8:200:10::/60"]},
  {"hw-address": "06:00:00:00:00:03", "prefixes": ["2001:db8:200:20::/60"]},
]}]}}`)
	testenv.WriteFile(t, newPath, `/* new */ {"Dhcp6": {"subnet6": [{"subnet": "2001:db8:100::/64", "interface-id": "VLAN2701", "reservations": [
  {"hw-address": "06:00:00:00:00:0A", "prefixes": ["2001:db8:200::/60"]},
  {"hw-address": "06:00:00:00:00:02", "prefixes": ["2001:db8:200:30::/60"]},
  {"hw-address": "06:00:00:00:00:04", "prefixes": ["2001:db8:200:40::/60"]}
]}]}}`)
	out, err := runCLI(t, "kea-diff", oldPath, newPath)
	var moved *errReservationsMoved
	if !errors.As(err, &moved) || moved.n != 1 {
		t.Fatalf("kea-diff: %v, want 1 moved\n%s", err, out)
	}
	for _, w := range []string{
		"MOVED    06:00:00:00:00:02  2001:db8:200:10::/60 in subnet 2001:db8:100::/64 interface-id \"VLAN2701\" (Dhcp6.subnet6[0].reservations[1])  →  2001:db8:200:30::/60",
		"removed  06:00:00:00:00:03  2001:db8:200:20::/60",
		"added    06:00:00:00:00:04  2001:db8:200:40::/60",
		": 1 reservation(s) kept, 1 moved, 1 added, 1 removed\n",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("kea-diff output lacks %q:\n%s", w, out)
		}
	}
	if out, err := runCLI(t, "kea-diff", oldPath, oldPath); err != nil || !strings.Contains(out, "3 reservation(s) kept, 0 moved") {
		t.Errorf("kea-diff of a file with itself: %v\n%s", err, out)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
