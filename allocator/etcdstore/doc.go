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
// allocation per key), with one range stream (etcd 3.7's RangeStream;
// pages of Get on an older etcd, where each page also counts the keys
// after it: quadratic), then watches the prefix from R+1 (WithRequireLeader,
// progress notifications asked for every second). A compaction past the
// mirror's revision (ErrCompacted) makes it load everything again at a new
// revision; it never resumes from a compacted revision. Every other end of
// the watch (no leader, the cluster unreachable) resumes from the
// revision reached. View runs on a copy-on-write clone of the tree: it
// reads memory only, without locks, and works while etcd is unreachable.
// State says whether the watch is connected and what revision the mirror
// reflects; Changes tells subscribers what changed: kinds, pools and keys
// (coalescing, never blocking the watch), published before Revision moves
// past it.
//
// # Updates
//
// Update is optimistic and serializable. fn runs on a clone (it reads its
// own writes) while the backend records what it read: each key Get read,
// with its mod revision (0 when absent), and each key range a Seek, Last,
// Scan or Pools covered. The commit is one etcd transaction:
//
//	If(  fence:   CreateRevision(fence key) == fence revision   (writes to Alloc, Prefix, MACs, Held)
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
// that fn read (or an earlier transaction of the Update wrote), and of each
// key only read while a group it commits was being written (a binding's
// prefix index entry, read to renew the binding): the key decided that
// group. The range compares, and the keys read outside any group (a sync's
// plan, read before its first write), go in the first; when those are too
// many to compare one by one they are compared as key ranges, which
// another writer's keys in between make fail. If a later
// transaction fails, the ones before it stay committed: whole allocations
// and bindings, never half of one (an allocation's record, prefix index
// and MAC index entries are one group), and the error says so; the next
// sync completes the rest. Options.MaxOps sets the bound.
//
// # Caveats
//
//   - The backend does not close its client. Close stops the watch.
//   - Do not put other programs' keys under the prefix, nor the election
//     key: CheckStructure reports them. serve keeps the table under
//     <cluster prefix>table/ and its election beside it, under
//     <cluster prefix>cluster/ (docs/ha.md).
//   - A backend holds in memory every key of the kinds it mirrors: some
//     265 bytes of keys and values per allocation (most of it the JSON
//     record) and 34 bytes of B-tree per key: 365 MB for 1,000,000
//     allocations (BenchmarkMirror1M). A load builds the tree inserting
//     every other key first, which fills its nodes (in key order they
//     would stay half full: 69 bytes per key). Options.Kinds limits the
//     mirror to some kinds (with the pool markers): only their ranges are
//     loaded, events of the others are skipped, and a transaction touching
//     a space of another kind fails with ErrNotMirrored (never reads it as
//     empty). serve mirrors all but Alloc, Prefix and MACs; its table is
//     read from the Alloc spaces by package cluster/follower (SpacePrefix,
//     ParseKey).
//   - Keys and values a Tx returns point into the mirror: valid until the
//     transaction ends, never to be written (kv.Tx's contract).
//   - A range compare costs etcd a read of the range: an Update that
//     scanned a large range (LowestFree over a full pool) makes etcd read
//     that range again when it commits.
package etcdstore
