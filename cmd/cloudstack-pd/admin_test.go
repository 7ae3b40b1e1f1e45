package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// web01 is the fixture site's first VM: its MAC and the prefix the first
// sync gives it.
const (
	web01       = "1e:00:5d:00:01:7a"
	web01Prefix = "2001:db8:200::/60"
	podB        = "0f3a1a2e-9d1c-4f7e-8a51-2b6c1d9e4f10"
	podBMapping = "  " + podB + ":\n    pool: 2001:db8:300::/40\n    interface-id: VLAN2702\n"
)

// withPodB is the site's config with a second pool, pod-b, whose pod
// the fake lists empty.
func withPodB(s *cloudstacktest.Site) string {
	s.Fake.SetPod(podB, cloudstacktest.VMs{})
	return strings.Replace(cloudstacktest.SiteConfig(s.Fake.URL, s.State), "state:", podBMapping+"state:", 1)
}

func mustRun(t *testing.T, want string, args ...string) string {
	t.Helper()
	out, err := runCLI(t, args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if !strings.Contains(out, want) {
		t.Errorf("%s printed:\n%s\nwant %q in it", strings.Join(args, " "), out, want)
	}
	return out
}

func stateOf(t *testing.T, cfgPath, mac string) (allocator.State, string) {
	t.Helper()
	out := mustRun(t, "", "allocations", "--config", cfgPath, "--json")
	var views []struct {
		MAC, Pool, Prefix string
		State             allocator.State
	}
	if err := json.Unmarshal([]byte(out), &views); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, v := range views {
		if v.MAC == mac {
			return v.State, v.Pool + " " + v.Prefix
		}
	}
	return "", ""
}

// With no server running, the operator's commands open the store: each
// shows what it would do unless given --yes, writes its change and its
// history event, and check passes after a forgotten pool.
func TestAdminCommandsWithoutServer(t *testing.T) {
	s := newSyncSite(t)
	testenv.WriteFile(t, s.ConfigPath, withPodB(s))
	c := s.ConfigPath
	mustRun(t, "total: 5 added", "sync", "--config", c, "--init")

	// No --yes: shown, not done, exit 1.
	out, err := runCLI(t, "allocation", "release", "--config", c, "--mac", web01)
	if err == nil || !strings.Contains(err.Error(), "give --yes") || !strings.Contains(out, "quarantined (was active)") {
		t.Errorf("release without --yes: %v\n%s", err, out)
	}
	mustRun(t, "dry run: nothing written", "allocation", "release", "--config", c, "--mac", web01, "--dry-run")
	if st, _ := stateOf(t, c, web01); st != allocator.StateActive {
		t.Fatalf("after a dry run web-01 is %s", st)
	}
	mustRun(t, "written", "allocation", "release", "--config", c, "--mac", "1E005D00017A", "--yes")
	if st, _ := stateOf(t, c, web01); st != allocator.StateQuarantined {
		t.Errorf("after release web-01 is %s", st)
	}

	// Move it to pod-b: a new prefix there, the old one held.
	mustRun(t, "moved (from "+web01Prefix+" in pool "+cloudstacktest.SitePod+")", "allocation", "move", "--config", c, "--mac", web01, "--pool", podB, "--yes")
	if st, where := stateOf(t, c, web01); st != allocator.StateActive || where != podB+" 2001:db8:300::/60" {
		t.Errorf("after the move web-01 is %s in %s", st, where)
	}
	out = mustRun(t, "3 event(s)", "history", "--config", c, "--prefix", web01Prefix)
	for _, want := range []string{"allocated", "quarantined", "admin ", "allocation release --mac " + web01} {
		if !strings.Contains(out, want) {
			t.Errorf("history lacks %q:\n%s", want, out)
		}
	}
	out = mustRun(t, "", "history", "--config", c, "--prefix", "2001:db8:200::1", "--at", time.Now().UTC().Format(time.RFC3339), "--json")
	var held []allocator.Holding
	if err := json.Unmarshal([]byte(out), &held); err != nil || len(held) != 1 || held[0].MAC.String() != web01 || held[0].State != allocator.StateQuarantined {
		t.Errorf("who holds 2001:db8:200::1 now: %v %s", err, out)
	}

	// pod-b leaves the mapping: check fails until the pool is forgotten.
	testenv.WriteFile(t, c, cloudstacktest.SiteConfig(s.Fake.URL, s.State))
	if out, err := runCLI(t, "check", "--config", c); err == nil || !strings.Contains(out, "not configured") {
		t.Errorf("check with pod-b unmapped: %v\n%s", err, out)
	}
	mustRun(t, "written", "pool", "forget", "--config", c, podB, "--yes")
	mustRun(t, "no violation", "check", "--config", c)

	// Backup and restore without a server.
	backup := filepath.Join(t.TempDir(), "b.db")
	mustRun(t, "opened and checked", "backup", "--config", c, "--to", backup)
	mustRun(t, "restored", "restore", "--config", c, "--from", backup, "--yes")

	if _, err := runCLI(t, "sync", "--config", c, "--now"); err == nil || !strings.Contains(err.Error(), "no server answers") {
		t.Errorf("sync --now without a server = %v", err)
	}
}

// While serve runs, the commands go through its control socket: the
// table in force changes at once, sync --now prints the sync's report,
// backup writes a checked copy, and restore refuses.
func TestAdminCommandsThroughServe(t *testing.T) {
	testenv.IPv6Loopback(t)
	s := newSyncSite(t)
	port := testenv.FreeUDPPort(t)
	cfgText := withPodB(s) + "server:\n  listen: [\"[::1]:" + strconv.Itoa(port) + "\"]\n"
	cfgText = strings.Replace(cfgText, "  timeout: 2s\n", "  timeout: 2s\n  interval: 0s\n", 1)
	cfgText = strings.Replace(cfgText, "  level: warn\n", "  level: info\n", 1)
	testenv.WriteFile(t, s.ConfigPath, cfgText)
	c := s.ConfigPath

	var log testenv.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- runServe(ctx, c, true, &log) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	waitFor(t, "msg=synced", &log, 10*time.Second)
	probe := func(iid string) string {
		var out bytes.Buffer
		_ = runProbe(&out, probeFlags{server: "[::1]:" + strconv.Itoa(port), mac: web01, interfaceID: iid, linkAddr: "::", timeout: 2 * time.Second})
		return out.String()
	}
	if out := probe("VLAN2701"); !strings.Contains(out, "prefix "+web01Prefix) {
		t.Fatalf("web-01 before the move:\n%s", out)
	}

	mustRun(t, "written; the table in force is updated", "allocation", "move", "--config", c, "--mac", web01, "--pool", podB, "--yes")
	if out := probe("VLAN2702"); !strings.Contains(out, "prefix 2001:db8:300::/60") {
		t.Errorf("web-01 on pod-b after the move:\n%s", out)
	}
	if !strings.Contains(log.String(), "control: move") {
		t.Errorf("serve did not log the move:\n%s", log.String())
	}
	// The store is serve's: history reads it through the socket.
	mustRun(t, "moved from "+web01Prefix, "history", "--config", c, "--mac", web01)

	// The VM did move in CloudStack: sync --now keeps it in pod-b.
	vms, err := cloudstacktest.LoadVMs("../../testdata/cloudstack/listVirtualMachines-pod.json")
	if err != nil {
		t.Fatal(err)
	}
	s.Fake.SetPod(podB, vms[:1])
	s.Fake.SetPod(cloudstacktest.SitePod, vms[1:])
	mustRun(t, "total: 0 added, 5 kept", "sync", "--config", c, "--now")

	backup := filepath.Join(t.TempDir(), "b.db")
	mustRun(t, "opened and checked", "backup", "--config", c, "--to", backup)
	if fi, err := os.Stat(backup); err != nil || fi.Size() == 0 {
		t.Errorf("backup file: %v", err)
	}
	if out, err := runCLI(t, "restore", "--config", c, "--from", backup, "--yes"); err == nil || !strings.Contains(err.Error(), "serve is running") {
		t.Errorf("restore while serving: %v\n%s", err, out)
	}
}
