package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/bench/synth"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/kea"
	"github.com/cloudstack-pd/cloudstack-pd/keaexport"
)

type benchSetupFlags struct {
	dir             string
	clients, pools  int
	port            int
	kea, fill       bool
	since           string
	workers, queued int
	http            string
}

func newBenchSetupCmd() *cobra.Command {
	var f benchSetupFlags
	cmd := &cobra.Command{
		Use:   "setup",
		Short: "Write the configs and reservations of a benchmark",
		Long: `Setup writes into --dir what a benchmark of cloudstack-pd against Kea needs,
for the synthetic clients that 'cloudstack-pd bench' plays (client i: MAC
02:b0 followed by i, in pool i mod --pools, with the (i div --pools)-th /60
of that pool):

  cloudstack-pd.yaml      a config serving the pools on [::1]:--port, with
                          its store in --dir/state.db
  kea-base.conf           (--kea) Kea's settings for loopback: memfile
                          without persistence, MAC from the remote-id,
                          reservations by hw-address, warnings to kea.log
  reservations.kea.conf   (--kea) kea-base.conf with one reservation per
                          client, written by kea-export's own code (kea.Export)

With --kea, 'cloudstack-pd import-kea' adopts reservations.kea.conf into the
store and 'cloudstack-pd kea-export --offline --keacfg kea-base.conf' writes
Kea's config back from the store, so that both servers serve the same table
through the commands an operator uses. With --fill the reservations are
written into the store directly instead (fast, for a million clients).`,
		Example: `  cloudstack-pd bench setup --dir /tmp/bench --clients 100000 --kea
  cloudstack-pd bench setup --dir /tmp/bench-1m --clients 1000000 --fill`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchSetup(cmd.OutOrStdout(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", "", "folder to write into (created)")
	fl.IntVar(&f.clients, "clients", 100_000, "synthetic clients to reserve a prefix for")
	fl.IntVar(&f.pools, "pools", 4, "pools (one VLAN and /40 each) the clients are spread over")
	fl.IntVar(&f.port, "port", 10547, "UDP port cloudstack-pd listens on, on [::1]")
	fl.IntVar(&f.workers, "workers", 0, "server.workers of the config (0: one per CPU)")
	fl.IntVar(&f.queued, "queue-length", 0, "server.queue-length of the config (0: the default)")
	fl.StringVar(&f.http, "http", "127.0.0.1:0", "http.listen of the config (/metrics; port 0: any free one)")
	fl.BoolVar(&f.kea, "kea", false, "write kea-base.conf and reservations.kea.conf")
	fl.BoolVar(&f.fill, "fill", false, "write the reservations into the store directly")
	fl.StringVar(&f.since, "since", "2026-01-01T00:00:00Z", "the allocations' creation time (RFC 3339)")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

func runBenchSetup(out io.Writer, f benchSetupFlags) error {
	if f.pools < 1 || f.pools > synth.MaxPools {
		return fmt.Errorf("--pools must be 1 to %d", synth.MaxPools)
	}
	if f.clients < 0 || f.clients > synth.Capacity(f.pools) {
		return fmt.Errorf("--clients must be 0 to %d with %d pools", synth.Capacity(f.pools), f.pools)
	}
	since, err := time.Parse(time.RFC3339, f.since)
	if err != nil {
		return fmt.Errorf("--since: %w", err)
	}
	dir, err := filepath.Abs(f.dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	pools := synth.Pools(f.pools)
	cfgPath := filepath.Join(dir, "cloudstack-pd.yaml")
	if err := os.WriteFile(cfgPath, benchServeConfig(pools, f, filepath.Join(dir, "state.db")), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s written\n", cfgPath)

	if f.kea {
		base := benchKeaBase(filepath.Join(dir, "kea.log"))
		basePath := filepath.Join(dir, "kea-base.conf")
		if err := os.WriteFile(basePath, base, 0o644); err != nil {
			return err
		}
		allocs, err := synth.Allocations(pools, f.clients, since)
		if err != nil {
			return err
		}
		tbl, err := allocator.NewTable(pools, allocs)
		if err != nil {
			return err
		}
		src, err := kea.Parse(basePath, base)
		if err != nil {
			return err
		}
		res, err := kea.Export(src, keaexport.Subnets(tbl), kea.ExportOptions{MACSources: []string{"remote-id"}})
		if err != nil {
			return err
		}
		p := filepath.Join(dir, "reservations.kea.conf")
		if err := os.WriteFile(p, res.Data, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(out, "%s and %s written: %d reservations\n", basePath, p, f.clients)
	}
	if f.fill {
		st, err := allocator.OpenStore(boltstore.Open(filepath.Join(dir, "state.db"), boltstore.Options{Create: true}))
		if err != nil {
			return err
		}
		err = synth.Fill(st, pools, f.clients, 0, since)
		if cerr := st.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s holds %d allocations\n", filepath.Join(dir, "state.db"), f.clients)
	}
	return nil
}

func benchServeConfig(pools []allocator.Pool, f benchSetupFlags, state string) []byte {
	var b bytes.Buffer
	b.WriteString("# written by cloudstack-pd bench setup\nmapping:\n")
	for _, p := range pools {
		fmt.Fprintf(&b, "  %s:\n    pool: %s\n    prefix-len: %d\n    interface-id: %s\n    ip6-cidr: %s\n",
			p.Name, p.Prefix, p.PrefixLen, p.InterfaceID, p.IP6CIDR)
	}
	fmt.Fprintf(&b, "server:\n  listen: [\"[::1]:%d\"]\n  mac-sources: [remote-id]\n", f.port)
	if f.workers > 0 {
		fmt.Fprintf(&b, "  workers: %d\n", f.workers)
	}
	if f.queued > 0 {
		fmt.Fprintf(&b, "  queue-length: %d\n", f.queued)
	}
	// The HTTP endpoint runs, as in production, on a port of its own.
	http := f.http
	if http == "" {
		http = "127.0.0.1:0"
	}
	fmt.Fprintf(&b, "http:\n  listen: %q\nstate: %s\ncontrol:\n  socket: %s\nlog:\n  level: warn\n", http, state, filepath.Join(filepath.Dir(state), "control.sock"))
	return b.Bytes()
}

// benchKeaBase is Kea's side of the benchmark: loopback, no lease file,
// the MAC from the relay's remote-id, reservations by hw-address, the
// lifetimes of cloudstack-pd's defaults, and only warnings logged.
func benchKeaBase(logFile string) []byte {
	v := map[string]any{"Dhcp6": map[string]any{
		"interfaces-config":            map[string]any{"interfaces": []string{"lo/::1"}},
		"lease-database":               map[string]any{"type": "memfile", "persist": false},
		"server-id":                    map[string]any{"type": "LLT", "persist": false},
		"preferred-lifetime":           86400,
		"valid-lifetime":               172800,
		"renew-timer":                  1000,
		"rebind-timer":                 2000,
		"mac-sources":                  []string{"remote-id"},
		"host-reservation-identifiers": []string{"hw-address"},
		"loggers": []any{map[string]any{
			"name":           "kea-dhcp6",
			"output_options": []any{map[string]any{"output": logFile}},
			"severity":       "WARN",
		}},
	}}
	b, _ := json.MarshalIndent(v, "", "  ")
	return append(b, '\n')
}

type benchStartupFlags struct {
	config  string
	bin     string
	server  string
	client  int
	pools   int
	timeout time.Duration
	settle  time.Duration
	json    bool
}

func newBenchStartupCmd() *cobra.Command {
	var f benchStartupFlags
	cmd := &cobra.Command{
		Use:   "startup",
		Short: "Measure how long 'serve' takes to answer, and its memory",
		Long: `Startup runs 'cloudstack-pd serve --config CONFIG' (this binary, or --bin)
and sends a relayed Solicit for --client every 5 ms until the Advertise
delegates the client's prefix: the time from the start of the process to
that answer is the start-to-ready time. It then reads the process's
memory from /proc: the peak resident set (VmHWM) and, after --settle, the
resident set, split into anonymous memory (the process's own) and file
pages (the store, which bbolt maps), and stops the server with SIGTERM.`,
		Example: `  cloudstack-pd bench setup --dir /tmp/bench-1m --clients 1000000 --fill
  cloudstack-pd bench startup --config /tmp/bench-1m/cloudstack-pd.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := runBenchStartup(cmd.Context(), f, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if f.json {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ready in %.3fs; peak RSS %.0f MB; RSS after %s %.0f MB (anonymous %.0f MB, file %.0f MB)\n",
				r.ReadySeconds, r.PeakRSSMB, f.settle, r.RSSMB, r.AnonMB, r.FileMB)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.config, "config", "c", "", "the config serve runs with (as written by 'bench setup')")
	fl.StringVar(&f.bin, "bin", "", "the cloudstack-pd binary to run (default: this one)")
	fl.StringVar(&f.server, "server", "", "where serve answers, [addr]:port (default: the config's first server.listen)")
	fl.IntVar(&f.client, "client", 0, "the synthetic client to ask for")
	fl.IntVar(&f.pools, "pools", 4, "pools of the synthetic clients")
	fl.DurationVar(&f.timeout, "timeout", time.Minute, "give up after")
	fl.DurationVar(&f.settle, "settle", time.Second, "how long after ready to read the resident set")
	fl.BoolVar(&f.json, "json", false, "print the result as JSON")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// benchStartup is what 'bench startup' measured.
type benchStartup struct {
	ReadySeconds float64 `json:"ready_s"`
	PeakRSSMB    float64 `json:"peak_rss_mb"`
	RSSMB        float64 `json:"rss_mb"`
	AnonMB       float64 `json:"rss_anon_mb"`
	FileMB       float64 `json:"rss_file_mb"`
}

func runBenchStartup(ctx context.Context, f benchStartupFlags, stderr io.Writer) (*benchStartup, error) {
	bin := f.bin
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	srv, err := benchStartupServer(f)
	if err != nil {
		return nil, err
	}
	gen, err := newBenchGen(f.pools, f.client, 1)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialUDP("udp6", nil, net.UDPAddrFromAddrPort(srv))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var log bytes.Buffer
	cmd := exec.Command(bin, "serve", "--config", f.config)
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	defer stop()

	link := synth.LinkAddr(gen.pool(f.client)).As16()
	pkt := gen.solicits[gen.pool(f.client)].fill(nil, f.client, 1, &link)
	want := gen.prefix(f.client)
	buf := make([]byte, 4096)
	var ready time.Duration
	for ready == 0 {
		select {
		case err := <-exited:
			stopped = true
			return nil, fmt.Errorf("serve exited before answering (%v):\n%s", err, log.String())
		case <-ctx.Done():
			return nil, ctx.Err()
		default:
		}
		if time.Since(start) > f.timeout {
			return nil, fmt.Errorf("serve did not answer within %s:\n%s", f.timeout, log.String())
		}
		_, _ = conn.Write(pkt)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
		for {
			n, err := conn.Read(buf)
			if err != nil {
				break
			}
			if a, ok := parseBenchAnswer(buf[:n]); ok && a.hasPrefix && a.prefix == want {
				ready = time.Since(start)
				break
			}
		}
	}
	r := &benchStartup{ReadySeconds: ready.Seconds()}
	time.Sleep(f.settle)
	st, err := procStatus(cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	mb := func(k string) float64 { return float64(st[k]) / 1024 }
	r.PeakRSSMB, r.RSSMB, r.AnonMB, r.FileMB = mb("VmHWM"), mb("VmRSS"), mb("RssAnon"), mb("RssFile")
	stop()
	fmt.Fprint(stderr, log.String())
	return r, nil
}

// benchStartupServer is where the server of f.config answers.
func benchStartupServer(f benchStartupFlags) (netip.AddrPort, error) {
	if f.server != "" {
		return netip.ParseAddrPort(f.server)
	}
	cfg, err := config.Load(f.config)
	if err != nil {
		return netip.AddrPort{}, err
	}
	addrs, err := cfg.ListenAddrs()
	if err != nil {
		return netip.AddrPort{}, err
	}
	return addrs[0], nil // ListenAddrs fails on an empty list
}

// procStatus reads the kB values of /proc/PID/status.
func procStatus(pid int) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || !strings.HasSuffix(v, " kB") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, " kB")), 10, 64)
		if err == nil {
			out[k] = n
		}
	}
	return out, sc.Err()
}
