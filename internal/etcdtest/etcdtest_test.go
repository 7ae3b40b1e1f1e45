package etcdtest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudstack-pd/cloudstack-pd/internal/etcdtest"
)

// TestCluster starts three members, writes through one client, loses and
// regains quorum, and compacts.
func TestCluster(t *testing.T) {
	start := time.Now()
	c := etcdtest.Start(t, 3)
	t.Logf("3 members ready in %s", time.Since(start))
	cli := c.Client(t)
	ctx := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	if _, err := cli.Put(ctx(), "k", "v1"); err != nil {
		t.Fatal(err)
	}
	c.Stop(1)
	c.Stop(2)
	if _, err := cli.Put(ctx(), "k", "v2"); err == nil {
		t.Fatal("a write succeeded with 1 of 3 members")
	}
	c.Restart(1)
	c.Restart(2)
	if _, err := cli.Put(ctx(), "k", "v3"); err != nil {
		t.Fatalf("write after restart: %v", err)
	}
	rev := c.Compact(t)
	_, err := cli.Get(ctx(), "k", clientv3.WithRev(rev-1))
	if !errors.Is(err, rpctypes.ErrCompacted) {
		t.Errorf("Get at a compacted revision = %v", err)
	}
	if c.Member(0) == nil || len(c.Endpoints()) != 3 {
		t.Error("member 0 or endpoints missing")
	}
}
