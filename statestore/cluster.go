package statestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/etcdstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/cluster"
	"github.com/cloudstack-pd/cloudstack-pd/config"
)

// docCluster is where the operator reads about the cluster's table.
const docCluster = "docs/ha.md"

// commandBackend is the table in etcd as a command holds it: the
// connection, and for a command that writes, the syncer's role, given
// back on Close.
type commandBackend struct {
	*etcdstore.Backend
	node *cluster.Node
	lead *cluster.Leadership
}

func (b *commandBackend) release() {
	if b.lead != nil {
		_ = b.lead.Release()
	}
	_ = b.node.Close()
}

// Close closes the table, gives the syncer's role back and disconnects.
func (b *commandBackend) Close() error {
	err := b.Backend.Close()
	b.release()
	return err
}

// Discard is etcdstore's Discard, then Close's release.
func (b *commandBackend) Discard() error {
	err := b.Backend.Discard()
	b.release()
	return err
}

// commandTTL is the lease of a command's leadership: longer than a
// server's, so that a long copy (a migration of a million allocations)
// busy with its work does not lose it; if the command dies, the servers
// take the role back this long after.
func commandTTL(c config.Cluster) time.Duration { return max(c.LeaseTTL, 30*time.Second) }

// leadWait is how long a writing command waits for the syncer's role.
func leadWait(c config.Cluster) time.Duration { return 3*c.LeaseTTL + 5*time.Second }

// OpenCluster opens the table cfg's cluster keeps in etcd, for the command
// what, as mode says. A command that writes (Write, Create) first takes
// the syncer's role (cluster.Lead: the serving syncer steps aside until
// the command closes the store), so that its writes are fenced like a
// syncer's.
func OpenCluster(cfg *config.Config, what string, mode Mode) (*allocator.Store, error) {
	ctx, cancel := context.WithTimeout(context.Background(), leadWait(cfg.Cluster)+cfg.Cluster.Timeout*2)
	defer cancel()
	node, err := cluster.Connect(ctx, cfg.Cluster)
	if err != nil {
		return nil, err
	}
	b := &commandBackend{node: node}
	if mode != Read {
		if b.lead, err = cluster.Lead(ctx, node.Client, node.Prefix, "command "+what+" on "+cfg.Cluster.Name, commandTTL(cfg.Cluster), leadWait(cfg.Cluster)); err != nil {
			node.Close()
			return nil, fmt.Errorf("%s: %w (%s)", what, err, docCluster)
		}
	}
	eb, err := etcdstore.Open(ctx, etcdstore.Options{Client: node.Client, Prefix: cluster.TablePrefix(node.Prefix), Create: mode == Create, ReadOnly: mode == Read, Timeout: cfg.Cluster.Timeout, MaxOps: cfg.Cluster.MaxTxnOps})
	if err != nil {
		b.release()
		return nil, ExplainCluster(err, cfg, what, mode)
	}
	b.Backend = eb
	if b.lead != nil {
		eb.SetFence(&etcdstore.Fence{Key: b.lead.Key, CreateRevision: b.lead.CreateRevision})
	}
	return allocator.NewStore(b), nil
}

// ServeKinds are the key spaces serve's store mirrors in a cluster: every
// kind but the allocation table's (Alloc, Prefix, MACs, Held) and its
// history, which serve's follower reads as a Table (package
// cluster/follower) and its syncer through a store of its own (the
// history, one event per change, would otherwise cost as much memory as
// the table: commands read it from etcd).
var ServeKinds = func() []kv.Kind {
	var out []kv.Kind
	for k := kv.Kind(1); k.String() != "unknown"; k++ {
		if k != kv.Alloc && k != kv.Prefix && k != kv.MACs && k != kv.Held && k != kv.History {
			out = append(out, k)
		}
	}
	return out
}()

// OpenServe opens the table in etcd for serve on node: for writing
// (bindings, the server DUID), creating it only with init. It mirrors
// ServeKinds only: the allocations are read by serve's follower, written
// by its syncer's own store.
func OpenServe(cfg *config.Config, node *cluster.Node, init bool, log *slog.Logger) (*allocator.Store, error) {
	// Every request of the open (and each pause of the table's load) is
	// bounded by cluster.timeout; the load of a large table as a whole is
	// not.
	ctx := context.Background()
	open := func(ctx context.Context) (*etcdstore.Backend, error) {
		return etcdstore.Open(ctx, etcdstore.Options{Client: node.Client, Prefix: cluster.TablePrefix(node.Prefix), Create: init, Timeout: cfg.Cluster.Timeout, MaxOps: cfg.Cluster.MaxTxnOps, Log: log, Kinds: ServeKinds})
	}
	eb, err := open(ctx)
	if err == nil {
		return allocator.NewStore(eb), nil
	}
	mode := Write
	if init {
		mode = Create
	}
	if unreachable(err) {
		if _, serr := os.Stat(cfg.State); serr == nil {
			st, ferr := openServeFallback(cfg.State, err, open, log)
			if ferr == nil {
				return st, nil
			}
			err = errors.Join(err, fmt.Errorf("the local snapshot %s does not open either: %w", cfg.State, ferr))
		} else {
			err = fmt.Errorf("%w; and there is no local snapshot at %s (state) to answer from meanwhile", err, cfg.State)
		}
	}
	return nil, ExplainCluster(err, cfg, "serve", mode)
}

// unreachable reports whether an error opening the table in etcd is etcd
// not answering (rather than a refusal of what it holds).
func unreachable(err error) bool {
	for _, refusal := range []error{allocator.ErrNoStore, allocator.ErrNotStore, allocator.ErrSchema, allocator.ErrDamaged} {
		if errors.Is(err, refusal) {
			return false
		}
	}
	return true
}

// ExplainCluster adds to an error opening the table in etcd what the
// operator should do about it.
func ExplainCluster(err error, cfg *config.Config, what string, mode Mode) error {
	c := cfg.Cluster
	where := fmt.Sprintf("the cluster table (prefix %s)", c.Etcd.Prefix)
	switch {
	case errors.Is(err, allocator.ErrNoStore) && mode == Write:
		return fmt.Errorf("%s does not exist: give --init to create it for a new cloud, or bring a single server's table with 'cloudstack-pd cluster migrate --from STATE.db'; "+
			"is cluster.etcd.prefix right in %s? Without its table, %s would number every VM afresh (%s): %w", where, cfg.Path, what, docCluster, err)
	case errors.Is(err, allocator.ErrNoStore):
		return fmt.Errorf("%s does not exist yet ('serve --init', 'sync --init', import-kea or 'cluster migrate' create it); is cluster.etcd.prefix right in %s? %w", where, cfg.Path, err)
	case errors.Is(err, allocator.ErrNotStore):
		return fmt.Errorf("%w\n%s refuses keys under %s that are not a cloudstack-pd table, and writes nothing there: is cluster.etcd.prefix right in %s? (%s)", err, what, c.Etcd.Prefix, cfg.Path, docCluster)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: etcd did not answer in time: is a quorum of its members up and reachable (cluster.etcd.endpoints, or the embedded members' peers)? (%s): %w", what, docCluster, err)
	}
	return err
}

// WriteSnapshot writes a copy of the table to a new bbolt store at path
// (a server's local snapshot, which it answers from when etcd is out of
// reach at its next start): the allocations of tbl, the table in force
// (allocator.CopyTableInto), and st's other spaces (bindings, the server
// DUID); with tbl nil, every key of st. Under a temporary name, synced,
// then renamed over path, so that path is always a whole store. It
// returns the keys (with tbl, the allocations) copied.
func WriteSnapshot(st *allocator.Store, tbl *allocator.Table, path string) (int, error) {
	tmp := path + ".snapshot-tmp"
	_ = os.Remove(tmp)
	dst, err := OpenBolt(tmp, boltstore.Options{Create: true, NoSync: true})
	if err != nil {
		return 0, fmt.Errorf("snapshot: create %s: %w", tmp, err)
	}
	var n int
	if tbl != nil {
		n, err = allocator.CopyTableInto(dst, st, tbl)
	} else {
		n, err = allocator.CopyInto(dst, st)
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncFile(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return n, fmt.Errorf("snapshot to %s: %w", path, err)
	}
	if d, derr := os.Open(filepath.Dir(path)); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return n, nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
