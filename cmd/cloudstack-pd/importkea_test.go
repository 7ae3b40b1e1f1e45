package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/config"
)

// importKeaConfig writes example/cloudstack-pd.yaml with its state moved into
// a temporary folder, and returns the config's path and the state's.
func importKeaConfig(t *testing.T) (cfgPath, state string) {
	t.Helper()
	data, err := os.ReadFile("../../example/cloudstack-pd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	state = filepath.Join(dir, "run", "state.db")
	const line = "state: ./run/state.db"
	if !bytes.Contains(data, []byte(line)) {
		t.Fatalf("example config has no %q line", line)
	}
	data = bytes.Replace(data, []byte(line), []byte("state: "+state), 1)
	data = bytes.Replace(data, []byte("socket: ./run/control.sock"), []byte("socket: "+filepath.Join(dir, "run", "control.sock")), 1)
	cfgPath = filepath.Join(dir, "cloudstack-pd.yaml")
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, state
}

// runCLI executes the command line args and returns what it printed.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func storedAllocations(t *testing.T, cfgPath string) int {
	t.Helper()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := allocator.OpenStore(boltstore.Open(cfg.State, boltstore.Options{ReadOnly: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tbl, _, err := st.LoadTable(cfg.Pools())
	if err != nil {
		t.Fatal(err)
	}
	return len(tbl.Allocations())
}

func TestImportKeaExample(t *testing.T) {
	cfgPath, state := importKeaConfig(t)
	const keaPath = "../../example/kea-dhcp6.conf"

	out, err := runCLI(t, "import-kea", "--config", cfgPath, keaPath)
	if err != nil {
		t.Fatalf("import-kea: %v\n%s", err, out)
	}
	want := `import-kea ../../example/kea-dhcp6.conf into STATE
  added:                   3
  already present:         0
  without prefix (ignored): 0
  skipped subnets:         0
store STATE now holds 3 allocation(s)
`
	if got := strings.ReplaceAll(out, state, "STATE"); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}

	out, err = runCLI(t, "import-kea", "-c", cfgPath, "-v", keaPath)
	if err != nil {
		t.Fatalf("second import-kea: %v\n%s", err, out)
	}
	for _, w := range []string{
		"  added:                   0\n",
		"  already present:         3\n",
		"  = Dhcp6.subnet6[0].reservations[0]: 06:32:b2:00:04:79 2001:db8:200::/60 pool 77828509-4043-40bc-8756-7745c8ec7a99\n",
		"  = Dhcp6.subnet6[1].reservations[0]: 06:51:34:00:00:5e 2001:db8:300::/60 pool 0f3a1a2e-9d1c-4f7e-8a51-2b6c1d9e4f10\n",
		"now holds 3 allocation(s)\n",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("second run lacks %q:\n%s", w, out)
		}
	}
	if n := storedAllocations(t, cfgPath); n != 3 {
		t.Errorf("store holds %d allocations", n)
	}
}

func TestImportKeaOldGeneratorOutput(t *testing.T) {
	cfgPath, _ := importKeaConfig(t)
	out, err := runCLI(t, "import-kea", "--config", cfgPath, "--verbose", "../../testdata/kea/old-generator-output.json")
	if err != nil {
		t.Fatalf("import-kea: %v\n%s", err, out)
	}
	for _, w := range []string{
		"  added:                   6\n",
		"  skipped subnets:         1\n",
		"    Dhcp6.subnet6[2]: subnet 2001:db8:102::/64, no interface-id: no configured pool has this interface-id (0 reservation(s), 0 with prefixes)\n",
		"  + Dhcp6.subnet6[0].reservations[3]: 1e:00:91:00:00:0c 2001:db8:200:40::/60 pool 77828509-4043-40bc-8756-7745c8ec7a99\n",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestImportKeaWarnings(t *testing.T) {
	cfgPath, _ := importKeaConfig(t)
	out, err := runCLI(t, "import-kea", "--config", cfgPath, "../../testdata/kea/commented.conf")
	if err != nil {
		t.Fatalf("import-kea: %v\n%s", err, out)
	}
	for _, w := range []string{
		"warning: ../../testdata/kea/commented.conf: line 23 column 85: extraneous comma (Kea accepts it with a warning)\n",
		"  added:                   3\n",
		"  without prefix (ignored): 3\n",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestImportKeaConflicts(t *testing.T) {
	cfgPath, state := importKeaConfig(t)
	out, err := runCLI(t, "import-kea", "--config", cfgPath, "../../testdata/kea/conflicts.json")
	if !errors.Is(err, allocator.ErrImportConflicts) {
		t.Fatalf("import-kea: %v, want ErrImportConflicts\n%s", err, out)
	}
	var conflicts []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "  Dhcp6.") {
			conflicts = append(conflicts, l)
		}
	}
	if len(conflicts) != 11 {
		t.Errorf("%d conflict lines, want 11:\n%s", len(conflicts), out)
	}
	for _, w := range []string{
		"11 conflict(s), nothing written:\n",
		"  Dhcp6.subnet6[0].reservations[5].prefixes[0]: prefix 2001:db8:200:50::/60 for 06:00:00:00:00:06 is also reserved at Dhcp6.subnet6[0].reservations[4].prefixes[0] for 06:00:00:00:00:05: prefix allocated twice\n",
		"  Dhcp6.subnet6[2].reservations[0]: subnet 2001:db8:999::/64: interface-id \"VLAN999\" names no configured pool: 2001:db8:400::/60 cannot be adopted: unknown pool\n",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	// The refused import had no store to start from: it leaves none (nor
	// its folder) behind.
	if _, err := os.Stat(filepath.Dir(state)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused import into no store left %s behind: %v", filepath.Dir(state), err)
	}
	// Into an existing store, it writes nothing and keeps the store.
	if out, err := runCLI(t, "import-kea", "--config", cfgPath, "../../example/kea-dhcp6.conf"); err != nil {
		t.Fatalf("import-kea: %v\n%s", err, out)
	}
	n := storedAllocations(t, cfgPath)
	if _, err := runCLI(t, "import-kea", "--config", cfgPath, "../../testdata/kea/conflicts.json"); !errors.Is(err, allocator.ErrImportConflicts) {
		t.Fatalf("import-kea: %v, want ErrImportConflicts", err)
	}
	if got := storedAllocations(t, cfgPath); got != n {
		t.Errorf("store holds %d allocations after a refused import, want %d", got, n)
	}
}

func TestImportKeaDryRun(t *testing.T) {
	cfgPath, state := importKeaConfig(t)
	const keaPath = "../../example/kea-dhcp6.conf"
	out, err := runCLI(t, "import-kea", "--config", cfgPath, "--dry-run", keaPath)
	if err != nil {
		t.Fatalf("import-kea --dry-run: %v\n%s", err, out)
	}
	if !strings.Contains(out, "  to add:                  3\n") || !strings.HasSuffix(out, "dry run: nothing written\n") {
		t.Errorf("output:\n%s", out)
	}
	if _, err := os.Stat(state); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dry run created the store: %v", err)
	}

	// With a store: read-only, and still nothing written.
	if out, err := runCLI(t, "import-kea", "--config", cfgPath, "../../testdata/kea/commented.conf"); err != nil {
		t.Fatalf("import-kea: %v\n%s", err, out)
	}
	out, err = runCLI(t, "import-kea", "--config", cfgPath, "-n", keaPath)
	if err != nil {
		t.Fatalf("import-kea --dry-run: %v\n%s", err, out)
	}
	// commented.conf gave 06:32:b2:00:04:80 2001:db8:200:10::/60 too; the
	// example's 06:51:34:00:00:5e and 06:32:b2:00:04:79 are present.
	if !strings.Contains(out, "  to add:                  0\n") || !strings.Contains(out, "  already present:         3\n") {
		t.Errorf("output:\n%s", out)
	}
	if n := storedAllocations(t, cfgPath); n != 3 {
		t.Errorf("store holds %d allocations", n)
	}
}

func TestImportKeaErrors(t *testing.T) {
	cfgPath, state := importKeaConfig(t)
	bad := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(bad, []byte(`{"Dhcp6": {"subnet6": [{"subnet": "x"}]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no file", []string{"import-kea", "--config", cfgPath}, "accepts 1 arg(s), received 0"},
		{"missing Kea file", []string{"import-kea", "--config", cfgPath, "nope.json"}, "nope.json: no such file"},
		{"bad Kea file", []string{"import-kea", "--config", cfgPath, bad}, `Dhcp6.subnet6[0].subnet: "x": not an IPv6 prefix`},
		{"missing config", []string{"import-kea", "--config", "nope.yaml", "../../example/kea-dhcp6.conf"}, "nope.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runCLI(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q\n%s", err, tc.want, out)
			}
		})
	}

	t.Run("store locked", func(t *testing.T) {
		st, err := allocator.OpenStore(boltstore.Open(state, boltstore.Options{Create: true}))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		out, err := runCLI(t, "import-kea", "--config", cfgPath, "../../example/kea-dhcp6.conf")
		if !errors.Is(err, allocator.ErrLocked) || !strings.Contains(err.Error(), "is another cloudstack-pd running?") {
			t.Errorf("err = %v\n%s", err, out)
		}
	})
}

func TestImportKeaHelp(t *testing.T) {
	out, err := runCLI(t, "import-kea", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"import-kea KEA.json", "--dry-run", "cloudstack-pd import-kea -c example/cloudstack-pd.yaml example/kea-dhcp6.conf", "nothing is written"} {
		if !strings.Contains(out, w) {
			t.Errorf("help lacks %q:\n%s", w, out)
		}
	}
}
