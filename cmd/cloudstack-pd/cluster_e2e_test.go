package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
	"github.com/cloudstack-pd/cloudstack-pd/internal/etcdtest"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
	"github.com/cloudstack-pd/cloudstack-pd/probe"
)

// clusterServeConfig is one server of a three-server cluster syncing the
// synthetic pod 0 from the fake CloudStack every second.
const clusterServeConfig = `api:
  url: URL
  apikey: ` + cloudstacktest.SiteKey + `
  secretkey: ` + cloudstacktest.SiteSecret + `
  interval: INTERVAL
  timeout: 2s
mapping:
  POD:
    pool: 2001:db8:200::/40
    interface-id: VLAN2700
server:
  listen: ["[::1]:PORT"]
state: STATE
control:
  socket: STATE.sock
http:
  listen: "[::1]:HTTPPORT"
log:
  level: info
cluster:
  name: NAME
  lease-ttl: TTL
CLUSTER`

// clusterServer is one serve process of the cluster under test.
type clusterServer struct {
	name    string
	port    int
	api     string
	log     *testenv.SyncBuffer
	cmd     *exec.Cmd
	exited  chan error
	cfgPath string
}

var prefixRE = regexp.MustCompile(`prefix (\S+/\d+) preferred`)

// ask probes mac on the server and returns the prefix delegated, "" for
// none.
func (s *clusterServer) ask(t *testing.T, mac string) string {
	t.Helper()
	var out bytes.Buffer
	err := runProbe(&out, probeFlags{server: "[::1]:" + strconv.Itoa(s.port), mac: mac, interfaceID: "VLAN2700", linkAddr: "::", timeout: time.Second})
	if err != nil && !errors.Is(err, probe.ErrNoPrefix) {
		return "error: " + err.Error()
	}
	if m := prefixRE.FindStringSubmatch(out.String()); m != nil {
		return m[1]
	}
	return ""
}

func startClusterServers(t *testing.T, bin string, fake *cloudstacktest.Server, clusterYAML func(i int) string) []*clusterServer {
	return startClusterServersWith(t, bin, fake, "1s", "2s", clusterYAML)
}

// startClusterServersWith starts three servers syncing every interval,
// with lease-ttl ttl.
func startClusterServersWith(t *testing.T, bin string, fake *cloudstacktest.Server, interval, ttl string, clusterYAML func(i int) string) []*clusterServer {
	t.Helper()
	dir := t.TempDir()
	var servers []*clusterServer
	for i := range 3 {
		s := &clusterServer{name: fmt.Sprintf("pd-%d", i), port: testenv.FreeUDPPort(t), log: &testenv.SyncBuffer{}, exited: make(chan error, 1)}
		httpPort := testenv.FreeTCPPort(t)
		s.api = "http://[::1]:" + strconv.Itoa(httpPort)
		s.cfgPath = filepath.Join(dir, s.name+".yaml")
		testenv.WriteFile(t, s.cfgPath, strings.NewReplacer(
			"URL", fake.URL, "POD", cloudstacktest.SyntheticPodID(0), "HTTPPORT", strconv.Itoa(httpPort), "PORT", strconv.Itoa(s.port),
			"STATE", filepath.Join(dir, s.name+".db"), "NAME", s.name, "INTERVAL", interval, "TTL", ttl, "CLUSTER", clusterYAML(i)).Replace(clusterServeConfig))
		servers = append(servers, s)
	}
	for _, s := range servers {
		s.cmd = exec.Command(bin, "serve", "--init", "--config", s.cfgPath)
		s.cmd.Stderr = s.log
		if err := s.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { s.exited <- s.cmd.Wait() }()
		t.Cleanup(func() { s.cmd.Process.Kill() })
	}
	for _, s := range servers {
		waitFor(t, "msg=serving", s.log, 60*time.Second)
	}
	return servers
}

// leader returns the index of the one server whose cluster_leader is 1,
// -1 when not exactly one of those alive is.
func leader(t *testing.T, servers []*clusterServer, dead map[int]bool) int {
	who := -1
	for i, s := range servers {
		if dead[i] {
			continue
		}
		if testenv.MetricValue(t, s.api, "cloudstack_pd_cluster_leader") == 1 {
			if who >= 0 {
				return -1
			}
			who = i
		}
	}
	return who
}

func macOf(i int) string { return cloudstacktest.SyntheticMAC(0, i, 0).String() }

// runClusterFailover is the process-level test of issue 12: three serve
// processes on one table; the syncer killed with SIGKILL; a new sync still
// happens, and every answer is the same before and after.
func runClusterFailover(t *testing.T, clusterYAML func(i int) string) {
	bin := testenv.BuildBinary(t, ".")
	fake := cloudstacktest.NewServer(cloudstacktest.SiteKey, cloudstacktest.SiteSecret)
	t.Cleanup(fake.Close)
	fake.SetPod(cloudstacktest.SyntheticPodID(0), cloudstacktest.Synthetic{Index: 0, N: 20})
	servers := startClusterServers(t, bin, fake, clusterYAML)

	// Every server answers every VM of the first sync, identically.
	before := map[string]string{}
	deadline := time.Now().Add(90 * time.Second)
	for vm := range 20 {
		for _, s := range servers {
			var got string
			for got = s.ask(t, macOf(vm)); got == "" || strings.HasPrefix(got, "error"); got = s.ask(t, macOf(vm)) {
				if time.Now().After(deadline) {
					t.Fatalf("%s does not answer VM %d (%s): %q; log:\n%s", s.name, vm, macOf(vm), got, s.log.String())
				}
				time.Sleep(100 * time.Millisecond)
			}
			if want, ok := before[macOf(vm)]; ok && want != got {
				t.Fatalf("VM %d: %s answers %s, another server %s", vm, s.name, got, want)
			}
			before[macOf(vm)] = got
		}
	}
	dead := map[int]bool{}
	var syncer int
	waitUntil(t, "exactly one syncer", 10*time.Second, func() bool { syncer = leader(t, servers, dead); return syncer >= 0 })

	// kill -9 the syncer; CloudStack gets five more VMs meanwhile.
	killed := time.Now()
	if err := servers[syncer].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-servers[syncer].exited
	dead[syncer] = true
	fake.SetPod(cloudstacktest.SyntheticPodID(0), cloudstacktest.Synthetic{Index: 0, N: 25})
	var next int
	waitUntil(t, "another syncer", 20*time.Second, func() bool { next = leader(t, servers, dead); return next >= 0 })
	t.Logf("%s elected %v after the syncer was killed", servers[next].name, time.Since(killed).Round(100*time.Millisecond))
	newPrefix := map[string]string{}
	for vm := 20; vm < 25; vm++ {
		for i, s := range servers {
			if dead[i] {
				continue
			}
			var got string
			waitUntil(t, fmt.Sprintf("%s answers new VM %d", s.name, vm), 20*time.Second, func() bool {
				got = s.ask(t, macOf(vm))
				return got != "" && !strings.HasPrefix(got, "error")
			})
			if want, ok := newPrefix[macOf(vm)]; ok && want != got {
				t.Fatalf("new VM %d: %s answers %s, another server %s", vm, s.name, got, want)
			}
			newPrefix[macOf(vm)] = got
		}
	}
	t.Logf("new VMs served %v after the kill", time.Since(killed).Round(100*time.Millisecond))
	seen := map[string]string{}
	for mac, p := range before {
		seen[p] = mac
	}
	for mac, p := range newPrefix {
		if other, dup := seen[p]; dup {
			t.Fatalf("%s delegated to %s and %s", p, mac, other)
		}
		seen[p] = mac
	}
	for i, s := range servers {
		if dead[i] {
			continue
		}
		for vm := range 20 {
			if got := s.ask(t, macOf(vm)); got != before[macOf(vm)] {
				t.Errorf("after the failover %s answers VM %d with %q, before %q", s.name, vm, got, before[macOf(vm)])
			}
		}
	}
	// cluster status names the new syncer and the two servers left.
	out, err := exec.Command(bin, "cluster", "status", "--config", servers[next].cfgPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "syncer:   "+servers[next].name) {
		t.Errorf("cluster status: %v\n%s", err, out)
	}
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestClusterEmbeddedFailover(t *testing.T) {
	testenv.TCPLoopback(t)
	testenv.IPv6Loopback(t)
	var once sync.Once
	var peers, clients []int
	runClusterFailover(t, func(i int) string {
		once.Do(func() {
			for range 3 {
				peers = append(peers, testenv.FreeTCPPort(t))
				clients = append(clients, testenv.FreeTCPPort(t))
			}
		})
		var initial []string
		for j := range 3 {
			initial = append(initial, fmt.Sprintf("pd-%d=http://127.0.0.1:%d", j, peers[j]))
		}
		return fmt.Sprintf("  embedded:\n    data-dir: %s\n    peer-listen: http://127.0.0.1:%d\n    client-listen: http://127.0.0.1:%d\n    initial-cluster: %q\n",
			filepath.Join(t.TempDir(), "etcd"), peers[i], clients[i], strings.Join(initial, ","))
	})
}

func TestClusterExternalEtcdFailover(t *testing.T) {
	testenv.IPv6Loopback(t)
	etcd := etcdtest.Start(t, 3)
	runClusterFailover(t, func(int) string {
		return fmt.Sprintf("  etcd:\n    endpoints: [%s]\n", strings.Join(etcd.Endpoints(), ", "))
	})
}

// TestClusterEtcdOutage: etcd loses its quorum. The servers keep answering
// from the table they have, /readyz says degraded, no sync runs; a server
// restarted meanwhile answers from its local snapshot; bindings made
// meanwhile wait and reach etcd when it is back.
func TestClusterEtcdOutage(t *testing.T) {
	testenv.IPv6Loopback(t)
	etcd := etcdtest.Start(t, 3)
	bin := testenv.BuildBinary(t, ".")
	fake := cloudstacktest.NewServer(cloudstacktest.SiteKey, cloudstacktest.SiteSecret)
	t.Cleanup(fake.Close)
	fake.SetPod(cloudstacktest.SyntheticPodID(0), cloudstacktest.Synthetic{Index: 0, N: 10})
	servers := startClusterServers(t, bin, fake, func(int) string {
		return fmt.Sprintf("  etcd:\n    endpoints: [%s]\n  timeout: 2s\n", strings.Join(etcd.Endpoints(), ", "))
	})
	a, b := servers[0], servers[1]
	prefixes := map[string]string{}
	for vm := range 5 {
		waitUntil(t, fmt.Sprintf("VM %d answered", vm), 90*time.Second, func() bool {
			prefixes[macOf(vm)] = a.ask(t, macOf(vm))
			return strings.HasPrefix(prefixes[macOf(vm)], "2001:db8:200:")
		})
	}
	for vm := 5; vm < 10; vm++ { // allocated by the sync, not asked for yet
		prefixes[macOf(vm)] = ""
	}
	// Every server has written its local snapshot.
	for _, s := range servers {
		state := strings.TrimSuffix(s.cfgPath, ".yaml") + ".db"
		waitUntil(t, s.name+"'s snapshot", 20*time.Second, func() bool { _, err := os.Stat(state); return err == nil })
	}

	// Quorum lost.
	etcd.Stop(1)
	etcd.Stop(2)
	lost := time.Now()
	for _, s := range []*clusterServer{a, b} {
		waitUntil(t, s.name+" degraded", 20*time.Second, func() bool {
			_, body := testenv.HTTPGet(t, s.api+"/readyz")
			return strings.Contains(body, `"degraded"`) && testenv.MetricValue(t, s.api, "cloudstack_pd_cluster_watch_connected") == 0
		})
	}
	t.Logf("degraded reported %v after the quorum was lost", time.Since(lost).Round(100*time.Millisecond))
	waitUntil(t, "no syncer", 20*time.Second, func() bool {
		sum := 0.0
		for _, s := range servers {
			sum += testenv.MetricValue(t, s.api, "cloudstack_pd_cluster_leader")
		}
		return sum == 0
	})
	for vm := range 5 {
		if got := a.ask(t, macOf(vm)); got != prefixes[macOf(vm)] {
			t.Errorf("during the outage %s answers VM %d with %q, before %q", a.name, vm, got, prefixes[macOf(vm)])
		}
	}
	// VMs 5–9 ask for the first time during the outage: answered from
	// memory; their bindings wait.
	for vm := 5; vm < 10; vm++ {
		prefixes[macOf(vm)] = a.ask(t, macOf(vm))
		if !strings.HasPrefix(prefixes[macOf(vm)], "2001:db8:200:") {
			t.Fatalf("VM %d not answered during the outage: %q", vm, prefixes[macOf(vm)])
		}
	}
	if v := testenv.MetricValue(t, a.api, "cloudstack_pd_bindings_pending"); v < 5 {
		t.Errorf("bindings pending during the outage: %v, want at least 5", v)
	}

	// b restarts during the outage: it answers from its local snapshot.
	b.cmd.Process.Kill()
	<-b.exited
	b.log = &testenv.SyncBuffer{}
	b.exited = make(chan error, 1)
	b.cmd = exec.Command(bin, "serve", "--config", b.cfgPath)
	b.cmd.Stderr = b.log
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.exited <- b.cmd.Wait() }()
	t.Cleanup(func() { b.cmd.Process.Kill() })
	waitFor(t, "msg=serving", b.log, 60*time.Second)
	if !strings.Contains(b.log.String(), "answering from the local snapshot") {
		t.Errorf("b did not say it answers from its snapshot:\n%s", b.log.String())
	}
	for vm := range 10 {
		if got := b.ask(t, macOf(vm)); got != prefixes[macOf(vm)] {
			t.Errorf("restarted during the outage, %s answers VM %d with %q, want %q", b.name, vm, got, prefixes[macOf(vm)])
		}
	}

	// etcd is back: b switches to it, the waiting bindings are written.
	back := time.Now()
	etcd.Restart(1)
	etcd.Restart(2)
	waitFor(t, "etcd answers again", b.log, 30*time.Second)
	for _, s := range []*clusterServer{a, b} {
		waitUntil(t, s.name+" follows etcd again", 30*time.Second, func() bool {
			_, body := testenv.HTTPGet(t, s.api+"/readyz")
			return !strings.Contains(body, `"degraded"`)
		})
	}
	t.Logf("recovered %v after the quorum came back", time.Since(back).Round(100*time.Millisecond))
	waitUntil(t, "the bindings of the outage in etcd, seen by b", 20*time.Second, func() bool {
		_, body := testenv.HTTPGet(t, b.api+"/v1/leases")
		for vm := 5; vm < 10; vm++ {
			if !strings.Contains(body, macOf(vm)) {
				return false
			}
		}
		return true
	})
	waitUntil(t, "a syncer again", 30*time.Second, func() bool { return leader(t, servers, nil) >= 0 })
}

// TestClusterPausedSyncer: the syncer is stopped (SIGSTOP) past its lease,
// another server takes over and syncs new VMs, then the old one resumes:
// its writes are fenced, no prefix is duplicated or moved, and exactly one
// server is the syncer.
func TestClusterPausedSyncer(t *testing.T) {
	testenv.IPv6Loopback(t)
	etcd := etcdtest.Start(t, 3)
	bin := testenv.BuildBinary(t, ".")
	fake := cloudstacktest.NewServer(cloudstacktest.SiteKey, cloudstacktest.SiteSecret)
	t.Cleanup(fake.Close)
	fake.SetPod(cloudstacktest.SyntheticPodID(0), cloudstacktest.Synthetic{Index: 0, N: 10})
	servers := startClusterServers(t, bin, fake, func(int) string {
		return fmt.Sprintf("  etcd:\n    endpoints: [%s]\n", strings.Join(etcd.Endpoints(), ", "))
	})
	before := map[string]string{}
	for vm := range 10 {
		waitUntil(t, fmt.Sprintf("VM %d answered", vm), 90*time.Second, func() bool {
			before[macOf(vm)] = servers[0].ask(t, macOf(vm))
			return strings.HasPrefix(before[macOf(vm)], "2001:db8:200:")
		})
	}
	var syncer int
	waitUntil(t, "one syncer", 10*time.Second, func() bool { syncer = leader(t, servers, nil); return syncer >= 0 })
	paused := servers[syncer]
	if err := paused.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// While it sleeps, CloudStack gets five new VMs, which another server
	// syncs; the paused one, awake, must not write from its old view.
	fake.SetPod(cloudstacktest.SyntheticPodID(0), cloudstacktest.Synthetic{Index: 0, N: 15})
	dead := map[int]bool{syncer: true}
	waitUntil(t, "another syncer", 20*time.Second, func() bool { return leader(t, servers, dead) >= 0 })
	other := servers[(syncer+1)%3]
	for vm := 10; vm < 15; vm++ {
		waitUntil(t, fmt.Sprintf("new VM %d answered", vm), 20*time.Second, func() bool {
			before[macOf(vm)] = other.ask(t, macOf(vm))
			return strings.HasPrefix(before[macOf(vm)], "2001:db8:200:")
		})
	}
	if err := paused.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The resumed server finds itself deposed and follows the table.
	waitUntil(t, "the resumed server answers the new VMs", 20*time.Second, func() bool {
		return paused.ask(t, macOf(14)) == before[macOf(14)]
	})
	time.Sleep(3 * time.Second) // a sync interval or three: any stray write would land
	if n := leader(t, servers, nil); n < 0 {
		t.Errorf("not exactly one syncer after the resume")
	}
	seen := map[string]string{}
	for mac, p := range before {
		if other, dup := seen[p]; dup {
			t.Fatalf("%s delegated to %s and %s", p, mac, other)
		}
		seen[p] = mac
		for _, s := range servers {
			if got := s.ask(t, mac); got != p {
				t.Errorf("%s answers %s with %q, want %q", s.name, mac, got, p)
			}
		}
	}
	if out, err := exec.Command(bin, "check", "--config", servers[0].cfgPath).CombinedOutput(); err != nil {
		t.Errorf("check of the cluster table after the pause: %v\n%s", err, out)
	}
}

// TestClusterWebhookHandover: a webhook delivery reaches a server that is
// not the syncer; it hands the event over through etcd, the syncer syncs
// the VM, and every server answers the new VM's prefix in seconds though
// api.interval is an hour.
func TestClusterWebhookHandover(t *testing.T) {
	testenv.IPv6Loopback(t)
	etcd := etcdtest.Start(t, 3)
	bin := testenv.BuildBinary(t, ".")
	fake := cloudstacktest.NewServer(cloudstacktest.SiteKey, cloudstacktest.SiteSecret)
	t.Cleanup(fake.Close)
	fake.SetPod(cloudstacktest.SyntheticPodID(0), cloudstacktest.Synthetic{Index: 0, N: 5})
	hookPorts := []int{testenv.FreeTCPPort(t), testenv.FreeTCPPort(t), testenv.FreeTCPPort(t)}
	servers := startClusterServersWith(t, bin, fake, "1h", "2s", func(i int) string {
		return fmt.Sprintf("  etcd:\n    endpoints: [%s]\nwebhook:\n  listen: \"127.0.0.1:%d\"\n  secret: %s\n", strings.Join(etcd.Endpoints(), ", "), hookPorts[i], hookSecret)
	})
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range servers {
				t.Logf("%s log:\n%s", s.name, s.log.String())
			}
		}
	})
	for _, s := range servers {
		waitUntil(t, s.name+" answers", 90*time.Second, func() bool { return strings.HasPrefix(s.ask(t, macOf(4)), "2001:db8:200:") })
	}
	var syncer int
	waitUntil(t, "one syncer", 20*time.Second, func() bool { syncer = leader(t, servers, nil); return syncer >= 0 })
	receiver := (syncer + 1) % 3
	fake.AddWebhook("cloudstack-pd", fmt.Sprintf("http://127.0.0.1:%d/", hookPorts[receiver]), hookSecret)

	fake.SetPod(cloudstacktest.SyntheticPodID(0), cloudstacktest.Synthetic{Index: 0, N: 6})
	start := time.Now()
	fake.Emit(cloudstacktest.Event{Type: "VM.CREATE", EntityUUID: cloudstacktest.SyntheticVMID(0, 5)}, cloudstacktest.DeliveryFault{})
	var prefix string
	for _, s := range servers {
		waitUntil(t, s.name+" answers the new VM", 10*time.Second, func() bool {
			got := s.ask(t, macOf(5))
			if !strings.HasPrefix(got, "2001:db8:200:") {
				return false
			}
			if prefix != "" && got != prefix {
				t.Fatalf("%s answers %s, another server %s", s.name, got, prefix)
			}
			prefix = got
			return true
		})
	}
	t.Logf("delivered to %s, synced by %s, served by all %v after the event", servers[receiver].name, servers[syncer].name, time.Since(start).Round(time.Millisecond))
	if !strings.Contains(servers[syncer].log.String(), "synced") {
		t.Errorf("the syncer did not sync")
	}
}
