package follower_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/etcdstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/cluster/follower"
	"github.com/cloudstack-pd/cloudstack-pd/internal/etcdtest"
)

var (
	t0    = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	poolA = allocator.Pool{Name: "pod/a%", Prefix: netip.MustParsePrefix("2001:db8::/40"), PrefixLen: 60, InterfaceID: "VLAN1"}
	poolB = allocator.Pool{Name: "pod-b", Prefix: netip.MustParsePrefix("2001:db9::/40"), PrefixLen: 56, InterfaceID: "VLAN2"}
	// poolC is in the table but not configured on the follower.
	poolC = allocator.Pool{Name: "pod-c", Prefix: netip.MustParsePrefix("2001:dba::/40"), PrefixLen: 56, InterfaceID: "VLAN3"}
	all   = []allocator.Pool{poolA, poolB, poolC}
	pools = []allocator.Pool{poolA, poolB}
)

const prefix = "/f/table/"

func mac(i int) net.HardwareAddr { return net.HardwareAddr{6, 0, 0, 0, byte(i >> 8), byte(i)} }

// writer is a fenced full backend: the syncer's.
func writer(t *testing.T, c *etcdtest.Cluster) (*allocator.Store, *etcdstore.Backend, *clientv3.Client) {
	t.Helper()
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := etcdstore.Open(ctx, etcdstore.Options{Client: cli, Prefix: prefix, Create: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Put(ctx, "/f/leader", "x", clientv3.WithLease(lease.ID))
	if err != nil {
		t.Fatal(err)
	}
	b.SetFence(&etcdstore.Fence{Key: "/f/leader", CreateRevision: resp.Header.Revision})
	return allocator.NewStore(b), b, cli
}

// churn makes n random changes, each in its own Update: a VM allocated
// the lowest free prefix, a state change, a release, a VM that moves to
// another pool (deleted in one, allocated in the other in one update),
// and a prefix that passes from a released VM to a new one in one update.
func churn(t *testing.T, st *allocator.Store, rng *rand.Rand, n int) {
	t.Helper()
	for range n {
		m := mac(rng.IntN(200))
		p := all[rng.IntN(len(all))]
		err := st.Update(all, func(tx *allocator.Tx) error {
			a, ok, err := tx.Lookup(m)
			if err != nil {
				return err
			}
			switch {
			case !ok:
				free, err := tx.LowestFree(p)
				if err != nil {
					return err
				}
				return tx.Put(allocator.Allocation{Pool: p.Name, MAC: m, Prefix: free, State: allocator.StateActive, Since: t0, Source: "sync", VMID: m.String()})
			case rng.IntN(4) == 0:
				return tx.Delete(a.Pool, m)
			case rng.IntN(4) == 0 && a.Pool != p.Name:
				if err := tx.Delete(a.Pool, m); err != nil {
					return err
				}
				free, err := tx.LowestFree(p)
				if err != nil {
					return err
				}
				return tx.Put(allocator.Allocation{Pool: p.Name, MAC: m, Prefix: free, State: allocator.StateActive, Since: t0, Source: "sync"})
			case rng.IntN(4) == 0:
				// The prefix goes to another MAC (a release and a new VM
				// in one sync).
				other := mac(200 + rng.IntN(50))
				if _, taken, _ := tx.Lookup(other); taken {
					return nil
				}
				if err := tx.Delete(a.Pool, m); err != nil {
					return err
				}
				a.MAC = other
				return tx.Put(a)
			default:
				a.State = allocator.StateGone
				if rng.IntN(2) == 0 {
					a.State = allocator.StateActive
				}
				a.Since = a.Since.Add(time.Minute)
				return tx.Put(a)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// encode returns the table's allocations, encoded, in MAC order.
func encode(t *testing.T, tbl *allocator.Table) []string {
	t.Helper()
	var out []string
	for _, a := range tbl.Allocations() {
		v, err := allocator.EncodeAllocation(a)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %s %s", a.Pool, a.MAC, v))
	}
	slices.Sort(out)
	return out
}

// want loads the table for pools from a full backend at the writer's
// revision.
func want(t *testing.T, cli *clientv3.Client, rev int64) (*allocator.Table, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := etcdstore.Open(ctx, etcdstore.Options{Client: cli, Prefix: prefix, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Revision() < rev {
		t.Fatalf("full backend at %d, writer at %d", b.Revision(), rev)
	}
	tbl, _, err := allocator.NewStore(b).LoadTable(pools)
	if err != nil {
		t.Fatal(err)
	}
	return tbl, b.Revision()
}

func waitRev(t *testing.T, f *follower.Follower, rev int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := f.WaitRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
}

func same(t *testing.T, what string, got, want *allocator.Table) {
	t.Helper()
	g, w := encode(t, got), encode(t, want)
	if !slices.Equal(g, w) {
		t.Errorf("%s: the follower's table (%d allocations) differs from LoadTable's (%d)", what, len(g), len(w))
		for i := range max(len(g), len(w)) {
			var a, b string
			if i < len(g) {
				a = g[i]
			}
			if i < len(w) {
				b = w[i]
			}
			if a != b {
				t.Errorf("first difference: got %q, want %q", a, b)
				break
			}
		}
	}
	// The table answers as LoadTable's does.
	for _, a := range want.Allocations() {
		if e, ok := got.Lookup(a.MAC); !ok || e.Prefix != a.Prefix {
			t.Errorf("%s: Lookup(%s) = %v %v, want %s", what, a.MAC, e, ok, a.Prefix)
		}
	}
}

// TestFollow: the follower's table equals LoadTable of a full backend
// after random changes by a fenced writer, after a compaction past its
// revision, and while the changes keep coming; what it swaps into Live is
// that table.
func TestFollow(t *testing.T) {
	c := etcdtest.StartOne(t)
	st, wb, cli := writer(t, c)
	rng := rand.New(rand.NewPCG(1, 2))
	churn(t, st, rng, 60)

	live := allocator.NewLive(nil)
	var mu sync.Mutex
	f := follower.New(follower.Options{Client: cli, Prefix: prefix, Live: live, Lock: &mu})
	ctx, cancel := context.WithCancel(context.Background())
	tbl, err := f.Load(ctx, pools)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := want(t, cli, wb.Revision())
	same(t, "first load", tbl, w)
	live.Swap(tbl)
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	defer func() { cancel(); <-done }()

	churn(t, st, rng, 150)
	waitRev(t, f, wb.Revision())
	w, _ = want(t, cli, wb.Revision())
	same(t, "after changes", live.Current(), w)
	if s := f.Stats(); s.Applied == 0 || s.Loads != 1 {
		t.Errorf("Stats = %+v, want events applied and one load", s)
	}
	if s := f.State(); !s.Connected || s.Revision < wb.Revision() {
		t.Errorf("State = %+v", s)
	}

	// A compaction past the follower's revision, while it is cut off: it
	// loads the table again.
	mu.Lock() // the follower waits to swap
	churn(t, st, rng, 20)
	c.Compact(t)
	mu.Unlock()
	churn(t, st, rng, 20)
	waitRev(t, f, wb.Revision())
	w, _ = want(t, cli, wb.Revision())
	same(t, "after the compaction", live.Current(), w)
}

// TestFollowCompacted: a watch resumed from a compacted revision loads
// the table again at a new one, and the follower then follows from there.
func TestFollowCompacted(t *testing.T) {
	c := etcdtest.StartOne(t)
	st, wb, cli := writer(t, c)
	rng := rand.New(rand.NewPCG(3, 4))
	churn(t, st, rng, 30)
	live := allocator.NewLive(nil)
	var mu sync.Mutex
	f := follower.New(follower.Options{Client: cli, Prefix: prefix, Live: live, Lock: &mu})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := f.Load(ctx, pools); err != nil {
		t.Fatal(err)
	}
	// Changes and a compaction before the follower watches.
	churn(t, st, rng, 30)
	c.Compact(t)
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	churn(t, st, rng, 10)
	waitRev(t, f, wb.Revision())
	w, _ := want(t, cli, wb.Revision())
	same(t, "after the compaction", live.Current(), w)
	if s := f.Stats(); s.Loads < 2 {
		t.Errorf("Stats = %+v, want a second load after the compaction", s)
	}
}

// TestLoadErrors: no table under the prefix is kv.ErrNoStore; an
// allocation outside its configured pool fails the load as LoadTable.
func TestLoadErrors(t *testing.T) {
	c := etcdtest.StartOne(t)
	cli := c.Client(t)
	f := follower.New(follower.Options{Client: cli, Prefix: "/nothing/table/"})
	if _, err := f.Load(context.Background(), pools); !errors.Is(err, kv.ErrNoStore) {
		t.Errorf("Load of an empty prefix: %v, want ErrNoStore", err)
	}
	st, _, _ := writer(t, c)
	if err := st.Update(all, func(tx *allocator.Tx) error {
		return tx.Put(allocator.Allocation{Pool: poolB.Name, MAC: mac(1), Prefix: netip.MustParsePrefix("2001:db9:0:100::/56"), State: allocator.StateActive, Since: t0, Source: "sync"})
	}); err != nil {
		t.Fatal(err)
	}
	narrow := poolB
	narrow.PrefixLen = 60
	f = follower.New(follower.Options{Client: cli, Prefix: prefix})
	if _, err := f.Load(context.Background(), []allocator.Pool{narrow}); !errors.Is(err, allocator.ErrPrefixLength) {
		t.Errorf("Load with a pool whose prefix-len changed: %v, want ErrPrefixLength", err)
	}
	tbl, err := f.Load(context.Background(), pools)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := tbl.Lookup(mac(1)); !ok || !bytes.Equal(e.MAC, mac(1)) {
		t.Errorf("Lookup after the load: %v %v", e, ok)
	}
}

// TestFollowBadRecord: an allocation record that does not decode leaves
// the table in force as it was and the follower not following (State says
// why); once the record is fixed, it loads the table again and follows.
func TestFollowBadRecord(t *testing.T) {
	c := etcdtest.StartOne(t)
	st, wb, cli := writer(t, c)
	rng := rand.New(rand.NewPCG(5, 6))
	churn(t, st, rng, 20)
	live := allocator.NewLive(nil)
	var mu sync.Mutex
	f := follower.New(follower.Options{Client: cli, Prefix: prefix, Live: live, Lock: &mu})
	ctx, cancel := context.WithCancel(context.Background())
	tbl, err := f.Load(ctx, pools)
	if err != nil {
		t.Fatal(err)
	}
	live.Swap(tbl)
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	defer func() { cancel(); <-done }()

	bad := etcdstore.SpacePrefix(prefix, kv.Space{Kind: kv.Alloc, Pool: poolA.Name}) + string(mac(999))
	if _, err := cli.Put(ctx, bad, "{not json"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for f.State().Connected || f.State().Err == nil {
		if time.Now().After(deadline) {
			t.Fatalf("State = %+v after a bad record, want not connected with the error", f.State())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if live.Current() != tbl {
		t.Error("the table in force changed on a bad record")
	}
	if _, err := cli.Delete(ctx, bad); err != nil {
		t.Fatal(err)
	}
	churn(t, st, rng, 5)
	waitRev(t, f, wb.Revision())
	w, _ := want(t, cli, wb.Revision())
	same(t, "after the fix", live.Current(), w)
}
