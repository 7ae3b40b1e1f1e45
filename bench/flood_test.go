package bench

import (
	"fmt"
	"io"
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
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// TestFloodServe runs the real serve on [::1] and floods it, with bench
// --flood, with Rebinds and Rapid Commit Solicits that each carry a new
// random client DUID for a known MAC: a hostile VM's way to make the
// server hold one binding per DUID. It checks that the server's peak RSS
// (VmHWM) stays under 400 MB, that answers keep coming in every slice of
// the flood, and that the store keeps at most one binding per client.
//
// Slow and heavy (it takes the machine's CPUs for the flood), so not part
// of `make test`: `make flood` runs it. Settings (environment):
//
//	CLOUDSTACK_PD_FLOOD=1          run it
//	CLOUDSTACK_PD_FLOOD_CLIENTS    known MACs (100000)
//	CLOUDSTACK_PD_FLOOD_SECONDS    length of the flood (20)
//	CLOUDSTACK_PD_FLOOD_BIN        a cloudstack-pd binary to test instead
//	                               of this tree's (to compare a release)
func TestFloodServe(t *testing.T) {
	if os.Getenv("CLOUDSTACK_PD_FLOOD") == "" {
		t.Skip("set CLOUDSTACK_PD_FLOOD=1 (or run make flood)")
	}
	clients := envInt(t, "CLOUDSTACK_PD_FLOOD_CLIENTS", 100_000)
	seconds := envInt(t, "CLOUDSTACK_PD_FLOOD_SECONDS", 20)
	const pools, slice, limitMB = 4, 2 * time.Second, 400

	bin := os.Getenv("CLOUDSTACK_PD_FLOOD_BIN")
	if bin == "" {
		bin = testenv.BuildBinary(t, "../cmd/cloudstack-pd")
	}
	dir := t.TempDir()
	port, httpPort := testenv.FreeUDPPort(t), testenv.FreeTCPPort(t)
	if err := runBenchSetup(io.Discard, benchSetupFlags{dir: dir, clients: clients, pools: pools, port: port,
		fill: true, since: "2026-01-01T00:00:00Z"}); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "cloudstack-pd.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(cfg), "  mac-sources: [remote-id]\n", "  mac-sources: [remote-id]\n  rapid-commit: true\n", 1)
	s = strings.Replace(s, `listen: "127.0.0.1:0"`, fmt.Sprintf(`listen: "[::1]:%d"`, httpPort), 1)
	if s == string(cfg) || !strings.Contains(s, "rapid-commit") {
		t.Fatalf("cannot adapt the bench config:\n%s", cfg)
	}
	testenv.WriteFile(t, cfgPath, s)

	var log testenv.SyncBuffer
	srv := exec.Command(bin, "serve", "--config", cfgPath)
	srv.Stdout, srv.Stderr = &log, &log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = srv.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("serve: %v\n%s", err, log.String())
			}
		case <-time.After(30 * time.Second):
			_ = srv.Process.Kill()
			t.Errorf("serve did not stop within 30 s of SIGTERM")
		}
	}
	t.Cleanup(stop)

	server := fmt.Sprintf("[::1]:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := runBench(t.Context(), benchFlags{server: server, clients: clients, pools: pools,
			outstanding: 1, sockets: 1, count: 1, timeout: 200 * time.Millisecond})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve does not answer: %v\n%s", err, log.String())
		}
		select {
		case err := <-exited:
			t.Fatalf("serve exited: %v\n%s", err, log.String())
		default:
		}
	}

	var total int64
	for i := range max(1, int(time.Duration(seconds)*time.Second/slice)) {
		res, err := runBench(t.Context(), benchFlags{server: server, clients: clients, pools: pools,
			outstanding: 256, sockets: 4, duration: slice, timeout: time.Second, flood: true, serverPID: srv.Process.Pid})
		if err != nil {
			t.Fatalf("flood slice %d: no answer: %v\n%s", i, err, log.String())
		}
		if res.Exchanges == 0 || res.WrongPrefix != 0 || res.NoPrefix != 0 {
			t.Errorf("flood slice %d: %+v", i, res)
		}
		total += res.Exchanges
		t.Logf("slice %d: %d answers (%.0f/s), %d drops, p99 %.1f ms", i, res.Exchanges, res.Rate, res.Drops, res.Latency.P99)
	}
	status, err := procStatus(srv.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	api := fmt.Sprintf("http://[::1]:%d", httpPort)
	pending := testenv.MetricValue(t, api, "cloudstack_pd_bindings_pending")
	full := testenv.MetricValue(t, api, `cloudstack_pd_bindings_dropped_total{reason="pending-full"}`)
	stop()

	st, err := allocator.OpenStore(boltstore.Open(filepath.Join(dir, "state.db"), boltstore.Options{ReadOnly: true}))
	if err != nil {
		t.Fatal(err)
	}
	bindings, err := st.Bindings()
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	peakMB := float64(status["VmHWM"]) / 1024
	var dbMB float64
	if fi, err := os.Stat(filepath.Join(dir, "state.db")); err == nil {
		dbMB = float64(fi.Size()) / (1 << 20)
	}
	t.Logf("FLOOD: %d clients, %d s: %d answers (%.0f/s); serve peak RSS (VmHWM) %.0f MB; at the end RSS %.0f MB "+
		"(anonymous %.0f, file %.0f), store file %.0f MB; pending at the end %.0f, dropped pending-full %.0f; %d bindings in the store",
		clients, seconds, total, float64(total)/float64(seconds), peakMB, float64(status["VmRSS"])/1024,
		float64(status["RssAnon"])/1024, float64(status["RssFile"])/1024, dbMB, pending, full, len(bindings))
	if peakMB >= limitMB {
		t.Errorf("serve's peak RSS %.0f MB, want under %d MB", peakMB, limitMB)
	}
	if len(bindings) > clients {
		t.Errorf("%d bindings stored for %d clients: at most one per MAC and IAID", len(bindings), clients)
	}
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}
