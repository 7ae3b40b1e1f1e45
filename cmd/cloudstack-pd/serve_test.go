package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/config"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
	"github.com/cloudstack-pd/cloudstack-pd/probe"
)

func waitFor(t *testing.T, what string, buf *testenv.SyncBuffer, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(buf.String(), what) {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %q; log:\n%s", timeout, what, buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const serveTestConfig = `
mapping:
  pod-a:
    pool: 2001:db8:200::/40
    interface-id: VLAN2701
server:
  listen: ["[::1]:PORT"]
  shutdown-delay: 3s
state: STATE
control:
  socket: STATE.sock
http:
  listen: "[::1]:HTTPPORT"
`

const serveTestPodB = `
  pod-b:
    pool: 2001:db8:300::/40
    interface-id: VLAN2702
`

func TestServeProcess(t *testing.T) {
	bin := testenv.BuildBinary(t, ".")
	dir := t.TempDir()
	port := testenv.FreeUDPPort(t)
	state := filepath.Join(dir, "state.db")
	cfgPath := filepath.Join(dir, "cfg.yaml")
	httpPort := testenv.FreeTCPPort(t)
	base := strings.NewReplacer("HTTPPORT", strconv.Itoa(httpPort), "PORT", strconv.Itoa(port), "STATE", state).Replace(serveTestConfig)
	api := "http://[::1]:" + strconv.Itoa(httpPort)
	testenv.WriteFile(t, cfgPath, base)

	// Reserve a prefix in pod-a and one in pod-b, which is not configured yet.
	macA, _ := net.ParseMAC("06:32:b2:00:04:79")
	macB, _ := net.ParseMAC("06:32:b2:00:04:80")
	withB, err := config.Parse("b.yaml", []byte(strings.Replace(base, "server:", strings.TrimPrefix(serveTestPodB, "\n")+"server:", 1)))
	if err != nil {
		t.Fatal(err)
	}
	st, err := allocator.OpenStore(boltstore.Open(state, boltstore.Options{Create: true}))
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(withB.Pools(), func(tx *allocator.Tx) error {
		if err := tx.Put(allocator.Allocation{Pool: "pod-a", MAC: macA, Prefix: netip.MustParsePrefix("2001:db8:200:30::/60"), State: allocator.StateActive}); err != nil {
			return err
		}
		return tx.Put(allocator.Allocation{Pool: "pod-b", MAC: macB, Prefix: netip.MustParsePrefix("2001:db8:300:40::/60"), State: allocator.StateActive})
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	var log testenv.SyncBuffer
	srv := exec.Command(bin, "serve", "--config", cfgPath)
	srv.Stderr = &log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() { srv.Process.Kill() })
	waitFor(t, "msg=serving", &log, 10*time.Second)
	if !strings.Contains(log.String(), "pod-b") {
		t.Errorf("no warning about pod-b's allocation kept but not served:\n%s", log.String())
	}

	// ask probes mac on iid; an answer without a prefix is not an error
	// here (probe.ErrNoPrefix): the test reads what was answered.
	ask := func(mac, iid string) string {
		var out bytes.Buffer
		err := runProbe(&out, probeFlags{server: "[::1]:" + strconv.Itoa(port), mac: mac, interfaceID: iid, linkAddr: "::", timeout: 2 * time.Second})
		if err != nil && !errors.Is(err, probe.ErrNoPrefix) {
			t.Fatalf("probe %s on %s: %v\nserver log:\n%s", mac, iid, err, log.String())
		}
		return out.String()
	}
	if out := ask("06:32:b2:00:04:79", "VLAN2701"); !strings.Contains(out, "REPLY") || !strings.Contains(out, "prefix 2001:db8:200:30::/60 preferred 24h0m0s valid 48h0m0s") {
		t.Errorf("probe of pod-a:\n%s", out)
	}
	if out := ask("06:32:b2:00:04:80", "VLAN2702"); !strings.Contains(out, "NoPrefixAvail") {
		t.Errorf("pod-b served before it is configured:\n%s", out)
	}

	// Over HTTP: ready, and the metrics count what was answered and dropped.
	if code, body := testenv.HTTPGet(t, api+"/readyz"); code != 200 || !strings.Contains(body, `"ready": true`) && !strings.Contains(body, `"ready":true`) {
		t.Errorf("/readyz = %d %s", code, body)
	}
	answered := testenv.MetricValue(t, api, `cloudstack_pd_packets_answered_total{type="REPLY"}`)
	if answered < 1 {
		t.Errorf("REPLY answers counted: %v", answered)
	}
	unrelayed := testenv.MetricValue(t, api, `cloudstack_pd_drops_total{reason="unrelayed"}`)
	sendRaw(t, port, []byte{1, 0, 0, 1}) // a Solicit sent straight to the server
	waitMetric(t, api, `cloudstack_pd_drops_total{reason="unrelayed"}`, unrelayed+1)
	ask("06:32:b2:00:04:79", "VLAN2701")
	waitMetric(t, api, `cloudstack_pd_packets_answered_total{type="REPLY"}`, answered+1)
	if v := testenv.MetricValue(t, api, `cloudstack_pd_pool_allocations{interface_id="VLAN2701",pool="pod-a",state="active"}`); v != 1 {
		t.Errorf("pool_allocations for pod-a = %v, want 1", v)
	}

	// A second server on the same store says so and exits at once.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	second, err := exec.CommandContext(ctx, bin, "serve", "--config", cfgPath).CombinedOutput()
	if err == nil || ctx.Err() != nil || !strings.Contains(string(second), "locked by another process") {
		t.Errorf("second serve: err %v, output:\n%s", err, second)
	}

	// SIGHUP with a broken config: refused, the old one keeps serving.
	testenv.WriteFile(t, cfgPath, base+"server:\n  renew-timer: nope\n")
	srv.Process.Signal(syscall.SIGHUP)
	waitFor(t, "reload refused", &log, 5*time.Second)
	if out := ask("06:32:b2:00:04:79", "VLAN2701"); !strings.Contains(out, "2001:db8:200:30::/60") {
		t.Errorf("not serving after a refused reload:\n%s", out)
	}

	// SIGHUP adding pod-b: its stored allocation is served.
	testenv.WriteFile(t, cfgPath, strings.Replace(base, "server:", strings.TrimPrefix(serveTestPodB, "\n")+"server:", 1))
	srv.Process.Signal(syscall.SIGHUP)
	waitFor(t, "msg=reloaded", &log, 5*time.Second)
	if out := ask("06:32:b2:00:04:80", "VLAN2702"); !strings.Contains(out, "prefix 2001:db8:300:40::/60") {
		t.Errorf("pod-b not served after reload:\n%s", out)
	}
	// allocations while serve holds the store: read through its HTTP API.
	if out, err := exec.Command(bin, "allocations", "--config", cfgPath, "--json").CombinedOutput(); err != nil ||
		!strings.Contains(string(out), `"prefix": "2001:db8:300:40::/60"`) || !strings.Contains(string(out), "held by the running server") {
		t.Errorf("allocations while serving: %v\n%s", err, out)
	}
	if code, body := testenv.HTTPGet(t, api+"/v1/pools"); code != 200 || !strings.Contains(body, "pod-b") {
		t.Errorf("/v1/pools after reload = %d %s", code, body)
	}
	// Bindings reaching the store on the recorder's ticker: pinned with a
	// fake clock by server.TestRecorderRunFlushesOnItsTicker (here it took a
	// sleep); daemon.TestRun checks them in the store after shutdown.

	// SIGTERM: after shutdown-delay it exits 0 with the bindings in the
	// store. That /readyz turns not ready while it still answers for
	// exactly the delay is daemon.TestRun's, on a fake clock.
	srv.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("serve exited with %v on SIGTERM; log:\n%s", err, log.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not exit within 10s of SIGTERM")
	}
	st, err = allocator.OpenStore(boltstore.Open(state, boltstore.Options{Create: true}))
	if err != nil {
		t.Fatalf("store after shutdown: %v", err)
	}
	defer st.Close()
	bs, err := st.Bindings()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, b := range bs {
		got[b.Prefix.String()] = true
	}
	if !got["2001:db8:200:30::/60"] || !got["2001:db8:300:40::/60"] {
		t.Errorf("bindings after SIGTERM: %v", got)
	}
}

func waitMetric(t *testing.T, api, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := testenv.MetricValue(t, api, series)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", series, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sendRaw(t *testing.T, port int, pkt []byte) {
	t.Helper()
	c, err := net.DialUDP("udp6", nil, &net.UDPAddr{IP: net.IPv6loopback, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
}
