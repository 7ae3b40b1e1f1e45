package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/internal/etcdtest"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// TestClusterCommands: the table's commands work against a cluster when
// the config names one: sync (one-off, fenced), allocations, check,
// kea-export --offline, import-kea; none of them touches the state file.
func TestClusterCommands(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	s := newSyncSite(t)
	s.WriteConfig(t, fmt.Sprintf("cluster:\n  name: pd-cmd\n  etcd:\n    endpoints: [%s]\n", strings.Join(etcd.Endpoints(), ",")))

	// No table yet: sync says --init, and makes nothing.
	if out, err := runCLI(t, "sync", "--config", s.ConfigPath); err == nil || !strings.Contains(err.Error(), "--init") {
		t.Fatalf("sync without a table: %v\n%s", err, out)
	}
	out, err := runCLI(t, "sync", "--config", s.ConfigPath, "--dry-run", "--init")
	if err != nil || !strings.Contains(out, "7 NIC(s) listed") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "allocations", "--config", s.ConfigPath); err == nil {
		t.Fatalf("a dry run made the cluster table:\n%s", out)
	}
	out, err = runCLI(t, "sync", "--config", s.ConfigPath, "--init")
	if err != nil {
		t.Fatalf("sync --init: %v\n%s", err, out)
	}
	out, err = runCLI(t, "allocations", "--config", s.ConfigPath)
	if err != nil || strings.Count(out, "2001:db8:200:") < 5 {
		t.Fatalf("allocations from the cluster: %v\n%s", err, out)
	}
	first := out
	// A second sync changes nothing: the prefixes stay.
	if out, err := runCLI(t, "sync", "--config", s.ConfigPath); err != nil {
		t.Fatalf("second sync: %v\n%s", err, out)
	}
	if out, _ := runCLI(t, "allocations", "--config", s.ConfigPath); out != first {
		t.Fatalf("allocations moved after a second sync:\n%s\nbefore:\n%s", out, first)
	}
	if out, err := runCLI(t, "check", "--config", s.ConfigPath); err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	keacfg := filepath.Join(t.TempDir(), "kea-dhcp6.conf")
	testenv.WriteFile(t, keacfg, `{"Dhcp6": {"subnet6": []}}`)
	exported := filepath.Join(t.TempDir(), "exported.conf")
	out, err = runCLI(t, "kea-export", "--config", s.ConfigPath, "--offline", "--keacfg", keacfg, "--output", exported)
	data, _ := os.ReadFile(exported)
	if err != nil || strings.Count(string(data), "2001:db8:200:") < 5 {
		t.Fatalf("kea-export --offline from the cluster: %v\n%s", err, out)
	}
	// import-kea (a writer: it takes the syncer's role) of what kea-export
	// wrote: every reservation is there already.
	if out, err := runCLI(t, "import-kea", "--config", s.ConfigPath, exported); err != nil || !strings.Contains(out, "present") {
		t.Fatalf("import-kea against the cluster: %v\n%s", err, out)
	}
	if out, _ := runCLI(t, "allocations", "--config", s.ConfigPath); out != first {
		t.Fatalf("allocations changed by import-kea:\n%s", out)
	}
	if _, err := statFile(s.State); err == nil {
		t.Errorf("a command made the state file %s though the table is in the cluster", s.State)
	}
}

func statFile(p string) (any, error) { return os.Stat(p) }
