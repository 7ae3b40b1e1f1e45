package testenv

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// What the tests that run cloudstack-pd as a process share: building it,
// free loopback ports, a buffer for its output, its HTTP API and metrics.

// BuildBinary builds the cloudstack-pd command in pkgDir (a path relative
// to the test's package, e.g. "." or "../cmd/cloudstack-pd") into a
// temporary directory and returns the binary's path.
func BuildBinary(t testing.TB, pkgDir string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cloudstack-pd")
	out, err := exec.Command("go", "build", "-o", bin, pkgDir).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", pkgDir, err, out)
	}
	return bin
}

// FreeUDPPort returns a UDP port on [::1] that was free a moment ago.
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		IPv6Loopback(t)
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// FreeUDPPortRange returns the first of n consecutive UDP ports that were
// all free a moment ago (for a program that binds P, P+1, …).
func FreeUDPPortRange(t testing.TB, n int) int {
	t.Helper()
	for try := range 50 {
		base := 20000 + (os.Getpid()*7919+try*4099)%40000
		var open []*net.UDPConn
		for i := range n {
			c, err := net.ListenUDP("udp6", &net.UDPAddr{Port: base + i})
			if err != nil {
				break
			}
			open = append(open, c)
		}
		free := len(open) == n
		for _, c := range open {
			c.Close()
		}
		if free {
			return base
		}
	}
	t.Fatalf("no %d consecutive free UDP ports found", n)
	return 0
}

// FreeTCPPort returns a TCP port on [::1] that was free a moment ago.
func FreeTCPPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		IPv6Loopback(t)
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// SyncBuffer is a bytes.Buffer safe for concurrent use: a child process's
// output or a logger's, written by one goroutine and read by the test.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// WriteFile writes s to path (mode 0644), failing the test on error.
func WriteFile(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// HTTPGet fetches url and returns the status and the body.
func HTTPGet(t testing.TB, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// MetricValue reads one series (name and labels, as /metrics prints it)
// from api's /metrics; 0 when absent.
func MetricValue(t testing.TB, api, series string) float64 {
	t.Helper()
	_, body := HTTPGet(t, api+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return v
		}
	}
	return 0
}
