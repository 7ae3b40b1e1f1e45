package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// docFiles are the pages whose shell blocks TestDocCommands runs,
// relative to the repository's root.
func docFiles(t *testing.T, root string) []string {
	t.Helper()
	files := []string{"README.md"}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		files = append(files, filepath.Join("docs", filepath.Base(d)))
	}
	return files
}

// shellBlock is one fenced block of shell commands in a page.
type shellBlock struct {
	file  string
	line  int      // of the opening fence
	needs []string // its needs= marker; empty: runs anywhere
	text  string
}

func (b shellBlock) name() string { return fmt.Sprintf("%s:%d", b.file, b.line) }

// docNeeds are the needs= values a block may carry: what it needs that a
// test on one machine does not have. README.md, "Commands in the docs",
// explains them.
var docNeeds = []string{"server", "foreground", "root", "site", "router", "cloudstack", "checkout-write"}

// shellBlocks returns the ```sh (or bash, shell) blocks of a page, the
// fences' indentation taken off.
func shellBlocks(t *testing.T, root, file string) []shellBlock {
	t.Helper()
	f, err := os.Open(filepath.Join(root, file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		out     []shellBlock
		cur     *shellBlock
		indent  string
		inOther bool
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		fence := strings.HasPrefix(trimmed, "```")
		switch {
		case cur != nil && fence:
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.text += strings.TrimPrefix(line, indent) + "\n"
		case inOther && fence:
			inOther = false
		case fence:
			words := strings.Fields(strings.TrimPrefix(trimmed, "```"))
			if len(words) == 0 || !slices.Contains([]string{"sh", "bash", "shell"}, words[0]) {
				inOther = true
				continue
			}
			cur = &shellBlock{file: file, line: n}
			indent = line[:len(line)-len(trimmed)]
			for _, w := range words[1:] {
				v, ok := strings.CutPrefix(w, "needs=")
				if !ok {
					t.Errorf("%s:%d: %q after sh: only needs=… is known", file, n, w)
					continue
				}
				for _, need := range strings.Split(v, ",") {
					if !slices.Contains(docNeeds, need) {
						t.Errorf("%s:%d: needs=%s: not one of %v", file, n, need, docNeeds)
					}
					cur.needs = append(cur.needs, need)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Errorf("%s:%d: the block is not closed", file, cur.line)
	}
	return out
}

// docWorkdir is a folder that looks like the checkout (each top-level
// entry linked, but bin/ and run/) with the built binary in its bin/, so
// that blocks run from "the root of a clone" write only there.
func docWorkdir(t *testing.T, root, bin string) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch e.Name() {
		case "bin", "run", ".git":
			continue
		}
		if err := os.Symlink(filepath.Join(root, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "cloudstack-pd"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runBlock runs b with bash -e -o pipefail in dir, cloudstack-pd first on
// PATH; a command that is not installed makes it unavailable, not failed.
func runBlock(t *testing.T, dir string, b shellBlock) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", b.text)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(dir, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	cmd.Stdin = nil
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 127 {
		testenv.Unavailable(t, fmt.Sprintf("%s: a command is not installed:\n%s", b.name(), out))
	}
	if err != nil {
		t.Errorf("%s: %v\n--- block\n%s--- output\n%s", b.name(), err, b.text, out)
	}
}

// TestDocCommands runs the shell blocks of README.md and docs/*.md, so
// that a page cannot drift from the program: every block without a
// needs= marker on its own, and the needs=server ones against the
// server of `make run` (the example config, Kea's example reservations
// imported), which the test starts. Blocks with another need (a router,
// CloudStack, root, a site's files, a terminal, writing the checkout)
// are listed and skipped.
func TestDocCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the docs' commands")
	}
	testenv.Tool(t, "bash")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	var alone, server []shellBlock
	for _, f := range docFiles(t, root) {
		for _, b := range shellBlocks(t, root, f) {
			switch {
			case len(b.needs) == 0:
				alone = append(alone, b)
			case len(b.needs) == 1 && b.needs[0] == "server":
				server = append(server, b)
			default:
				t.Logf("%s: not run: needs %s", b.name(), strings.Join(b.needs, ", "))
			}
		}
	}
	if len(alone) < 3 || len(server) < 2 {
		t.Fatalf("only %d blocks to run alone and %d against a server: is the fence parser broken?", len(alone), len(server))
	}
	bin := testenv.BuildBinary(t, ".")
	for _, b := range alone {
		t.Run(b.name(), func(t *testing.T) {
			runBlock(t, docWorkdir(t, root, bin), b)
		})
	}
	t.Run("server", func(t *testing.T) {
		dir := docWorkdir(t, root, bin)
		startExampleServer(t, dir)
		for _, b := range server {
			t.Run(b.name(), func(t *testing.T) { runBlock(t, dir, b) })
		}
	})
}

// startExampleServer does what `make run` does in dir: import
// example/kea-dhcp6.conf, then serve example/cloudstack-pd.yaml ([::1]:10547,
// HTTP on 127.0.0.1:9547, as the docs' commands expect), until the test
// ends. Busy ports make the server blocks unavailable.
func startExampleServer(t *testing.T, dir string) {
	t.Helper()
	testenv.IPv6Loopback(t)
	for _, a := range []struct{ network, addr string }{{"udp", "[::1]:10547"}, {"tcp", "127.0.0.1:9547"}} {
		var err error
		if a.network == "udp" {
			var c net.PacketConn
			if c, err = net.ListenPacket(a.network, a.addr); err == nil {
				c.Close()
			}
		} else {
			var l net.Listener
			if l, err = net.Listen(a.network, a.addr); err == nil {
				l.Close()
			}
		}
		if err != nil {
			testenv.Unavailable(t, fmt.Sprintf("the example server's %s %s is taken (another serve?): %v", a.network, a.addr, err))
		}
	}
	bin := filepath.Join(dir, "bin", "cloudstack-pd")
	imp := exec.Command(bin, "import-kea", "--config", "example/cloudstack-pd.yaml", "example/kea-dhcp6.conf")
	imp.Dir = dir
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("import-kea: %v\n%s", err, out)
	}
	var log testenv.SyncBuffer
	serve := exec.Command(bin, "serve", "--config", "example/cloudstack-pd.yaml")
	serve.Dir = dir
	serve.Stdout, serve.Stderr = &log, &log
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = serve.Process.Signal(os.Interrupt)
		_ = serve.Wait()
		if t.Failed() {
			t.Logf("serve's log:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://127.0.0.1:9547/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the example server is not ready after 20 s:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
