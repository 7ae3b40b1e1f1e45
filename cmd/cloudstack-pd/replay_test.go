package main

// Tests of `cloudstack-pd replay` (issue 5) on the corpus of
// testdata/replay (built by replay/corpus) and on the real captures
// of ../shared/captures: offline against the golden answers, against a
// running serve, against Kea 2.2 with --compare, and the golden files'
// power to catch a changed answer.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/capture"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/kea"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
	"github.com/cloudstack-pd/cloudstack-pd/replay"
	"github.com/cloudstack-pd/cloudstack-pd/replay/corpus"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

var updateReplay = flag.Bool("update-replay", false, "rewrite the golden answers in testdata/replay")

const replayData = "../../testdata/replay"

// replayDUID is the server DUID stored in the test's store.
var replayDUID = []byte{0, 1, 0, 1, 0x31, 0x00, 0x00, 0x01, 0x02, 0x00, 0x5e, 0x00, 0x05, 0x47}

// replaySite writes the corpus config (testdata/replay/corpus.yaml) into a
// temporary folder, with its own state and listen port, and builds the
// store: corpus.kea.conf's reservations adopted with allocator.Import,
// and, with duid, the server DUID. serve's HTTP API is off. It returns
// the config's path.
func replaySite(t *testing.T, port int, duid []byte, edit func(string) string) string {
	t.Helper()
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(replayData, "corpus.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state.db")
	text := strings.NewReplacer("[::1]:10547", "[::1]:"+strconv.Itoa(port), "./replay-state.db", state).Replace(string(data)) + "control:\n  socket: " + state + ".sock\n"
	// No local HTTP API: tests run side by side.
	text += "http:\n  listen: \"\"\n"
	if edit != nil {
		text = edit(text)
	}
	cfgPath := filepath.Join(dir, "corpus.yaml")
	testenv.WriteFile(t, cfgPath, text)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	kcfg, err := kea.Load(filepath.Join(replayData, "corpus.kea.conf"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := allocator.OpenStore(boltstore.Open(state, boltstore.Options{Create: true, NoSync: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = st.Update(cfg.Pools(), func(tx *allocator.Tx) error {
		_, err := allocator.Import(tx, kcfg, time.Unix(1700000000, 0))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if duid != nil {
		if _, err := st.ServerDUID(func() ([]byte, error) { return duid, nil }); err != nil {
			t.Fatal(err)
		}
	}
	return cfgPath
}

// replayCase is one capture to replay and its golden answers.
type replayCase struct {
	pcap, golden string
	// wrap, link: the --wrap settings ("" without --wrap).
	wrap, link string
	// nothing: the capture holds no request to replay.
	nothing bool
}

func (c replayCase) name() string { return filepath.Base(c.pcap) }

// flags returns the replay flags for the case, to be completed with a target.
func (c replayCase) flags() replayFlags {
	f := replayFlags{pcap: c.pcap, timeout: 300 * time.Millisecond, linkAddr: "::", expect: c.golden}
	if c.wrap != "" {
		f.wrap, f.interfaceID, f.linkAddr = true, c.wrap, c.link
	}
	if *updateReplay {
		f.expect, f.record = "", c.golden
	}
	if c.nothing {
		f.expect, f.record = "", ""
	}
	return f
}

// replayCases are the corpus captures and, when ../shared/captures is
// there, the real captures, wrapped on VLAN2701 with a global
// link-address (the shape Kea 2.2 can serve too).
func replayCases(t *testing.T) []replayCase {
	t.Helper()
	caps, err := corpus.Captures()
	if err != nil {
		t.Fatal(err)
	}
	var cs []replayCase
	for _, c := range caps {
		cs = append(cs, replayCase{pcap: filepath.Join(replayData, c.Name), golden: filepath.Join(replayData, goldenName(c.Name)),
			wrap: c.WrapInterfaceID, link: c.WrapLinkAddress})
	}
	dir := replaySharedDir(t)
	if dir == "" {
		return cs
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.pcap"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no captures in %s: %v", dir, err)
	}
	for _, f := range files {
		c := replayCase{pcap: f, golden: filepath.Join(replayData, "shared", goldenName(filepath.Base(f))),
			wrap: corpus.PodA.InterfaceID, link: corpus.PodA.Router.String()}
		pkts, _, err := capture.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		reqs, _ := replay.Extract(pkts, replay.ExtractOptions{Wrap: &replay.Wrap{InterfaceID: []byte("x")}})
		c.nothing = len(reqs) == 0
		cs = append(cs, c)
	}
	return cs
}

func goldenName(capture string) string {
	return strings.TrimSuffix(strings.TrimSuffix(capture, ".pcapng"), ".pcap") + ".golden.json"
}

// replaySharedDir returns ../shared/captures beside the repository, or ""
// (after logging why) when it is not there; with CLOUDSTACK_PD_E2E=1 its
// absence fails the test.
func replaySharedDir(t *testing.T) string {
	t.Helper()
	if d := testenv.FindSharedCaptures(); d != "" {
		return d
	}
	if testenv.Strict() {
		t.Fatal("shared/captures not found beside the repository (<x>/main and <x>/shared)")
	}
	t.Log("shared/captures not found: the real captures are not replayed")
	return ""
}

// runReplayTest runs replay in-process and returns its output.
func runReplayTest(t *testing.T, f replayFlags) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := runReplayFlags(context.Background(), &out, f, func(name string) bool {
		return name == "link-address" && f.wrap
	})
	return out.String(), err
}

func exitCode(err error) int {
	var ec exitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	if err != nil {
		return 1
	}
	return 0
}

// Every capture of the corpus, and every real capture, replayed offline
// gives its golden answers.
func TestReplayCorpusOffline(t *testing.T) {
	cfg := replaySite(t, 10547, replayDUID, nil)
	if *updateReplay {
		if err := os.MkdirAll(filepath.Join(replayData, "shared"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range replayCases(t) {
		t.Run(c.name(), func(t *testing.T) {
			f := c.flags()
			f.offline, f.config = true, cfg
			out, err := runReplayTest(t, f)
			if c.nothing {
				if err == nil || !strings.Contains(err.Error(), "no request to replay") {
					t.Errorf("a capture without requests: %v", err)
				}
				return
			}
			if err != nil && !(*updateReplay && exitCode(err) == replayExitNoAnswer) {
				t.Fatalf("%v\n%s", err, out)
			}
			if !*updateReplay && !strings.Contains(out, "the answers match") {
				t.Errorf("no match reported:\n%s", out)
			}
		})
	}
}

// The golden files catch a changed answer: an expected value altered in a
// copy of a golden file, or an answer changed by the server's config,
// fails the replay with exit status 3 and a diff naming the frame, the
// field and both values.
func TestReplayGoldenFailsWhenAnswerChanges(t *testing.T) {
	if *updateReplay {
		t.Skip("-update-replay")
	}
	cfg := replaySite(t, 10547, replayDUID, nil)
	golden := filepath.Join(replayData, "juniper-relay.golden.json")
	data, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	base := replayCase{pcap: filepath.Join(replayData, "juniper-relay.pcap")}.flags()
	base.offline, base.config = true, cfg

	t.Run("expected value altered", func(t *testing.T) {
		altered := filepath.Join(t.TempDir(), "altered.golden.json")
		if !bytes.Contains(data, []byte(`"valid": 172800`)) {
			t.Fatal("golden file without a valid lifetime of 172800")
		}
		testenv.WriteFile(t, altered, strings.Replace(string(data), `"valid": 172800`, `"valid": 172801`, 1))
		f := base
		f.expect = altered
		out, err := runReplayTest(t, f)
		if exitCode(err) != replayExitDifferences {
			t.Fatalf("exit %d (%v), want %d\n%s", exitCode(err), err, replayExitDifferences, out)
		}
		want := "the answers differ from " + altered + ":\n" +
			"frame 1 (SOLICIT xid 100001 mac 06:32:b2:00:04:79 on VLAN2701):\n" +
			"  answer.ias[IA_PD 00000001].prefixes[2001:db8:200::/60]\n" +
			"    expected: preferred 86400 valid 172801\n" +
			"    got:      preferred 86400 valid 172800\n"
		if !strings.Contains(out, want) {
			t.Errorf("output lacks\n%s\nin\n%s", want, out)
		}
		if n := strings.Count(out, "\nframe ") - strings.Count(out, "\nframe  "); n != 1 {
			t.Errorf("%d frames in the diff, want 1", n)
		}
	})
	t.Run("answer changed", func(t *testing.T) {
		f := base
		f.expect = golden
		f.config = replaySite(t, 10547, replayDUID, func(s string) string {
			return strings.Replace(s, "valid-lifetime: 172800", "valid-lifetime: 172799", 1)
		})
		out, err := runReplayTest(t, f)
		if exitCode(err) != replayExitDifferences || !strings.Contains(err.Error(), "the answers differ from") {
			t.Fatalf("exit %d (%v)\n%s", exitCode(err), err, out)
		}
		if !strings.Contains(out, "    expected: preferred 86400 valid 172800\n    got:      preferred 86400 valid 172799\n") {
			t.Errorf("diff lacks the changed valid lifetime:\n%s", out)
		}
	})
	t.Run("answer gone", func(t *testing.T) {
		f := base
		f.expect = golden
		f.config = replaySite(t, 10547, replayDUID, func(s string) string {
			return strings.Replace(s, "server:\n", "server:\n  trusted-relays: [\"2001:db8:eeee::/48\"]\n", 1)
		})
		out, err := runReplayTest(t, f)
		if exitCode(err) != replayExitDifferences {
			t.Fatalf("exit %d (%v)\n%s", exitCode(err), err, out)
		}
		if !strings.Contains(out, "  answer\n    expected: ADVERTISE 2001:db8:200::/60\n    got:      (no answer)\n") ||
			!strings.Contains(out, "no answer (dropped (untrusted-relay)") {
			t.Errorf("diff lacks the missing answer:\n%s", out)
		}
	})
}

func TestReplayExitStatusAndFlags(t *testing.T) {
	cfg := replaySite(t, 10547, replayDUID, nil)
	pcap := filepath.Join(replayData, "juniper-relay.pcap")
	offline := replayFlags{pcap: pcap, offline: true, config: cfg, timeout: time.Second, linkAddr: "::"}

	t.Run("no answer", func(t *testing.T) {
		out, err := runReplayTest(t, offline)
		if exitCode(err) != replayExitNoAnswer || !strings.Contains(err.Error(), "8 requests got no answer (--allow-drops accepts that)") {
			t.Fatalf("exit %d (%v)\n%s", exitCode(err), err, out)
		}
		for _, s := range []string{
			"frame     1  06:32:b2:00:04:79  SOLICIT             -> ADVERTISE  2001:db8:200::/60  ",
			"frame     3  06:32:b2:00:04:79  REQUEST             -> REPLY      2001:db8:200::/60  ",
			"[server-id rewritten]",
			"frame    31  06:32:b2:00:04:79  CONFIRM             -> no answer (dropped (confirm): ",
			"added a relay source port option (135) to 33 captured Relay-Forwards that had none",
			"skipped 2 messages: 2 servers' answers",
			"frame 39: DHCPv6 message [2001:db8:ffff::1]:547 > [2001:db8::100:69]:547 cut short",
			"sent 36, answered 28, no answer 8 (8 dropped by the handler)",
			"answers: ADVERTISE NoPrefixAvail 5, ADVERTISE prefix 11,", // frames 22 and 23 by link-address
			"latency: p50 ",
			fmt.Sprintf("server id %x (learned from the answer to frame 1): rewritten into 9 requests that named another server", replayDUID),
		} {
			if !strings.Contains(out, s) {
				t.Errorf("output lacks %q", s)
			}
		}
		if t.Failed() {
			t.Log(out)
		}
		f := offline
		f.allowDrops = true
		if out, err := runReplayTest(t, f); err != nil {
			t.Errorf("--allow-drops: %v\n%s", err, out)
		}
	})

	t.Run("record then expect", func(t *testing.T) {
		f := offline
		f.allowDrops = true
		f.record = filepath.Join(t.TempDir(), "r.json")
		if _, err := runReplayTest(t, f); err != nil {
			t.Fatal(err)
		}
		f.record, f.allowDrops, f.expect = "", false, f.record
		if out, err := runReplayTest(t, f); err != nil || !strings.Contains(out, "8 requests got no answer, as the golden file expects") {
			t.Errorf("%v\n%s", err, out)
		}
	})

	t.Run("store without server DUID", func(t *testing.T) {
		f := offline
		f.config = replaySite(t, 10547, nil, nil)
		f.expect = filepath.Join(replayData, "juniper-relay.golden.json")
		out, err := runReplayTest(t, f)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !strings.Contains(out, "has no server DUID yet (serve never ran on it): answering with the placeholder DUID 00030001020000000547") {
			t.Errorf("no placeholder note:\n%s", out)
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(f.config), "state.db")); err != nil {
			t.Fatal(err)
		}
		st, err := allocator.OpenStore(boltstore.Open(filepath.Join(filepath.Dir(f.config), "state.db"), boltstore.Options{ReadOnly: true}))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := st.ServerDUID(func() ([]byte, error) { return nil, nil }); err == nil {
			t.Error("offline replay wrote a server DUID into the store")
		}
	})

	t.Run("write answers", func(t *testing.T) {
		f := offline
		f.allowDrops = true
		f.writeAns = filepath.Join(t.TempDir(), "answers.pcap")
		if _, err := runReplayTest(t, f); err != nil {
			t.Fatal(err)
		}
		pkts, st, err := capture.ReadFile(f.writeAns)
		if err != nil || st.Malformed != 0 || len(pkts) != 36+28 {
			t.Errorf("%d messages (want 36 requests and 28 answers), %+v, %v", len(pkts), st, err)
		}
		tsharkCheckAnswers(t, f.writeAns, 28)
	})

	t.Run("flag errors", func(t *testing.T) {
		for _, tc := range []struct {
			edit func(*replayFlags)
			want string
		}{
			{func(f *replayFlags) { f.server = "[::1]:547" }, "--offline and --server exclude each other"},
			{func(f *replayFlags) { f.offline = false }, "--server [ADDR]:PORT or --offline is required"},
			{func(f *replayFlags) { f.interfaceID = "VLAN2701" }, "--interface-id and --link-address are for --wrap"},
			{func(f *replayFlags) { f.wrap = true }, "--wrap needs --interface-id"},
			{func(f *replayFlags) { f.expectedDif = "x.json" }, "--expected-differences is for --compare"},
			{func(f *replayFlags) { f.rate = -1 }, "--rate -1"},
			{func(f *replayFlags) { f.timeout = 0 }, "--timeout 0s"},
			{func(f *replayFlags) { f.serverID = "zz" }, `--server-id "zz"`},
			{func(f *replayFlags) { f.serverID = "0001"; f.keepSID = true }, "exclude each other"},
			{func(f *replayFlags) { f.offline = false; f.server = "127.0.0.1:547" }, `--server "127.0.0.1:547": want [IPv6 address]:port`},
			{func(f *replayFlags) { f.compare = "[::1]" }, `--compare "[::1]"`},
			{func(f *replayFlags) { f.pcap = "/nonexistent.pcap" }, "/nonexistent.pcap"},
			{func(f *replayFlags) { f.pcap = filepath.Join(replayData, "corpus.yaml") }, "corpus.yaml: capture: not a pcap or pcapng capture"},
			{func(f *replayFlags) { f.pcap = filepath.Join(replayData, "unrelayed-trunk.pcap") },
				"no request to replay: 7 frames, 7 DHCPv6 messages, none a Relay-Forward sent to port 547 (4 client messages were sent unrelayed: --wrap --interface-id ID replays them)"},
			{func(f *replayFlags) { f.expect = "/nonexistent.json" }, "golden file: open /nonexistent.json"},
			{func(f *replayFlags) { f.config = "/nonexistent.yaml" }, "/nonexistent.yaml"},
		} {
			f := offline
			tc.edit(&f)
			_, err := runReplayTest(t, f)
			if err == nil || !strings.Contains(err.Error(), tc.want) || exitCode(err) != 1 {
				t.Errorf("%+v: %v (exit %d), want %q", f, err, exitCode(err), tc.want)
			}
		}
	})

	t.Run("help", func(t *testing.T) {
		cmd := newReplayCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs([]string{"--help"})
		if err := cmd.Execute(); err != nil {
			t.Fatal(err)
		}
		help := out.String()
		cmd.Flags().VisitAll(func(fl *pflag.Flag) {
			if !strings.Contains(help, "--"+fl.Name) {
				t.Errorf("--help does not show --%s", fl.Name)
			}
		})
		for _, s := range []string{"Examples:", "--offline", "--compare [2001:db8::100:71]:547", "--record relay.golden.json",
			"kea-l2-relay", "kea-decline-status", "Exit status"} {
			if !strings.Contains(help, s) {
				t.Errorf("--help lacks %q", s)
			}
		}
	})
}

// tsharkCheckAnswers has tshark, an independent dissector, read a capture
// written by --write-answers: every frame a DHCPv6 relay message with a
// correct UDP checksum, and the given number of Relay-replies, none with
// an expert warning.
func tsharkCheckAnswers(t *testing.T, path string, replies int) {
	t.Helper()
	tshark := testenv.Tool(t, "tshark")
	cmd := exec.Command(tshark, "-r", path, "-n", "-o", "udp.check_checksum:TRUE", "-T", "fields", "-E", "separator=|",
		"-e", "frame.number", "-e", "udp.checksum.status", "-e", "dhcpv6.msgtype", "-e", "_ws.expert.severity")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark -r %s: %v\n%s", path, err, stderr.String())
	}
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(l, "|")
		if len(f) != 4 || f[1] != "1" {
			t.Errorf("tshark: frame %q: bad checksum or not UDP", l)
			continue
		}
		if strings.HasPrefix(f[2], "13,") {
			n++
			if f[3] != "" {
				t.Errorf("tshark: Relay-reply with an expert note: %q", l)
			}
		} else if !strings.HasPrefix(f[2], "12") {
			t.Errorf("tshark: frame %q is neither a Relay-forw nor a Relay-reply", l)
		}
	}
	if n != replies {
		t.Errorf("tshark found %d Relay-replies, want %d:\n%s", n, replies, out)
	}
}

// startReplayServe starts `cloudstack-pd serve` on the corpus store on a
// free loopback port and returns its address.
func startReplayServe(t *testing.T, bin string) (netip.AddrPort, *testenv.SyncBuffer) {
	t.Helper()
	port := testenv.FreeUDPPort(t)
	cfg := replaySite(t, port, replayDUID, nil)
	log := &testenv.SyncBuffer{}
	keaDiffStart(t, log, nil, bin, "serve", "--config", cfg)
	waitFor(t, "msg=serving", log, 10*time.Second)
	return netip.AddrPortFrom(netip.IPv6Loopback(), uint16(port)), log
}

// The same captures against a running serve on loopback give the same
// golden answers as offline.
func TestReplayServe(t *testing.T) {
	if *updateReplay {
		t.Skip("-update-replay")
	}
	bin := testenv.BuildBinary(t, ".")
	addr, log := startReplayServe(t, bin)
	for _, c := range replayCases(t) {
		if c.nothing {
			continue
		}
		t.Run(c.name(), func(t *testing.T) {
			f := c.flags()
			f.server = addr.String()
			out, err := runReplayTest(t, f)
			if err != nil {
				t.Fatalf("%v\n%s\nserve log:\n%s", err, out, log.String())
			}
		})
	}

	// The binary itself: exit status 0 on a match, 3 on a difference.
	golden := filepath.Join(replayData, "tcpdump-any.golden.json")
	args := []string{"replay", "--pcap", filepath.Join(replayData, "tcpdump-any.pcapng"), "--server", addr.String(), "--expect", golden}
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Errorf("replay: %v\n%s", err, out)
	}
	data, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	altered := filepath.Join(t.TempDir(), "altered.json")
	testenv.WriteFile(t, altered, strings.Replace(string(data), `"t1": 1000`, `"t1": 999`, 1))
	args[len(args)-1] = altered
	out, err := exec.Command(bin, args...).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != replayExitDifferences || !bytes.Contains(out, []byte("    expected: 999\n    got:      1000\n")) {
		t.Errorf("replay against an altered golden file: %v\n%s", err, out)
	}
}

// Kea 2.2, serving corpus.kea.conf, against serve with --compare: every
// difference is expected, by the built-in Kea 2.2 rules or by
// testdata/replay/kea-expected-differences.json (design choices of
// cloudstack-pd), and every built-in rule is met at least once.
func TestReplayKeaCompare(t *testing.T) {
	keaBin := testenv.Tool(t, "kea-dhcp6")
	if testing.Short() && !testenv.Strict() {
		t.Skip("comparison with Kea skipped in -short mode")
	}
	if *updateReplay {
		t.Skip("-update-replay")
	}
	bin := testenv.BuildBinary(t, ".")
	csAddr, csLog := startReplayServe(t, bin)

	dir := t.TempDir()
	keaPort := testenv.FreeUDPPort(t)
	for keaPort == int(csAddr.Port()) {
		keaPort = testenv.FreeUDPPort(t)
	}
	keaConf := filepath.Join(replayData, "corpus.kea.conf")
	testenv.KeaCheckFile(t, keaBin, keaConf)
	keaLog := &testenv.SyncBuffer{}
	keaExited := keaDiffStart(t, keaLog, []string{"KEA_PIDFILE_DIR=" + dir, "KEA_LOCKFILE_DIR=" + dir, "KEA_LOG_FILE_DIR=" + dir},
		keaBin, "-c", keaConf, "-p", strconv.Itoa(keaPort))
	keaAddr := netip.AddrPortFrom(netip.IPv6Loopback(), uint16(keaPort))
	// Kea is ready when it answers.
	mac := corpus.VMA.MAC
	ready := relay.Forward{LinkAddr: corpus.PodA.Router, PeerAddr: relay.EUI64LinkLocal(mac), InterfaceID: []byte(corpus.PodA.InterfaceID),
		RemoteID: relay.JuniperRemoteID(mac)}
	for deadline := time.Now().Add(15 * time.Second); keaDiffAsk(t, keaAddr, ready, net.HardwareAddr(mac), 300*time.Millisecond).advertise == "no answer"; {
		select {
		case <-keaExited:
			t.Fatalf("kea-dhcp6 exited; log:\n%s", keaLog.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("kea-dhcp6 does not answer on %s within 15s; log:\n%s", keaAddr, keaLog.String())
		}
	}

	used := map[string]int{}
	ruleLine := regexp.MustCompile(`(?m)^  (kea-[a-z0-9-]+|cloudstack-pd-[a-z0-9-]+) \((\d+)\): `)
	for _, c := range replayCases(t) {
		if c.nothing {
			continue
		}
		t.Run(c.name(), func(t *testing.T) {
			f := c.flags()
			f.server = csAddr.String()
			f.compare = keaAddr.String()
			f.expectedDif = filepath.Join(replayData, "kea-expected-differences.json")
			out, err := runReplayTest(t, f)
			if err != nil {
				t.Errorf("%v\n%s", err, out)
			}
			for _, m := range ruleLine.FindAllStringSubmatch(out, -1) {
				n, _ := strconv.Atoi(m[2])
				used[m[1]] += n
			}
		})
	}
	rules, err := replay.LoadRules(filepath.Join(replayData, "kea-expected-differences.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if used[r.Name] == 0 {
			t.Errorf("rule %s expected no difference on the corpus: its case is missing, or Kea or cloudstack-pd changed", r.Name)
		}
	}
	if t.Failed() {
		t.Logf("kea-dhcp6 log:\n%s", keaLog.String())
		t.Logf("cloudstack-pd log:\n%s", csLog.String())
	}
}
