package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/allocatortest"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// TestServeSyncNeedInit: serve and sync refuse a missing store unless given
// --init, name the path and say what to do, and create nothing; with
// --init, sync creates the store.
func TestServeSyncNeedInit(t *testing.T) {
	s := newSyncSite(t)
	s.State = filepath.Join(t.TempDir(), "var", "lib", "cloudstack-pd", "state.db")
	s.WriteConfig(t, serveListen(t))
	for _, args := range [][]string{
		{"serve"},
		{"sync"},
		{"sync", "--dry-run"},
	} {
		out, err := runCLIBounded(t, append(args, "--config", s.ConfigPath)...)
		if err == nil {
			t.Fatalf("%v on a missing store succeeded:\n%s", args, out)
		}
		msg := err.Error()
		for _, want := range []string{"state " + s.State + " does not exist", "give --init", "fix `state` in " + s.ConfigPath} {
			if !strings.Contains(msg, want) {
				t.Errorf("%v: %v\nwant it to say %q", args, err, want)
			}
		}
		if _, err := os.Stat(filepath.Dir(filepath.Dir(s.State))); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%v created %s: %v", args, filepath.Dir(s.State), err)
		}
	}

	// sync --dry-run --init previews, and still creates nothing.
	if out, err := runCLI(t, "sync", "--config", s.ConfigPath, "--dry-run", "--init"); err != nil || !strings.Contains(out, "dry run: nothing written") {
		t.Fatalf("sync --dry-run --init: %v\n%s", err, out)
	}
	if _, err := os.Stat(s.State); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("sync --dry-run --init created the store: %v", err)
	}
	// A failed sync --init leaves nothing behind.
	s.Fake.Inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultInternal})
	if out, err := runCLI(t, "sync", "--config", s.ConfigPath, "--init"); err == nil {
		t.Fatalf("sync --init with CloudStack failing succeeded:\n%s", out)
	}
	if _, err := os.Stat(filepath.Dir(filepath.Dir(s.State))); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the failed sync --init left %s behind: %v", filepath.Dir(s.State), err)
	}
	s.Fake.ClearFaults()
	if out, err := runCLI(t, "sync", "--config", s.ConfigPath, "--init"); err != nil || !strings.Contains(out, "total: 5 added") {
		t.Fatalf("sync --init: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "sync", "--config", s.ConfigPath); err != nil || !strings.Contains(out, "total: 0 added, 5 kept") {
		t.Fatalf("sync on the store --init made: %v\n%s", err, out)
	}
}

// serveListen is the config's server section for serve on a free port.
func serveListen(t *testing.T) string {
	return fmt.Sprintf("server:\n  listen: [\"[::1]:%d\"]\n", testenv.FreeUDPPort(t))
}

// runCLIBounded is runCLI with a deadline: a serve that should have refused
// to start, and started, ends with the test's failure, not its timeout.
func runCLIBounded(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	if ctx.Err() != nil && err == nil {
		err = errors.New("ran until the deadline: " + ctx.Err().Error())
		t.Errorf("%v ran until the deadline", args)
	}
	return out.String(), err
}

// TestStoreRefusedWhateverFlags: every command refuses a 0-byte or
// schema-less state file, whatever the flags, naming the path and what to
// do, and leaves the file as it was.
func TestStoreRefusedWhateverFlags(t *testing.T) {
	s := newSyncSite(t)
	keaPath := filepath.Join(t.TempDir(), "kea-dhcp6.conf")
	testenv.WriteFile(t, keaPath, `{"Dhcp6": {"subnet6": []}}`)
	for _, tc := range []struct {
		name string
		make func(t *testing.T, path string)
		want string
	}{
		{"0 bytes", func(t *testing.T, path string) { testenv.WriteFile(t, path, "") }, "is an empty file (0 bytes)"},
		{"schema-less bbolt", func(t *testing.T, path string) {
			b, err := os.ReadFile(filepath.Join("..", "..", "allocator", "testdata", "bbolt-no-buckets.db"))
			if err != nil {
				t.Fatal(err)
			}
			testenv.WriteFile(t, path, string(b))
		}, "without the cloudstack-pd schema marker"},
		{"random bytes", func(t *testing.T, path string) {
			testenv.WriteFile(t, path, strings.Repeat("not a store ", 3000))
		}, "is not a bbolt file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.State = filepath.Join(t.TempDir(), "state.db")
			s.WriteConfig(t, serveListen(t))
			tc.make(t, s.State)
			before, err := os.ReadFile(s.State)
			if err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"serve"}, {"serve", "--init"},
				{"sync"}, {"sync", "--init"}, {"sync", "--dry-run"}, {"sync", "--dry-run", "--init"},
				{"check"}, {"allocations"},
				{"import-kea", keaPath}, {"import-kea", "--dry-run", keaPath},
				{"kea-export", "--offline", "--keacfg", keaPath}, {"kea-export", "--keacfg", keaPath},
			} {
				keaExportSync = syncForKeaExport
				out, err := runCLIBounded(t, append(args, "--config", s.ConfigPath)...)
				keaExportSync = nil
				if err == nil {
					t.Fatalf("%v succeeded on the file:\n%s", args, out)
				}
				if msg := err.Error(); !errors.Is(err, allocator.ErrNotStore) || !strings.Contains(msg, s.State) ||
					!strings.Contains(msg, tc.want) || !strings.Contains(msg, "restore it from a backup") {
					t.Errorf("%v: %v\nwant ErrNotStore naming %s, saying %q and what to do", args, err, s.State, tc.want)
				}
				after, err := os.ReadFile(s.State)
				if err != nil || !bytes.Equal(before, after) {
					t.Fatalf("%v changed or removed the file: %v", args, err)
				}
			}
		})
	}
}

// TestDamagedStoreSubprocess runs the real binary's check and serve on
// damaged stores: exit status 1, a message naming the file and what to do,
// never a Go panic or stack trace.
func TestDamagedStoreSubprocess(t *testing.T) {
	bin := testenv.BuildBinary(t, ".")
	for _, how := range allocatortest.Damages {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			if out, err := runCLI(t, "bench", "setup", "--dir", dir, "--clients", "3000", "--pools", "2",
				"--port", fmt.Sprint(testenv.FreeUDPPort(t)), "--fill"); err != nil {
				t.Fatalf("bench setup: %v\n%s", err, out)
			}
			cfgPath, state := filepath.Join(dir, "cloudstack-pd.yaml"), filepath.Join(dir, "state.db")
			if out, err := exec.Command(bin, "check", "--config", cfgPath).CombinedOutput(); err != nil {
				t.Fatalf("check before the damage: %v\n%s", err, out)
			}
			if err := allocatortest.Damage(state, how); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{{"check"}, {"serve"}, {"allocations"}} {
				// A serve that starts would run until the timeout.
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				out, err := exec.CommandContext(ctx, bin, append(args, "--config", cfgPath)...).CombinedOutput()
				cancel()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 1 {
					t.Errorf("%v: %v, want exit status 1\n%s", args, err, out)
				}
				msg := string(out)
				if strings.Contains(msg, "goroutine ") || strings.Contains(msg, "panic:") || strings.Contains(msg, "SIGSEGV") || strings.Contains(msg, "SIGBUS") {
					t.Errorf("%v printed a crash:\n%s", args, out)
				}
				if !strings.Contains(msg, state) || !(strings.Contains(msg, "is damaged") || strings.Contains(msg, "not a cloudstack-pd store")) ||
					!strings.Contains(msg, "backup") {
					t.Errorf("%v: want the file named, damaged or not a store, and what to do:\n%s", args, out)
				}
			}
		})
	}
}
