package statestore

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/config"
)

var t0 = time.Date(2026, 3, 3, 12, 0, 0, 0, time.UTC)

// backupSite is a config with one pool and a store holding n
// allocations, open for writing as serve holds it.
func backupSite(t *testing.T, n int) (*config.Config, *allocator.Store) {
	t.Helper()
	cfg := cfgAt(t)
	cfg.Mapping = map[string]config.Mapping{"pod-a": {Pool: "2001:db8:200::/40", PrefixLen: 60, InterfaceID: "VLAN2701"}}
	st, err := Open(cfg, "test", Create)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	put(t, st, cfg, 0, n)
	return cfg, st
}

// put allocates MACs from..to-1 the lowest free prefixes, in one
// transaction.
func put(t *testing.T, st *allocator.Store, cfg *config.Config, from, to int) {
	t.Helper()
	if err := putErr(st, cfg, from, to); err != nil {
		t.Fatal(err)
	}
}

func putErr(st *allocator.Store, cfg *config.Config, from, to int) error {
	pools := cfg.Pools()
	return st.Update(pools, func(tx *allocator.Tx) error {
		tx.SetActor(allocator.Actor{At: t0, By: "sync"})
		for i := from; i < to; i++ {
			p, err := tx.LowestFree(pools[0])
			if err != nil {
				return err
			}
			mac := net.HardwareAddr{6, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}
			if err := tx.Put(allocator.Allocation{Pool: "pod-a", MAC: mac, Prefix: p, State: allocator.StateActive, Since: t0, Source: "sync"}); err != nil {
				return err
			}
		}
		return nil
	})
}

func contents(t *testing.T, st *allocator.Store, cfg *config.Config) ([]allocator.Allocation, []allocator.HistoryEvent) {
	t.Helper()
	tbl, _, err := st.LoadTable(cfg.Pools())
	if err != nil {
		t.Fatal(err)
	}
	hist, err := st.History(allocator.HistoryQuery{Prefix: netip.MustParsePrefix("::/0")})
	if err != nil {
		t.Fatal(err)
	}
	return tbl.Allocations(), hist
}

func noTemporaries(t *testing.T, dir string) {
	t.Helper()
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// hidden hides a backend's optional interfaces: the generic copy runs.
type hidden struct{ kv.Backend }

func TestBackupWhileOpen(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(*allocator.Store) *allocator.Store
	}{
		{"bbolt WriteTo", func(st *allocator.Store) *allocator.Store { return st }},
		{"generic copy", func(st *allocator.Store) *allocator.Store { return allocator.NewStore(hidden{st.Backend()}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, st := backupSite(t, 300)
			dir := t.TempDir()
			to := filepath.Join(dir, "backup.db")
			rep, err := Backup(tc.wrap(st), cfg, to)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Path != to || rep.Allocations != 300 || rep.Events != 300 || rep.Bytes == 0 || len(rep.Violations) != 0 {
				t.Errorf("report %+v", rep)
			}
			fi, err := os.Stat(to)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("backup file: %v, %v", fi, err)
			}
			cp, err := OpenBolt(to, boltstore.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer cp.Close()
			ga, gh := contents(t, cp, cfg)
			wa, wh := contents(t, st, cfg)
			if !reflect.DeepEqual(ga, wa) || !reflect.DeepEqual(gh, wh) {
				t.Errorf("the copy differs from the store: %d/%d allocations, %d/%d events", len(ga), len(wa), len(gh), len(wh))
			}
			noTemporaries(t, dir)
		})
	}
}

// A backup taken while another goroutine writes is one snapshot: the
// copy checks clean and holds a whole number of the writer's
// transactions (10 allocations each).
func TestBackupIsConsistentUnderWrites(t *testing.T) {
	cfg, st := backupSite(t, 10)
	stop := make(chan struct{})
	var werr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := putErr(st, cfg, 10*i, 10*i+10); err != nil {
				werr = err
				return
			}
		}
	}()
	to := filepath.Join(t.TempDir(), "b.db")
	rep, err := Backup(st, cfg, to)
	close(stop)
	wg.Wait()
	if err != nil || werr != nil {
		t.Fatal(err, werr)
	}
	if rep.Allocations%10 != 0 || rep.Events != rep.Allocations {
		t.Errorf("copy holds %d allocations and %d events: not one snapshot", rep.Allocations, rep.Events)
	}
}

// garbage is a backend whose copy of itself is not a store.
type garbage struct{ kv.Backend }

func (garbage) WriteTo(w io.Writer) (int64, error) {
	n, err := io.WriteString(w, strings.Repeat("not a store ", 1000))
	return int64(n), err
}

func TestBackupRefusesACopyThatDoesNotCheck(t *testing.T) {
	cfg, st := backupSite(t, 3)
	dir := t.TempDir()
	to := filepath.Join(dir, "b.db")
	if err := os.WriteFile(to, []byte("older backup"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Backup(allocator.NewStore(garbage{st.Backend()}), cfg, to)
	if err == nil || !strings.Contains(err.Error(), "does not check") {
		t.Fatalf("Backup of a bad copy = %v", err)
	}
	if b, _ := os.ReadFile(to); string(b) != "older backup" {
		t.Error("a failed backup replaced the older one")
	}
	noTemporaries(t, dir)
	if _, err := Backup(st, cfg, cfg.State); err == nil || !strings.Contains(err.Error(), "the store itself") {
		t.Errorf("Backup onto the store = %v", err)
	}
}

func TestRestore(t *testing.T) {
	cfg, st := backupSite(t, 5)
	backup := filepath.Join(t.TempDir(), "b.db")
	if _, err := Backup(st, cfg, backup); err != nil {
		t.Fatal(err)
	}
	put(t, st, cfg, 5, 8) // written after the backup
	// The store is held (serve runs): refused.
	if _, err := Restore(cfg, backup, false, t0); !errors.Is(err, allocator.ErrLocked) {
		t.Fatalf("Restore while the store is held = %v, want ErrLocked", err)
	}
	st.Close()
	rep, err := Restore(cfg, backup, false, t0)
	if err != nil {
		t.Fatal(err)
	}
	kept := cfg.State + ".before-restore-20260303T120000Z"
	if rep.Kept != kept || rep.Allocations != 5 || rep.Events != 5 {
		t.Errorf("report %+v", rep)
	}
	for path, want := range map[string]int{cfg.State: 5, kept: 8} {
		s, err := OpenBolt(path, boltstore.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := s.CountAllocations(); n != want {
			t.Errorf("%s holds %d allocations, want %d", path, n, want)
		}
		s.Close()
	}
	noTemporaries(t, filepath.Dir(cfg.State))

	// A backup with violations (here: a pool the config no longer maps)
	// needs --force; what is not a store is refused anyway.
	other := *cfg
	other.Mapping = map[string]config.Mapping{"pod-b": {Pool: "2001:db8:300::/40", PrefixLen: 60, InterfaceID: "VLAN2702"}}
	if _, err := Restore(&other, backup, false, t0); !errors.Is(err, ErrRestoreViolations) {
		t.Errorf("Restore with violations = %v, want ErrRestoreViolations", err)
	}
	if _, err := Restore(&other, backup, true, t0.Add(time.Second)); err != nil {
		t.Errorf("Restore --force = %v", err)
	}
	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, []byte("junk"), 0o600)
	if _, err := Restore(cfg, junk, true, t0); !errors.Is(err, allocator.ErrNotStore) {
		t.Errorf("Restore of junk = %v, want ErrNotStore", err)
	}
}

// The store's own violations (a pool no longer mapped) are in the copy,
// which is kept: they come back as warnings.
func TestBackupReportsTheStoresViolations(t *testing.T) {
	cfg, st := backupSite(t, 2)
	other := *cfg
	other.Mapping = map[string]config.Mapping{"pod-b": {Pool: "2001:db8:300::/40", PrefixLen: 60, InterfaceID: "VLAN2702"}}
	rep, err := Backup(st, &other, filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Violations) != 1 || !strings.Contains(rep.Violations[0], "not configured") || rep.Allocations != 2 {
		t.Errorf("report %+v", rep)
	}
}
