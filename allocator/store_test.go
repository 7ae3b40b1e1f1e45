package allocator

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

var (
	t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	poolA = Pool{Name: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60, InterfaceID: "VLAN2701",
		IP6CIDR: netip.MustParsePrefix("2001:db8:100::/64")}
	poolB = Pool{Name: "pod-b", Prefix: netip.MustParsePrefix("2001:db8:300::/40"), PrefixLen: 60, InterfaceID: "VLAN2702"}
	// poolSmall holds four /60s.
	poolSmall = Pool{Name: "small", Prefix: netip.MustParsePrefix("2001:db8:400::/58"), PrefixLen: 60, InterfaceID: "VLAN3"}
	// poolTop ends at the last address there is.
	poolTop = Pool{Name: "top", Prefix: netip.MustParsePrefix("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124"), PrefixLen: 126, InterfaceID: "VLAN4"}
	// poolOne is a single delegated prefix.
	poolOne = Pool{Name: "one", Prefix: netip.MustParsePrefix("2001:db8:500::/60"), PrefixLen: 60, InterfaceID: "VLAN5"}

	testPools = []Pool{poolA, poolB, poolSmall, poolTop, poolOne}
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func alloc(pool, m, prefix string) Allocation {
	return Allocation{Pool: pool, MAC: mac(m), Prefix: netip.MustParsePrefix(prefix), State: StateActive, Since: t0, Source: "sync"}
}

func openTest(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), StoreOptions{Create: true, NoSync: true, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustPut(t *testing.T, s *Store, allocs ...Allocation) {
	t.Helper()
	mustPutPools(t, s, testPools, allocs...)
}

func mustPutPools(t *testing.T, s *Store, pools []Pool, allocs ...Allocation) {
	t.Helper()
	err := s.Update(pools, func(tx *Tx) error {
		for _, a := range allocs {
			if err := tx.Put(a); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func mustCheck(t *testing.T, s *Store) {
	t.Helper()
	mustCheckPools(t, s, testPools)
}

func mustCheckPools(t *testing.T, s *Store, pools []Pool) {
	t.Helper()
	lines, err := s.Check(pools)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) > 0 {
		t.Fatalf("Check found:\n%s", strings.Join(lines, "\n"))
	}
}

func allAllocs(t *testing.T, s *Store) []Allocation {
	t.Helper()
	var out []Allocation
	err := s.View(testPools, func(tx *Tx) error {
		for _, name := range tx.StoredPools() {
			if err := tx.ForEach(name, func(a Allocation) error { out = append(out, a); return nil }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOpenCreatesFolderAndSchema(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "lib", "cloudstack-pd")
	path := filepath.Join(dir, "state.db")
	s, err := Open(path, StoreOptions{Create: true, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&^0o750 != 0 {
		t.Errorf("folder mode %v, want at most 0750", perm)
	}
	if s.Path() != path {
		t.Errorf("Path() = %q", s.Path())
	}
	// The buckets are there: Check (mustCheck) asks the backend.
	err = s.b.View(func(tx kv.Tx) error {
		if got := string(tx.Get(spaceMeta, keySchema)); got != SchemaVersion {
			t.Errorf("schema %q", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, StoreOptions{Create: true, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tc := range []struct {
		name string
		opts StoreOptions
	}{
		{"short timeout", StoreOptions{Timeout: 100 * time.Millisecond}},
		{"no wait", StoreOptions{Timeout: -1}},
		{"read-only", StoreOptions{Timeout: 100 * time.Millisecond, ReadOnly: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			s2, err := Open(path, tc.opts)
			if err == nil {
				s2.Close()
				t.Fatal("second Open succeeded")
			}
			if !errors.Is(err, ErrLocked) {
				t.Fatalf("err = %v, want ErrLocked", err)
			}
			want := "store " + path + " is locked by another process (pid unknown); is another cloudstack-pd running?"
			if err.Error() != want {
				t.Errorf("err = %q\nwant  %q", err, want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Open waited %v", d)
			}
		})
	}
}

func TestOpenReadOnly(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "missing.db"), StoreOptions{ReadOnly: true}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read-only Open of a missing file: %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("read-only Open created the file")
	}
	path := filepath.Join(dir, "state.db")
	s, err := Open(path, StoreOptions{Create: true, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, alloc("pod-a", "06:32:b2:00:04:79", "2001:db8:200::/60"))
	s.Close()

	ro, err := Open(path, StoreOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	// Two readers share the lock.
	ro2, err := Open(path, StoreOptions{ReadOnly: true, Timeout: -1})
	if err != nil {
		t.Fatalf("second reader: %v", err)
	}
	ro2.Close()
	tab, _, err := ro.LoadTable(testPools)
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Allocations()) != 1 {
		t.Errorf("read %d allocations", len(tab.Allocations()))
	}
	err = ro.Update(testPools, func(tx *Tx) error { return nil })
	if !errors.Is(err, ErrReadOnly) {
		t.Errorf("Update on read-only store: %v", err)
	}
	err = ro.View(testPools, func(tx *Tx) error {
		return tx.Put(alloc("pod-a", "06:32:b2:00:04:80", "2001:db8:200:10::/60"))
	})
	if !errors.Is(err, ErrReadOnly) {
		t.Errorf("Put in View: %v", err)
	}
	if _, err := ro.ServerDUID(func() ([]byte, error) { return []byte{0, 3, 0, 1, 1, 2, 3, 4, 5, 6}, nil }); !errors.Is(err, ErrReadOnly) || !errors.Is(err, ErrNoServerDUID) {
		t.Errorf("ServerDUID on read-only store without one: %v", err)
	}
}

func TestPut(t *testing.T) {
	existing := []Allocation{
		alloc("pod-a", "06:32:b2:00:04:79", "2001:db8:200::/60"),
		alloc("pod-b", "06:32:b2:00:04:80", "2001:db8:300::/60"),
	}
	quarantined := alloc("pod-a", "06:32:b2:00:04:81", "2001:db8:200:10::/60")
	quarantined.State, quarantined.QuarantinedAt = StateQuarantined, t0
	existing = append(existing, quarantined)

	gone := existing[0]
	gone.State, gone.GoneAt = StateGone, t0.Add(time.Hour)

	for _, tc := range []struct {
		name    string
		a       Allocation
		wantErr error
	}{
		{"new", alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200:20::/60"), nil},
		{"same again", existing[0], nil},
		{"state change", gone, nil},
		{"8-byte hardware address", Allocation{Pool: "pod-a", MAC: bytes.Repeat([]byte{7}, 8), Prefix: netip.MustParsePrefix("2001:db8:200:30::/60"), State: StateActive}, nil},
		{"unknown pool", alloc("pod-x", "06:00:00:00:00:01", "2001:db8:200:20::/60"), ErrUnknownPool},
		{"empty MAC", Allocation{Pool: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200:20::/60"), State: StateActive}, ErrInvalidMAC},
		{"21-byte MAC", Allocation{Pool: "pod-a", MAC: make([]byte, 21), Prefix: netip.MustParsePrefix("2001:db8:200:20::/60"), State: StateActive}, ErrInvalidMAC},
		{"no state", Allocation{Pool: "pod-a", MAC: mac("06:00:00:00:00:01"), Prefix: netip.MustParsePrefix("2001:db8:200:20::/60")}, ErrInvalidState},
		{"outside pool", alloc("pod-a", "06:00:00:00:00:01", "2001:db8:300:20::/60"), ErrOutsidePool},
		{"wrong length", alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200:20::/56"), ErrPrefixLength},
		{"misaligned", alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200:28::/60"), ErrPrefixLength},
		{"IPv4", alloc("pod-a", "06:00:00:00:00:01", "192.0.2.0/28"), ErrOutsidePool},
		{"prefix of another MAC", alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60"), ErrDuplicatePrefix},
		{"quarantined prefix", alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200:10::/60"), ErrDuplicatePrefix},
		{"MAC in another pool", alloc("pod-a", "06:32:b2:00:04:80", "2001:db8:200:20::/60"), ErrDuplicateMAC},
		{"prefix moved", alloc("pod-a", "06:32:b2:00:04:79", "2001:db8:200:20::/60"), ErrPrefixMoved},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t)
			mustPut(t, s, existing...)
			before := allAllocs(t, s)
			err := s.Update(testPools, func(tx *Tx) error { return tx.Put(tc.a) })
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("Put: %v, want %v", err, tc.wantErr)
			}
			mustCheck(t, s)
			if err != nil {
				if !reflect.DeepEqual(allAllocs(t, s), before) {
					t.Error("failed Put changed the store")
				}
				return
			}
			var got Allocation
			var ok bool
			err = s.View(testPools, func(tx *Tx) (err error) {
				got, ok, err = tx.Get(tc.a.Pool, tc.a.MAC)
				return err
			})
			if err != nil || !ok {
				t.Fatalf("Get after Put: %v, %v", ok, err)
			}
			if !equalAlloc(got, tc.a) {
				t.Errorf("Get = %+v\nwant  %+v", got, tc.a)
			}
		})
	}
}

func equalAlloc(a, b Allocation) bool {
	ja, _ := json.Marshal(allocRecord{MAC: a.MAC.String(), Allocation: a})
	jb, _ := json.Marshal(allocRecord{MAC: b.MAC.String(), Allocation: b})
	return bytes.Equal(ja, jb)
}

func TestStoredRecordNamesMAC(t *testing.T) {
	s := openTest(t)
	a := alloc("pod-a", "06:32:b2:00:04:79", "2001:db8:200::/60")
	a.IP6 = netip.MustParseAddr("2001:db8:100:0:432:b2ff:fe00:479")
	mustPut(t, s, a)
	var raw map[string]any
	err := s.b.View(func(tx kv.Tx) error {
		return json.Unmarshal(tx.Get(allocSpace("pod-a"), a.MAC), &raw)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"mac": "06:32:b2:00:04:79", "pool": "pod-a", "prefix": "2001:db8:200::/60", "state": "active",
		"since": "2026-01-02T03:04:05Z", "source": "sync", "ip6": "2001:db8:100:0:432:b2ff:fe00:479"}
	if !reflect.DeepEqual(raw, want) {
		t.Errorf("stored %v\nwant   %v", raw, want)
	}
}

func TestUpdateRollsBack(t *testing.T) {
	s := openTest(t)
	boom := errors.New("boom")
	err := s.Update(testPools, func(tx *Tx) error {
		if err := tx.Put(alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60")); err != nil {
			return err
		}
		if err := tx.Put(alloc("pod-b", "06:00:00:00:00:02", "2001:db8:300::/60")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update: %v", err)
	}
	if got := allAllocs(t, s); len(got) != 0 {
		t.Errorf("rolled-back Update left %v", got)
	}
	mustCheck(t, s)
}

func TestUpdateRejectsBadPools(t *testing.T) {
	s := openTest(t)
	dup := []Pool{poolA, {Name: "pod-a", Prefix: poolB.Prefix, PrefixLen: 60, InterfaceID: "X"}}
	if err := s.Update(dup, func(*Tx) error { return nil }); !errors.Is(err, ErrDuplicatePool) {
		t.Errorf("Update with duplicate pools: %v", err)
	}
}

func TestGetLookupDeleteForEach(t *testing.T) {
	s := openTest(t)
	a1 := alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60")
	a2 := alloc("pod-a", "06:00:00:00:00:02", "2001:db8:200:10::/60")
	b1 := alloc("pod-b", "06:00:00:00:00:03", "2001:db8:300::/60")
	mustPut(t, s, a2, a1, b1)

	err := s.View(testPools, func(tx *Tx) error {
		if got, ok, err := tx.Lookup(b1.MAC); err != nil || !ok || got.Pool != "pod-b" {
			t.Errorf("Lookup(%s) = %+v, %v, %v", b1.MAC, got, ok, err)
		}
		if _, ok, err := tx.Lookup(mac("06:00:00:00:00:09")); ok || err != nil {
			t.Errorf("Lookup of unknown MAC: %v, %v", ok, err)
		}
		if _, ok, err := tx.Get("pod-b", a1.MAC); ok || err != nil {
			t.Errorf("Get in the wrong pool: %v, %v", ok, err)
		}
		if _, ok, err := tx.Get("no-such-pool", a1.MAC); ok || err != nil {
			t.Errorf("Get in a missing pool: %v, %v", ok, err)
		}
		if owner, ok := tx.PrefixOwner("pod-a", a2.Prefix); !ok || !bytes.Equal(owner, a2.MAC) {
			t.Errorf("PrefixOwner = %s, %v", owner, ok)
		}
		var order []string
		if err := tx.ForEach("pod-a", func(a Allocation) error { order = append(order, a.MAC.String()); return nil }); err != nil {
			return err
		}
		if want := []string{"06:00:00:00:00:01", "06:00:00:00:00:02"}; !reflect.DeepEqual(order, want) {
			t.Errorf("ForEach order %v, want %v", order, want)
		}
		stop := errors.New("stop")
		n := 0
		if err := tx.ForEach("pod-a", func(Allocation) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
			t.Errorf("ForEach did not stop: %v after %d", err, n)
		}
		if got := tx.StoredPools(); !reflect.DeepEqual(got, []string{"pod-a", "pod-b"}) {
			t.Errorf("StoredPools = %v", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	err = s.Update(testPools, func(tx *Tx) error {
		if err := tx.Delete("pod-a", a1.MAC); err != nil {
			return err
		}
		if err := tx.Delete("pod-a", a1.MAC); err != nil { // again: no-op
			return err
		}
		if err := tx.Delete("pod-b", a2.MAC); err != nil { // not there
			return err
		}
		// The prefix is free again, and the MAC may go elsewhere.
		if err := tx.Put(alloc("pod-a", "06:00:00:00:00:07", "2001:db8:200::/60")); err != nil {
			return err
		}
		return tx.Put(alloc("pod-b", "06:00:00:00:00:01", "2001:db8:300:10::/60"))
	})
	if err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)
	if n := len(allAllocs(t, s)); n != 4 {
		t.Errorf("%d allocations, want 4", n)
	}
}

func TestLowestFree(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pool    Pool
		taken   []string
		other   []string // taken in another pool
		want    string
		wantErr error
	}{
		{name: "empty pool", pool: poolA, want: "2001:db8:200::/60"},
		{name: "first taken", pool: poolA, taken: []string{"2001:db8:200::/60"}, want: "2001:db8:200:10::/60"},
		{name: "run taken", pool: poolA, taken: []string{"2001:db8:200:20::/60", "2001:db8:200::/60", "2001:db8:200:10::/60"}, want: "2001:db8:200:30::/60"},
		{name: "gap", pool: poolA, taken: []string{"2001:db8:200::/60", "2001:db8:200:20::/60", "2001:db8:200:30::/60"}, want: "2001:db8:200:10::/60"},
		{name: "only high taken", pool: poolA, taken: []string{"2001:db8:2ff:fff0::/60"}, want: "2001:db8:200::/60"},
		{name: "other pool ignored", pool: poolA, other: []string{"2001:db8:300::/60"}, want: "2001:db8:200::/60"},
		{name: "last one", pool: poolSmall, taken: []string{"2001:db8:400::/60", "2001:db8:400:10::/60", "2001:db8:400:20::/60"}, want: "2001:db8:400:30::/60"},
		{name: "full", pool: poolSmall, taken: []string{"2001:db8:400::/60", "2001:db8:400:10::/60", "2001:db8:400:20::/60", "2001:db8:400:30::/60"}, wantErr: ErrPoolExhausted},
		{name: "single prefix free", pool: poolOne, want: "2001:db8:500::/60"},
		{name: "single prefix taken", pool: poolOne, taken: []string{"2001:db8:500::/60"}, wantErr: ErrPoolExhausted},
		{name: "top of address space", pool: poolTop, taken: []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/126", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff4/126", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff8/126"},
			want: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126"},
		{name: "top full", pool: poolTop, taken: []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/126", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff4/126", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff8/126", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126"},
			wantErr: ErrPoolExhausted},
		{name: "bad pool", pool: Pool{Name: "bad", Prefix: netip.MustParsePrefix("2001:db8::/48"), PrefixLen: 40}, wantErr: ErrPrefixLength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t)
			var allocs []Allocation
			for i, p := range tc.taken {
				a := alloc(tc.pool.Name, fmt.Sprintf("06:00:00:00:00:%02x", i), p)
				if i%2 == 1 {
					a.State = StateQuarantined // still not free
				}
				allocs = append(allocs, a)
			}
			for i, p := range tc.other {
				allocs = append(allocs, alloc("pod-b", fmt.Sprintf("06:00:00:00:01:%02x", i), p))
			}
			mustPut(t, s, allocs...)
			var got netip.Prefix
			err := s.View(testPools, func(tx *Tx) (err error) {
				got, err = tx.LowestFree(tc.pool)
				return err
			})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("LowestFree = %v, %v; want %v", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != netip.MustParsePrefix(tc.want) {
				t.Fatalf("LowestFree = %v, %v; want %s", got, err, tc.want)
			}
			// And it can be taken.
			err = s.Update(testPools, func(tx *Tx) error {
				return tx.Put(Allocation{Pool: tc.pool.Name, MAC: mac("0a:00:00:00:00:01"), Prefix: got, State: StateActive})
			})
			if err != nil {
				t.Errorf("Put of the free prefix: %v", err)
			}
		})
	}
}

func TestLowestFreeSkipsCorruptIndexEntries(t *testing.T) {
	s := openTest(t)
	mustPut(t, s, alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60"))
	// A stray, misaligned index entry inside the second block makes that
	// block unsafe to hand out.
	rawPut(t, s, []string{"pools", "pod-a", "prefix"}, PrefixKey(netip.MustParsePrefix("2001:db8:200:18::/64")), []byte{6, 0, 0, 0, 0, 9})
	rawPut(t, s, []string{"pools", "pod-a", "prefix"}, []byte("short"), []byte{6, 0, 0, 0, 0, 9})
	var got netip.Prefix
	err := s.View(testPools, func(tx *Tx) (err error) {
		got, err = tx.LowestFree(poolA)
		return err
	})
	if err != nil || got != netip.MustParsePrefix("2001:db8:200:20::/60") {
		t.Errorf("LowestFree = %v, %v", got, err)
	}
}

func TestLoadTable(t *testing.T) {
	s := openTest(t)
	a := alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60")
	b := alloc("pod-b", "06:00:00:00:00:02", "2001:db8:300::/60")
	mustPut(t, s, a, b)

	tab, rep, err := s.LoadTable([]Pool{poolA})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := tab.Lookup(a.MAC); !ok || got.Prefix != a.Prefix {
		t.Errorf("Lookup(%s) = %v, %v", a.MAC, got, ok)
	}
	if _, ok := tab.Lookup(b.MAC); ok {
		t.Error("allocation of an unconfigured pool is in the table")
	}
	if len(rep.Orphaned) != 1 || !equalAlloc(rep.Orphaned[0], b) {
		t.Errorf("Orphaned = %+v", rep.Orphaned)
	}
	// The orphan is still there: configuring its pool again brings it back.
	tab, rep, err = s.LoadTable(testPools)
	if err != nil || len(tab.Allocations()) != 2 || len(rep.Orphaned) != 0 {
		t.Errorf("LoadTable(all) = %d allocations, %d orphans, %v", len(tab.Allocations()), len(rep.Orphaned), err)
	}
	// Its MAC stays out of other pools meanwhile.
	err = s.Update([]Pool{poolA}, func(tx *Tx) error {
		return tx.Put(alloc("pod-a", "06:00:00:00:00:02", "2001:db8:200:10::/60"))
	})
	if !errors.Is(err, ErrDuplicateMAC) {
		t.Errorf("Put of an orphan's MAC: %v", err)
	}

	// A pool whose prefix-len changed under its allocations.
	changed := poolA
	changed.PrefixLen = 56
	if _, _, err := s.LoadTable([]Pool{changed, poolB}); !errors.Is(err, ErrPrefixLength) || !strings.Contains(err.Error(), s.Path()) {
		t.Errorf("LoadTable with a changed prefix-len: %v", err)
	}
}

func TestServerDUID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, StoreOptions{Create: true, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	duid := []byte{0, 1, 0, 1, 0x30, 0x39, 0x9e, 0x81, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02}
	calls := 0
	gen := func() ([]byte, error) { calls++; return bytes.Clone(duid), nil }

	if _, err := s.ServerDUID(func() ([]byte, error) { return nil, errors.New("no entropy") }); err == nil || !strings.Contains(err.Error(), "no entropy") {
		t.Errorf("failing generate: %v", err)
	}
	if _, err := s.ServerDUID(func() ([]byte, error) { return []byte{0, 1}, nil }); err == nil {
		t.Error("2-byte DUID accepted")
	}
	for range 2 {
		got, err := s.ServerDUID(gen)
		if err != nil || !bytes.Equal(got, duid) {
			t.Fatalf("ServerDUID = %x, %v", got, err)
		}
	}
	if calls != 1 {
		t.Errorf("generate called %d times", calls)
	}
	s.Close()

	s, err = Open(path, StoreOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.ServerDUID(func() ([]byte, error) { t.Error("generate called after restart"); return nil, nil })
	if err != nil || !bytes.Equal(got, duid) {
		t.Errorf("after restart: %x, %v", got, err)
	}
}

func testBinding(duid string, iaid uint32, prefix string) Binding {
	d, _ := parseHexString(duid)
	return Binding{
		ClientDUID: d, MAC: mac("06:32:b2:00:04:79"), IAID: iaid, Pool: "pod-a",
		Prefix: netip.MustParsePrefix(prefix), PreferredLifetime: 86400, ValidLifetime: 172800,
		Expires: t0.Add(172800 * time.Second), LastExchange: t0, LastMessage: "REQUEST",
		RelaySource: netip.MustParseAddrPort("[2001:db8::1]:547"),
		LinkAddress: netip.MustParseAddr("2001:db8:100::1"), PeerAddress: netip.MustParseAddr("fe80::432:b2ff:fe00:479"),
		InterfaceID: []byte("VLAN2701"), RemoteID: []byte{0, 0, 0x0a, 0x4c, 6, 0x32, 0xb2, 0, 4, 0x79},
	}
}

func TestBindingJSONRoundTrip(t *testing.T) {
	b := testBinding("00:01:00:01:1e:aa:37:f5:06:32:b2:00:04:79", 7, "2001:db8:200::/60")
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"client-duid":"00:01:00:01:1e:aa:37:f5:06:32:b2:00:04:79"`, `"mac":"06:32:b2:00:04:79"`,
		`"interface-id":"56:4c:41:4e:32:37:30:31"`, `"relay-source":"[2001:db8::1]:547"`, `"last-message":"REQUEST"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("JSON %s lacks %s", data, want)
		}
	}
	if strings.Contains(string(data), "relay-id") {
		t.Errorf("JSON %s has an empty relay-id", data)
	}
	var got Binding
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, b) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, b)
	}
	if err := json.Unmarshal([]byte(`{"client-duid": "zz"}`), &got); err == nil {
		t.Error("bad hex accepted")
	}
}

func TestBindingKey(t *testing.T) {
	b := Binding{ClientDUID: []byte{0, 3, 0, 1, 6, 0x32, 0xb2, 0, 4, 0x79}, IAID: 0x01020304}
	want := []byte{10, 0, 3, 0, 1, 6, 0x32, 0xb2, 0, 4, 0x79, 1, 2, 3, 4}
	if !bytes.Equal(b.Key(), want) || !bytes.Equal(BindingKey(b.ClientDUID, b.IAID), want) {
		t.Errorf("Key = %x, want %x", b.Key(), want)
	}
}

func TestPutBindings(t *testing.T) {
	s := openTest(t)
	duid1, duid2 := "00:01:00:01:1e:aa:37:f5:06:32:b2:00:04:79", "00:03:00:01:06:a5:de:00:04:47"
	b1 := testBinding(duid1, 1, "2001:db8:200::/60")
	b2 := testBinding(duid2, 1, "2001:db8:200:10::/60")
	if err := s.PutBindings([]Binding{b1, b2}, nil); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)
	all, err := s.Bindings()
	if err != nil || len(all) != 2 {
		t.Fatalf("Bindings = %d, %v", len(all), err)
	}
	// Key order: the shorter DUID first.
	if !reflect.DeepEqual(all[0], b2) || !reflect.DeepEqual(all[1], b1) {
		t.Errorf("Bindings = %+v", all)
	}

	byPrefix := func(p string) (Binding, bool) {
		t.Helper()
		b, ok, err := s.BindingByPrefix(netip.MustParsePrefix(p))
		if err != nil {
			t.Fatal(err)
		}
		return b, ok
	}
	if got, ok := byPrefix("2001:db8:200::/60"); !ok || !reflect.DeepEqual(got, b1) {
		t.Errorf("BindingByPrefix = %+v, %v", got, ok)
	}
	if _, ok := byPrefix("2001:db8:200:20::/60"); ok {
		t.Error("BindingByPrefix found an unbound prefix")
	}

	// The same IA now holds another prefix: the old one is unbound.
	b1moved := b1
	b1moved.Prefix = netip.MustParsePrefix("2001:db8:200:20::/60")
	// A new IA takes b2's prefix: b2's binding is superseded.
	b3 := testBinding(duid2, 2, "2001:db8:200:10::/60")
	if err := s.PutBindings([]Binding{b1moved, b3}, nil); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)
	if _, ok := byPrefix("2001:db8:200::/60"); ok {
		t.Error("old prefix still bound")
	}
	if got, ok := byPrefix("2001:db8:200:10::/60"); !ok || got.IAID != 2 {
		t.Errorf("taken-over prefix bound to %+v, %v", got, ok)
	}
	if all, _ := s.Bindings(); len(all) != 2 {
		t.Errorf("%d bindings, want 2 (b1moved, b3)", len(all))
	}

	// Deletions come first, then puts; absent keys are fine.
	rel := func(b Binding) BindingRelease {
		return BindingRelease{ClientDUID: b.ClientDUID, IAID: b.IAID, MAC: b.MAC}
	}
	nope := BindingRelease{ClientDUID: []byte("nope"), IAID: 1, MAC: b1.MAC}
	if err := s.PutBindings([]Binding{b2}, []BindingRelease{rel(b3), rel(b1), nope}); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)
	all, _ = s.Bindings()
	if len(all) != 1 || !reflect.DeepEqual(all[0], b2) {
		t.Errorf("after delete: %+v", all)
	}
}

// TestPutBindingsReleaseOnlyBySender: a release deletes a binding only
// when it comes from the binding's MAC. A Release carrying B's client DUID
// and IAID but sent by A's VM leaves B's binding alone.
func TestPutBindingsReleaseOnlyBySender(t *testing.T) {
	s := openTest(t)
	a := testBinding("00:03:00:01:06:32:b2:00:04:79", 1, "2001:db8:200::/60")
	b := testBinding("00:03:00:01:06:a5:de:00:04:47", 1, "2001:db8:200:10::/60")
	b.MAC = mac("06:a5:de:00:04:47")
	noMAC := testBinding("00:03:00:01:06:a5:de:00:04:48", 1, "2001:db8:200:20::/60")
	noMAC.MAC = nil
	if err := s.PutBindings([]Binding{a, b, noMAC}, nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range []BindingRelease{
		{ClientDUID: b.ClientDUID, IAID: b.IAID, MAC: a.MAC},         // A releases B's IA
		{ClientDUID: b.ClientDUID, IAID: b.IAID},                     // no sender
		{ClientDUID: noMAC.ClientDUID, IAID: noMAC.IAID, MAC: a.MAC}, // a binding of no MAC
		{ClientDUID: noMAC.ClientDUID, IAID: noMAC.IAID},             // neither
		{ClientDUID: b.ClientDUID, IAID: b.IAID + 1, MAC: b.MAC},     // B, another IA
		{ClientDUID: make([]byte, 256), IAID: b.IAID, MAC: b.MAC},    // no such key
	} {
		if err := s.PutBindings(nil, []BindingRelease{r}); err != nil {
			t.Fatalf("release %x/%d by %s: %v", r.ClientDUID, r.IAID, r.MAC, err)
		}
	}
	if all, _ := s.Bindings(); len(all) != 3 {
		t.Fatalf("releases by others deleted bindings: %d left, want 3", len(all))
	}
	if err := s.PutBindings(nil, []BindingRelease{{ClientDUID: b.ClientDUID, IAID: b.IAID, MAC: b.MAC}}); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)
	all, _ := s.Bindings()
	if len(all) != 2 || !reflect.DeepEqual(all[0], a) {
		t.Errorf("B's own release: %+v", all)
	}
	if _, ok, _ := s.BindingByPrefix(b.Prefix); ok {
		t.Error("B's prefix still bound after B's release")
	}
}

// TestPutBindingsLeavesOutInvalid: a binding that can never be stored is
// left out, named in the error, and the rest of the batch is written.
func TestPutBindingsLeavesOutInvalid(t *testing.T) {
	duid := "00:01:00:01:1e:aa:37:f5:06:32:b2:00:04:79"
	long := testBinding(duid, 9, "2001:db8:200:40::/60")
	long.ClientDUID = make([]byte, 256)
	empty := testBinding(duid, 9, "2001:db8:200:40::/60")
	empty.ClientDUID = nil
	noPrefix := testBinding(duid, 9, "2001:db8:200:40::/60")
	noPrefix.Prefix = netip.Prefix{}
	v4 := testBinding(duid, 9, "2001:db8:200:40::/60")
	v4.Prefix = netip.MustParsePrefix("::ffff:10.0.0.0/120")
	farFuture := testBinding(duid, 9, "2001:db8:200:40::/60")
	farFuture.Expires = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		bad     Binding
		problem string
	}{
		{"256-byte DUID", long, ProblemClientDUID},
		{"empty DUID", empty, ProblemClientDUID},
		{"no prefix", noPrefix, ProblemPrefix},
		{"IPv4-mapped prefix", v4, ProblemPrefix},
		{"year 10000", farFuture, ProblemTime},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t)
			if got := tc.bad.Problem(); got != tc.problem {
				t.Errorf("Problem = %q, want %q", got, tc.problem)
			}
			good1 := testBinding(duid, 1, "2001:db8:200::/60")
			good2 := testBinding("00:03:00:01:06:a5:de:00:04:47", 1, "2001:db8:200:10::/60")
			err := s.PutBindings([]Binding{good1, tc.bad, good2}, nil)
			if !errors.Is(err, ErrInvalidBinding) || !strings.Contains(err.Error(), tc.problem) {
				t.Errorf("err = %v, want one naming %s and wrapping ErrInvalidBinding", err, tc.problem)
			}
			mustCheck(t, s)
			all, _ := s.Bindings()
			if len(all) != 2 || !reflect.DeepEqual(all[0], good2) || !reflect.DeepEqual(all[1], good1) {
				t.Errorf("stored %+v, want the two valid bindings", all)
			}
		})
	}
	if p := testBinding(duid, 1, "2001:db8:200::/60"); p.Problem() != "" {
		t.Errorf("valid binding: Problem = %q", p.Problem())
	}
}

// TestPutBindingsOneBindingPerMAC: a client that sends a new DUID with
// every message (or a flood of them for one MAC) leaves one binding per
// MAC and IAID, the newest; a release by the newest DUID ends it.
func TestPutBindingsOneBindingPerMAC(t *testing.T) {
	s := openTest(t)
	var last Binding
	for i := range 500 {
		var batch []Binding
		for j := range 4 {
			b := testBinding("00:03:00:01:06:32:b2:00:04:79", 1, "2001:db8:200::/60")
			b.ClientDUID = binary.BigEndian.AppendUint32([]byte{0, 4}, uint32(i*4+j))
			b.LastExchange = t0.Add(time.Duration(i*4+j) * time.Second)
			batch = append(batch, b)
			last = b
		}
		if err := s.PutBindings(batch, nil); err != nil {
			t.Fatal(err)
		}
	}
	mustCheck(t, s)
	all, _ := s.Bindings()
	if len(all) != 1 || !reflect.DeepEqual(all[0], last) {
		t.Fatalf("%d bindings after 2000 DUIDs of one MAC and IAID, want the newest only", len(all))
	}
	if err := s.PutBindings(nil, []BindingRelease{{ClientDUID: last.ClientDUID, IAID: last.IAID, MAC: last.MAC}}); err != nil {
		t.Fatal(err)
	}
	if all, _ := s.Bindings(); len(all) != 0 {
		t.Errorf("release by the newest DUID left %+v", all)
	}
}

// rawPut writes key=val in the key space that path names as the bbolt
// buckets do (pools/<pool>/alloc, macs, …), bypassing every check; a nil
// val deletes key.
func rawPut(t *testing.T, s *Store, path []string, key, val []byte) {
	t.Helper()
	var sp kv.Space
	switch {
	case len(path) == 3 && path[0] == "pools" && path[2] == "alloc":
		sp = allocSpace(path[1])
	case len(path) == 3 && path[0] == "pools" && path[2] == "prefix":
		sp = prefixSpace(path[1])
	case len(path) == 1 && path[0] == "meta":
		sp = spaceMeta
	case len(path) == 1 && path[0] == "macs":
		sp = spaceMACs
	case len(path) == 1 && path[0] == "bindings":
		sp = spaceBindings
	case len(path) == 1 && path[0] == "binding-prefix":
		sp = spaceBindingPrefix
	default:
		t.Fatalf("rawPut: no key space at %v", path)
	}
	err := s.b.Update(func(tx kv.Tx) error {
		if val == nil {
			return tx.Delete(sp, key)
		}
		return tx.Put(sp, key, val)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCheck(t *testing.T) {
	a1 := alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60")
	a2 := alloc("pod-a", "06:00:00:00:00:02", "2001:db8:200:10::/60")
	b1 := alloc("pod-b", "06:00:00:00:00:03", "2001:db8:300::/60")
	bind := testBinding("00:03:00:01:06:00:00:00:00:01", 1, "2001:db8:200::/60")
	record := func(a Allocation) []byte {
		v, err := EncodeAllocation(a)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	pk := func(p string) []byte { return PrefixKey(netip.MustParsePrefix(p)) }
	allocPath := func(pool string) []string { return []string{"pools", pool, "alloc"} }
	prefixPath := func(pool string) []string { return []string{"pools", pool, "prefix"} }

	for _, tc := range []struct {
		name    string
		pools   []Pool
		corrupt func(t *testing.T, s *Store)
		want    []string // substrings, one line each
	}{
		{name: "sound", corrupt: func(*testing.T, *Store) {}},
		{name: "schema", corrupt: func(t *testing.T, s *Store) {
			rawPut(t, s, []string{"meta"}, keySchema, []byte("9"))
		}, want: []string{`meta/schema: "9", want "1"`}},
		{name: "unconfigured pool", pools: []Pool{poolA}, corrupt: func(*testing.T, *Store) {},
			want: []string{`pools/pod-b: 1 allocation(s) in a pool that is not configured`}},
		{name: "undecodable record", corrupt: func(t *testing.T, s *Store) {
			rawPut(t, s, allocPath("pod-a"), a1.MAC, []byte("{"))
		}, want: []string{"pools/pod-a/alloc/06:00:00:00:00:01: does not decode"}},
		{name: "record names another MAC and pool", corrupt: func(t *testing.T, s *Store) {
			r := a1
			r.MAC, r.Pool = a2.MAC, "pod-b"
			rawPut(t, s, allocPath("pod-a"), a1.MAC, record(r))
		}, want: []string{`pools/pod-a/alloc/06:00:00:00:00:01: record says mac "06:00:00:00:00:02"`,
			`pools/pod-a/alloc/06:00:00:00:00:01: record says pool "pod-b"`}},
		{name: "bad state", corrupt: func(t *testing.T, s *Store) {
			r := a1
			r.State = "lost"
			rawPut(t, s, allocPath("pod-a"), a1.MAC, record(r))
		}, want: []string{`pools/pod-a/alloc/06:00:00:00:00:01: state "lost"`}},
		{name: "prefix outside pool and index gone", corrupt: func(t *testing.T, s *Store) {
			r := a1
			r.Prefix = netip.MustParsePrefix("2001:db8:999::/60")
			rawPut(t, s, allocPath("pod-a"), a1.MAC, record(r))
			rawPut(t, s, prefixPath("pod-a"), pk("2001:db8:999::/60"), a1.MAC)
		}, want: []string{"pools/pod-a/alloc/06:00:00:00:00:01: prefix 2001:db8:999::/60 not in pool",
			"pools/pod-a/prefix/2001:db8:200::/60: names 06:00:00:00:00:01, whose allocation is 2001:db8:999::/60"}},
		{name: "misaligned", corrupt: func(t *testing.T, s *Store) {
			r := a1
			r.Prefix = netip.MustParsePrefix("2001:db8:200:8::/60")
			rawPut(t, s, allocPath("pod-a"), a1.MAC, record(r))
			rawPut(t, s, prefixPath("pod-a"), pk("2001:db8:200::/60"), nil)
			rawPut(t, s, prefixPath("pod-a"), pk("2001:db8:200:8::/60"), a1.MAC)
		}, want: []string{"pools/pod-a/alloc/06:00:00:00:00:01: prefix 2001:db8:200:8::/60 in pool \"pod-a\" (/60)"}},
		{name: "prefix twice", corrupt: func(t *testing.T, s *Store) {
			r := a2
			r.Prefix = a1.Prefix
			rawPut(t, s, allocPath("pod-a"), a2.MAC, record(r))
		}, want: []string{"pools/pod-a/alloc/06:00:00:00:00:02: prefix 2001:db8:200::/60 also allocated at pools/pod-a/alloc/06:00:00:00:00:01",
			"pools/pod-a/alloc/06:00:00:00:00:02: pools/pod-a/prefix/2001:db8:200::/60 names 06:00:00:00:00:01 instead",
			"pools/pod-a/prefix/2001:db8:200:10::/60: names 06:00:00:00:00:02, whose allocation is 2001:db8:200::/60"}},
		{name: "MAC twice", corrupt: func(t *testing.T, s *Store) {
			r := b1
			r.MAC, r.Pool = a1.MAC, "pod-b"
			r.Prefix = netip.MustParsePrefix("2001:db8:300:10::/60")
			rawPut(t, s, allocPath("pod-b"), a1.MAC, record(r))
			rawPut(t, s, prefixPath("pod-b"), pk("2001:db8:300:10::/60"), a1.MAC)
		}, want: []string{`pools/pod-b/alloc/06:00:00:00:00:01: MAC also allocated in pool "pod-a"`,
			`pools/pod-b/alloc/06:00:00:00:00:01: macs/06:00:00:00:00:01 names pool "pod-a" instead`}},
		{name: "index entry missing", corrupt: func(t *testing.T, s *Store) {
			rawPut(t, s, prefixPath("pod-a"), pk("2001:db8:200::/60"), nil)
		}, want: []string{"pools/pod-a/alloc/06:00:00:00:00:01: prefix 2001:db8:200::/60 missing from pools/pod-a/prefix"}},
		{name: "stray index entries", corrupt: func(t *testing.T, s *Store) {
			rawPut(t, s, prefixPath("pod-a"), pk("2001:db8:200:20::/60"), mac("06:00:00:00:00:09"))
			rawPut(t, s, prefixPath("pod-a"), []byte("short"), a1.MAC)
		}, want: []string{"pools/pod-a/prefix/2001:db8:200:20::/60: names 06:00:00:00:00:09, which has no allocation",
			"pools/pod-a/prefix/73686f7274: malformed key"}},
		{name: "MAC index", corrupt: func(t *testing.T, s *Store) {
			rawPut(t, s, []string{"macs"}, a1.MAC, nil)
			rawPut(t, s, []string{"macs"}, mac("06:00:00:00:00:09"), []byte("pod-a"))
		}, want: []string{"pools/pod-a/alloc/06:00:00:00:00:01: MAC missing from macs",
			`macs/06:00:00:00:00:09: names pool "pod-a", which has no allocation for it`}},
		{name: "bindings", corrupt: func(t *testing.T, s *Store) {
			rawPut(t, s, []string{"binding-prefix"}, pk("2001:db8:200::/60"), nil)
			rawPut(t, s, []string{"binding-prefix"}, pk("2001:db8:200:30::/60"), []byte("gone"))
			rawPut(t, s, []string{"bindings"}, []byte("junk"), []byte("{"))
		}, want: []string{"bindings/0a00030001060000000001" + "00000001: prefix 2001:db8:200::/60 missing from binding-prefix",
			"binding-prefix/2001:db8:200:30::/60: names binding 676f6e65, which does not exist",
			"bindings/6a756e6b: does not decode"}},
		{name: "binding key mismatch", corrupt: func(t *testing.T, s *Store) {
			other := bind
			other.IAID = 2
			v, _ := json.Marshal(other)
			rawPut(t, s, []string{"bindings"}, bind.Key(), v)
		}, want: []string{"record's client DUID and IAID make key 0a000300010600000000010000000" + "2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t)
			mustPut(t, s, a1, a2, b1)
			if err := s.PutBindings([]Binding{bind}, nil); err != nil {
				t.Fatal(err)
			}
			tc.corrupt(t, s)
			pools := tc.pools
			if pools == nil {
				pools = testPools
			}
			lines, err := s.Check(pools)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				found := false
				for _, l := range lines {
					found = found || strings.Contains(l, w)
				}
				if !found {
					t.Errorf("no line contains %q", w)
				}
			}
			if len(lines) != len(tc.want) {
				t.Errorf("Check returned %d line(s), want %d:\n%s", len(lines), len(tc.want), strings.Join(lines, "\n"))
			}
		})
	}
}

func ExampleTx_LowestFree() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	st, err := Open(filepath.Join(dir, "state.db"), StoreOptions{Create: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	pool := Pool{Name: "77828509-4043-40bc-8756-7745c8ec7a99", Prefix: netip.MustParsePrefix("2001:db8:200::/40"),
		PrefixLen: 60, InterfaceID: "VLAN2701"}
	pools := []Pool{pool}
	for _, m := range []string{"06:32:b2:00:04:79", "06:32:b2:00:04:80"} {
		err := st.Update(pools, func(tx *Tx) error {
			p, err := tx.LowestFree(pool)
			if err != nil {
				return err
			}
			return tx.Put(Allocation{Pool: pool.Name, MAC: mac(m), Prefix: p, State: StateActive, Source: "sync"})
		})
		if err != nil {
			fmt.Println(err)
			return
		}
	}
	tab, _, err := st.LoadTable(pools)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, a := range tab.Allocations() {
		fmt.Println(a.MAC, a.Prefix)
	}
	// Output:
	// 06:32:b2:00:04:79 2001:db8:200::/60
	// 06:32:b2:00:04:80 2001:db8:200:10::/60
}

func TestLoadReportOrphanedByPool(t *testing.T) {
	if got := (LoadReport{}).OrphanedByPool(); got != nil {
		t.Errorf("no orphans: %v, want nil", got)
	}
	r := LoadReport{Orphaned: []Allocation{{Pool: "a"}, {Pool: "b"}, {Pool: "a"}}}
	if got := r.OrphanedByPool(); len(got) != 2 || got["a"] != 2 || got["b"] != 1 {
		t.Errorf("OrphanedByPool = %v", got)
	}
}

// TestPrefixUniqueAcrossPools: the store keeps the allocations of a pool
// the config no longer names. A pool that takes over its range (a mapping
// key renamed, same /40) must neither be handed those prefixes by
// LowestFree nor accept them in Put, nor anything overlapping them: a
// prefix belongs to at most one MAC in the whole store.
func TestPrefixUniqueAcrossPools(t *testing.T) {
	s := openTest(t)
	old := Pool{Name: "pod-old", Prefix: poolA.Prefix, PrefixLen: 60, InterfaceID: "VLAN2701"}
	renamed := Pool{Name: "pod-new", Prefix: poolA.Prefix, PrefixLen: 60, InterfaceID: "VLAN2701"}
	mustPutPools(t, s, []Pool{old},
		alloc("pod-old", "02:00:00:00:00:01", "2001:db8:200::/60"),
		alloc("pod-old", "02:00:00:00:00:02", "2001:db8:200:20::/60"))
	// A pool with /56 delegations over the same range.
	wide := Pool{Name: "pod-wide", Prefix: poolA.Prefix, PrefixLen: 56, InterfaceID: "VLAN9"}

	err := s.Update([]Pool{renamed, wide}, func(tx *Tx) error {
		got, err := tx.lowestFree(renamed, 3)
		if err != nil {
			return err
		}
		want := []netip.Prefix{netip.MustParsePrefix("2001:db8:200:10::/60"), netip.MustParsePrefix("2001:db8:200:30::/60"), netip.MustParsePrefix("2001:db8:200:40::/60")}
		if !slices.Equal(got, want) {
			t.Errorf("lowestFree in the renamed pool = %v, want %v (skipping what pod-old holds)", got, want)
		}
		if p, err := tx.LowestFree(wide); err != nil || p != netip.MustParsePrefix("2001:db8:200:100::/56") {
			t.Errorf("LowestFree of /56s = %v, %v; want 2001:db8:200:100::/56 (the first /56 overlaps pod-old's /60s)", p, err)
		}
		for _, a := range []Allocation{
			alloc("pod-new", "02:00:00:00:00:03", "2001:db8:200::/60"),
			alloc("pod-wide", "02:00:00:00:00:04", "2001:db8:200::/56"),
		} {
			if err := tx.Put(a); !errors.Is(err, ErrDuplicatePrefix) || !strings.Contains(err.Error(), `"pod-old"`) {
				t.Errorf("Put %s in %s = %v, want ErrDuplicatePrefix naming pod-old", a.Prefix, a.Pool, err)
			}
		}
		owner, in, ok := tx.PrefixElsewhere("pod-new", netip.MustParsePrefix("2001:db8:200:20::/60"))
		if !ok || in != "pod-old" || owner.String() != "02:00:00:00:00:02" {
			t.Errorf("PrefixElsewhere = %v, %q, %v", owner, in, ok)
		}
		if _, _, ok := tx.PrefixElsewhere("pod-old", netip.MustParsePrefix("2001:db8:200:20::/60")); ok {
			t.Error("PrefixElsewhere counts the pool's own prefix")
		}
		return tx.Put(alloc("pod-new", "02:00:00:00:00:05", "2001:db8:200:10::/60"))
	})
	if err != nil {
		t.Fatal(err)
	}
}
