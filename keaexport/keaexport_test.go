package keaexport

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kea-dhcp6.conf")
	if err := os.WriteFile(path, []byte("old\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.conf")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}

	// Through the link: the file it names is replaced, keeping its mode.
	changed, err := WriteFile(link, []byte("new\n"), 0o600, os.Rename)
	if err != nil || !changed {
		t.Fatalf("changed %v, %v", changed, err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was replaced: %v %v", fi, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new\n" {
		t.Errorf("content %q", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want the old file's 0640", fi.Mode().Perm())
	}

	// The same content again: not touched.
	fail := func(string, string) error { return errors.New("renamed") }
	if changed, err := WriteFile(path, []byte("new\n"), 0o600, fail); err != nil || changed {
		t.Errorf("same content: changed %v, %v", changed, err)
	}

	// A new file gets mode; a failed rename leaves nothing behind.
	fresh := filepath.Join(dir, "fresh.conf")
	if _, err := WriteFile(fresh, []byte("x"), 0o600, os.Rename); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(fresh); fi.Mode().Perm() != 0o600 {
		t.Errorf("new file mode %v", fi.Mode().Perm())
	}
	if _, err := WriteFile(filepath.Join(dir, "other.conf"), []byte("x"), 0o600, fail); err == nil || !strings.Contains(err.Error(), "--output") {
		t.Errorf("failed rename: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 {
		t.Errorf("left in the folder: %v", entries)
	}
}

// Subnets: every pool, with its served allocations and the kept ones; a
// quarantined allocation is not exported.
func TestSubnets(t *testing.T) {
	pools := []allocator.Pool{
		{Name: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60, InterfaceID: "VLAN2701", IP6CIDR: netip.MustParsePrefix("2001:db8:100::/64")},
		{Name: "pod-b", Prefix: netip.MustParsePrefix("2001:db8:300::/40"), PrefixLen: 60, InterfaceID: "VLAN2702", IP6CIDR: netip.MustParsePrefix("2001:db8:101::/64")},
	}
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	tbl, err := allocator.NewTable(pools, []allocator.Allocation{
		{Pool: "pod-a", MAC: mac("06:00:00:00:00:01"), Prefix: netip.MustParsePrefix("2001:db8:200::/60"), State: allocator.StateActive},
		{Pool: "pod-a", MAC: mac("06:00:00:00:00:02"), Prefix: netip.MustParsePrefix("2001:db8:200:10::/60"), State: allocator.StateQuarantined},
	})
	if err != nil {
		t.Fatal(err)
	}
	kept := allocator.Allocation{Pool: "pod-b", MAC: mac("06:00:00:00:00:03"), Prefix: netip.MustParsePrefix("2001:db8:300::/60")}
	got := Subnets(tbl, kept)
	if len(got) != 2 || got[0].Name != "pod-a" || got[0].InterfaceID != "VLAN2701" || got[0].Subnet != pools[0].IP6CIDR || got[1].Name != "pod-b" {
		t.Fatalf("subnets %+v", got)
	}
	if len(got[0].Reservations) != 1 || got[0].Reservations[0].Prefix != netip.MustParsePrefix("2001:db8:200::/60") {
		t.Errorf("pod-a reservations %+v", got[0].Reservations)
	}
	if len(got[1].Reservations) != 1 || got[1].Reservations[0].MAC.String() != "06:00:00:00:00:03" {
		t.Errorf("pod-b reservations %+v", got[1].Reservations)
	}
}
