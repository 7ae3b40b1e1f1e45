package daemon

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/httpapi"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// TestSyncer drives serve's sync loop with a fake clock: without api.url
// it syncs nothing and says so once however often its interval comes
// round; triggered with the API, it syncs and swaps the changed table in;
// a failed sync logs CloudStack's error and keeps the table; the next
// sync comes exactly api.interval after the end of the last one, and one
// that changed nothing does not swap the table.
func TestSyncer(t *testing.T) {
	s := newSyncSite(t)
	cfg, err := config.Load(s.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.API.Interval = time.Minute
	st, err := allocator.OpenStore(boltstore.Open(cfg.State, boltstore.Options{Create: true, NoSync: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tbl, err := allocator.NewTable(cfg.Pools(), nil)
	if err != nil {
		t.Fatal(err)
	}
	live := allocator.NewLive(tbl)
	fc := clock.NewFake(epoch)
	var (
		current atomic.Pointer[config.Config]
		swapMu  sync.Mutex
		logs    testenv.SyncBuffer
	)
	d := &daemon{clock: fc, log: slog.New(slog.NewTextHandler(&logs, nil)), st: st}
	noAPI := *cfg
	noAPI.API.URL = ""
	current.Store(&noAPI)
	sy := newSyncer(d, live, &current, &swapMu)
	outcomes := make(chan string, 10)
	sy.observe = func(outcome string, _ time.Duration, _ *allocator.SyncReport, _ time.Time) { outcomes <- outcome }
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); sy.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// No api.url: the loop comes round every interval, and says why it
	// does not sync the first time only. The interval timer fires and is
	// gone within Advance; BlockUntil(1) returns once the next round is
	// over and its timer armed.
	fc.BlockUntil(1)
	for range 3 {
		fc.Advance(time.Minute)
		fc.BlockUntil(1)
	}
	if n := strings.Count(logs.String(), `msg="no CloudStack sync: serving the stored table as it is" reason="api.url is not set"`); n != 1 {
		t.Errorf("said %d times in 4 rounds, want once:\n%s", n, logs.String())
	}

	// With the API: synced and swapped in.
	current.Store(cfg)
	sy.Trigger()
	if o := <-outcomes; o != httpapi.SyncOK {
		t.Fatalf("outcome %s:\n%s", o, logs.String())
	}
	web, _ := net.ParseMAC("1e:00:5d:00:01:7a")
	if a, ok := live.Current().Lookup(web); !ok || a.Prefix.String() != "2001:db8:200::/60" {
		t.Fatalf("web-01 not in the live table: %v", a)
	}
	if !strings.Contains(logs.String(), "added=5 kept=0") {
		t.Errorf("sync line: %s", logs.String())
	}

	// CloudStack fails: logged with the errortext, the table stays.
	before := live.Current()
	s.Fake.Inject(cloudstacktest.Fault{Kind: cloudstacktest.FaultThrottle})
	sy.Trigger()
	if o := <-outcomes; o != httpapi.SyncFailed {
		t.Fatalf("outcome %s:\n%s", o, logs.String())
	}
	if !strings.Contains(logs.String(), "listVirtualMachines page 1: CloudStack error 429 (cserrorcode 9999): "+cloudstacktest.TextThrottled) {
		t.Errorf("failure log: %s", logs.String())
	}
	if live.Current() != before {
		t.Error("the table changed after a failed sync")
	}

	// The interval, from the end of the last sync: not a moment before.
	s.Fake.ClearFaults()
	fc.BlockUntil(1)
	fc.Advance(time.Minute - time.Nanosecond)
	select {
	case o := <-outcomes:
		t.Fatalf("synced (%s) before api.interval", o)
	default:
	}
	fc.Advance(time.Nanosecond)
	if o := <-outcomes; o != httpapi.SyncOK {
		t.Fatalf("interval sync: %s", o)
	}
	if live.Current() != before {
		t.Error("a sync that changed nothing swapped the table")
	}
}

// TestSyncMetricInputs: what a sync report gives the sync metrics: the
// changes by kind, kept apart (not a change), and the conflicts by pool,
// 0 for a pool without any.
func TestSyncMetricInputs(t *testing.T) {
	rep := &allocator.SyncReport{Pools: []allocator.PoolSync{
		{Pool: "pod-a", Kept: 7, Conflicts: []allocator.SyncConflict{{}, {}}},
		{Pool: "pod-b", Kept: 3},
	}}
	rep.Pools[0].Added = []allocator.Allocation{{}}
	changes := syncChanges(rep)
	if changes[httpapi.SyncKept] != 10 || changes["added"] != 1 || changes["gone"] != 0 {
		t.Errorf("changes %v", changes)
	}
	for kind := range changes {
		if kind != httpapi.SyncKept && !slices.Contains(httpapi.SyncChangeKinds, kind) {
			t.Errorf("change kind %q is not one of %v", kind, httpapi.SyncChangeKinds)
		}
	}
	if got := syncConflicts(rep); len(got) != 2 || got["pod-a"] != 2 || got["pod-b"] != 0 {
		t.Errorf("conflicts %v", got)
	}
}
