// Package testenv is what the tests share about their environment: it finds
// the external tools and the shared captures they need, checks the IPv6
// loopback, and compares golden files. When something is missing a test is
// skipped, or fails when CLOUDSTACK_PD_E2E=1 (as `make test` and CI set),
// where a skip must not pass for a run. It is imported only by tests.
package testenv

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// EnvVar is the environment variable that turns skips into failures.
const EnvVar = "CLOUDSTACK_PD_E2E"

// Strict reports whether CLOUDSTACK_PD_E2E=1: everything a test needs must
// be there, and a missing piece is a failure.
func Strict() bool { return os.Getenv(EnvVar) == "1" }

// Unavailable ends the test because why says it cannot run here: a skip,
// or a failure under Strict.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if Strict() {
		t.Fatalf("cannot run (%s=1 makes this a failure): %s", EnvVar, why)
	}
	t.Skipf("skipped (set %s=1 to make this a failure): %s", EnvVar, why)
}

// packages names the Debian package that provides each tool, as
// .ci/install-deps lists them.
var packages = map[string]string{
	"kea-dhcp6":       "kea-dhcp6-server",
	"tshark":          "tshark",
	"dhclient":        "isc-dhcp-client",
	"dhcrelay":        "isc-dhcp-relay",
	"ip":              "iproute2",
	"ss":              "iproute2",
	"promtool":        "prometheus",
	"systemd-analyze": "systemd",
}

// Look finds a tool on PATH or in the sbin directories root's PATH holds,
// "" if absent.
func Look(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// Missing says why a tool cannot be found and how to install it.
func Missing(name string) string {
	if pkg, ok := packages[name]; ok {
		return fmt.Sprintf("%s not found (apt-get install %s, or run .ci/install-deps)", name, pkg)
	}
	return name + " not found"
}

// Tool returns the path of the named program, or ends the test (see
// Unavailable) naming the package to install.
func Tool(t testing.TB, name string) string {
	t.Helper()
	if p := Look(name); p != "" {
		return p
	}
	Unavailable(t, Missing(name))
	return ""
}

// FindSharedCaptures returns the shared real captures (shared/captures
// beside the repository), found by walking up from the working directory,
// or "" when there are none.
func FindSharedCaptures() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		d := filepath.Join(dir, "shared", "captures")
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			return d
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// SharedCaptures returns the directory FindSharedCaptures finds, or ends
// the test (see Unavailable).
func SharedCaptures(t testing.TB) string {
	t.Helper()
	if d := FindSharedCaptures(); d != "" {
		return d
	}
	wd, _ := os.Getwd()
	Unavailable(t, "shared/captures not found in "+wd+" or any parent directory; clone the repository next to shared/ (<x>/main and <x>/shared)")
	return ""
}

// IPv6Loopback checks that UDP and TCP sockets can be opened on [::1];
// without them the test ends (see Unavailable). Tests call it before they
// listen, or after a listen on [::1] failed, to tell "no IPv6 loopback
// here" (a skip, or a failure under Strict) from a real failure.
func IPv6Loopback(t testing.TB) {
	t.Helper()
	loopback(t, "[::1]:0", "IPv6 loopback", true)
}

// TCPLoopback is IPv6Loopback for TCP on 127.0.0.1.
func TCPLoopback(t testing.TB) {
	t.Helper()
	loopback(t, "127.0.0.1:0", "loopback TCP", false)
}

func loopback(t testing.TB, addr, what string, udp bool) {
	t.Helper()
	if udp {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			Unavailable(t, fmt.Sprintf("no %s: %v", what, err))
			return
		}
		c.Close()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		Unavailable(t, fmt.Sprintf("no %s: %v", what, err))
		return
	}
	ln.Close()
}

// Golden compares got with the file at path, or (when update) rewrites the
// file with got, creating its directory. On a mismatch the test fails with
// the first differing line; flag names the package's -update flag for the
// message.
func Golden(t testing.TB, path string, got []byte, update bool, flag string) {
	t.Helper()
	if update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("%v (run with -%s to create it)", err, flag)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run with -%s to rewrite it):\n%s", path, flag, Diff(want, got))
	}
}

// Diff describes the first line where got departs from want.
func Diff(want, got []byte) string {
	w := strings.Split(string(want), "\n")
	g := strings.Split(string(got), "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if i >= len(w) || i >= len(g) || wl != gl {
			return fmt.Sprintf("line %d:\n  want %q\n  got  %q\n(want %d lines, got %d)", i+1, wl, gl, len(w), len(g))
		}
	}
	return "(same lines, different bytes)"
}
