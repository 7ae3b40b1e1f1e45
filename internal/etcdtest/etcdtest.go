// Package etcdtest runs real etcd members inside the test process
// (go.etcd.io/etcd/server/v3/embed) on 127.0.0.1, for the tests of the etcd
// storage backend and of the cluster layer: Start(t, 3) returns a ready
// three-member cluster whose data lives in t.TempDir() and which t.Cleanup
// closes. Members can be stopped and restarted (to lose and regain
// quorum), and the cluster compacted. Imported by tests only.
//
// Ports: every member takes two TCP ports chosen at random below the
// kernel's ephemeral range (20000–32767), checked free just before use,
// so that neither the kernel's choice of a client port nor another test
// asking for port 0 takes them meanwhile; a member that still cannot bind
// ("address already in use") is started again on new ports. (embed takes
// unix:// URLs only as paths relative to the working directory, which is
// the package's source folder in a test: not used.)
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// readyTimeout bounds the wait for a cluster (or a restarted member) to
// serve.
const readyTimeout = 30 * time.Second

// Cluster is a running set of embedded etcd members.
type Cluster struct {
	t       testing.TB
	token   string
	mu      sync.Mutex
	members []*member
}

type member struct {
	name       string
	dir        string
	peer, clie url.URL
	etcd       *embed.Etcd // nil while stopped
}

// StartOne is Start(t, 1).
func StartOne(t testing.TB) *Cluster { return Start(t, 1) }

// Start starts n members and returns once every one serves; it fails the
// test if they do not within 30 s. t.Cleanup stops them.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("etcdtest.Start: %d members", n)
	}
	root := t.TempDir()
	var lastErr error
	for range 5 {
		c := &Cluster{t: t, token: fmt.Sprintf("etcdtest-%x", rand.Uint64())}
		for i := range n {
			c.members = append(c.members, &member{
				name: fmt.Sprintf("m%d", i),
				dir:  filepath.Join(root, c.token, fmt.Sprintf("m%d", i)),
				peer: url.URL{Scheme: "http", Host: freePort(t)},
				clie: url.URL{Scheme: "http", Host: freePort(t)},
			})
		}
		err := c.startAll()
		if err == nil {
			t.Cleanup(c.close)
			return c
		}
		c.close()
		lastErr = err
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	t.Fatalf("etcdtest: start %d members: %v", n, lastErr)
	return nil
}

// freePort returns 127.0.0.1:port for a port below the ephemeral range
// that is free now.
func freePort(t testing.TB) string {
	t.Helper()
	for range 100 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		_ = l.Close()
		return addr
	}
	t.Fatal("etcdtest: no free port in 20000-32000")
	return ""
}

func (c *Cluster) initialCluster() string {
	var parts []string
	for _, m := range c.members {
		parts = append(parts, m.name+"="+m.peer.String())
	}
	return strings.Join(parts, ",")
}

func (c *Cluster) config(m *member, state string) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dir
	cfg.ListenPeerUrls = []url.URL{m.peer}
	cfg.AdvertisePeerUrls = []url.URL{m.peer}
	cfg.ListenClientUrls = []url.URL{m.clie}
	cfg.AdvertiseClientUrls = []url.URL{m.clie}
	cfg.InitialCluster = c.initialCluster()
	cfg.InitialClusterToken = c.token
	cfg.ClusterState = state
	// Quiet: a member's errors at shutdown ("use of closed network
	// connection") are noise; start-up failures come back as errors.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true // tests: speed over durability
	cfg.MaxTxnOps = 128      // etcd's default, stated: the backend's chunking is tested against it
	return cfg
}

// startAll starts every member (they must start together to elect a
// leader) and waits until each serves.
func (c *Cluster) startAll() error {
	errs := make([]error, len(c.members))
	var wg sync.WaitGroup
	for i, m := range c.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.startMember(m, embed.ClusterStateFlagNew)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *Cluster) startMember(m *member, state string) error {
	e, err := embed.StartEtcd(c.config(m, state))
	if err != nil {
		return fmt.Errorf("member %s: %w", m.name, err)
	}
	c.mu.Lock()
	m.etcd = e
	c.mu.Unlock()
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("member %s: %w", m.name, err)
	case <-time.After(readyTimeout):
		return fmt.Errorf("member %s: not ready after %s", m.name, readyTimeout)
	}
}

// close stops every member at once: one by one, the last ones would
// wait for a quorum that is going away.
func (c *Cluster) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	var wg sync.WaitGroup
	for _, m := range c.members {
		if e := m.etcd; e != nil {
			m.etcd = nil
			wg.Go(e.Close)
		}
	}
	wg.Wait()
}

// Endpoints returns the client URLs of every member, stopped ones too.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.clie.String())
	}
	return out
}

// Client returns a client of every member's endpoint, closed when the
// test ends. Its logs are dropped.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Member returns member i's embedded server, nil while it is stopped.
func (c *Cluster) Member(i int) *embed.Etcd {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].etcd
}

// Stop stops member i; its data stays for Restart.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	e := c.members[i].etcd
	c.members[i].etcd = nil
	c.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart starts member i again from its data, on the same ports, and
// waits until it serves (which needs a quorum of members running).
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	m := c.members[i]
	var err error
	for range 20 { // the ports are ours, but the old sockets may linger a moment
		if err = c.startMember(m, embed.ClusterStateFlagExisting); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatalf("etcdtest: restart: %v", err)
	}
}

// Compact compacts the cluster's history at its current revision (and
// waits for the compaction to be applied), so that a watch from an older
// revision fails with ErrCompacted. It returns that revision.
func (c *Cluster) Compact(t testing.TB) int64 {
	t.Helper()
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "\x00", clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("etcdtest: compact: %v", err)
	}
	rev := resp.Header.Revision
	if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("etcdtest: compact at %d: %v", rev, err)
	}
	return rev
}
