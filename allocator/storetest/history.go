package storetest

import (
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// The history and the operator's actions, on any backend.

// updateAs runs fn in one transaction as actor.
func updateAs(t *testing.T, st *allocator.Store, ps []allocator.Pool, actor allocator.Actor, fn func(tx *allocator.Tx) error) {
	t.Helper()
	err := st.Update(ps, func(tx *allocator.Tx) error {
		tx.SetActor(actor)
		return fn(tx)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func putAs(t *testing.T, st *allocator.Store, at time.Time, as ...allocator.Allocation) {
	t.Helper()
	updateAs(t, st, pools, allocator.Actor{At: at, By: "sync"}, func(tx *allocator.Tx) error {
		for _, a := range as {
			if err := tx.Put(a); err != nil {
				return err
			}
		}
		return nil
	})
}

// eventLine is what a test compares of an event.
type eventLine struct {
	At               time.Time
	Event, Pool, MAC string
	Prefix           string
	State, Prev      allocator.State
	By               string
}

func lines(es []allocator.HistoryEvent) []eventLine {
	out := make([]eventLine, len(es))
	for i, e := range es {
		out[i] = eventLine{e.At, e.Event, e.Pool, e.MAC.String(), e.Prefix.String(), e.State, e.PrevState, e.By}
	}
	return out
}

func history(t *testing.T, st *allocator.Store, q allocator.HistoryQuery) []eventLine {
	t.Helper()
	es, err := st.History(q)
	if err != nil {
		t.Fatal(err)
	}
	return lines(es)
}

func testHistoryOfChanges(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	a1 := alloc("pod-a", 1, "2001:db8:200::/60")
	putAs(t, st, t0, a1)
	gone := a1
	gone.State, gone.GoneAt = allocator.StateGone, t0.Add(time.Hour)
	a2 := alloc("pod-a", 2, "2001:db8:200:10::/60")
	a2.Source = allocator.ImportSource
	putAs(t, st, t0.Add(time.Hour), gone, a2)
	putAs(t, st, t0.Add(2*time.Hour), a1) // back
	renamed := a1
	renamed.VMName = "web-2"
	putAs(t, st, t0.Add(3*time.Hour), renamed)
	cidr := renamed
	cidr.IP6CIDR = netip.MustParsePrefix("2001:db8:100::/64")
	putAs(t, st, t0.Add(4*time.Hour), cidr) // not an event
	updateAs(t, st, pools, allocator.Actor{At: t0.Add(5 * time.Hour), By: "sync"}, func(tx *allocator.Tx) error {
		return tx.Delete("pod-a", mac(1))
	})

	m1, p1 := mac(1).String(), "2001:db8:200::/60"
	want := []eventLine{
		{t0, allocator.EventAllocated, "pod-a", m1, p1, allocator.StateActive, "", "sync"},
		{t0.Add(time.Hour), allocator.EventGone, "pod-a", m1, p1, allocator.StateGone, allocator.StateActive, "sync"},
		{t0.Add(2 * time.Hour), allocator.EventBack, "pod-a", m1, p1, allocator.StateActive, allocator.StateGone, "sync"},
		{t0.Add(3 * time.Hour), allocator.EventUpdated, "pod-a", m1, p1, allocator.StateActive, allocator.StateActive, "sync"},
		{t0.Add(5 * time.Hour), allocator.EventReleased, "pod-a", m1, p1, "", allocator.StateActive, "sync"},
	}
	if got := history(t, st, allocator.HistoryQuery{MAC: mac(1)}); !reflect.DeepEqual(got, want) {
		t.Errorf("history of %s:\n%+v\nwant\n%+v", m1, got, want)
	}
	// By prefix: any overlap, here a /64 inside a1's /60.
	if got := history(t, st, allocator.HistoryQuery{Prefix: netip.MustParsePrefix("2001:db8:200:1::/64")}); !reflect.DeepEqual(got, want) {
		t.Errorf("history of a /64 of %s:\n%+v\nwant\n%+v", p1, got, want)
	}
	adopted := eventLine{t0.Add(time.Hour), allocator.EventAdopted, "pod-a", mac(2).String(), "2001:db8:200:10::/60", allocator.StateActive, "", "sync"}
	if got := history(t, st, allocator.HistoryQuery{Prefix: poolA.Prefix}); len(got) != 6 || got[2] != adopted {
		t.Errorf("history of the pool: %+v, want 6 events, the third %+v", got, adopted)
	}
	checkSound(t, st)
}

func testHistorySameInstant(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	putAs(t, st, t0, alloc("pod-a", 1, "2001:db8:200::/60"), alloc("pod-a", 2, "2001:db8:200:10::/60"))
	putAs(t, st, t0, alloc("pod-a", 3, "2001:db8:200:20::/60"), alloc("pod-a", 4, "2001:db8:200:30::/60"))
	got := history(t, st, allocator.HistoryQuery{})
	var macs []string
	for _, e := range got {
		macs = append(macs, e.MAC)
	}
	want := []string{mac(1).String(), mac(2).String(), mac(3).String(), mac(4).String()}
	if !slices.Equal(macs, want) {
		t.Errorf("events of one instant in two transactions: %v, want %v in write order", macs, want)
	}
}

func testHistoryRollsBack(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	boom := errors.New("boom")
	err := st.Update(pools, func(tx *allocator.Tx) error {
		if err := tx.Put(alloc("pod-a", 1, "2001:db8:200::/60")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if got := history(t, st, allocator.HistoryQuery{}); len(got) != 0 {
		t.Errorf("a rolled-back change left history events: %+v", got)
	}
}

func testHistoryPrune(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	for i := range 5 {
		putAs(t, st, t0.Add(time.Duration(i)*time.Hour), alloc("pod-b", i+1, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 1, 0x0d, 0xb8, 3, 0, 0, byte(i << 4)}), 60).String()))
	}
	cut := t0.Add(150 * time.Minute) // before the events at 3h and 4h
	for _, want := range []int{2, 1, 0} {
		n, err := st.PruneHistory(cut, 2)
		if err != nil || n != want {
			t.Fatalf("PruneHistory(…, 2) = %d, %v, want %d", n, err, want)
		}
	}
	got := history(t, st, allocator.HistoryQuery{})
	if len(got) != 2 || !got[0].At.Equal(t0.Add(3*time.Hour)) || !got[1].At.Equal(t0.Add(4*time.Hour)) {
		t.Errorf("after pruning: %+v, want the events at 3h and 4h", got)
	}
	checkSound(t, st)
}

func testHeldAt(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	p := "2001:db8:200::/60"
	a1 := alloc("pod-a", 1, p)
	a2 := alloc("pod-a", 2, "2001:db8:200:10::/60")
	putAs(t, st, t0, a1, a2)
	gone := a1
	gone.State, gone.GoneAt = allocator.StateGone, t0.Add(24*time.Hour)
	putAs(t, st, t0.Add(24*time.Hour), gone)
	q := gone
	q.State, q.QuarantinedAt = allocator.StateQuarantined, t0.Add(48*time.Hour)
	putAs(t, st, t0.Add(48*time.Hour), q)
	updateAs(t, st, pools, allocator.Actor{At: t0.Add(96 * time.Hour), By: "sync"}, func(tx *allocator.Tx) error {
		return tx.Delete("pod-a", mac(1))
	})
	a3 := alloc("pod-a", 3, p)
	a3.Since = t0.Add(100 * time.Hour)
	putAs(t, st, t0.Add(100*time.Hour), a3)

	held := func(prefix string, at time.Duration) []string {
		t.Helper()
		hs, err := st.HeldAt(allocator.HistoryQuery{Prefix: netip.MustParsePrefix(prefix)}, t0.Add(at))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, h := range hs {
			out = append(out, h.MAC.String()+" "+string(h.State)+" "+h.Basis)
		}
		return out
	}
	m1, m2, m3 := mac(1).String(), mac(2).String(), mac(3).String()
	for _, tc := range []struct {
		prefix string
		at     time.Duration
		want   []string
	}{
		{p, -time.Hour, nil},
		{p, time.Hour, []string{m1 + " active history"}},
		{p, 30 * time.Hour, []string{m1 + " gone history"}},
		{p, 50 * time.Hour, []string{m1 + " quarantined history"}},
		{p, 97 * time.Hour, nil},
		{"2001:db8:200::/64", 101 * time.Hour, []string{m3 + " active history"}},
		{"2001:db8:200::/56", time.Hour, []string{m1 + " active history", m2 + " active history"}},
	} {
		if got := held(tc.prefix, tc.at); !slices.Equal(got, tc.want) {
			t.Errorf("HeldAt(%s, t0%+v) = %q, want %q", tc.prefix, tc.at, got, tc.want)
		}
	}
	// Pruned: a2 has no event left (the store says since when it is
	// held); m1's state at 40h is the one before its next event.
	if _, err := st.PruneHistory(t0.Add(30*time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	if got, want := held("2001:db8:200:10::/60", 40*time.Hour), []string{m2 + " active current"}; !slices.Equal(got, want) {
		t.Errorf("HeldAt after pruning a2's events = %q, want %q", got, want)
	}
	if got, want := held(p, 40*time.Hour), []string{m1 + " gone history-after"}; !slices.Equal(got, want) {
		t.Errorf("HeldAt after pruning m1's first events = %q, want %q", got, want)
	}
}

func getAlloc(t *testing.T, st *allocator.Store, ps []allocator.Pool, m int) (allocator.Allocation, bool) {
	t.Helper()
	var a allocator.Allocation
	var ok bool
	err := st.View(ps, func(tx *allocator.Tx) (err error) {
		a, ok, err = tx.Lookup(mac(m))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return a, ok
}

var admin = allocator.Actor{At: t0.Add(time.Hour), By: "admin alice", Note: "test"}

func testRelease(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	mustPut(t, st, alloc("pod-a", 1, "2001:db8:200::/60"))
	rep, err := st.Admin(pools, admin, false, func(tx *allocator.Tx) error { return tx.Release(mac(1)) })
	if err != nil {
		t.Fatal(err)
	}
	want := []eventLine{{admin.At, allocator.EventQuarantined, "pod-a", mac(1).String(), "2001:db8:200::/60", allocator.StateQuarantined, allocator.StateActive, "admin alice"}}
	if got := lines(rep.Events); !rep.Written || !reflect.DeepEqual(got, want) {
		t.Errorf("Release report: written %v, %+v\nwant %+v", rep.Written, got, want)
	}
	if got := history(t, st, allocator.HistoryQuery{MAC: mac(1)}); len(got) != 2 || got[1] != want[0] {
		t.Errorf("history: %+v, want the release last", got)
	}
	a, _ := getAlloc(t, st, pools, 1)
	if a.State != allocator.StateQuarantined || !a.QuarantinedAt.Equal(admin.At) || !a.GoneAt.Equal(admin.At) {
		t.Errorf("released allocation: %+v", a)
	}
	for _, tc := range []struct {
		mac  int
		want error
	}{{1, allocator.ErrNothingToDo}, {9, allocator.ErrNoAllocation}} {
		_, err := st.Admin(pools, admin, false, func(tx *allocator.Tx) error { return tx.Release(mac(tc.mac)) })
		if !errors.Is(err, tc.want) {
			t.Errorf("Release(%s) = %v, want %v", mac(tc.mac), err, tc.want)
		}
	}
	checkSound(t, st)
}

func testMove(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	a1 := alloc("pod-a", 1, "2001:db8:200::/60")
	a1.VMName = "web-1"
	mustPut(t, st, a1, alloc("pod-b", 2, "2001:db8:300::/60"))
	rep, err := st.Admin(pools, admin, false, func(tx *allocator.Tx) error { return tx.Move(mac(1), "pod-b") })
	if err != nil {
		t.Fatal(err)
	}
	m1 := mac(1).String()
	want := []eventLine{
		{admin.At, allocator.EventQuarantined, "pod-a", m1, "2001:db8:200::/60", allocator.StateQuarantined, allocator.StateActive, "admin alice"},
		{admin.At, allocator.EventMoved, "pod-b", m1, "2001:db8:300:10::/60", allocator.StateActive, "", "admin alice"},
	}
	if got := lines(rep.Events); !reflect.DeepEqual(got, want) {
		t.Errorf("Move report:\n%+v\nwant\n%+v", got, want)
	}
	if e := rep.Events[1]; e.FromPool != "pod-a" || e.FromPrefix != a1.Prefix || e.VMName != "web-1" {
		t.Errorf("moved event: %+v", e)
	}
	a, ok := getAlloc(t, st, pools, 1)
	if !ok || a.Pool != "pod-b" || a.Prefix != netip.MustParsePrefix("2001:db8:300:10::/60") || a.State != allocator.StateActive ||
		!a.Since.Equal(admin.At) || a.Source != allocator.AdminSource || a.VMName != "web-1" {
		t.Errorf("moved allocation: %+v, %v", a, ok)
	}
	// The old prefix is held: taken in its pool and across pools, not
	// served, not in the table.
	err = st.View(pools, func(tx *allocator.Tx) error {
		if free, err := tx.LowestFree(poolA); err != nil || free != netip.MustParsePrefix("2001:db8:200:10::/60") {
			t.Errorf("LowestFree(pod-a) = %s, %v: the held prefix is free", free, err)
		}
		held, err := tx.Held()
		if err != nil || len(held) != 1 || held[0].Prefix != a1.Prefix || held[0].State != allocator.StateQuarantined || !held[0].QuarantinedAt.Equal(admin.At) {
			t.Errorf("Held = %+v, %v", held, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []allocator.Allocation{alloc("pod-a", 5, "2001:db8:200::/60"), alloc("pod-over", 6, "2001:db8:200:3::/64")} {
		if err := st.Update(pools, func(tx *allocator.Tx) error { return tx.Put(a) }); !errors.Is(err, allocator.ErrDuplicatePrefix) {
			t.Errorf("Put %s of %s = %v, want ErrDuplicatePrefix (held)", a.Prefix, a.Pool, err)
		}
	}
	if got := loadAll(t, st); len(got) != 2 || got[0].Pool != "pod-b" {
		t.Errorf("table: %+v", got)
	}
	// A listing by prefix skips the held one.
	err = st.View(pools, func(tx *allocator.Tx) error {
		return tx.ForEachByPrefix("pod-a", func(a allocator.Allocation) error {
			t.Errorf("pod-a lists %+v", a)
			return nil
		})
	})
	if err != nil {
		t.Errorf("ForEachByPrefix over a held prefix: %v", err)
	}
	for _, tc := range []struct {
		pool string
		want error
	}{{"pod-b", allocator.ErrNothingToDo}, {"pod-z", allocator.ErrUnknownPool}} {
		_, err := st.Admin(pools, admin, false, func(tx *allocator.Tx) error { return tx.Move(mac(1), tc.pool) })
		if !errors.Is(err, tc.want) {
			t.Errorf("Move to %s = %v, want %v", tc.pool, err, tc.want)
		}
	}
	checkSound(t, st)
}

var poolOld = allocator.Pool{Name: "pod-old", Prefix: netip.MustParsePrefix("2001:db8:400::/56"), PrefixLen: 60, InterfaceID: "VLAN4"}

func testForgetPool(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	withOld := append(slices.Clone(pools), poolOld)
	updateAs(t, st, withOld, allocator.Actor{At: t0, By: "sync"}, func(tx *allocator.Tx) error {
		for i, p := range []string{"2001:db8:400::/60", "2001:db8:400:10::/60"} {
			if err := tx.Put(alloc("pod-old", i+1, p)); err != nil {
				return err
			}
		}
		return nil
	})
	if lines, err := st.Check(pools); err != nil || len(lines) != 1 {
		t.Fatalf("Check with pod-old unmapped: %v %q, want one line", err, lines)
	}
	var n int
	rep, err := st.Admin(pools, admin, false, func(tx *allocator.Tx) (err error) {
		n, err = tx.ForgetPool("pod-old")
		return err
	})
	if err != nil || n != 2 || len(rep.Events) != 2 || rep.Events[0].Event != allocator.EventQuarantined || rep.Events[0].Pool != "pod-old" {
		t.Fatalf("ForgetPool = %d, %v, %+v", n, err, rep)
	}
	checkSound(t, st) // pod-old no longer fails check
	// Its MACs may have an allocation elsewhere at once.
	mustPut(t, st, alloc("pod-a", 1, "2001:db8:200::/60"))
	for _, tc := range []struct {
		pool string
		want error
	}{{"pod-a", allocator.ErrPoolConfigured}, {"pod-none", allocator.ErrNothingToDo}} {
		_, err := st.Admin(pools, admin, false, func(tx *allocator.Tx) error { _, err := tx.ForgetPool(tc.pool); return err })
		if !errors.Is(err, tc.want) {
			t.Errorf("ForgetPool(%s) = %v, want %v", tc.pool, err, tc.want)
		}
	}
	checkSound(t, st)
}

func testHeldExpires(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	mustPut(t, st, alloc("pod-a", 1, "2001:db8:200::/60"))
	if _, err := st.Admin(pools, admin, false, func(tx *allocator.Tx) error { return tx.Move(mac(1), "pod-b") }); err != nil {
		t.Fatal(err)
	}
	listings := map[string][]allocator.NIC{"pod-a": nil, "pod-over": nil,
		"pod-b": {{MAC: mac(1), VMID: "vm-1", VMState: "Running", IsDefault: true}}}
	reconcile := func(after time.Duration) *allocator.SyncReport {
		t.Helper()
		rep, err := st.Reconcile(pools, listings, allocator.SyncOptions{Quarantine: 48 * time.Hour, Now: func() time.Time { return admin.At.Add(after) }})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := reconcile(47 * time.Hour); len(rep.ReleasedHeld) != 0 {
		t.Errorf("held prefix released before its quarantine: %+v", rep.ReleasedHeld)
	}
	rep := reconcile(48 * time.Hour)
	if len(rep.ReleasedHeld) != 1 || rep.ReleasedHeld[0].Prefix != netip.MustParsePrefix("2001:db8:200::/60") || !rep.Written || rep.Totals().Released != 1 {
		t.Errorf("sync after the quarantine: released %+v, written %v", rep.ReleasedHeld, rep.Written)
	}
	err := st.View(pools, func(tx *allocator.Tx) error {
		if free, err := tx.LowestFree(poolA); err != nil || free != netip.MustParsePrefix("2001:db8:200::/60") {
			t.Errorf("LowestFree(pod-a) = %s, %v, want the released prefix", free, err)
		}
		if held, _ := tx.Held(); len(held) != 0 {
			t.Errorf("still held: %+v", held)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got := history(t, st, allocator.HistoryQuery{Prefix: netip.MustParsePrefix("2001:db8:200::/60")})
	if last := got[len(got)-1]; last.Event != allocator.EventReleased || last.By != "sync" || last.Pool != "pod-a" {
		t.Errorf("last event of the held prefix: %+v", last)
	}
	checkSound(t, st)
}

func testAdminDryRun(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	mustPut(t, st, alloc("pod-a", 1, "2001:db8:200::/60"))
	before := history(t, st, allocator.HistoryQuery{})
	rep, err := st.Admin(pools, admin, true, func(tx *allocator.Tx) error { return tx.Move(mac(1), "pod-b") })
	if err != nil || !rep.DryRun || rep.Written || len(rep.Events) != 2 {
		t.Fatalf("dry run: %+v, %v", rep, err)
	}
	if a, _ := getAlloc(t, st, pools, 1); a.Pool != "pod-a" {
		t.Errorf("a dry run moved the allocation: %+v", a)
	}
	if after := history(t, st, allocator.HistoryQuery{}); !reflect.DeepEqual(after, before) {
		t.Errorf("a dry run wrote history: %+v", after)
	}
	_ = st.View(pools, func(tx *allocator.Tx) error {
		if held, _ := tx.Held(); len(held) != 0 {
			t.Errorf("a dry run held %+v", held)
		}
		return nil
	})
}

func testCopyHeldAndHistory(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	mustPut(t, st, alloc("pod-a", 1, "2001:db8:200::/60"), alloc("pod-b", 2, "2001:db8:300::/60"))
	if _, err := st.Admin(pools, admin, false, func(tx *allocator.Tx) error { return tx.Move(mac(1), "pod-b") }); err != nil {
		t.Fatal(err)
	}
	cp := allocator.NewStore(NewMemory())
	if _, err := allocator.CopyInto(cp, st); err != nil {
		t.Fatal(err)
	}
	checkSound(t, cp)
	if got, want := loadAll(t, cp), loadAll(t, st); !reflect.DeepEqual(got, want) {
		t.Errorf("copy holds %+v\nwant %+v", got, want)
	}
	if got, want := history(t, cp, allocator.HistoryQuery{}), history(t, st, allocator.HistoryQuery{}); !reflect.DeepEqual(got, want) {
		t.Errorf("copy's history %+v\nwant %+v", got, want)
	}
	if lines, err := cp.Check(pools); err != nil || len(lines) != 0 {
		t.Errorf("copy: %v %q", err, lines)
	}
}

// A held prefix is given to nobody, not even back to its own MAC, until
// the sync releases it.
func testHeldNotRetaken(t *testing.T, b kv.Backend) {
	st := allocator.NewStore(b)
	mustPut(t, st, alloc("pod-a", 1, "2001:db8:200::/60"))
	if _, err := st.Admin(pools, admin, false, func(tx *allocator.Tx) error { return tx.Move(mac(1), "pod-b") }); err != nil {
		t.Fatal(err)
	}
	updateAs(t, st, pools, admin, func(tx *allocator.Tx) error { return tx.Delete("pod-b", mac(1)) })
	for _, m := range []int{1, 2} {
		err := st.Update(pools, func(tx *allocator.Tx) error { return tx.Put(alloc("pod-a", m, "2001:db8:200::/60")) })
		if !errors.Is(err, allocator.ErrDuplicatePrefix) || m == 1 && !strings.Contains(err.Error(), "held in quarantine") {
			t.Errorf("Put of the held prefix for %s = %v, want ErrDuplicatePrefix", mac(m), err)
		}
	}
	checkSound(t, st)
}
