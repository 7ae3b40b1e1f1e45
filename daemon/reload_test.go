package daemon

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
	"github.com/cloudstack-pd/cloudstack-pd/server"
)

// TestReloadRefusesWhatLoadRefuses: SIGHUP's reload validates the new
// config with config.Load, as serve's start does: a config over the
// listener's limits or with a pool in a reserved range is refused and the
// old one stays in force, and the log line names the key without
// printing a secret.
func TestReloadRefusesWhatLoadRefuses(t *testing.T) {
	const base = "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\nserver:\n  listen: [\"[::1]:10547\"]\n"
	old, err := config.Parse("old.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, text, want string }{
		{"workers above the bound", base + "  workers: 100000\n", `server.workers: \"100000\": must be 0 (one per CPU) to 256`},
		{"queue-length above the bound", base + "  queue-length: 1000000\n", `server.queue-length: \"1000000\": must be 0 (default 1024) to 16384`},
		{"pool multicast", strings.Replace(base, "2001:db8:200::/40", "ff0e::/16", 1), `mapping.pod-a.pool: \"ff0e::/16\": overlaps ff00::/8 (multicast)`},
		{"ip6-cidr link-local, a secret set", strings.Replace(base, "VLAN2701\n", "VLAN2701\n    ip6-cidr: fe80::/64\n", 1) + "api:\n  secretkey: SK-s3cr3t-2\n",
			`mapping.pod-a.ip6-cidr: \"fe80::/64\": overlaps fe80::/10 (link-local)`},
		{"api as a list", base + "api:\n  - apikey: AK-s3cr3t-1\n    secretkey: SK-s3cr3t-2\n", "api: (a list, not shown)"},
		{"url with user info", base + "api:\n  url: https://admin:pw-s3cr3t-3@cloud/client/api\n  secretkey: SK-s3cr3t-2\n", `api.url: \"https://xxxxx@cloud/client/api\"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			testenv.WriteFile(t, path, tt.text)
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, nil))
			o := *old
			o.Path = path
			d := &daemon{log: log}
			got := func() (got *config.Config) {
				defer func() {
					// With no store, an accepted config fails loading the table.
					if r := recover(); r != nil {
						t.Errorf("reload accepted the config (it went on to load the table: %v)", r)
						got = nil
					}
				}()
				return d.reload(&o, nil, nil)
			}()
			if got != &o {
				t.Errorf("the old config is not kept")
			}
			out := buf.String()
			if !strings.Contains(out, "reload refused: the old config stays in force") || !strings.Contains(out, tt.want) {
				t.Errorf("log lacks %q:\n%s", tt.want, out)
			}
			if strings.Contains(strings.ToLower(out), "s3cr3t") {
				t.Errorf("the log shows a secret:\n%s", out)
			}
		})
	}
}

// A reload applies log.level at once, and names in one warning each key
// that changed but takes effect only at restart (compared with the running
// config), keeping those running values.
func TestReloadAppliesLogLevelAndNamesRestartKeys(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state.db")
	base := "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\nstate: " + state +
		"\nhttp:\n  listen: \"\"\nserver:\n  listen: [\"[::1]:10547\"]\n"
	path := filepath.Join(dir, "config.yaml")
	testenv.WriteFile(t, path, base+"log:\n  level: info\n")
	running, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := allocator.OpenStore(boltstore.Open(state, boltstore.Options{Create: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tbl, err := allocator.NewTable(running.Pools(), nil)
	if err != nil {
		t.Fatal(err)
	}
	live := allocator.NewLive(tbl)
	h, err := server.NewHandler(server.HandlerConfig{Table: live, ServerID: []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1}})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log, level := NewLoggerLevel(running.Log, &buf)
	d := &daemon{log: log, st: st, deps: Deps{LogLevel: level}}
	if log.Enabled(context.Background(), slog.LevelDebug) {
		t.Fatal("debug enabled before the reload")
	}

	testenv.WriteFile(t, path, strings.Replace(base, "10547", "10548", 1)+"  workers: 3\nlog:\n  level: debug\n  format: json\n")
	got := d.reload(running, live, h)
	if got == running || got.Log.Level != "debug" {
		t.Fatalf("the new config is not in force: %+v", got.Log)
	}
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		t.Error("log.level: debug not applied by the reload")
	}
	out := buf.String()
	if !strings.Contains(out, "these keys change only at restart") ||
		!strings.Contains(out, "server.listen") || !strings.Contains(out, "server.workers") || !strings.Contains(out, "log.format") ||
		strings.Contains(out, "queue-length") || strings.Contains(out, "state,") {
		t.Errorf("warning does not name exactly the changed restart-only keys:\n%s", out)
	}
	if n := strings.Count(out, "change only at restart"); n != 1 {
		t.Errorf("%d warnings, want one", n)
	}
}
