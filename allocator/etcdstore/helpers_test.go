package etcdstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/etcdstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/internal/etcdtest"
)

var prefixes atomic.Int64

// newPrefix returns a key prefix no other test of this process uses.
func newPrefix() string { return fmt.Sprintf("/t%d/", prefixes.Add(1)) }

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// leaderKey makes a key as an election's leader key is made (attached to
// a lease) and returns it as a fence.
func leaderKey(t testing.TB, cli *clientv3.Client, key string) *etcdstore.Fence {
	t.Helper()
	lease, err := cli.Grant(ctxT(t), 60)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Put(ctxT(t), key, "leader", clientv3.WithLease(lease.ID))
	if err != nil {
		t.Fatal(err)
	}
	return &etcdstore.Fence{Key: key, CreateRevision: resp.Header.Revision}
}

// open opens a backend on cli, failing the test on error, closed at its
// end.
func open(t testing.TB, cli *clientv3.Client, o etcdstore.Options) *etcdstore.Backend {
	t.Helper()
	o.Client = cli
	b, err := etcdstore.Open(ctxT(t), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// fencedStore opens a new store under a fresh prefix with a fence.
func fencedStore(t testing.TB, c *etcdtest.Cluster, cli *clientv3.Client, o etcdstore.Options) *etcdstore.Backend {
	t.Helper()
	if o.Prefix == "" {
		o.Prefix = newPrefix()
	}
	o.Create = true
	b := open(t, cli, o)
	b.SetFence(leaderKey(t, cli, o.Prefix[:len(o.Prefix)-1]+"-election/leader"))
	return b
}

func etcdstoreOptions() etcdstore.Options { return etcdstore.Options{} }

type kvTx = kv.Tx

func allocSpace(pool string) kv.Space { return kv.Space{Kind: kv.Alloc, Pool: pool} }
