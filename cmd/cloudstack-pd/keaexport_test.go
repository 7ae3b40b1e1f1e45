package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/kea"
	"github.com/cloudstack-pd/cloudstack-pd/keaexport"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

var updateKeaExport = flag.Bool("update-kea-export", false, "rewrite the golden files in testdata/kea-export")

const keaExportData = "../../testdata/kea-export"

// oldScriptSite copies the old generator's config.json into a temporary
// folder, points its state there (CLOUDSTACK_PD_STATE: the file stays as
// the old script read it) and adopts the old kea-dhcp6.conf with
// import-kea. It returns the config's path and the Kea config's.
func oldScriptSite(t *testing.T) (cfgPath, keaPath string) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("CLOUDSTACK_PD_STATE", filepath.Join(dir, "state.db"))
	cfgPath = filepath.Join(dir, "config.json")
	keaPath = filepath.Join(dir, "kea-dhcp6.conf")
	for src, dst := range map[string]string{"config.json": cfgPath, "kea-dhcp6.conf": keaPath} {
		data, err := os.ReadFile(filepath.Join(keaExportData, "old-script", src))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := runImportKea(&out, cfgPath, keaPath, false, false, func() time.Time { return time.Unix(1700000000, 0) }); err != nil {
		t.Fatalf("import-kea: %v\n%s", err, out.String())
	}
	return cfgPath, keaPath
}

// exportKea runs kea-export in process and returns its standard output and
// standard error.
func exportKea(t *testing.T, f keaExportFlags) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := runKeaExport(context.Background(), &stdout, &stderr, f)
	return stdout.String(), stderr.String(), err
}

// reservedPrefixes maps MAC → prefixes of the reservations in the subnets
// whose interface-id is in iids.
func reservedPrefixes(t *testing.T, c *kea.Config, iids map[string]bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range c.Subnets {
		if !iids[s.InterfaceID] {
			continue
		}
		for _, r := range s.Reservations {
			m, err := r.MAC()
			if err != nil {
				t.Fatalf("%s: %v", r.Path, err)
			}
			out[m.String()] = strings.Join(r.Prefixes, " ")
		}
	}
	return out
}

// TestKeaExportOldScript replaces the old generator on its own files:
// import-kea adopts the Kea config the script was fed, kea-export writes it
// back. No VM is renumbered, Kea accepts the result, and feeding the result
// back in changes nothing.
func TestKeaExportOldScript(t *testing.T) {
	cfgPath, keaPath := oldScriptSite(t)
	stdout, stderr, err := exportKea(t, keaExportFlags{config: cfgPath, keacfg: keaPath, offline: true})
	if err != nil {
		t.Fatalf("kea-export: %v\n%s", err, stderr)
	}
	golden := filepath.Join(keaExportData, "old-script", "export.golden.json")
	testenv.Golden(t, golden, []byte(stdout), *updateKeaExport, "update-kea-export")
	for _, line := range []string{
		`warning: ` + keaPath + `: line 64 column 12: extraneous comma`,
		`warning: Dhcp6.subnet6[0]: reservation-mode out-of-pool replaced by reservations-out-of-pool: true`,
		`warning: Dhcp6.subnet6[2]: subnet 2001:db8:1ff::/64 is no mapping's ip6-cidr: left out with its 0 reservation(s), as the old generator did`,
		`subnet6 id 2 (kea-auto) 2001:db8:101::/64 interface-id "VLAN2702", mapping 0f3a1a2e-9d1c-4f7e-8a51-2b6c1d9e4f10: 2 reservation(s), 0 added, 0 removed (reuses Dhcp6.subnet6[1])`,
		`subnet6 id 1 (kea-auto) 2001:db8:100::/64 interface-id "VLAN2701", mapping 77828509-4043-40bc-8756-7745c8ec7a99: 4 reservation(s), 0 added, 0 removed (reuses Dhcp6.subnet6[0])`,
		`subnet6 id 3 (new) 2001:db8:102::/64 interface-id "VLAN2703", mapping c1d2e3f4-0000-4000-8000-000000002703: 0 reservation(s), 0 added, 0 removed (new entry)`,
	} {
		if !strings.Contains(stderr, line) {
			t.Errorf("standard error lacks %q:\n%s", line, stderr)
		}
	}

	// No VM renumbered: every reservation of the mapped subnets is there,
	// with its prefix, and nothing else is.
	src, err := kea.Load(keaPath)
	if err != nil {
		t.Fatal(err)
	}
	out, err := kea.Parse("export", []byte(stdout))
	if err != nil {
		t.Fatalf("the export does not parse: %v", err)
	}
	iids := map[string]bool{"VLAN2701": true, "VLAN2702": true, "VLAN2703": true}
	before, after := reservedPrefixes(t, src, iids), reservedPrefixes(t, out, iids)
	if len(before) != 6 || len(after) != len(before) {
		t.Errorf("%d reservations before, %d after", len(before), len(after))
	}
	for m, p := range before {
		if after[m] != p {
			t.Errorf("%s: %q before, %q after", m, p, after[m])
		}
	}

	testenv.KeaCheckFile(t, testenv.Tool(t, "kea-dhcp6"), golden)

	// The export fed back in as --keacfg comes out byte for byte.
	again := filepath.Join(t.TempDir(), "kea-dhcp6.conf")
	testenv.WriteFile(t, again, stdout)
	stdout2, stderr2, err := exportKea(t, keaExportFlags{config: cfgPath, keacfg: again, offline: true})
	if err != nil || stdout2 != stdout {
		t.Errorf("export of the export: %v\n%s\n%s", err, stderr2, stdout2)
	}
	if strings.Contains(stderr2, "(kea-auto)") || strings.Contains(stderr2, "(new)") {
		t.Errorf("ids not all kept from the source the second time:\n%s", stderr2)
	}
}

// TestKeaExportSync: without --offline kea-export needs the CloudStack
// sync; keaExportSync stands for it and runs on a writable store first.
func TestKeaExportSync(t *testing.T) {
	cfgPath, keaPath := oldScriptSite(t)
	_, _, err := exportKea(t, keaExportFlags{config: cfgPath, keacfg: keaPath})
	if !errors.Is(err, errKeaExportNoSync) || !strings.Contains(err.Error(), "run with --offline") {
		t.Fatalf("without sync and without --offline: %v", err)
	}

	newMAC, _ := net.ParseMAC("06:00:00:00:27:03")
	called := 0
	keaExportSync = func(ctx context.Context, cfg *config.Config, st *allocator.Store, out io.Writer) error {
		called++
		io.WriteString(out, "synced\n")
		return st.Update(cfg.Pools(), func(tx *allocator.Tx) error {
			pool, _ := tx.Pool("c1d2e3f4-0000-4000-8000-000000002703")
			p, err := tx.LowestFree(pool)
			if err != nil {
				return err
			}
			return tx.Put(allocator.Allocation{Pool: pool.Name, MAC: newMAC, Prefix: p, State: allocator.StateActive,
				IP6: netip.MustParseAddr("2001:db8:102::2703"), Source: "sync"})
		})
	}
	t.Cleanup(func() { keaExportSync = nil })
	stdout, stderr, err := exportKea(t, keaExportFlags{config: cfgPath, keacfg: keaPath})
	if err != nil || called != 1 {
		t.Fatalf("with sync: %v (called %d)\n%s", err, called, stderr)
	}
	if !strings.HasPrefix(stderr, "warning: ") || !strings.Contains(stderr, "synced\n") {
		t.Errorf("standard error:\n%s", stderr)
	}
	if !strings.Contains(stdout, `"hw-address": "06:00:00:00:27:03"`) || !strings.Contains(stdout, `"2001:db8:400::/60"`) {
		t.Errorf("the synced allocation is not exported:\n%s", stdout)
	}

	keaExportSync = func(context.Context, *config.Config, *allocator.Store, io.Writer) error {
		return errors.New("CloudStack says 401")
	}
	if _, _, err := exportKea(t, keaExportFlags{config: cfgPath, keacfg: keaPath}); err == nil || !strings.Contains(err.Error(), "sync from CloudStack: CloudStack says 401") {
		t.Errorf("failed sync: %v", err)
	}
}

// TestKeaExportOutput: --output writes atomically, says whether the content
// changed, and with --changed-exit-code exits with that status on change.
func TestKeaExportOutput(t *testing.T) {
	cfgPath, keaPath := oldScriptSite(t)
	want, _, err := exportKea(t, keaExportFlags{config: cfgPath, keacfg: keaPath, offline: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	outPath := filepath.Join(dir, "kea-dhcp6.conf")
	f := keaExportFlags{config: cfgPath, keacfg: keaPath, output: outPath, offline: true, changedExitCode: 3}

	// A new file: written, exit status 3, mode of --keacfg.
	stdout, stderr, err := exportKea(t, f)
	var ec exitCoder
	if !errors.As(err, &ec) || ec.ExitCode() != 3 || !strings.HasSuffix(stderr, outPath+" written\n") || stdout != "" {
		t.Fatalf("first export: %v\nstdout %q\nstderr:\n%s", err, stdout, stderr)
	}
	got, _ := os.ReadFile(outPath)
	if string(got) != want {
		t.Errorf("--output holds:\n%s\nwant:\n%s", got, want)
	}
	if fi, _ := os.Stat(outPath); fi.Mode().Perm() != 0o640 {
		t.Errorf("new file mode %v, want 0640 as --keacfg", fi.Mode().Perm())
	}

	// Same table: unchanged, exit 0, the file not touched.
	if err := os.Chmod(outPath, 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1600000000, 0)
	if err := os.Chtimes(outPath, old, old); err != nil {
		t.Fatal(err)
	}
	_, stderr, err = exportKea(t, f)
	if err != nil || !strings.HasSuffix(stderr, outPath+" unchanged\n") {
		t.Fatalf("second export: %v\n%s", err, stderr)
	}
	if fi, _ := os.Stat(outPath); !fi.ModTime().Equal(old) {
		t.Errorf("unchanged file rewritten (mtime %v)", fi.ModTime())
	}

	// Another table: written again, keeping the replaced file's mode.
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := allocator.OpenStore(boltstore.Open(cfg.State, boltstore.Options{Create: true}))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := net.ParseMAC("06:00:00:00:27:04")
	err = st.Update(cfg.Pools(), func(tx *allocator.Tx) error {
		return tx.Put(allocator.Allocation{Pool: "c1d2e3f4-0000-4000-8000-000000002703", MAC: m,
			Prefix: netip.MustParsePrefix("2001:db8:400:10::/60"), State: allocator.StateGone})
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, stderr, err = exportKea(t, f)
	if !errors.As(err, &ec) || ec.ExitCode() != 3 || !strings.Contains(err.Error(), "content changed") {
		t.Fatalf("third export: %v\n%s", err, stderr)
	}
	got, _ = os.ReadFile(outPath)
	if !bytes.Contains(got, []byte(`"hw-address": "06:00:00:00:27:04"`)) {
		t.Errorf("the gone allocation is not exported:\n%s", got)
	}
	if fi, _ := os.Stat(outPath); fi.Mode().Perm() != 0o600 {
		t.Errorf("replaced file mode %v, want its old 0600", fi.Mode().Perm())
	}

	// Without --changed-exit-code a change exits 0.
	f.changedExitCode = 0
	if err := os.WriteFile(outPath, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err = exportKea(t, f); err != nil || !strings.HasSuffix(stderr, " written\n") {
		t.Errorf("change without --changed-exit-code: %v\n%s", err, stderr)
	}

	// A symbolic link: the file it names is replaced, the link stays.
	link := filepath.Join(dir, "link.conf")
	if err := os.Symlink(outPath, link); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(outPath, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.output = link
	if _, stderr, err = exportKea(t, f); err != nil {
		t.Fatalf("through a link: %v\n%s", err, stderr)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was replaced: %v %v", fi.Mode(), err)
	}
	if got, _ := os.ReadFile(outPath); !bytes.Contains(got, []byte("06:00:00:00:27:04")) {
		t.Errorf("the link's target not written:\n%s", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("left in the folder: %v", entries)
	}
}

// TestKeaExportAtomic: a failed run leaves the old file as it was and no
// temporary file behind.
func TestKeaExportAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kea-dhcp6.conf")
	const old = "{\"Dhcp6\": {}}\n"
	testenv.WriteFile(t, path, old)
	intact := func(what string) {
		t.Helper()
		if got, err := os.ReadFile(path); err != nil || string(got) != old {
			t.Errorf("%s: the old file is %q, %v", what, got, err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Errorf("%s: left in the folder: %v", what, entries)
		}
	}

	failRename := func(oldpath, newpath string) error {
		if _, err := os.Stat(oldpath); err != nil {
			t.Errorf("rename: the temporary file %s is not there: %v", oldpath, err)
		}
		if filepath.Dir(oldpath) != filepath.Dir(newpath) {
			t.Errorf("temporary file %s not beside %s", oldpath, newpath)
		}
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: errors.New("injected failure")}
	}
	changed, err := keaexport.WriteFile(path, []byte("new content\n"), 0o644, failRename)
	if err == nil || changed || !strings.Contains(err.Error(), "injected failure") {
		t.Errorf("failed rename: changed %v, %v", changed, err)
	}
	intact("failed rename")

	// A directory where the file should be, a missing folder.
	if _, err := keaexport.WriteFile(dir, []byte("x"), 0o644, os.Rename); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory as output: %v", err)
	}
	if _, err := keaexport.WriteFile(filepath.Join(dir, "nope", "kea.conf"), []byte("x"), 0o644, os.Rename); err == nil {
		t.Error("missing folder: no error")
	}
	intact("bad outputs")

	// An unwritable folder (root writes anyway: only as another user).
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		_, err := keaexport.WriteFile(path, []byte("new content\n"), 0o644, os.Rename)
		os.Chmod(dir, 0o755)
		if err == nil {
			t.Error("unwritable folder: no error")
		}
		intact("unwritable folder")
	}

	// An export that is refused does not touch --output either.
	cfgPath, keaPath := oldScriptSite(t)
	data, _ := os.ReadFile(cfgPath)
	testenv.WriteFile(t, cfgPath, strings.Replace(string(data), `"ip6-cidr": "2001:db8:102::/64"`, `"vlan": 2703`, 1))
	_, _, err = exportKea(t, keaExportFlags{config: cfgPath, keacfg: keaPath, output: path, offline: true})
	var ee *kea.ExportError
	if !errors.As(err, &ee) || !strings.Contains(err.Error(), "mapping.c1d2e3f4-0000-4000-8000-000000002703.ip6-cidr: missing") {
		t.Errorf("mapping without ip6-cidr: %v", err)
	}
	intact("refused export")
}

// TestKeaExportStore: --offline needs a store, and cannot read one that a
// running server holds.
func TestKeaExportStore(t *testing.T) {
	cfgPath, keaPath := oldScriptSite(t)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	// What serve does: an exclusive lock.
	st, err := allocator.OpenStore(boltstore.Open(cfg.State, boltstore.Options{Create: true}))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _, err = exportKea(t, keaExportFlags{config: cfgPath, keacfg: keaPath, offline: true})
	st.Close()
	if !errors.Is(err, allocator.ErrLocked) || !strings.Contains(err.Error(), "run kea-export where Kea, not cloudstack-pd, serves") {
		t.Errorf("store held by a server: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("waited %s for the lock", d)
	}

	t.Setenv("CLOUDSTACK_PD_STATE", filepath.Join(t.TempDir(), "none.db"))
	_, _, err = exportKea(t, keaExportFlags{config: cfgPath, keacfg: keaPath, offline: true})
	if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "import-kea") {
		t.Errorf("no store: %v", err)
	}
}

func TestKeaExportFlags(t *testing.T) {
	cfgPath, keaPath := oldScriptSite(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--offline", "--changed-exit-code", "1", "--output", "x"}, "--changed-exit-code 1: use 2 to 125"},
		{[]string{"--offline", "--changed-exit-code", "126", "--output", "x"}, "--changed-exit-code 126"},
		{[]string{"--offline", "--changed-exit-code", "3"}, "--changed-exit-code needs --output"},
		{[]string{"--offline", "extra"}, `unknown command "extra"`},
		{[]string{"--offline", "--keacfg", "/nonexistent/kea.conf"}, "no such file"},
	} {
		args := append([]string{"kea-export", "--config", cfgPath}, tc.args...)
		if !strings.Contains(strings.Join(tc.args, " "), "--keacfg") {
			args = append(args, "--keacfg", keaPath)
		}
		out, err := runCLI(t, args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q\n%s", tc.args, err, tc.want, out)
		}
	}
	// The old script's two flags are enough (with --offline until the
	// sync lands), and the config goes to standard output.
	out, err := runCLI(t, "kea-export", "--config", cfgPath, "--keacfg", keaPath, "--offline")
	if err != nil || !strings.Contains(out, `"subnet6": [`) {
		t.Errorf("kea-export: %v\n%s", err, out)
	}
}

// TestKeaExportExitStatus checks the exit statuses of the binary.
func TestKeaExportExitStatus(t *testing.T) {
	bin := testenv.BuildBinary(t, ".")
	cfgPath, keaPath := oldScriptSite(t)
	outPath := filepath.Join(t.TempDir(), "kea.conf")
	run := func(args ...string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"kea-export", "--config", cfgPath, "--keacfg", keaPath}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, stderr.String()
		case errors.As(err, &ee):
			return ee.ExitCode(), stderr.String()
		}
		t.Fatalf("%v: %v", args, err)
		return 0, ""
	}
	// Without --offline it syncs first: with CloudStack unreachable (a
	// closed loopback port) it fails and writes nothing.
	t.Setenv("CLOUDSTACK_PD_API_URL", "http://[::1]:9/client/api")
	if code, stderr := run("--output", outPath); code != 1 || !strings.Contains(stderr, "nothing exported") {
		t.Errorf("without --offline, CloudStack down: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(outPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed sync wrote %s: %v", outPath, err)
	}
	if code, stderr := run("--offline", "--output", outPath, "--changed-exit-code", "3"); code != 3 || !strings.Contains(stderr, "written") {
		t.Errorf("first write: exit %d\n%s", code, stderr)
	}
	if code, stderr := run("--offline", "--output", outPath, "--changed-exit-code", "3"); code != 0 || !strings.Contains(stderr, "unchanged") {
		t.Errorf("second write: exit %d\n%s", code, stderr)
	}
}
