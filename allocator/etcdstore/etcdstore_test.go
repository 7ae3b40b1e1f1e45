package etcdstore_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/etcdstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
	"github.com/cloudstack-pd/cloudstack-pd/internal/etcdtest"
)

var (
	t0   = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	pool = allocator.Pool{Name: "pod/a%", Prefix: netip.MustParsePrefix("2001:db8::/40"), PrefixLen: 60, InterfaceID: "VLAN1"}
)

func mac(i int) net.HardwareAddr {
	return net.HardwareAddr{6, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}
}

// nthPrefix is the i-th /60 of pool.
func nthPrefix(i int) netip.Prefix {
	a := pool.Prefix.Addr().As16()
	a[5], a[6], a[7] = byte(i>>12), byte(i>>4), byte(i<<4)
	return netip.PrefixFrom(netip.AddrFrom16(a), 60)
}

func alloc(i int) allocator.Allocation {
	return allocator.Allocation{Pool: pool.Name, MAC: mac(i), Prefix: nthPrefix(i), State: allocator.StateActive,
		Since: t0, Source: "sync", VMID: fmt.Sprintf("vm-%d", i)}
}

// allocateLowest gives m the lowest free prefix of pool unless it has one,
// as a sync does, and returns the prefix it holds.
func allocateLowest(st *allocator.Store, m net.HardwareAddr) (netip.Prefix, error) {
	var got netip.Prefix
	err := st.Update([]allocator.Pool{pool}, func(tx *allocator.Tx) error {
		if a, ok, err := tx.Get(pool.Name, m); err != nil || ok {
			got = a.Prefix
			return err
		}
		p, err := tx.LowestFree(pool)
		if err != nil {
			return err
		}
		got = p
		return tx.Put(allocator.Allocation{Pool: pool.Name, MAC: m, Prefix: p, State: allocator.StateActive, Since: t0, Source: "sync"})
	})
	return got, err
}

func loadTable(t *testing.T, st *allocator.Store) []allocator.Allocation {
	t.Helper()
	tbl, _, err := st.LoadTable([]allocator.Pool{pool})
	if err != nil {
		t.Fatal(err)
	}
	out := slices.Clone(tbl.Allocations())
	slices.SortFunc(out, func(a, b allocator.Allocation) int { return bytes.Compare(a.MAC, b.MAC) })
	return out
}

func checkSound(t *testing.T, st *allocator.Store) {
	t.Helper()
	lines, err := st.Check([]allocator.Pool{pool})
	if err != nil || len(lines) > 0 {
		t.Errorf("Check: %v\n%s", err, strings.Join(lines, "\n"))
	}
}

func TestOpen(t *testing.T) {
	c := etcdtest.StartOne(t)
	cli := c.Client(t)

	t.Run("NoStore", func(t *testing.T) {
		p := newPrefix()
		_, err := etcdstore.Open(ctxT(t), etcdstore.Options{Client: cli, Prefix: p})
		if !errors.Is(err, kv.ErrNoStore) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), c.Endpoints()[0]) || !strings.Contains(err.Error(), "--init") {
			t.Errorf("Open of an empty prefix = %v, want ErrNoStore naming the endpoints, the prefix and --init", err)
		}
	})
	t.Run("CreateThenOpen", func(t *testing.T) {
		p := newPrefix()
		b := open(t, cli, etcdstore.Options{Prefix: p, Create: true})
		if !b.Created() {
			t.Error("Created() = false for a new store")
		}
		b2 := open(t, cli, etcdstore.Options{Prefix: p})
		if b2.Created() {
			t.Error("Created() = true for an existing store")
		}
		_ = b2.View(func(tx kv.Tx) error {
			if v := tx.Get(kv.Space{Kind: kv.Meta}, []byte("schema")); string(v) != kv.SchemaVersion {
				t.Errorf("schema = %q", v)
			}
			return nil
		})
	})
	t.Run("NotStore", func(t *testing.T) {
		p := newPrefix()
		if _, err := cli.Put(ctxT(t), p+"other/thing", "x"); err != nil {
			t.Fatal(err)
		}
		_, err := etcdstore.Open(ctxT(t), etcdstore.Options{Client: cli, Prefix: p, Create: true})
		if !errors.Is(err, kv.ErrNotStore) {
			t.Errorf("Open of a prefix with foreign keys = %v, want ErrNotStore", err)
		}
	})
	t.Run("Schema", func(t *testing.T) {
		p := newPrefix()
		if _, err := cli.Put(ctxT(t), p+"meta/schema", "99"); err != nil {
			t.Fatal(err)
		}
		_, err := etcdstore.Open(ctxT(t), etcdstore.Options{Client: cli, Prefix: p})
		if !errors.Is(err, kv.ErrSchema) {
			t.Errorf("Open of schema 99 = %v, want ErrSchema", err)
		}
	})
	t.Run("ReadOnly", func(t *testing.T) {
		p := newPrefix()
		if _, err := etcdstore.Open(ctxT(t), etcdstore.Options{Client: cli, Prefix: p, Create: true, ReadOnly: true}); err == nil {
			t.Error("Open with Create and ReadOnly succeeded")
		}
		open(t, cli, etcdstore.Options{Prefix: p, Create: true})
		ro := open(t, cli, etcdstore.Options{Prefix: p, ReadOnly: true})
		err := ro.Update(func(tx kv.Tx) error { return tx.Put(kv.Space{Kind: kv.Meta}, []byte("k"), []byte("v")) })
		if !errors.Is(err, kv.ErrReadOnly) || !ro.ReadOnly() {
			t.Errorf("Update on a read-only backend = %v", err)
		}
	})
	t.Run("Discard", func(t *testing.T) {
		p := newPrefix()
		b := open(t, cli, etcdstore.Options{Prefix: p, Create: true})
		if err := allocator.NewStore(b).PutBindings(nil, nil); err != nil {
			t.Fatal(err)
		}
		if err := b.Discard(); err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Get(ctxT(t), p, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil || resp.Count != 0 {
			t.Errorf("after Discard: %d keys under the prefix, %v", resp.Count, err)
		}
	})
}

// TestPoolNames: pools whose names hold '/' and '%' keep apart, and
// Pools names them.
func TestPoolNames(t *testing.T) {
	c := etcdtest.StartOne(t)
	cli := c.Client(t)
	b := fencedStore(t, c, cli, etcdstore.Options{})
	names := []string{"a", "a/b", "a%2Fb", "a/", "%"}
	err := b.Update(func(tx kv.Tx) error {
		for i, n := range names {
			if err := tx.Put(kv.Space{Kind: kv.Alloc, Pool: n}, []byte("k"), []byte{byte(i)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Another backend reads them from etcd, not from its own writes.
	b2 := open(t, cli, etcdstore.Options{Prefix: b.Prefix()})
	_ = b2.View(func(tx kv.Tx) error {
		if got, want := tx.Pools(), slices.Sorted(slices.Values(names)); !slices.Equal(got, want) {
			t.Errorf("Pools() = %q, want %q", got, want)
		}
		for i, n := range names {
			var keys []string
			_ = tx.Scan(kv.Space{Kind: kv.Alloc, Pool: n}, nil, func(k, v []byte) error {
				keys = append(keys, fmt.Sprintf("%s=%d", k, v[0]))
				return nil
			})
			if want := []string{fmt.Sprintf("k=%d", i)}; !slices.Equal(keys, want) {
				t.Errorf("space of pool %q holds %q, want %q", n, keys, want)
			}
		}
		return nil
	})
}

// TestForeignKeys: keys under the prefix that are not of the layout are
// ignored and reported, never a crash; a known kind that does not parse
// is damage.
func TestForeignKeys(t *testing.T) {
	c := etcdtest.StartOne(t)
	cli := c.Client(t)
	b := fencedStore(t, c, cli, etcdstore.Options{})
	p := b.Prefix()
	st := allocator.NewStore(b)
	if err := st.Update([]allocator.Pool{pool}, func(tx *allocator.Tx) error { return tx.Put(alloc(1)) }); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"election/x", "noslash", "alloc/\xff\xfe"} {
		if _, err := cli.Put(ctxT(t), p+k, "junk"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return b.Stats().UnknownKeys >= 3 })
	if got := loadTable(t, st); len(got) != 1 {
		t.Errorf("table = %v", got)
	}
	lines, err := b.CheckStructure()
	if err != nil || len(lines) != 2 || !strings.Contains(lines[0], "does not parse") || !strings.Contains(lines[1], "election/x") {
		t.Errorf("CheckStructure = %q, %v", lines, err)
	}
	if err := b.Verify(false); !errors.Is(err, kv.ErrDamaged) {
		t.Errorf("Verify = %v, want ErrDamaged for alloc/\\xff\\xfe", err)
	}
	// A new backend loads them the same way.
	b2 := open(t, cli, etcdstore.Options{Prefix: p})
	if got := loadTable(t, allocator.NewStore(b2)); len(got) != 1 {
		t.Errorf("table loaded again = %v", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 15 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFence(t *testing.T) {
	c := etcdtest.StartOne(t)
	cli := c.Client(t)
	p := newPrefix()
	b := open(t, cli, etcdstore.Options{Prefix: p, Create: true})
	st := allocator.NewStore(b)
	put := func(i int) error {
		return st.Update([]allocator.Pool{pool}, func(tx *allocator.Tx) error { return tx.Put(alloc(i)) })
	}
	if err := put(1); !errors.Is(err, etcdstore.ErrNotFenced) {
		t.Errorf("Put without a fence = %v, want ErrNotFenced", err)
	}
	// Bindings and the server DUID are every server's to write.
	if _, err := st.ServerDUID(func() ([]byte, error) { return []byte{0, 3, 0, 1, 2, 3}, nil }); err != nil {
		t.Errorf("ServerDUID without a fence: %v", err)
	}
	key := p + "-election/leader"
	f := leaderKey(t, cli, key)
	b.SetFence(f)
	if err := put(1); err != nil {
		t.Fatalf("fenced Put: %v", err)
	}
	count := func() int64 {
		resp, err := cli.Get(ctxT(t), p+"alloc/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	if _, err := cli.Delete(ctxT(t), key); err != nil {
		t.Fatal(err)
	}
	if err := put(2); !errors.Is(err, etcdstore.ErrFenced) {
		t.Errorf("Put after the leader key went = %v, want ErrFenced", err)
	}
	// Created again (another leader, or the same server elected again):
	// still not the leadership the fence names.
	leaderKey(t, cli, key)
	if err := put(3); !errors.Is(err, etcdstore.ErrFenced) {
		t.Errorf("Put after the leader key was made again = %v, want ErrFenced", err)
	}
	if n := count(); n != 1 {
		t.Errorf("%d allocations in etcd, want 1: a fenced Update wrote", n)
	}
	if s := b.Stats(); s.Fenced != 2 || s.Retries != 0 {
		t.Errorf("Stats = %+v, want 2 fenced, no retry", s)
	}
}

// TestWatch: what one backend writes, another sees; a subscriber that
// reads late gets one merged Change.
func TestWatch(t *testing.T) {
	c := etcdtest.Start(t, 3)
	a := fencedStore(t, c, c.Client(t), etcdstore.Options{})
	p := a.Prefix()
	b := open(t, c.Client(t), etcdstore.Options{Prefix: p})
	changes, stop := b.Changes()
	defer stop()
	sa, sb := allocator.NewStore(a), allocator.NewStore(b)
	for i := range 3 {
		if err := sa.Update([]allocator.Pool{pool}, func(tx *allocator.Tx) error { return tx.Put(alloc(i)) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := sa.PutBindings([]allocator.Binding{{ClientDUID: []byte{0, 3, 0, 1, 6, 1}, MAC: mac(1), IAID: 1, Pool: pool.Name,
		Prefix: nthPrefix(1), PreferredLifetime: 1, ValidLifetime: 2, Expires: t0, LastExchange: t0, LastMessage: "REQUEST"}}, nil); err != nil {
		t.Fatal(err)
	}
	// a's View sees its own commits at once.
	if got := loadTable(t, sa); len(got) != 3 {
		t.Errorf("a's own table after its commits: %d allocations", len(got))
	}
	rev := a.Revision()
	waitFor(t, func() bool { return b.Revision() >= rev })
	if got := loadTable(t, sb); len(got) != 3 {
		t.Errorf("b's table: %d allocations", len(got))
	}
	var ch etcdstore.Change
	waitFor(t, func() bool {
		select {
		case c := <-changes:
			ch = ch.Merge(c)
		default:
		}
		return ch.Revision >= rev
	})
	for _, k := range []kv.Kind{kv.Alloc, kv.Prefix, kv.MACs, kv.Bindings, kv.BindingPrefix} {
		if !ch.Kinds.Has(k) {
			t.Errorf("Change %+v misses kind %s", ch, k)
		}
	}
	if !slices.Contains(ch.Pools, pool.Name) {
		t.Errorf("Change %+v misses pool %q", ch, pool.Name)
	}
	if st := b.State(); !st.Connected || st.Revision < rev || st.Err != nil {
		t.Errorf("State = %+v", st)
	}
}

// TestChangesCoalesce: a subscriber that does not read holds one Change
// covering every commit since, and the watch never waits for it.
func TestChangesCoalesce(t *testing.T) {
	c := etcdtest.StartOne(t)
	fake := clock.NewFake(t0)
	a := fencedStore(t, c, c.Client(t), etcdstore.Options{Clock: fake})
	if st := a.State(); !st.Since.Equal(t0) || !st.Loaded.Equal(t0) || !st.Connected {
		t.Errorf("State after Open = %+v, want connected, stamped by the clock given", st)
	}
	changes, stop := a.Changes()
	sa := allocator.NewStore(a)
	for i := range 5 {
		if err := sa.Update([]allocator.Pool{pool}, func(tx *allocator.Tx) error { return tx.Put(alloc(i)) }); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sa.ServerDUID(func() ([]byte, error) { return []byte{0, 3, 0, 1, 2, 3}, nil }); err != nil {
		t.Fatal(err)
	}
	rev := a.Revision()
	ch := <-changes
	if ch.Revision != rev || !ch.Kinds.Has(kv.Alloc) || !ch.Kinds.Has(kv.Meta) || ch.Kinds.Has(kv.Bindings) || !slices.Equal(ch.Pools, []string{pool.Name}) {
		t.Errorf("one Change after 6 commits = %+v, want revision %d, kinds alloc … meta, not binding, pool %q", ch, rev, pool.Name)
	}
	select {
	case ch := <-changes:
		t.Errorf("a second Change %+v: not coalesced", ch)
	default:
	}
	stop()
	if _, ok := <-changes; ok {
		t.Error("channel still open after unsubscribing")
	}
}

// TestUpdateCommitsNothing: an Update that fails, panics or writes nothing
// sends etcd nothing.
func TestUpdateCommitsNothing(t *testing.T) {
	c := etcdtest.StartOne(t)
	b := fencedStore(t, c, c.Client(t), etcdstore.Options{})
	meta := kv.Space{Kind: kv.Meta}
	boom := errors.New("boom")
	if err := b.Update(func(tx kv.Tx) error { _ = tx.Put(meta, []byte("a"), []byte("1")); return boom }); !errors.Is(err, boom) {
		t.Errorf("Update = %v, want fn's error", err)
	}
	func() {
		defer func() {
			if r := recover(); r != "bang" {
				t.Errorf("recovered %v, want fn's panic", r)
			}
		}()
		_ = b.Update(func(tx kv.Tx) error { _ = tx.Put(meta, []byte("a"), []byte("1")); panic("bang") })
	}()
	if err := b.Update(func(tx kv.Tx) error {
		_ = tx.Get(meta, []byte("schema"))
		return tx.Delete(meta, []byte("absent"))
	}); err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.Txns != 0 || s.Commits != 0 {
		t.Errorf("Stats = %+v, want no transaction", s)
	}
	_ = b.View(func(tx kv.Tx) error {
		if v := tx.Get(meta, []byte("a")); v != nil {
			t.Errorf("a = %q after an Update that failed", v)
		}
		return nil
	})
}

// TestChunkedBytes: an Update of large values is split so that each
// transaction stays under etcd's request size (1.5 MiB by default).
func TestChunkedBytes(t *testing.T) {
	c := etcdtest.StartOne(t)
	b := fencedStore(t, c, c.Client(t), etcdstore.Options{})
	big := bytes.Repeat([]byte("x"), 200<<10)
	sp := kv.Space{Kind: kv.Bindings}
	err := b.Update(func(tx kv.Tx) error {
		for i := range 20 { // 4 MB
			if err := tx.Put(sp, []byte{byte(i)}, big); err != nil {
				return err
			}
			tx.(kv.Grouper).EndGroup()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.Txns < 4 {
		t.Errorf("Stats = %+v: 4 MB in fewer than 4 transactions", s)
	}
	n := 0
	_ = b.View(func(tx kv.Tx) error {
		return tx.Scan(sp, nil, func(_, v []byte) error {
			if bytes.Equal(v, big) {
				n++
			}
			return nil
		})
	})
	if n != 20 {
		t.Errorf("%d of 20 values written", n)
	}
}
