// Package allocator owns the allocation table: per pool, which MAC owns which
// delegated prefix. It holds the table's invariants (a prefix belongs to at
// most one MAC; an allocation never moves) and persists the table through a
// storage backend (package kv's interface; bbolt in package boltstore).
// It does no network I/O: the server reads an immutable *Table snapshot, and
// writers (import-kea, the CloudStack sync, later an etcd-backed syncer)
// change the store and swap in a fresh snapshot.
//
// # Store
//
// A Store is kept by a kv.Backend: NewStore(backend), or
// OpenStore(boltstore.Open(path, opts)) for the bbolt file (the config's
// "state", by default /var/lib/cloudstack-pd/state.db). The backend only
// stores bytes in ordered key spaces; every rule and every record's
// encoding is here, so that a second backend (etcd) stores the same bytes
// and keeps the same invariants. Opening (create only when asked,
// ErrNoStore otherwise; ErrNotStore, ErrDamaged, ErrSchema, ErrLocked) is
// the backend's: package boltstore documents bbolt's. A damaged file gives
// ErrDamaged from any read (View, Update, LoadTable, ServerDUID, Check),
// never a panic or a fault. Store.Discard removes a store that opening
// created, for a caller that then failed.
//
// Allocations are changed only inside Store.Update, whose Tx checks every
// invariant on each Put; the whole function commits or nothing does:
//
//	err := st.Update(pools, func(tx *allocator.Tx) error {
//		p, err := tx.LowestFree(pool)
//		if err != nil {
//			return err
//		}
//		return tx.Put(allocator.Allocation{Pool: pool.Name, MAC: mac, Prefix: p,
//			State: allocator.StateActive, Since: now, Source: "sync"})
//	})
//
// then Store.LoadTable builds the Table the server answers from, and a
// TableBuilder applies later changes to it without reloading.
//
// # Table
//
// A Table keeps each allocation as a fixed-size record without pointers,
// its MAC and strings in two shared buffers, and finds a MAC through an
// open-addressing index: a million allocations take some 160 MB, which the
// garbage collector never scans, and load in about a second (LoadTable
// reads the records' JSON without reflection). Table.Find is the packet
// path's lookup and does not allocate; Lookup, At and Allocations build
// Allocation values (Allocations keeps all of them, some 250 bytes each:
// prefer Len, At and StateCounts).
//
// Store.Sync feeds the table from an Inventory (CloudStack: package
// cloudstack implements it): it lists every pool's pod, completely, then
// Store.Reconcile applies the allocation rules in one Update – new NICs
// get the lowest free prefix, missing ones go gone, then quarantined, then
// released, and a sync that would mark too many gone is refused
// (SyncOptions, RefusedError). docs/sync.md is the operator's view. Bindings
// (what was actually handed to which IA_PD, for Leasequery) are written in
// batches with Store.PutBindings. Store.Check verifies a store end to end.
//
// # Key layout (schema 1)
//
// Later backends (etcd) and Leasequery rely on this layout; changing it
// means a new meta/schema value and a migration. All integers are
// big-endian; "prefix key" is the 16 bytes of the prefix address followed
// by one byte of prefix length, so keys sort by address (PrefixKey). The
// key spaces (package kv) and, in brackets, the bbolt buckets that hold
// them (package boltstore):
//
//	space                     key                               value
//	------------------------  --------------------------------  ----------------------------------------
//	meta [meta]               "schema"                          "1" (SchemaVersion)
//	meta [meta]               "server-duid"                     the server DUID, raw bytes
//	alloc/<pool>              MAC, raw bytes (1 to 20)          JSON allocation (below)
//	  [pools/<pool>/alloc]
//	prefix/<pool>             prefix key (17 bytes)             MAC owning it, raw bytes
//	  [pools/<pool>/prefix]
//	mac [macs]                MAC, raw bytes                    name of the pool holding its allocation
//	binding [bindings]        len(DUID) (1) + DUID + IAID (4)   JSON binding (see Binding)
//	binding-prefix            prefix key (17 bytes)             key in binding
//	  [binding-prefix]
//	held [held]               prefix key (17 bytes)             JSON allocation record, state quarantined
//	history [history]         time (UnixNano, 8) + seq (4)      JSON history event (see HistoryEvent)
//
// As one flat key space (etcd) these are <prefix>/meta/<key>,
// <prefix>/alloc/<pool>/<mac>, <prefix>/prefix/<pool>/<prefix key>,
// <prefix>/mac/<mac>, <prefix>/binding/<key>,
// <prefix>/binding-prefix/<prefix key>, <prefix>/held/<prefix key> and
// <prefix>/history/<time><seq> (docs/design.md, "The storage seam").
//
// held holds the prefixes quarantined without an allocation (Tx.Move,
// Tx.ForgetPool): the record of the allocation they were, under the
// prefix key; the pool's prefix index keeps naming the MAC, so the prefix
// stays taken, and the sync deletes both once the quarantine has passed.
// history holds every change of an allocation, written in the
// transaction of the change (Tx.Put, Tx.Delete and the actions; SetActor
// says who): keys sort by time, a sequence number orders the events of
// one second.
//
// A pool's two spaces are named by the pool's name (the mapping key, a pod
// UUID). An allocation record (EncodeAllocation, DecodeAllocation) is
// Allocation's JSON plus the MAC:
//
//	{"mac": "06:32:b2:00:04:79", "pool": "77828509-…", "prefix": "2001:db8:200::/60",
//	 "state": "active", "since": "2026-01-02T03:04:05Z", "source": "import-kea",
//	 "ip6": "2001:db8:100:0:432:b2ff:fe00:479", "ip6-cidr": "2001:db8:100::/64"}
//
// Its fields: mac, pool, prefix, state and since always; gone-at and
// quarantined-at once the NIC went missing; vm-id, vm-name, nic-id and ip6,
// what CloudStack says of the NIC; ip6-cidr, the pool's ip6-cidr (the
// VMs' SLAAC subnet, Kea's subnet6 "subnet") when the record was last
// written; source. Optional fields are left out when empty; a record
// without ip6-cidr (written before it was kept) reads as having none, and
// the next sync adds it.
//
// The key, not the record, is the authority for the MAC and the space for
// the pool; Check reports a record that disagrees.
//
// Indexes, kept in the same transaction as the records they index, by
// Tx whatever the backend:
//
//   - prefix/<pool> makes a prefix belong to at most one MAC. A
//     quarantined allocation keeps its entry, so its prefix is not free.
//   - mac makes a MAC hold at most one allocation across all pools,
//     including pools no longer configured.
//   - binding-prefix makes a prefix bound to at most one IA_PD and finds
//     the binding of a prefix (Leasequery by prefix).
//
// # Caveats
//
//   - Never write a backend's keys around Store (bbolt CLI, etcdctl,
//     another program): the indexes would drift from the records. Run
//     Check (and keep a copy) after anything unusual. package boltstore
//     lists bbolt's own caveats (one process, NoSync, pages dropped).
//   - A Tx is valid only inside the function given to Update or View: do
//     not keep it, nor use it from another goroutine. Do not open a View
//     (or call LoadTable, Bindings, ServerDUID) from inside Update: bbolt
//     can deadlock when a goroutine holds a read and a write transaction.
//   - Changing a pool's prefix or prefix-len in the config while it has
//     allocations makes LoadTable fail: prefixes never move silently.
//     Removing a pool from the config keeps its allocations in the store
//     (reported by LoadTable and Check), and keeps their MACs out of every
//     other pool until they are deleted.
//   - Put never changes an allocation's prefix (ErrPrefixMoved): to give a
//     MAC another prefix, Delete it and Put it again, knowingly, or Move it
//     (which keeps the old prefix out of use for the quarantine).
//   - Set the Actor (Tx.SetActor) before writing: the history records its
//     time, who and why with each change; without one the time is now and
//     nobody is named.
//   - PutBindings applies deletions before writes; coalesce a key's events
//     before calling it, or the order between them is lost. A release
//     deletes only a binding recorded with the release's MAC.
//   - A TableBuilder's result equals NewTable's on the same allocations
//     but for the order of Allocations and At.
//   - Sync and Reconcile need a listing for every pool they are given, and
//     must be given every configured pool: allocations of a pool left out
//     are not reconciled, and its MACs count as allocated elsewhere.
package allocator
