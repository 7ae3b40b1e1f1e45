package main

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/internal/etcdtest"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

const migrateConfig = `mapping:
  pod-a:
    pool: 2001:db8:200::/40
    interface-id: VLAN2701
state: STATE
cluster:
  name: pd-a
  etcd:
    endpoints: [ENDPOINTS]
    prefix: PREFIX
`

// singleStore makes a single server's store with n allocations in pod-a
// and a server DUID.
func singleStore(t *testing.T, path string, n int) {
	t.Helper()
	st, err := allocator.OpenStore(boltstore.Open(path, boltstore.Options{Create: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pools := []allocator.Pool{{Name: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60, InterfaceID: "VLAN2701"}}
	err = st.Update(pools, func(tx *allocator.Tx) error {
		for i := range n {
			p, err := tx.LowestFree(pools[0])
			if err != nil {
				return err
			}
			if err := tx.Put(allocator.Allocation{Pool: "pod-a", MAC: net.HardwareAddr{6, 0, 0, 0, byte(i >> 8), byte(i)}, Prefix: p, State: allocator.StateActive}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ServerDUID(func() ([]byte, error) { return []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 9}, nil }); err != nil {
		t.Fatal(err)
	}
}

// tableOf lists a store's allocations and server DUID.
func tableOf(t *testing.T, st *allocator.Store) []string {
	t.Helper()
	allocs, err := readAllocations(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range allocs {
		out = append(out, fmt.Sprintf("%s %s %s %s", a.Pool, a.MAC, a.Prefix, a.State))
	}
	duid, err := st.ServerDUID(nil)
	if err != nil {
		t.Fatal(err)
	}
	return append(out, fmt.Sprintf("duid %x", duid))
}

func TestClusterMigrateAndExport(t *testing.T) {
	etcd := etcdtest.Start(t, 3)
	dir := t.TempDir()
	single := filepath.Join(dir, "single.db")
	singleStore(t, single, 300) // more than one etcd transaction of keys
	write := func(name, prefix string) string {
		p := filepath.Join(dir, name)
		testenv.WriteFile(t, p, strings.NewReplacer("STATE", filepath.Join(dir, "snap.db"), "ENDPOINTS", strings.Join(etcd.Endpoints(), ","), "PREFIX", prefix).Replace(migrateConfig))
		return p
	}
	cfgPath := write("c.yaml", "/pd/")

	out, err := runCLI(t, "cluster", "migrate", "--config", cfgPath, "--from", single)
	if err != nil || !strings.Contains(out, "1201 keys copied") {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	src, err := allocator.OpenStore(boltstore.Open(single, boltstore.Options{ReadOnly: true}))
	if err != nil {
		t.Fatal(err)
	}
	want := tableOf(t, src)
	src.Close()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	readCluster := func() []string {
		st, err := openReadOnly(cfg, "test", "")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		return tableOf(t, st)
	}
	if got := readCluster(); !slices.Equal(got, want) {
		t.Fatalf("cluster table after migrate differs:\n%v\nwant\n%v", got[:3], want[:3])
	}
	// Again: nothing to copy; check passes on the cluster.
	if out, err := runCLI(t, "cluster", "migrate", "--config", cfgPath, "--from", single); err != nil || !strings.Contains(out, "0 keys copied, 1202 already there") {
		t.Fatalf("second migrate: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "check", "--config", cfgPath); err != nil {
		t.Fatalf("check on the cluster: %v\n%s", err, out)
	}

	// Another single server's table into the same cluster: refused,
	// nothing written.
	other := filepath.Join(dir, "other.db")
	singleStore(t, other, 2)
	ost, _ := allocator.OpenStore(boltstore.Open(other, boltstore.Options{}))
	pools := []allocator.Pool{{Name: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60, InterfaceID: "VLAN2701"}}
	if err := ost.Update(pools, func(tx *allocator.Tx) error {
		if err := tx.Delete("pod-a", net.HardwareAddr{6, 0, 0, 0, 0, 1}); err != nil {
			return err
		}
		return tx.Put(allocator.Allocation{Pool: "pod-a", MAC: net.HardwareAddr{6, 0, 0, 0, 0, 1}, Prefix: netip.MustParsePrefix("2001:db8:200:ff0::/60"), State: allocator.StateActive})
	}); err != nil {
		t.Fatal(err)
	}
	ost.Close()
	out, err = runCLI(t, "cluster", "migrate", "--config", cfgPath, "--from", other)
	if err == nil || !strings.Contains(out, "conflict:") || !strings.Contains(err.Error(), "nothing was written") {
		t.Fatalf("conflicting migrate: %v\n%s", err, out)
	}
	if got := readCluster(); !slices.Equal(got, want) {
		t.Fatal("a refused migrate changed the cluster table")
	}

	// Export back to a single server's store: the same table.
	back := filepath.Join(dir, "back.db")
	if out, err := runCLI(t, "cluster", "export", "--config", cfgPath, "--to", back); err != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}
	bst, err := allocator.OpenStore(boltstore.Open(back, boltstore.Options{ReadOnly: true}))
	if err != nil {
		t.Fatal(err)
	}
	if got := tableOf(t, bst); !slices.Equal(got, want) {
		t.Fatal("exported table differs")
	}
	if lines, err := bst.Check(cfg.Pools()); err != nil || len(lines) != 0 {
		t.Fatalf("check of the export: %v %v", lines, err)
	}
	bst.Close()
	if _, err := runCLI(t, "cluster", "export", "--config", cfgPath, "--to", back); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("export over an existing file: %v", err)
	}

	// A cluster prefix with no table: commands say how to make one.
	empty := write("e.yaml", "/nothing/")
	if _, err := runCLI(t, "check", "--config", empty); err == nil || !strings.Contains(err.Error(), "cluster migrate") {
		t.Fatalf("check on an empty cluster prefix: %v", err)
	}
}
