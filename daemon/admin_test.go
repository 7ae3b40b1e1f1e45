package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/control"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
	"github.com/cloudstack-pd/cloudstack-pd/statestore"
)

// running starts Run on cfgText (STATE replaced) over a store holding
// allocs, and returns its addresses and logs; it stops when the test
// ends.
func running(t *testing.T, cfgText string, fc clock.Clock, allocs ...allocator.Allocation) (Addrs, *config.Config, *testenv.SyncBuffer) {
	t.Helper()
	dir := t.TempDir()
	state, cfgPath := filepath.Join(dir, "state.db"), filepath.Join(dir, "cfg.yaml")
	cfgText = strings.ReplaceAll(cfgText, "shutdown-delay: 3s", "shutdown-delay: 0s")
	testenv.WriteFile(t, cfgPath, strings.ReplaceAll(cfgText, "STATE", state))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := allocator.OpenStore(boltstore.Open(state, boltstore.Options{Create: true}))
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(cfg.Pools(), func(tx *allocator.Tx) error {
		tx.SetActor(allocator.Actor{At: epoch.Add(-time.Hour), By: "sync"})
		for _, a := range allocs {
			if err := tx.Put(a); err != nil {
				return err
			}
		}
		return nil
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	logs := &testenv.SyncBuffer{}
	serving := make(chan Addrs, 1)
	ctx, cancel := context.WithCancel(t.Context())
	ran := make(chan error, 1)
	go func() {
		ran <- Run(ctx, cfg, Deps{
			OpenStore: func(cfg *config.Config) (*allocator.Store, error) {
				return allocator.OpenStore(boltstore.Open(cfg.State, boltstore.Options{NoVerify: true}))
			},
			Backup: statestore.Backup,
			Clock:  fc, Log: slog.New(slog.NewTextHandler(logs, nil)),
			Serving: func(a Addrs) { serving <- a },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case a := <-serving:
		return a, cfg, logs
	case err := <-ran:
		t.Fatalf("Run: %v\n%s", err, logs.String())
	}
	panic("unreachable")
}

func call(t *testing.T, path string, req control.Request, result any) error {
	t.Helper()
	req.User = "alice"
	return control.Call(t.Context(), path, req, result)
}

// The control socket's actions run on the serving server: the table in
// force changes at once (the next packet sees it), each change is in the
// history with who did it, and a dry run changes nothing.
func TestControlActions(t *testing.T) {
	testenv.IPv6Loopback(t)
	macA, _ := net.ParseMAC("06:32:b2:00:04:79")
	fc := clock.NewFake(epoch)
	cfgText := strings.Replace(runTestConfig, "server:", runTestPodB+"server:", 1)
	addrs, cfg, logs := running(t, cfgText, fc,
		allocator.Allocation{Pool: "pod-a", MAC: macA, Prefix: netip.MustParsePrefix("2001:db8:200:30::/60"), State: allocator.StateActive, Since: epoch.Add(-time.Hour), Source: "sync"})
	srv, sock := addrs.DHCPv6[0], addrs.Control
	if sock != cfg.Control.Socket {
		t.Fatalf("serving on control socket %q, want %q", sock, cfg.Control.Socket)
	}
	var st Status
	if err := call(t, sock, control.Request{Action: control.ActionPing}, &st); err != nil || st.State != cfg.State || st.PID != os.Getpid() {
		t.Fatalf("ping: %+v, %v", st, err)
	}

	// A dry run: what it would do, nothing done.
	var rep allocator.AdminReport
	if err := call(t, sock, control.Request{Action: control.ActionMove, MAC: macA.String(), Pool: "pod-b", DryRun: true}, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.DryRun || rep.Written || len(rep.Events) != 2 || rep.Events[1].Prefix != netip.MustParsePrefix("2001:db8:300::/60") {
		t.Errorf("dry-run move: %+v", rep)
	}
	if p := delegated(t, srv, macA, "VLAN2701"); p != "2001:db8:200:30::/60" {
		t.Errorf("after a dry run: %q", p)
	}

	// The move: the new prefix is served at once, on the new VLAN only.
	fc.Advance(time.Minute)
	if err := call(t, sock, control.Request{Action: control.ActionMove, MAC: "0632.b200.0479", Pool: "pod-b", Note: "allocation move"}, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Written || len(rep.Events) != 2 || rep.Events[1].By != "admin "+control.Who(control.Peer{User: currentUser(t)}, control.Request{User: "alice"}) {
		t.Errorf("move: %+v", rep)
	}
	if p := delegated(t, srv, macA, "VLAN2702"); p != "2001:db8:300::/60" {
		t.Errorf("moved MAC on pod-b: %q", p)
	}
	if p := delegated(t, srv, macA, "VLAN2701"); p != "" {
		t.Errorf("moved MAC still served on pod-a: %q", p)
	}

	// Release: not served any more.
	if err := call(t, sock, control.Request{Action: control.ActionRelease, MAC: macA.String()}, &rep); err != nil {
		t.Fatal(err)
	}
	if p := delegated(t, srv, macA, "VLAN2702"); p != "" {
		t.Errorf("released MAC still served: %q", p)
	}
	err := call(t, sock, control.Request{Action: control.ActionRelease, MAC: macA.String()}, &rep)
	var re *control.RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "quarantined already") {
		t.Errorf("second release = %v", err)
	}
	if err := call(t, sock, control.Request{Action: control.ActionForget, Pool: "pod-a"}, &rep); err == nil || !strings.Contains(err.Error(), "configured") {
		t.Errorf("forget of a configured pool = %v", err)
	}

	// The history: who had the old prefix, and when.
	var h HistoryAnswer
	if err := call(t, sock, control.Request{Action: control.ActionHistory, MAC: macA.String()}, &h); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range h.Events {
		got = append(got, e.Event+" "+e.Pool+" "+e.Prefix.String())
	}
	want := []string{"allocated pod-a 2001:db8:200:30::/60", "quarantined pod-a 2001:db8:200:30::/60", "moved pod-b 2001:db8:300::/60", "quarantined pod-b 2001:db8:300::/60"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("history:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !h.Events[2].At.Equal(epoch.Add(time.Minute)) {
		t.Errorf("the move is stamped %s, want the server's clock %s", h.Events[2].At, epoch.Add(time.Minute))
	}
	if err := call(t, sock, control.Request{Action: control.ActionHistory, Prefix: "2001:db8:200:30::1", At: epoch.Format(time.RFC3339)}, &h); err != nil {
		t.Fatal(err)
	}
	if len(h.Holdings) != 1 || h.Holdings[0].State != allocator.StateActive || h.Holdings[0].Pool != "pod-a" {
		t.Errorf("who held 2001:db8:200:30::1 at %s: %+v", epoch, h.Holdings)
	}

	// A backup while serving.
	to := filepath.Join(t.TempDir(), "backup.db")
	var b allocator.BackupReport
	if err := call(t, sock, control.Request{Action: control.ActionBackup, To: to}, &b); err != nil {
		t.Fatal(err)
	}
	if b.Path != to || b.Allocations != 1 || b.Events != 4 {
		t.Errorf("backup: %+v", b)
	}
	if err := call(t, sock, control.Request{Action: control.ActionSync}, nil); err == nil || !strings.Contains(err.Error(), "nothing to sync from") {
		t.Errorf("sync without api.url = %v", err)
	}
	if !strings.Contains(logs.String(), "control: move") {
		t.Errorf("the move is not logged:\n%s", logs.String())
	}
}

func currentUser(t *testing.T) string {
	t.Helper()
	u, err := user.LookupId(strconv.Itoa(os.Getuid()))
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// A sync asked for through the control socket runs in the sync loop and
// answers its report once it is done.
func TestControlSyncNow(t *testing.T) {
	testenv.IPv6Loopback(t)
	s := newSyncSite(t)
	site, err := os.ReadFile(s.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(site), s.State, "STATE") + "server:\n  listen: [\"[::1]:0\"]\n"
	addrs, _, _ := running(t, text, nil)
	var ans SyncAnswer
	if err := call(t, addrs.Control, control.Request{Action: control.ActionSync}, &ans); err != nil {
		t.Fatal(err)
	}
	if ans.Outcome != "ok" || !strings.Contains(ans.Report, "sync from "+s.Fake.URL) || ans.Error != "" {
		t.Errorf("sync now: %+v", ans)
	}
}

// The history keeps history.retention: older events are pruned, in
// bounded transactions, newer ones kept.
func TestPruneHistory(t *testing.T) {
	st, err := allocator.OpenStore(boltstore.Open(filepath.Join(t.TempDir(), "s.db"), boltstore.Options{Create: true, NoSync: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg, err := config.Parse("c.yaml", []byte("mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\nhistory:\n  retention: 240h\n"))
	if err != nil {
		t.Fatal(err)
	}
	pool := cfg.Pools()[0]
	// 25 events 11 days old (more than one batch with the batch at 10),
	// then one a day old.
	for i, at := range []time.Time{epoch.Add(-11 * 24 * time.Hour), epoch.Add(-24 * time.Hour)} {
		n := 25
		if i == 1 {
			n = 1
		}
		err := st.Update(cfg.Pools(), func(tx *allocator.Tx) error {
			tx.SetActor(allocator.Actor{At: at, By: "sync"})
			for j := range n {
				p, err := tx.LowestFree(pool)
				if err != nil {
					return err
				}
				if err := tx.Put(allocator.Allocation{Pool: "pod-a", MAC: net.HardwareAddr{6, 0, 0, 0, byte(i), byte(j)}, Prefix: p, State: allocator.StateActive, Since: at}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var logs testenv.SyncBuffer
	d := &daemon{clock: clock.NewFake(epoch), log: slog.New(slog.NewTextHandler(&logs, nil)), st: st}
	defer func(b int) { historyBatch = b }(historyBatch)
	historyBatch = 10
	d.pruneHistory(cfg)
	if n, err := st.CountHistory(); err != nil || n != 1 {
		t.Errorf("after pruning: %d event(s), %v; want the one within history.retention", n, err)
	}
	if !strings.Contains(logs.String(), "events=25") {
		t.Errorf("the pruning is not logged with its count:\n%s", logs.String())
	}
}

func TestHistoryRequest(t *testing.T) {
	for _, tc := range []struct {
		req     control.Request
		prefix  string
		at      time.Time
		wantErr string
	}{
		{req: control.Request{Prefix: "2001:db8:200:30::/60", At: "2026-03-03"}, prefix: "2001:db8:200:30::/60", at: time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC)},
		{req: control.Request{Prefix: "2001:db8:200:30::1", At: "2026-03-03 14:05"}, prefix: "2001:db8:200:30::1/128", at: time.Date(2026, 3, 3, 14, 5, 0, 0, time.UTC)},
		{req: control.Request{Prefix: "2001:db8:200:31::/60"}, prefix: "2001:db8:200:30::/60"}, // host bits cleared
		{req: control.Request{MAC: "0632.b200.0479", At: "2026-03-03T15:05:00+01:00"}, at: time.Date(2026, 3, 3, 14, 5, 0, 0, time.UTC)},
		{req: control.Request{}, wantErr: "give --prefix or --mac"},
		{req: control.Request{MAC: "nope"}, wantErr: "--mac"},
		{req: control.Request{Prefix: "2001:db8::/200"}, wantErr: "--prefix"},
		{req: control.Request{Prefix: "2001:db8::/64", At: "3 March"}, wantErr: "not an instant"},
	} {
		q, at, err := HistoryRequest(tc.req)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%+v: err %v, want %q", tc.req, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !at.Equal(tc.at) || (tc.prefix != "" && q.Prefix.String() != tc.prefix) {
			t.Errorf("%+v: %v %s %v, want %s %s", tc.req, q, at, err, tc.prefix, tc.at)
		}
	}
}
