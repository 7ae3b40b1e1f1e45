// Package etcdstore is the etcd backend of the allocation store: it keeps
// the key spaces of package kv under one key prefix of an etcd cluster,
// so that several servers share one table (issue 12). The rules and the
// records' encoding are package allocator's; this package stores bytes:
//
//	b, err := etcdstore.Open(ctx, etcdstore.Options{Client: cli, Create: init})
//	b.SetFence(&etcdstore.Fence{Key: leaderKey, CreateRevision: rev}) // the syncer only
//	st := allocator.NewStore(b)
//
// # Key layout (schema 1)
//
//	<prefix><kind>/<key>                   Meta, MACs, Bindings, BindingPrefix
//	<prefix><kind>/<escaped pool>/<key>    Alloc, Prefix
//	<prefix>pools/<escaped pool>           pool marker; value: the pool's name
//
// <prefix> is Options.Prefix ("/cloudstack-pd/" by default), <kind> is
// kv.Kind.String() ("meta", "alloc", "prefix", "mac", "binding",
// "binding-prefix"), and <key> the key's raw bytes, so that keys sort
// within a space as package kv wants. A kind is per pool when
// kv.Space.String names the pool; a kind package kv adds later is laid
// out by the same rule without a change here. In a pool's name '%' is
// written "%25" and '/' "%2F", so the spaces of two pools never nest. The
// schema marker is <prefix>meta/schema = "1". A pool marker is written
// with the first key of a pool's spaces and stays (as bbolt keeps a
// pool's buckets): Tx.Pools reads the markers, a short range. Keys under
// the prefix of any other kind are ignored (CheckStructure lists them);
// keys of a known kind that do not parse are damage (Verify).
//
// # The mirror
//
// Open reads every key under the prefix at one revision R, page by page,
// into an ordered in-memory tree (github.com/google/btree: one string
// holding key and value and the key's mod revision, 32 bytes and one
// allocation per key), then watches the prefix from R+1 (WithRequireLeader,
// progress notifications asked for every second). A compaction past the
// mirror's revision (ErrCompacted) makes it load everything again at a new
// revision; it never resumes from a compacted revision. Every other end of
// the watch (no leader, the cluster unreachable) resumes from the
// revision reached. View runs on a copy-on-write clone of the tree: it
// reads memory only, without locks, and works while etcd is unreachable.
// State says whether the watch is connected and what revision the mirror
// reflects; Changes tells subscribers what changed (coalescing, never
// blocking the watch).
//
// # Updates
//
// Update is optimistic and serializable. fn runs on a clone (it reads its
// own writes) while the backend records what it read: each key Get read,
// with its mod revision (0 when absent), and each key range a Seek, Last,
// Scan or Pools covered. The commit is one etcd transaction:
//
//	If(  fence:   CreateRevision(fence key) == fence revision   (writes to Alloc, Prefix, MACs)
//	     per key: ModRevision(key) == seen                       (0: still absent)
//	     per range: ModRevision([start, end)) < R+1 )            (no key created or changed)
//	Then(puts, deletes)
//	Else(Get(fence key))
//
// A range compare cannot see a key deleted inside the range. That is safe
// for the allocator's rules: a deletion only frees (a prefix, a MAC, a
// binding), so a decision made while the key was there is still allowed
// after it went. When the compares fail and the fence still holds, Update
// waits until the mirror reaches the failed transaction's revision and
// runs fn again, up to 8 times (then ErrConflict, counted in Stats). A
// fence that no longer holds (the leader key deleted or created anew)
// gives ErrFenced, never retried; a write to the allocation table without
// a fence gives ErrNotFenced: only the elected syncer writes allocations,
// while every server writes bindings and the server DUID unfenced. After a
// commit Update waits until the mirror reflects it (read-your-writes):
// a View after Update sees it.
//
// # Large updates
//
// etcd bounds a transaction (--max-txn-ops, 128 by default: compares and
// operations each; --max-request-bytes, 1.5 MiB). An Update that does not
// fit (a first sync of 100,000 VMs, an import, a migration) is committed
// in several transactions, in order, split only between groups (kv.Grouper:
// package allocator ends a group after each allocation and each binding).
// Every transaction carries the fence and a compare of each key it writes
// that fn read (or an earlier transaction of the Update wrote); the range
// compares and the keys read but not written go in the first. If a later
// transaction fails, the ones before it stay committed: whole allocations
// and bindings, never half of one (an allocation's record, prefix index
// and MAC index entries are one group), and the error says so; the next
// sync completes the rest. Options.MaxOps sets the bound.
//
// # Caveats
//
//   - The backend does not close its client. Close stops the watch.
//   - Do not put other programs' keys under the prefix, nor the election
//     key: CheckStructure reports them. Use a key beside the prefix (say
//     "/cloudstack-pd-election/").
//   - Every server holds the whole table in memory: some 100 bytes per key
//     beyond the keys and values themselves, three keys per allocation
//     (BenchmarkOpen).
//   - Keys and values a Tx returns point into the mirror: valid until the
//     transaction ends, never to be written (kv.Tx's contract).
//   - A range compare costs etcd a read of the range: an Update that
//     scanned a large range (LowestFree over a full pool) makes etcd read
//     that range again when it commits.
package etcdstore
