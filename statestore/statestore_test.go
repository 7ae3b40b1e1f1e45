package statestore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/config"
)

func cfgAt(t *testing.T) *config.Config {
	t.Helper()
	dir := t.TempDir()
	return &config.Config{Path: filepath.Join(dir, "cloudstack-pd.yaml"), State: filepath.Join(dir, "state.db")}
}

// A missing store: Write refuses it and says --init; Read refuses it
// without suggesting a write; neither creates a file. Create makes it.
func TestOpenMissing(t *testing.T) {
	for _, tc := range []struct {
		mode Mode
		want string
	}{
		{Write, "give --init to create a new store"},
		{Read, "there is no table yet"},
	} {
		cfg := cfgAt(t)
		_, err := Open(cfg, "cmd", tc.mode)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("mode %d: err %v, want one saying %q", tc.mode, err, tc.want)
		}
		if err == nil || !strings.Contains(err.Error(), cfg.State) {
			t.Errorf("mode %d: err %v does not name %s", tc.mode, err, cfg.State)
		}
		if _, serr := os.Stat(cfg.State); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("mode %d: a store was created: %v", tc.mode, serr)
		}
	}
	cfg := cfgAt(t)
	st, err := Open(cfg, "cmd", Create)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.State); err != nil {
		t.Errorf("Create made no store: %v", err)
	}
}

// An empty file is never taken for a store, whatever the mode.
func TestOpenEmptyFile(t *testing.T) {
	for _, mode := range []Mode{Read, Write, Create} {
		cfg := cfgAt(t)
		if err := os.WriteFile(cfg.State, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(cfg, "cmd", mode)
		if !errors.Is(err, allocator.ErrNotStore) || !strings.Contains(err.Error(), "refuses this file whatever the flags") {
			t.Errorf("mode %d: err %v, want ErrNotStore explained", mode, err)
		}
		if fi, err := os.Stat(cfg.State); err != nil || fi.Size() != 0 {
			t.Errorf("mode %d: the empty file was changed: %v", mode, err)
		}
	}
}

// A dry run on a missing store works on an empty store elsewhere and
// leaves nothing at state.
func TestOpenDryRunCreatesNothing(t *testing.T) {
	cfg := cfgAt(t)
	st, err := OpenDryRun(cfg, "sync --dry-run", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.State); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dry run left a store at state: %v", err)
	}
	if _, err := OpenDryRun(cfg, "serve", false); err == nil || !strings.Contains(err.Error(), "--init") {
		t.Errorf("dry run without create on a missing store: %v, want the --init explanation", err)
	}
}
