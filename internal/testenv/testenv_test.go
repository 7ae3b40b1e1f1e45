package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeTB records how a helper ended the test; Fatal and Skip stop it with
// a panic that run recovers, as the real ones stop the goroutine.
type fakeTB struct {
	testing.TB
	failed, skipped bool
	msg             string
}

type stop struct{}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatal(args ...any) {
	f.failed, f.msg = true, fmt.Sprint(args...)
	panic(stop{})
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	panic(stop{})
}
func (f *fakeTB) Errorf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skipped, f.msg = true, fmt.Sprintf(format, args...)
	panic(stop{})
}

// run calls fn with a fakeTB and returns it after fn ends, normally or by
// Fatal or Skip.
func run(fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{}
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(stop); !ok {
					panic(r)
				}
			}
		}()
		fn(f)
	}()
	return f
}

func TestUnavailable(t *testing.T) {
	t.Setenv(EnvVar, "")
	f := run(func(tb testing.TB) { Unavailable(tb, "no frobnicator") })
	if !f.skipped || f.failed || !strings.Contains(f.msg, "no frobnicator") || !strings.Contains(f.msg, EnvVar+"=1") {
		t.Errorf("without %s: skipped=%v failed=%v %q", EnvVar, f.skipped, f.failed, f.msg)
	}
	t.Setenv(EnvVar, "1")
	f = run(func(tb testing.TB) { Unavailable(tb, "no frobnicator") })
	if f.skipped || !f.failed || !strings.Contains(f.msg, "no frobnicator") || !strings.Contains(f.msg, EnvVar+"=1") {
		t.Errorf("with %s=1: skipped=%v failed=%v %q", EnvVar, f.skipped, f.failed, f.msg)
	}
}

func TestTool(t *testing.T) {
	t.Setenv(EnvVar, "1")
	const name = "cloudstack-pd-no-such-tool"
	f := run(func(tb testing.TB) { Tool(tb, name) })
	if !f.failed || !strings.Contains(f.msg, name+" not found") {
		t.Errorf("missing tool: failed=%v %q", f.failed, f.msg)
	}
	if m := Missing("kea-dhcp6"); !strings.Contains(m, "apt-get install kea-dhcp6-server") {
		t.Errorf("Missing(kea-dhcp6) = %q, want the Debian package", m)
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, name)
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	var got string
	f = run(func(tb testing.TB) { got = Tool(tb, name) })
	if f.failed || f.skipped || got != exe {
		t.Errorf("Tool = %q (failed=%v skipped=%v), want %s", got, f.failed, f.skipped, exe)
	}
}

func TestSharedCaptures(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "main", "pkg")
	want := filepath.Join(root, "shared", "captures")
	for _, d := range []string{deep, want} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(deep)
	var got string
	f := run(func(tb testing.TB) { got = SharedCaptures(tb) })
	if f.failed || f.skipped {
		t.Fatalf("SharedCaptures ended the test: %s", f.msg)
	}
	if g, _ := filepath.EvalSymlinks(got); g != mustEval(t, want) {
		t.Errorf("SharedCaptures = %s, want %s", got, want)
	}
}

func mustEval(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestGolden(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "out.golden")
	f := run(func(tb testing.TB) { Golden(tb, path, []byte("a\nb\n"), false, "update") })
	if !f.failed || !strings.Contains(f.msg, "-update") {
		t.Errorf("missing golden file: failed=%v %q", f.failed, f.msg)
	}
	f = run(func(tb testing.TB) { Golden(tb, path, []byte("a\nb\n"), true, "update") })
	if f.failed {
		t.Fatalf("update: %s", f.msg)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "a\nb\n" {
		t.Fatalf("after update: %q, %v", b, err)
	}
	f = run(func(tb testing.TB) { Golden(tb, path, []byte("a\nb\n"), false, "update") })
	if f.failed {
		t.Errorf("same bytes: %s", f.msg)
	}
	f = run(func(tb testing.TB) { Golden(tb, path, []byte("a\nc\n"), false, "update") })
	if !f.failed || !strings.Contains(f.msg, "line 2") || !strings.Contains(f.msg, `"c"`) {
		t.Errorf("mismatch: failed=%v %q", f.failed, f.msg)
	}
}

func TestIPv6Loopback(t *testing.T) {
	t.Setenv(EnvVar, "")
	f := run(func(tb testing.TB) { IPv6Loopback(tb) })
	if f.failed {
		t.Errorf("IPv6Loopback failed without %s: %s", EnvVar, f.msg)
	}
	f = run(func(tb testing.TB) { TCPLoopback(tb) })
	if f.failed {
		t.Errorf("TCPLoopback failed without %s: %s", EnvVar, f.msg)
	}
}
