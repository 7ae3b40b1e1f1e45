package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/etcdstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/internal/etcdtest"
)

// TestRaces: backends on separate clients allocate in the same pool at
// once. No prefix is given twice, none moves, and the losers of each race
// retried.
func TestRaces(t *testing.T) {
	c := sharedCluster(t)
	first := fencedStore(t, c, c.Client(t), etcdstore.Options{})
	p := first.Prefix()
	fence := leaderKey(t, c.Client(t), strings.TrimSuffix(p, "/")+"-race/leader")
	backends := []*etcdstore.Backend{first}
	for range 2 {
		b := open(t, c.Client(t), etcdstore.Options{Prefix: p})
		b.SetFence(fence) // as if each were the syncer: the compares alone keep them apart
		backends = append(backends, b)
	}
	first.SetFence(fence)
	const n = 30
	// got[i][m] is the prefix backend i saw m hold.
	got := make([]map[int]netip.Prefix, len(backends))
	run := func(macs func(i, j int) int) {
		var wg sync.WaitGroup
		for i, b := range backends {
			got[i] = map[int]netip.Prefix{}
			st := allocator.NewStore(b)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range n {
					m := macs(i, j)
					for {
						p, err := allocateLowest(st, mac(m))
						if errors.Is(err, etcdstore.ErrConflict) {
							continue // 8 tries lost in a row: try again
						}
						if err != nil {
							t.Errorf("backend %d, MAC %d: %v", i, m, err)
							return
						}
						got[i][m] = p
						break
					}
				}
			}()
		}
		wg.Wait()
	}
	check := func(want int) {
		t.Helper()
		// first's mirror holds the others' commits once its watch has
		// brought it to the cluster's revision.
		cur, err := c.Client(t).Get(context.Background(), "\x00", clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return first.Revision() >= cur.Header.Revision })
		st := allocator.NewStore(first)
		table := loadTable(t, st)
		if len(table) != want {
			t.Errorf("%d allocations, want %d", len(table), want)
		}
		held := map[string]netip.Prefix{}
		for _, a := range table {
			held[a.MAC.String()] = a.Prefix
		}
		for i := range got {
			for m, p := range got[i] {
				if held[mac(m).String()] != p {
					t.Errorf("backend %d saw %s hold %s, the store says %s: moved", i, mac(m), p, held[mac(m).String()])
				}
			}
		}
		checkSound(t, st) // no prefix twice, indexes whole
	}
	// Different MACs in the same pool: every one gets a prefix of its own.
	run(func(i, j int) int { return 1000*(i+1) + j })
	check(len(backends) * n)
	// The same MACs from every backend: one prefix each, whoever wins.
	run(func(_, j int) int { return 5000 + j })
	check(len(backends)*n + n)
	var retries int64
	for _, b := range backends {
		retries += b.Stats().Retries
	}
	t.Logf("retries: %d", retries)
	if retries == 0 {
		t.Error("no retry counted: the backends never raced")
	}
}

// TestBindingRaces: servers record bindings at once, unfenced, and none
// is lost.
func TestBindingRaces(t *testing.T) {
	c := sharedCluster(t)
	first := fencedStore(t, c, c.Client(t), etcdstore.Options{})
	backends := []*etcdstore.Backend{first}
	for range 2 {
		backends = append(backends, open(t, c.Client(t), etcdstore.Options{Prefix: first.Prefix()}))
	}
	const batches, per = 10, 20
	var wg sync.WaitGroup
	for i, b := range backends {
		st := allocator.NewStore(b)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range batches {
				var bs []allocator.Binding
				for k := range per {
					n := i*batches*per + j*per + k
					bs = append(bs, allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 6, byte(i), byte(j), byte(k)}, MAC: mac(n), IAID: 1,
						Pool: pool.Name, Prefix: nthPrefix(n), PreferredLifetime: 1, ValidLifetime: 2, Expires: t0, LastExchange: t0, LastMessage: "RENEW"})
				}
				if err := st.PutBindings(bs, nil); err != nil {
					t.Errorf("backend %d: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// first's mirror reads what the others committed once its watch has
	// brought it to the cluster's revision.
	cur, err := c.Client(t).Get(context.Background(), "\x00", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return first.Revision() >= cur.Header.Revision })
	all, err := allocator.NewStore(first).Bindings()
	if err != nil {
		t.Fatal(err)
	}
	if want := len(backends) * batches * per; len(all) != want {
		t.Errorf("%d bindings, want %d", len(all), want)
	}
	checkSound(t, allocator.NewStore(first))
}

// TestCompaction: a backend whose member is down while the others write
// and compact loads the table again when it is back, and converges.
func TestCompaction(t *testing.T) {
	c := etcdtest.Start(t, 3)
	cliA := c.Client(t)
	a := fencedStore(t, c, cliA, etcdstore.Options{})
	// b talks to member 2 only.
	cliB, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints()[2:], DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cliB.Close() })
	b := open(t, cliB, etcdstore.Options{Prefix: a.Prefix()})
	sa, sb := allocator.NewStore(a), allocator.NewStore(b)
	put := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if err := sa.Update([]allocator.Pool{pool}, func(tx *allocator.Tx) error { return tx.Put(alloc(i)) }); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(0, 5)
	waitFor(t, func() bool { return b.Revision() >= a.Revision() })
	c.Stop(2)
	put(5, 10)
	// A deletion too, which a reload must not miss.
	if err := sa.Update([]allocator.Pool{pool}, func(tx *allocator.Tx) error { return tx.Delete(pool.Name, mac(0)) }); err != nil {
		t.Fatal(err)
	}
	c.Compact(t)
	if got := loadTable(t, sb); len(got) != 5 {
		t.Errorf("b while its member is down: %d allocations, want the 5 it had", len(got))
	}
	c.Restart(2)
	waitFor(t, func() bool { return b.Revision() >= a.Revision() })
	if want, got := loadTable(t, sa), loadTable(t, sb); !reflect.DeepEqual(got, want) {
		t.Errorf("b after the compaction: %d allocations, a has %d", len(got), len(want))
	}
	if n := b.Stats().Reloads; n < 2 {
		t.Errorf("b loaded the table %d times, want a reload after the compaction", n)
	}
}

// TestOutage: with 2 of 3 members down, View answers from the mirror,
// Update fails within its timeout, State says disconnected; when they are
// back, the backend catches up.
func TestOutage(t *testing.T) {
	c := etcdtest.Start(t, 3)
	a := fencedStore(t, c, c.Client(t), etcdstore.Options{Timeout: 2 * time.Second})
	sa := allocator.NewStore(a)
	put := func(i int) error {
		return sa.Update([]allocator.Pool{pool}, func(tx *allocator.Tx) error { return tx.Put(alloc(i)) })
	}
	if err := put(1); err != nil {
		t.Fatal(err)
	}
	b := open(t, c.Client(t), etcdstore.Options{Prefix: a.Prefix(), Timeout: 2 * time.Second})
	c.Stop(1)
	c.Stop(2)
	start := time.Now()
	err := put(2)
	if err == nil || errors.Is(err, etcdstore.ErrFenced) {
		t.Fatalf("Update without quorum = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Update without quorum took %s", d)
	}
	t.Logf("Update without quorum: %v after %s", err, time.Since(start))
	if got := loadTable(t, allocator.NewStore(b)); len(got) != 1 {
		t.Errorf("View without quorum: %d allocations", len(got))
	}
	waitFor(t, func() bool { return !b.State().Connected })
	t.Logf("state without quorum: %+v", b.State())
	t0 := time.Now()
	c.Restart(1)
	c.Restart(2)
	t.Logf("members back in %s", time.Since(t0))
	if err := put(3); err != nil {
		t.Fatalf("Update after the members came back: %v", err)
	}
	t.Logf("first Update after %s", time.Since(t0))
	waitFor(t, func() bool { return b.State().Connected && b.Revision() >= a.Revision() })
	t.Logf("b caught up after %s", time.Since(t0))
	// The Update that timed out may have been applied once the quorum
	// was back (its proposal was in the log): 2 or 3, the same on both.
	want := loadTable(t, sa)
	if got := loadTable(t, allocator.NewStore(b)); len(got) < 2 || !reflect.DeepEqual(got, want) {
		t.Errorf("b after the outage: %d allocations, a has %d", len(got), len(want))
	}
}

// TestChunked: an Update of 10,000 allocations is committed in
// transactions of at most 128 compares and operations, and the table is
// the one bbolt holds after the same Update.
func TestChunked(t *testing.T) {
	c := sharedCluster(t)
	e := fencedStore(t, c, c.Client(t), etcdstore.Options{MaxOps: 128})
	bolt, err := boltstore.Open(filepath.Join(t.TempDir(), "state.db"), boltstore.Options{Create: true, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bolt.Close() })
	const n = 10000
	fill := func(b kv.Backend) {
		err := allocator.NewStore(b).Update([]allocator.Pool{pool}, func(tx *allocator.Tx) error {
			for i := range n {
				if err := tx.Put(alloc(i)); err != nil {
					return err
				}
			}
			// Rewrite some in a later group: the last write wins.
			for i := 0; i < n; i += 1000 {
				a := alloc(i)
				a.State, a.GoneAt = allocator.StateGone, t0.Add(time.Hour)
				if err := tx.Put(a); err != nil {
					return err
				}
			}
			return tx.Delete(pool.Name, mac(7))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	fill(e)
	t.Logf("10,000 allocations in %d etcd transactions, %s", e.Stats().Txns, time.Since(start))
	fill(bolt)
	if s := e.Stats(); s.Commits != 1 || s.Txns < 3*n/128 {
		t.Errorf("Stats = %+v: want one Update in some %d transactions", s, 3*n/128)
	}
	want := loadTable(t, allocator.NewStore(bolt))
	if got := loadTable(t, allocator.NewStore(e)); !reflect.DeepEqual(got, want) {
		t.Errorf("etcd holds %d allocations, bbolt %d, or they differ", len(got), len(want))
	}
	// And so does a backend loading it from etcd.
	other := open(t, c.Client(t), etcdstore.Options{Prefix: e.Prefix()})
	if got := loadTable(t, allocator.NewStore(other)); !reflect.DeepEqual(got, want) {
		t.Errorf("loaded from etcd: %d allocations, bbolt %d, or they differ", len(got), len(want))
	}
	checkSound(t, allocator.NewStore(other))
}

// TestChunkedFenced: the fence lost in the middle of a chunked Update
// stops it there: what was committed is whole allocations, and the error
// says so.
func TestChunkedFenced(t *testing.T) {
	c := sharedCluster(t)
	cli := c.Client(t)
	e := fencedStore(t, c, cli, etcdstore.Options{MaxOps: 32})
	fenceKey := strings.TrimSuffix(e.Prefix(), "/") + "-election/leader"
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e.Stats().Txns < 5 {
			time.Sleep(time.Millisecond)
		}
		_, _ = cli.Delete(ctxT(t), fenceKey)
	}()
	err := allocator.NewStore(e).Update([]allocator.Pool{pool}, func(tx *allocator.Tx) error {
		for i := range 2000 {
			if err := tx.Put(alloc(i)); err != nil {
				return err
			}
		}
		return nil
	})
	<-done
	if !errors.Is(err, etcdstore.ErrFenced) || !strings.Contains(err.Error(), "committed") {
		t.Fatalf("Update losing its fence midway = %v, want ErrFenced saying what was committed", err)
	}
	t.Log(err)
	other := open(t, cli, etcdstore.Options{Prefix: e.Prefix()})
	got := loadTable(t, allocator.NewStore(other))
	if len(got) == 0 || len(got) == 2000 {
		t.Errorf("%d allocations committed, want some but not all", len(got))
	}
	checkSound(t, allocator.NewStore(other)) // each allocation with its indexes
	for i, a := range got {
		if want := alloc(i); !reflect.DeepEqual(a, want) {
			t.Errorf("allocation %d = %+v, want %+v: not a prefix of the groups", i, a, want)
			break
		}
	}
}

// TestReconcileRaces: syncs from two backends at once, of listings that
// overlap (the same MACs) and differ (each its own MACs, which the other
// then marks gone): whoever commits, no MAC ever sees its prefix change
// and no prefix is given twice.
func TestReconcileRaces(t *testing.T) {
	c := sharedCluster(t)
	first := fencedStore(t, c, c.Client(t), etcdstore.Options{})
	fence := leaderKey(t, c.Client(t), strings.TrimSuffix(first.Prefix(), "/")+"-race/leader")
	first.SetFence(fence)
	second := open(t, c.Client(t), etcdstore.Options{Prefix: first.Prefix()})
	second.SetFence(fence)
	nics := func(from, to int) []allocator.NIC {
		var out []allocator.NIC
		for i := from; i < to; i++ {
			out = append(out, allocator.NIC{VMID: fmt.Sprintf("vm-%d", i), VMState: "Running", NICID: fmt.Sprintf("nic-%d", i), MAC: mac(i), IsDefault: true})
		}
		return out
	}
	listings := [][]allocator.NIC{
		append(nics(0, 20), nics(100, 120)...), // shared 0-19, own 100-119
		append(nics(0, 20), nics(200, 220)...), // shared 0-19, own 200-219
	}
	var mu sync.Mutex
	seen := map[string]netip.Prefix{}
	var wg sync.WaitGroup
	for i, b := range []*etcdstore.Backend{first, second} {
		st := allocator.NewStore(b)
		wg.Go(func() {
			for round := range 4 {
				_, err := st.Reconcile([]allocator.Pool{pool}, map[string][]allocator.NIC{pool.Name: listings[i]},
					allocator.SyncOptions{MaxReleaseFraction: 1, Force: true})
				if errors.Is(err, etcdstore.ErrConflict) {
					continue
				}
				if err != nil {
					t.Errorf("backend %d round %d: %v", i, round, err)
					return
				}
				// The backend's own view after its commit.
				for _, a := range loadTable(t, st) {
					mu.Lock()
					if p, ok := seen[a.MAC.String()]; ok && p != a.Prefix {
						t.Errorf("%s held %s, now %s: moved", a.MAC, p, a.Prefix)
					}
					seen[a.MAC.String()] = a.Prefix
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	st := allocator.NewStore(first)
	if got := loadTable(t, st); len(got) != 60 {
		t.Errorf("%d allocations, want 60", len(got))
	}
	checkSound(t, st)
	t.Logf("retries: %d and %d, conflicts %d and %d", first.Stats().Retries, second.Stats().Retries, first.Stats().Conflicts, second.Stats().Conflicts)
}

// TestBindingRenewalsDoNotConflict: servers recording bindings of their
// own at the same time, in updates of hundreds of renewals and a few new
// bindings (more keys read than a transaction compares one by one), never
// conflict: each key an update only reads (a renewed binding's prefix
// index entry) is compared in the transaction that writes what depends on
// it, not as a whole key range, into which the other servers' new
// bindings write.
func TestBindingRenewalsDoNotConflict(t *testing.T) {
	c := sharedCluster(t)
	first := fencedStore(t, c, c.Client(t), etcdstore.Options{})
	backends := []*etcdstore.Backend{first}
	for range 2 {
		backends = append(backends, open(t, c.Client(t), etcdstore.Options{Prefix: first.Prefix()}))
	}
	const rounds, per, fresh = 5, 300, 20
	binding := func(i, k int, at time.Time) allocator.Binding {
		n := 1000 + k*3 + i // the servers' prefixes interleave, as VMs' do
		return allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 7, byte(i), byte(k >> 8), byte(k)}, MAC: mac(n), IAID: 1,
			Pool: pool.Name, Prefix: nthPrefix(n), PreferredLifetime: 1, ValidLifetime: 2, Expires: at, LastExchange: at, LastMessage: "RENEW"}
	}
	var wg sync.WaitGroup
	for i, b := range backends {
		st := allocator.NewStore(b)
		wg.Go(func() {
			for r := range rounds {
				at := t0.Add(time.Duration(r) * time.Second)
				// The server's bindings renewed, and a few new ones
				// (whose prefix index entries are new keys).
				bs := make([]allocator.Binding, per+fresh)
				for k := range per {
					bs[k] = binding(i, k, at)
				}
				for k := range fresh {
					bs[per+k] = binding(i, per+r*fresh+k, at)
				}
				if err := st.PutBindings(bs, nil); err != nil {
					t.Errorf("server %d, round %d: %v", i, r, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for i, b := range backends {
		if s := b.Stats(); s.Retries != 0 || s.Conflicts != 0 {
			t.Errorf("server %d: %d retries, %d conflicts; want none (disjoint bindings)", i, s.Retries, s.Conflicts)
		}
	}
	checkSound(t, allocator.NewStore(first))
}
