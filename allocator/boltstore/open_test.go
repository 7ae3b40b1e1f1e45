package boltstore_test

import (
	"bytes"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/allocatortest"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/bench/synth"
)

var openPools = synth.Pools(2)

// exists reports whether path exists.
func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Lstat(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func TestOpenMissingNeedsCreate(t *testing.T) {
	for _, opts := range []boltstore.Options{
		{},
		{NoSync: true},
		{ReadOnly: true},
	} {
		dir := filepath.Join(t.TempDir(), "var", "lib")
		path := filepath.Join(dir, "state.db")
		st, err := allocator.OpenStore(boltstore.Open(path, opts))
		if err == nil {
			st.Close()
			t.Fatalf("Open(%+v) of a missing file succeeded", opts)
		}
		if !errors.Is(err, allocator.ErrNoStore) || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
			t.Errorf("Open(%+v): %v, want ErrNoStore and fs.ErrNotExist naming %s", opts, err, path)
		}
		if exists(t, dir) {
			t.Errorf("Open(%+v) created %s", opts, dir)
		}
	}
	if _, err := allocator.OpenStore(boltstore.Open(filepath.Join(t.TempDir(), "state.db"), boltstore.Options{ReadOnly: true, Create: true})); err == nil {
		t.Error("Open(ReadOnly, Create) succeeded")
	}

	// With Create: a new store, which is ours even without an allocation.
	path := filepath.Join(t.TempDir(), "new", "state.db")
	st, err := allocator.OpenStore(boltstore.Open(path, boltstore.Options{Create: true, NoSync: true}))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	for _, opts := range []boltstore.Options{{}, {ReadOnly: true}, {Create: true}} {
		st, err := allocator.OpenStore(boltstore.Open(path, opts))
		if err != nil {
			t.Fatalf("reopen a new, empty store with %+v: %v", opts, err)
		}
		if lines, err := st.Check(openPools); err != nil || len(lines) > 0 {
			t.Errorf("Check of a new store: %q, %v", lines, err)
		}
		st.Close()
	}
}

// TestOpenRefusesNotAStore: a file that is not a store of ours is refused,
// whatever the options, and left as it was.
func TestOpenRefusesNotAStore(t *testing.T) {
	emptyBolt := func(t *testing.T, path string) {
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
	for _, tc := range []struct {
		name  string
		make  func(t *testing.T, path string)
		wants string
	}{
		{"0 bytes", func(t *testing.T, path string) {
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "empty file (0 bytes)"},
		{"bbolt without buckets", emptyBolt, "without any bucket"},
		{"text", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("state: /var/lib/cloudstack-pd/state.db\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a bbolt file"},
		{"random bytes", func(t *testing.T, path string) {
			emptyBolt(t, path)
			if err := allocatortest.Damage(path, "random"); err != nil {
				t.Fatal(err)
			}
		}, "not a bbolt file"},
		{"folder", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			tc.make(t, path)
			before, _ := os.ReadFile(path)
			for _, opts := range []boltstore.Options{{}, {Create: true}, {ReadOnly: true}} {
				st, err := allocator.OpenStore(boltstore.Open(path, opts))
				if err == nil {
					st.Close()
					t.Fatalf("Open(%+v) succeeded", opts)
				}
				if !errors.Is(err, allocator.ErrNotStore) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.wants) {
					t.Errorf("Open(%+v): %v, want ErrNotStore naming %s and saying %q", opts, err, path, tc.wants)
				}
				after, _ := os.ReadFile(path)
				if !exists(t, path) || !bytes.Equal(before, after) {
					t.Fatalf("Open(%+v) changed or removed %s", opts, path)
				}
			}
		})
	}
}

// TestOpenEarlierStores opens stores that the code before StoreOptions.Create
// wrote (testdata/store-v1*.db): one as a new store with no allocation, one
// with two.
func TestOpenEarlierStores(t *testing.T) {
	pools := []allocator.Pool{
		{Name: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60, InterfaceID: "VLAN2701"},
		{Name: "pod-b", Prefix: netip.MustParsePrefix("2001:db8:300::/40"), PrefixLen: 60, InterfaceID: "VLAN2702"},
	}
	for file, want := range map[string]int{"store-v1-empty.db": 0, "store-v1.db": 2} {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("..", "testdata", file))
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, opts := range []boltstore.Options{{ReadOnly: true}, {}} {
				st, err := allocator.OpenStore(boltstore.Open(path, opts))
				if err != nil {
					t.Fatalf("Open(%+v): %v", opts, err)
				}
				tbl, _, err := st.LoadTable(pools)
				if err != nil || tbl.Len() != want {
					t.Errorf("LoadTable: %v allocations, %v; want %d", tbl, err, want)
				}
				if lines, err := st.Check(pools); err != nil || len(lines) > 0 {
					t.Errorf("Check: %q, %v", lines, err)
				}
				// No history bucket yet: an empty history, read-only too.
				if es, err := st.History(allocator.HistoryQuery{Prefix: netip.MustParsePrefix("::/0")}); err != nil || len(es) != 0 {
					t.Errorf("History: %v, %v", es, err)
				}
				st.Close()
			}
			// The first write makes the bucket; the store still checks.
			st, err := allocator.OpenStore(boltstore.Open(path, boltstore.Options{}))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			_, err = st.Admin(pools, allocator.Actor{By: "admin test"}, false, func(tx *allocator.Tx) error {
				_, err := tx.ForgetPool("pod-none")
				return err
			})
			if !errors.Is(err, allocator.ErrNothingToDo) {
				t.Errorf("ForgetPool of no pool = %v", err)
			}
			err = st.Update(pools, func(tx *allocator.Tx) error {
				p, err := tx.LowestFree(pools[0])
				if err != nil {
					return err
				}
				return tx.Put(allocator.Allocation{Pool: "pod-a", MAC: []byte{9, 9, 9, 9, 9, 9}, Prefix: p, State: allocator.StateActive})
			})
			if err != nil {
				t.Fatal(err)
			}
			if n, err := st.CountHistory(); err != nil || n != 1 {
				t.Errorf("history after a write: %d, %v", n, err)
			}
			if lines, err := st.Check(pools); err != nil || len(lines) > 0 {
				t.Errorf("Check after a write: %q, %v", lines, err)
			}
		})
	}
}

// TestOpenDamaged: a damaged store gives an error wrapping ErrDamaged or
// ErrNotStore, naming the file, from Open, LoadTable or Check; never a
// crash (a panic or a fault would end the test binary).
func TestOpenDamaged(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, how := range allocatortest.Damages {
		t.Run(how, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			st, err := allocator.OpenStore(boltstore.Open(path, boltstore.Options{Create: true, NoSync: true}))
			if err != nil {
				t.Fatal(err)
			}
			if err := synth.Fill(st, openPools, 2000, 0, since); err != nil {
				t.Fatal(err)
			}
			st.Close()
			if err := allocatortest.Damage(path, how); err != nil {
				t.Fatal(err)
			}
			for _, opts := range []boltstore.Options{{ReadOnly: true}, {}} {
				for _, check := range []bool{false, true} {
					err := useStore(path, opts, check)
					if err == nil {
						t.Fatalf("%+v, check %v: the damaged store opened and loaded", opts, check)
					}
					if !errors.Is(err, allocator.ErrDamaged) && !errors.Is(err, allocator.ErrNotStore) || !strings.Contains(err.Error(), path) {
						t.Errorf("%+v, check %v: %v, want ErrDamaged or ErrNotStore naming %s", opts, check, err, path)
					}
				}
			}
		})
	}
}

// TestEveryLeafPage zeroes each leaf page of a store in turn: Open (which
// verifies), serve's start and Check each report ErrDamaged, whichever
// bucket the page belonged to. serve's start is LoadTable, then
// VerifyIndexesBeforeWrites: one of them reports the damage, and then a
// write fails with it rather than touch the store.
func TestEveryLeafPage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	st, err := allocator.OpenStore(boltstore.Open(path, boltstore.Options{Create: true, NoSync: true}))
	if err != nil {
		t.Fatal(err)
	}
	if err := synth.Fill(st, openPools, 600, 0, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	st.Close()
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	leaves, err := allocatortest.LeafPages(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(leaves) < 10 {
		t.Fatalf("%d leaf pages: too few to mean anything", len(leaves))
	}
	for _, id := range leaves {
		if err := os.WriteFile(path, good, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := allocatortest.ZeroPage(path, id); err != nil {
			t.Fatal(err)
		}
		if _, err := allocator.OpenStore(boltstore.Open(path, boltstore.Options{ReadOnly: true})); !errors.Is(err, allocator.ErrDamaged) {
			t.Errorf("page %d zeroed: Open: %v, want ErrDamaged", id, err)
		}
		st, err := allocator.OpenStore(boltstore.Open(path, boltstore.Options{NoVerify: true}))
		if errors.Is(err, allocator.ErrDamaged) {
			continue // a page Open reads anyway (the root's, meta's, the freelist's)
		}
		if err != nil {
			t.Fatalf("page %d zeroed: Open(NoVerify): %v", id, err)
		}
		if _, _, lerr := st.LoadTable(openPools); !errors.Is(lerr, allocator.ErrDamaged) {
			if lerr != nil {
				t.Fatalf("page %d zeroed: LoadTable: %v", id, lerr)
			}
			verified := st.VerifyIndexesBeforeWrites()
			werr := st.Update(openPools, func(tx *allocator.Tx) error { return nil })
			select {
			case verr := <-verified:
				if !errors.Is(verr, allocator.ErrDamaged) {
					t.Errorf("page %d zeroed: serve's start: LoadTable read it, VerifyIndexesBeforeWrites %v; want ErrDamaged from one", id, verr)
				}
			default:
				t.Errorf("page %d zeroed: a write went on before the check ended", id)
			}
			if !errors.Is(werr, allocator.ErrDamaged) {
				t.Errorf("page %d zeroed: a write after the check found the damage: %v, want ErrDamaged", id, werr)
			}
		}
		if _, err := st.Check(openPools); !errors.Is(err, allocator.ErrDamaged) {
			t.Errorf("page %d zeroed: Check: %v, want ErrDamaged", id, err)
		}
		st.Close()
	}
}

// TestVerifyBeforeWrites: on a sound store, a write made while the
// background check runs waits for it, then is written.
func TestVerifyBeforeWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := allocator.OpenStore(boltstore.Open(path, boltstore.Options{Create: true, NoSync: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := synth.Fill(st, openPools, 3000, 0, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	verified := st.VerifyIndexesBeforeWrites()
	if err := st.Update(openPools, func(tx *allocator.Tx) error {
		return tx.Put(synth.Allocation(openPools, 3000, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)))
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-verified:
		if err != nil {
			t.Fatalf("the sound store: %v", err)
		}
	default:
		t.Fatal("the write went on before the check ended")
	}
	tbl, _, err := st.LoadTable(openPools)
	if err != nil {
		t.Fatal(err)
	}
	if tbl.Len() != 3001 {
		t.Errorf("%d allocations after the write, want 3001", tbl.Len())
	}
}

// useStore opens path and loads the table, as serve does, or checks the
// store, as check does, and returns the first error (Check's violations as
// one).
func useStore(path string, opts boltstore.Options, check bool) error {
	st, err := allocator.OpenStore(boltstore.Open(path, opts))
	if err != nil {
		return err
	}
	defer st.Close()
	if !check {
		_, _, err := st.LoadTable(openPools)
		return err
	}
	lines, err := st.Check(openPools)
	if err != nil {
		return err
	}
	if len(lines) > 0 {
		return errors.New(strings.Join(lines, "\n"))
	}
	return nil
}
