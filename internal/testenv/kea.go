package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// KeaEnv is the environment kea-dhcp6 runs in for a test: the process's,
// with its pid, lock and log files in dir (Kea's defaults are system
// folders a test must not write to).
func KeaEnv(dir string) []string {
	return append(os.Environ(), "KEA_PIDFILE_DIR="+dir, "KEA_LOCKFILE_DIR="+dir, "KEA_LOG_FILE_DIR="+dir)
}

// KeaCheckFile runs `kea-dhcp6 -t` on path and fails the test when Kea
// refuses the config.
func KeaCheckFile(t testing.TB, kea, path string) {
	t.Helper()
	cmd := exec.Command(kea, "-t", path)
	cmd.Env = KeaEnv(t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("kea-dhcp6 -t %s: %v\n%s", path, err, out)
	}
}
