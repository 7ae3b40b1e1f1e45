package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
	"github.com/cloudstack-pd/cloudstack-pd/probe"
)

const hookSecret = "0123456789abcdef-hook"

// webhook register creates the webhook, then updates the same one;
// webhook status lists it and its deliveries.
func TestWebhookCommands(t *testing.T) {
	s := newSyncSite(t)
	s.WriteConfig(t, "webhook:\n  listen: \"127.0.0.1:0\"\n  secret: "+hookSecret+"\n")
	out, err := runCLI(t, "webhook", "register", "--config", s.ConfigPath, "--url", "http://pd1.invalid:9548/")
	if err != nil || !strings.Contains(out, `created webhook "cloudstack-pd" (id `) || !strings.Contains(out, "events POSTed to http://pd1.invalid:9548/, scope Global, Enabled") {
		t.Fatalf("register: %v\n%s", err, out)
	}
	out, err = runCLI(t, "webhook", "register", "--config", s.ConfigPath, "--url", "https://pd1.invalid:9548/")
	if err != nil || !strings.Contains(out, `updated webhook "cloudstack-pd"`) || !strings.Contains(out, "https://pd1.invalid:9548/") {
		t.Fatalf("register again: %v\n%s", err, out)
	}
	hooks := s.Fake.Webhooks()
	if len(hooks) != 1 || hooks[0].SecretKey != hookSecret || !hooks[0].SSLVerification {
		t.Fatalf("fake holds %+v", hooks)
	}
	s.Fake.Emit(cloudstacktest.Event{Type: "VM.CREATE", EntityUUID: "x"}, cloudstacktest.DeliveryFault{})
	out, err = runCLI(t, "webhook", "status", "--config", s.ConfigPath)
	if err != nil || !strings.Contains(out, `webhook "cloudstack-pd" (id `) || !strings.Contains(out, "VM.CREATE") ||
		!strings.Contains(out, "1 of the 1 deliveries shown failed") {
		t.Errorf("status: %v\n%s", err, out)
	}
	for _, tt := range []struct{ args, want string }{
		{"--url ftp://x/", "--url"},
		{"--url http://x/ --scope All", "--scope"},
	} {
		out, err := runCLI(t, append([]string{"webhook", "register", "--config", s.ConfigPath}, strings.Fields(tt.args)...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v\n%s", tt.args, err, out)
		}
	}
	s.WriteConfig(t, "")
	if _, err := runCLI(t, "webhook", "register", "--config", s.ConfigPath, "--url", "http://x/"); err == nil || !strings.Contains(err.Error(), "webhook.secret is empty") {
		t.Errorf("without a secret: %v", err)
	}
}

// The process: serve with a webhook listener and api.interval 1h; the fake
// CloudStack gets a new VM and delivers VM.CREATE; a relayed Solicit for
// the VM's MAC gets its prefix within 2 s of the event.
func TestServeWebhookProcess(t *testing.T) {
	bin := testenv.BuildBinary(t, ".")
	s := newSyncSite(t)
	port, hookPort := testenv.FreeUDPPort(t), testenv.FreeTCPPort(t)
	s.WriteConfig(t, "server:\n  listen: [\"[::1]:"+strconv.Itoa(port)+"\"]\nwebhook:\n  listen: \"127.0.0.1:"+strconv.Itoa(hookPort)+"\"\n  secret: "+hookSecret+"\n")
	cfgText, err := os.ReadFile(s.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WriteFile(t, s.ConfigPath, strings.NewReplacer("  timeout: 2s\n", "  timeout: 2s\n  interval: 1h\n", "level: warn", "level: info").Replace(string(cfgText)))

	var log testenv.SyncBuffer
	srv := exec.Command(bin, "serve", "--config", s.ConfigPath, "--init")
	srv.Stderr = &log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	waitFor(t, "msg=synced", &log, 10*time.Second) // the start-up sync
	waitFor(t, "msg=\"webhook listener\"", &log, 5*time.Second)
	if out, err := runCLI(t, "webhook", "register", "--config", s.ConfigPath, "--url", "http://127.0.0.1:"+strconv.Itoa(hookPort)+"/"); err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}

	vms, err := cloudstacktest.LoadVMs(filepath.Join("..", "..", "testdata", "cloudstack", "listVirtualMachines-pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	const id, mac = "a0a0a0a0-0000-4000-8000-000000000001", "1e:00:ab:00:00:01"
	vm, err := cloudstacktest.AnotherVM(vms[0], id, "new-01", "b0b0b0b0-0000-4000-8000-000000000001", mac)
	if err != nil {
		t.Fatal(err)
	}
	ask := func() (string, error) {
		var out bytes.Buffer
		err := runProbe(&out, probeFlags{server: "[::1]:" + strconv.Itoa(port), mac: mac, interfaceID: "VLAN2701", linkAddr: "::", timeout: time.Second})
		return out.String(), err
	}
	if out, err := ask(); !errors.Is(err, probe.ErrNoPrefix) {
		t.Fatalf("the new VM is served before it exists: %v\n%s", err, out)
	}
	s.Fake.SetPod(cloudstacktest.SitePod, append(vms, vm))
	start := time.Now()
	s.Fake.Emit(cloudstacktest.Event{Type: "VM.CREATE", EntityUUID: id}, cloudstacktest.DeliveryFault{})
	for {
		out, err := ask()
		if err == nil && strings.Contains(out, "prefix 2001:db8:200:50::/60") {
			break
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("no prefix %v after the event (%v):\n%s\nserver log:\n%s", took, err, out, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("served %v after the event", time.Since(start).Round(time.Millisecond))
	if out, err := runCLI(t, "webhook", "status", "--config", s.ConfigPath); err != nil || !strings.Contains(out, "VM.CREATE") || strings.Contains(out, "failed") {
		t.Errorf("status: %v\n%s", err, out)
	}
}
