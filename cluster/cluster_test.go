package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// members starts n embedded members through Start, as serve does, and
// returns their nodes (closed at the end of the test).
func members(t *testing.T, n int) ([]*Node, []config.Cluster) {
	t.Helper()
	testenv.TCPLoopback(t)
	dir := t.TempDir()
	cfgs := make([]config.Cluster, n)
	var initial []string
	for i := range n {
		name := fmt.Sprintf("m%d", i)
		cfgs[i] = config.Cluster{
			Name:     name,
			Etcd:     config.ClusterEtcd{Prefix: "/pd/"},
			LeaseTTL: 2 * time.Second,
			Timeout:  5 * time.Second,
			Embedded: config.ClusterEmbedded{
				DataDir:             filepath.Join(dir, name),
				PeerListen:          fmt.Sprintf("http://127.0.0.1:%d", testenv.FreeTCPPort(t)),
				ClientListen:        fmt.Sprintf("http://127.0.0.1:%d", testenv.FreeTCPPort(t)),
				InitialClusterState: "new",
			},
		}
		initial = append(initial, name+"="+cfgs[i].Embedded.PeerListen)
	}
	nodes := make([]*Node, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		cfgs[i].Embedded.InitialCluster = strings.Join(initial, ",")
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			nodes[i], errs[i] = Start(ctx, cfgs[i], quiet)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
		t.Cleanup(func() { nodes[i].Close() })
	}
	return nodes, cfgs
}

// candidate runs an Elector on node and counts its terms.
type candidate struct {
	e      *Elector
	terms  atomic.Int32
	lost   atomic.Int32
	cancel context.CancelFunc
	done   chan struct{}
}

func run(t *testing.T, n *Node, inTerm *atomic.Int32, overlap *atomic.Bool) *candidate {
	c := &candidate{done: make(chan struct{})}
	c.e = &Elector{Client: n.Client, Prefix: n.Prefix, Name: n.Name, TTL: 2 * time.Second, Log: quiet,
		OnLead: func(ctx context.Context, f Fence) {
			if inTerm.Add(1) > 1 {
				overlap.Store(true)
			}
			c.terms.Add(1)
			<-ctx.Done()
			inTerm.Add(-1)
			c.lost.Add(1)
		}}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() { defer close(c.done); c.e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-c.done })
	return c
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func leaders(cs []*candidate) (n int, who int) {
	who = -1
	for i, c := range cs {
		if c.e.Leader() {
			n++
			who = i
		}
	}
	return n, who
}

func TestElectionOneSyncerAndFailover(t *testing.T) {
	nodes, _ := members(t, 3)
	var inTerm atomic.Int32
	var overlap atomic.Bool
	var cs []*candidate
	for _, n := range nodes {
		cs = append(cs, run(t, n, &inTerm, &overlap))
	}
	waitFor(t, "a syncer elected", 10*time.Second, func() bool { n, _ := leaders(cs); return n == 1 })
	_, first := leaders(cs)
	name, _, err := LeaderName(context.Background(), nodes[0].Client, nodes[0].Prefix)
	if err != nil || name != nodes[first].Name {
		t.Fatalf("LeaderName = %q, %v; want %q", name, err, nodes[first].Name)
	}

	// The syncer's server dies (its client and member stop at once, as
	// with kill -9: no resignation): another takes over after the lease.
	cs[first].cancel()
	nodes[first].Close()
	start := time.Now()
	waitFor(t, "another syncer after the first died", 15*time.Second, func() bool {
		n, who := leaders(cs)
		return n == 1 && who != first
	})
	t.Logf("failover after %v", time.Since(start).Round(10*time.Millisecond))
	if overlap.Load() {
		t.Fatal("two servers held the leadership at once")
	}
}

func TestLeaderKeyDeletedEndsTheTerm(t *testing.T) {
	nodes, _ := members(t, 1)
	var inTerm atomic.Int32
	var overlap atomic.Bool
	c := run(t, nodes[0], &inTerm, &overlap)
	waitFor(t, "elected", 10*time.Second, c.e.Leader)
	f, _ := c.e.Fence()
	if _, err := nodes[0].Client.Delete(context.Background(), f.Key); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the term ended", 5*time.Second, func() bool { return c.lost.Load() >= 1 })
	waitFor(t, "elected again", 10*time.Second, func() bool { return c.terms.Load() >= 2 })
	g, _ := c.e.Fence()
	if g.CreateRevision == f.CreateRevision {
		t.Fatal("the new term reuses the deleted key's revision")
	}
}

func TestLeadHoldsTheServersAside(t *testing.T) {
	nodes, _ := members(t, 1)
	var inTerm atomic.Int32
	var overlap atomic.Bool
	c := run(t, nodes[0], &inTerm, &overlap)
	waitFor(t, "elected", 10*time.Second, c.e.Leader)

	ctx := context.Background()
	l, err := Lead(ctx, nodes[0].Client, nodes[0].Prefix, "one-off", 2*time.Second, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if c.e.Leader() {
		t.Fatal("the serving syncer still leads while a one-off command holds the role")
	}
	if name, _, _ := LeaderName(ctx, nodes[0].Client, nodes[0].Prefix); name != "one-off" {
		t.Fatalf("syncer is %q, want one-off", name)
	}
	// A second one-off command waits, then names the holder.
	_, err = Lead(ctx, nodes[0].Client, nodes[0].Prefix, "second", 2*time.Second, 500*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), `"one-off" is the syncer`) {
		t.Fatalf("second Lead: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if c.e.Leader() {
		t.Fatal("the server campaigned while held")
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the server leads again after the hold", 10*time.Second, c.e.Leader)
	if overlap.Load() {
		t.Fatal("overlap")
	}
}

func TestStatus(t *testing.T) {
	nodes, _ := members(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i, n := range nodes {
		go Publish(ctx, n.Client, n.Prefix, n.Name, 2*time.Second, 100*time.Millisecond, func() ServerInfo {
			return ServerInfo{Name: n.Name, Revision: 1, Allocations: 10 * i}
		}, quiet)
	}
	var inTerm atomic.Int32
	var overlap atomic.Bool
	run(t, nodes[1], &inTerm, &overlap)
	var st *Status
	waitFor(t, "three servers and a syncer published", 10*time.Second, func() bool {
		var err error
		st, err = ReadStatus(ctx, nodes[0].Client, nodes[0].Prefix)
		return err == nil && len(st.Servers) == 3 && st.Syncer != ""
	})
	if len(st.Members) != 3 || st.Syncer != "m1" {
		t.Fatalf("status: %+v", st)
	}
	raft := 0
	for _, m := range st.Members {
		if !m.Reachable {
			t.Errorf("member %s unreachable: %s", m.Name, m.Err)
		}
		if m.RaftLeader {
			raft++
		}
	}
	if raft != 1 {
		t.Errorf("%d raft leaders", raft)
	}
	// A server that stops publishing leaves the list when its lease ends.
	cancel()
	waitFor(t, "servers gone after their leases", 10*time.Second, func() bool {
		st, err := ReadStatus(context.Background(), nodes[0].Client, nodes[0].Prefix)
		return err == nil && len(st.Servers) == 0
	})
}

// TestLeadOutlivesItsContext: a one-off command's leadership lasts past
// the context it was taken with, until Release (a long migration).
func TestLeadOutlivesItsContext(t *testing.T) {
	nodes, _ := members(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	l, err := Lead(ctx, nodes[0].Client, nodes[0].Prefix, "one-off", 2*time.Second, 3*time.Second)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	time.Sleep(5 * time.Second) // more than twice the lease
	name, rev, err := LeaderName(context.Background(), nodes[0].Client, nodes[0].Prefix)
	if err != nil || name != "one-off" || rev != l.CreateRevision {
		t.Fatalf("after the context ended: leader %q at %d (%v); want one-off at %d", name, rev, err, l.CreateRevision)
	}
	select {
	case <-l.Lost:
		t.Fatal("the leadership was lost")
	default:
	}
}
