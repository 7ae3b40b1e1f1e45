package etcdstore_test

import (
	"errors"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/etcdstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/internal/etcdtest"
)

// TestKinds: a backend mirroring some kinds holds none of the others'
// keys (at load and from the watch), does not count them as unknown, and
// a transaction touching their spaces fails with ErrNotMirrored.
func TestKinds(t *testing.T) {
	c := etcdtest.StartOne(t)
	a := fencedStore(t, c, c.Client(t), etcdstore.Options{})
	sa := allocator.NewStore(a)
	put := func(i int) {
		t.Helper()
		if err := sa.Update([]allocator.Pool{pool}, func(tx *allocator.Tx) error { return tx.Put(alloc(i)) }); err != nil {
			t.Fatal(err)
		}
	}
	put(0)
	if err := a.Update(func(tx kv.Tx) error {
		return tx.Put(kv.Space{Kind: kv.Bindings}, []byte("b0"), []byte("v0"))
	}); err != nil {
		t.Fatal(err)
	}
	b := open(t, c.Client(t), etcdstore.Options{Prefix: a.Prefix(), Kinds: []kv.Kind{kv.Meta, kv.Bindings, kv.BindingPrefix}})
	put(1) // seen by b's watch, skipped
	if err := a.Update(func(tx kv.Tx) error {
		return tx.Put(kv.Space{Kind: kv.Bindings}, []byte("b1"), []byte("v1"))
	}); err != nil {
		t.Fatal(err)
	}
	rev := a.Revision()
	waitFor(t, func() bool { return b.Revision() >= rev })

	var bindings []string
	var pools []string
	if err := b.View(func(tx kv.Tx) error {
		pools = tx.Pools()
		return tx.Scan(kv.Space{Kind: kv.Bindings}, nil, func(k, v []byte) error {
			bindings = append(bindings, string(k)+"="+string(v))
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	if len(bindings) != 2 || bindings[0] != "b0=v0" || bindings[1] != "b1=v1" {
		t.Errorf("bindings = %q, want b0=v0 b1=v1", bindings)
	}
	if len(pools) != 1 || pools[0] != pool.Name {
		t.Errorf("pools = %q (the markers are mirrored)", pools)
	}
	if n := b.Stats().UnknownKeys; n != 0 {
		t.Errorf("UnknownKeys = %d, want 0 (skipped kinds are not unknown)", n)
	}

	for name, fn := range map[string]func(kv.Tx) error{
		"get": func(tx kv.Tx) error {
			if v := tx.Get(kv.Space{Kind: kv.MACs}, mac(0)); v != nil {
				t.Errorf("Get of a skipped kind returned %q", v)
			}
			return nil
		},
		"seek": func(tx kv.Tx) error { tx.Seek(allocSpace(pool.Name), nil); return nil },
		"last": func(tx kv.Tx) error { tx.Last(kv.Space{Kind: kv.Prefix, Pool: pool.Name}, nil); return nil },
		"scan": func(tx kv.Tx) error {
			return tx.Scan(allocSpace(pool.Name), nil, func(k, v []byte) error {
				t.Errorf("Scan of a skipped kind found %x", k)
				return nil
			})
		},
	} {
		if err := b.View(fn); !errors.Is(err, etcdstore.ErrNotMirrored) {
			t.Errorf("View %s of a skipped kind: %v, want ErrNotMirrored", name, err)
		}
	}
	b.SetFence(leaderKey(t, c.Client(t), a.Prefix()+"x-leader"))
	for name, fn := range map[string]func(kv.Tx) error{
		"put":    func(tx kv.Tx) error { return tx.Put(kv.Space{Kind: kv.MACs}, mac(9), []byte(pool.Name)) },
		"delete": func(tx kv.Tx) error { return tx.Delete(allocSpace(pool.Name), mac(0)) },
		"get": func(tx kv.Tx) error {
			tx.Get(allocSpace(pool.Name), mac(0))
			return tx.Put(kv.Space{Kind: kv.Bindings}, []byte("b2"), []byte("v2"))
		},
	} {
		if err := b.Update(fn); !errors.Is(err, etcdstore.ErrNotMirrored) {
			t.Errorf("Update %s of a skipped kind: %v, want ErrNotMirrored", name, err)
		}
	}
	// Nothing of the refused updates was written.
	if got := loadTable(t, sa); len(got) != 2 {
		t.Errorf("allocations after the refused updates: %d, want 2", len(got))
	}
	if err := a.View(func(tx kv.Tx) error {
		if v := tx.Get(kv.Space{Kind: kv.Bindings}, []byte("b2")); v != nil {
			t.Errorf("a refused Update wrote b2")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestParseKey(t *testing.T) {
	const p = "/x/table/"
	for _, s := range []kv.Space{{Kind: kv.Alloc, Pool: "a/b%c"}, {Kind: kv.Prefix, Pool: "p"}, {Kind: kv.MACs}, {Kind: kv.Bindings}, {Kind: kv.Meta}} {
		key := etcdstore.SpacePrefix(p, s) + "\x01k/ey"
		got, k, ok := etcdstore.ParseKey(p, key)
		if !ok || got != s || string(k) != "\x01k/ey" {
			t.Errorf("ParseKey(%q) = %v %q %v, want %v", key, got, k, ok, s)
		}
	}
	for _, key := range []string{"/y/table/alloc/p/k", p + "pools/p", p + "nokind/k", p + "alloc/nopool", p + "alloc/%zz/k"} {
		if s, _, ok := etcdstore.ParseKey(p, key); ok {
			t.Errorf("ParseKey(%q) = %v, want not ok", key, s)
		}
	}
}

// FuzzExportedParseKey: a key ParseKey reads is its space's prefix and the key
// within it, whatever the bytes.
func FuzzExportedParseKey(f *testing.F) {
	const p = "/x/table/"
	for _, k := range []string{p + "alloc/a%2Fb/\x06\x00", p + "mac/\x01", p + "pools/a", p + "alloc/%zz/k", "/y/", p + "binding-prefix/k"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		s, k, ok := etcdstore.ParseKey(p, key)
		if !ok {
			return
		}
		if got := etcdstore.SpacePrefix(p, s) + string(k); got != key {
			t.Errorf("ParseKey(%q) = %v %q: rebuilt %q", key, s, k, got)
		}
	})
}
