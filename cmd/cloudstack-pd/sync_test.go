package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// newSyncSite is the fixture site (cloudstacktest.NewSite) as seen from
// this package.
func newSyncSite(t *testing.T) *cloudstacktest.Site {
	return cloudstacktest.NewSite(t, "../../testdata/cloudstack")
}

func storeBytes(t *testing.T, s *cloudstacktest.Site) []byte {
	t.Helper()
	b, err := os.ReadFile(s.State)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSyncCommand(t *testing.T) {
	s := newSyncSite(t)

	// A dry run on no store (with --init, as the real run needs): the
	// report, no store made.
	out, err := runCLI(t, "sync", "--config", s.ConfigPath, "--dry-run", "--init")
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	dry := out
	if _, err := os.Stat(s.State); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dry run made the store: %v", err)
	}

	out, err = runCLI(t, "sync", "--config", s.ConfigPath, "--init")
	if err != nil {
		t.Fatalf("sync: %v\n%s", err, out)
	}
	for _, want := range []string{
		"sync from " + s.Fake.URL + " at ",
		"pool " + cloudstacktest.SitePod + " (VLAN2701, 2001:db8:200::/40, default NICs): 7 NIC(s) listed, 0 active allocation(s) before\n",
		"  added         5\n",
		"    + 1e:00:5d:00:01:7a 2001:db8:200::/60 web-01 (VM 3c5b7a4e-1f0d-4b8e-9a61-0d2c4e6f8a10, NIC 5a0e6c1d-2b3f-4a5e-8d7c-9b0a1c2d3e4f)\n",
		"    + 1e:00:fa:00:00:01 2001:db8:200:30::/60 vnf-fw-01 (VM b8c9d0e1-f2a3-4b4c-8d5e-6f7a8b9c0d1e, NIC c9d0e1f2-a3b4-4c5d-9e6f-7a8b9c0d1e2f)\n",
		"  not eligible  2 (",
		"total: 5 added, 0 kept, 0 marked gone, 0 came back, 0 quarantined, 0 released, 0 conflict(s)\n",
		"written to " + s.State + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("sync output lacks %q:\n%s", want, out)
		}
	}
	// The dry run said the same, but for its last line.
	cut := func(s string) string { return s[strings.Index(s, "\npool"):strings.LastIndex(s, "total:")] }
	if cut(dry) != cut(out) || !strings.HasSuffix(dry, "dry run: nothing written\n") {
		t.Errorf("dry run:\n%s\nsync:\n%s", dry, out)
	}

	// Again: nothing to change, nothing written.
	before := storeBytes(t, s)
	out, err = runCLI(t, "sync", "--config", s.ConfigPath, "-q")
	if err != nil || !strings.Contains(out, "  kept          5 (0 refreshed)\n") || !strings.HasSuffix(out, "nothing to change\n") || strings.Contains(out, "    +") {
		t.Errorf("second sync: %v\n%s", err, out)
	}
	if !bytes.Equal(before, storeBytes(t, s)) {
		t.Error("the second sync wrote")
	}

	// CloudStack fails: the error names the pod, the call and the
	// errortext; nothing changes.
	s.Fake.Inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultInternal, Page: 2, Times: 1})
	out, err = runCLI(t, "sync", "--config", s.ConfigPath)
	if err == nil || !strings.Contains(err.Error(), "sync aborted, nothing changed: cloudstack: pod "+cloudstacktest.SitePod+": listVirtualMachines page 2: CloudStack error 530 (cserrorcode 9999): "+cloudstacktest.TextInternal) {
		t.Errorf("530: %v\n%s", err, out)
	}
	if !bytes.Equal(before, storeBytes(t, s)) {
		t.Error("a failed sync wrote")
	}

	// web-01 vanishes: 1 of 5 is more than 10%, refused; --force does it.
	vms, _ := cloudstacktest.LoadVMs("../../testdata/cloudstack/listVirtualMachines-pod.json")
	s.Fake.SetPod(cloudstacktest.SitePod, vms[1:])
	out, err = runCLI(t, "sync", "--config", s.ConfigPath)
	if !errors.Is(err, allocator.ErrTooManyGone) || !strings.Contains(err.Error(), "run again with --force") ||
		!strings.Contains(out, "  REFUSED: 1 of 5 active allocations would be marked gone") || !strings.HasSuffix(out, "refused: nothing written\n") {
		t.Errorf("refused: %v\n%s", err, out)
	}
	if !bytes.Equal(before, storeBytes(t, s)) {
		t.Error("a refused sync wrote")
	}
	out, err = runCLI(t, "sync", "--config", s.ConfigPath, "--force")
	if err != nil || !strings.Contains(out, "  marked gone   1\n    - 1e:00:5d:00:01:7a 2001:db8:200::/60 web-01 (VM 3c5b7a4e-1f0d-4b8e-9a61-0d2c4e6f8a10, NIC 5a0e6c1d-2b3f-4a5e-8d7c-9b0a1c2d3e4f), still served until ") {
		t.Errorf("--force: %v\n%s", err, out)
	}

	// The store is checked, and listed.
	out, err = runCLI(t, "check", "--config", s.ConfigPath)
	if err != nil || !strings.Contains(out, "no violation: 5 allocation(s) (4 active, 1 gone, 0 quarantined) in 1 pool(s), 0 binding(s)") {
		t.Errorf("check: %v\n%s", err, out)
	}
	out, err = runCLI(t, "allocations", "--config", s.ConfigPath)
	if err != nil || !strings.Contains(out, "MAC                PREFIX                STATE") ||
		!strings.Contains(out, "1e:00:5d:00:01:7a  2001:db8:200::/60     gone ") ||
		!strings.HasSuffix(out, "5 allocation(s): 4 active, 1 gone, 0 quarantined\n") {
		t.Errorf("allocations: %v\n%s", err, out)
	}
	out, err = runCLI(t, "allocations", "--config", s.ConfigPath, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 5 {
		t.Fatalf("allocations --json: %v, %d entries\n%s", err, len(list), out)
	}
	first := list[0]
	for _, k := range []string{"mac", "prefix", "pool", "interface-id", "vm-id", "vm-name", "nic-id", "state", "since", "gone-at", "quarantined-at", "ip6", "source"} {
		if _, ok := first[k]; !ok {
			t.Errorf("allocations --json: no %q in %v", k, first)
		}
	}
	if first["mac"] != "1e:00:5d:00:01:7a" || first["prefix"] != "2001:db8:200::/60" || first["pool"] != cloudstacktest.SitePod ||
		first["interface-id"] != "VLAN2701" || first["state"] != "gone" || first["gone-at"] == nil || first["vm-name"] != "web-01" ||
		first["ip6"] != "2001:db8:100:0:1c00:5dff:fe00:17a" || first["source"] != "sync" {
		t.Errorf("allocations --json: first entry %v", first)
	}
}

func TestSyncCommandNeedsAPI(t *testing.T) {
	s := newSyncSite(t)
	testenv.WriteFile(t, s.ConfigPath, strings.Replace(cloudstacktest.SiteConfig(s.Fake.URL, s.State), "secretkey: "+cloudstacktest.SiteSecret, `secretkey: ""`, 1))
	if _, err := runCLI(t, "sync", "--config", s.ConfigPath); err == nil || !strings.Contains(err.Error(), "nothing to sync from: api.secretkey is empty") {
		t.Errorf("err = %v", err)
	}
}

// While another process holds the store, sync, allocations and check say
// so, and what to do.
func TestCommandsOnALockedStore(t *testing.T) {
	s := newSyncSite(t)
	if out, err := runCLI(t, "sync", "--config", s.ConfigPath, "--init"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// bbolt's lock is per open file description: a second open in this
	// process conflicts as another process would.
	st, err := allocator.OpenStore(boltstore.Open(s.State, boltstore.Options{Create: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, tc := range []struct {
		cmd  string
		want string
	}{
		{"sync", "serve syncs by itself"},
		{"allocations", "GET /v1/allocations"},
		{"check", "check reads the store"},
	} {
		out, err := runCLI(t, tc.cmd, "--config", s.ConfigPath)
		if !errors.Is(err, allocator.ErrLocked) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v\n%s", tc.cmd, err, out)
		}
	}
}

// check prints each violation and fails.
func TestCheckCommandViolations(t *testing.T) {
	s := newSyncSite(t)
	if out, err := runCLI(t, "sync", "--config", s.ConfigPath, "--init"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	db, err := boltstore.Open(s.State, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx kv.Tx) error {
		return tx.Put(kv.Space{Kind: kv.MACs}, []byte{6, 0, 0, 0, 0, 9}, []byte(cloudstacktest.SitePod))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "check", "--config", s.ConfigPath)
	if err == nil || !strings.Contains(err.Error(), "1 violation(s)") ||
		out != "macs/06:00:00:00:00:09: names pool \""+cloudstacktest.SitePod+"\", which has no allocation for it\n" {
		t.Errorf("check: %v\n%q", err, out)
	}
	if _, err := runCLI(t, "check", "--config", filepath.Join(t.TempDir(), "nope.yaml")); err == nil {
		t.Error("check without a config passed")
	}
}

// kea-export's sync is this sync, reporting in counts.
func TestSyncForKeaExport(t *testing.T) {
	s := newSyncSite(t)
	cfg, err := config.Load(s.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := allocator.OpenStore(boltstore.Open(cfg.State, boltstore.Options{Create: true, NoSync: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var out bytes.Buffer
	if err := syncForKeaExport(t.Context(), cfg, st, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "total: 5 added") || strings.Contains(out.String(), "    +") {
		t.Errorf("report:\n%s", out.String())
	}
	cfg.API.URL = ""
	if err := syncForKeaExport(t.Context(), cfg, st, &out); err == nil || !strings.Contains(err.Error(), "api.url is not set") {
		t.Errorf("without api.url: %v", err)
	}
}

// config cannot import the client (it would pull cloudstack-go into every
// package); their limits must agree.
func TestPageSizeLimitsAgree(t *testing.T) {
	if cloudstack.MaxPageSize != config.MaxAPIPageSize {
		t.Errorf("cloudstack.MaxPageSize %d, config.MaxAPIPageSize %d", cloudstack.MaxPageSize, config.MaxAPIPageSize)
	}
}

// serve syncs from CloudStack at start-up and on SIGHUP, answers from the
// synced table, keeps answering while CloudStack fails, and logs why.
func TestServeProcessSyncs(t *testing.T) {
	bin := testenv.BuildBinary(t, ".")
	s := newSyncSite(t)
	port := testenv.FreeUDPPort(t)
	base := cloudstacktest.SiteConfig(s.Fake.URL, s.State) +
		"server:\n  listen: [\"[::1]:" + strconv.Itoa(port) + "\"]\n"
	base = strings.Replace(base, "  level: warn\n", "  level: info\n", 1)
	base = strings.Replace(base, "  timeout: 2s\n", "  timeout: 2s\n  interval: 0s\n", 1)
	testenv.WriteFile(t, s.ConfigPath, base)

	var log testenv.SyncBuffer
	srv := exec.Command(bin, "serve", "--config", s.ConfigPath, "--init")
	srv.Stderr = &log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() { srv.Process.Kill() })
	waitFor(t, "msg=synced", &log, 10*time.Second)

	probe := func() string {
		var out bytes.Buffer
		err := runProbe(&out, probeFlags{server: "[::1]:" + strconv.Itoa(port), mac: "1e:00:5d:00:01:7a", interfaceID: "VLAN2701", linkAddr: "::", timeout: 2 * time.Second})
		if err != nil {
			t.Fatalf("probe: %v\nserver log:\n%s", err, log.String())
		}
		return out.String()
	}
	if out := probe(); !strings.Contains(out, "prefix 2001:db8:200::/60") {
		t.Errorf("web-01 after the first sync:\n%s\nlog:\n%s", out, log.String())
	}

	// CloudStack fails: logged, still answering.
	s.Fake.Inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultInternal})
	srv.Process.Signal(syscall.SIGHUP)
	waitFor(t, "sync failed; the table stays as it is", &log, 10*time.Second)
	if !strings.Contains(log.String(), "listVirtualMachines page 1: CloudStack error 530 (cserrorcode 9999): "+cloudstacktest.TextInternal) {
		t.Errorf("the failure does not name the call and errortext:\n%s", log.String())
	}
	if out := probe(); !strings.Contains(out, "prefix 2001:db8:200::/60") {
		t.Errorf("web-01 while CloudStack fails:\n%s", out)
	}

	// web-01 vanishes: refused (1 of 5), then let through by the config.
	s.Fake.ClearFaults()
	vms, _ := cloudstacktest.LoadVMs("../../testdata/cloudstack/listVirtualMachines-pod.json")
	s.Fake.SetPod(cloudstacktest.SitePod, vms[1:])
	srv.Process.Signal(syscall.SIGHUP)
	waitFor(t, "sync refused by the safety valve", &log, 10*time.Second)
	testenv.WriteFile(t, s.ConfigPath, base+"allocation:\n  max-release-fraction: 1\n")
	srv.Process.Signal(syscall.SIGHUP)
	waitFor(t, "gone=1", &log, 10*time.Second)
	if out := probe(); !strings.Contains(out, "prefix 2001:db8:200::/60") {
		t.Errorf("a gone VM is not served:\n%s", out)
	}

	srv.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("serve exited with %v; log:\n%s", err, log.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	if n := strings.Count(log.String(), "msg=synced"); n != 2 {
		t.Errorf("%d syncs logged, want 2:\n%s", n, log.String())
	}
}
