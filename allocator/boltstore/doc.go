// Package boltstore is the bbolt backend of the allocation store: it keeps
// the key spaces of package kv in one bbolt file and is the only package
// of cloudstack-pd that imports bbolt. The rules (one prefix one MAC, a
// MAC in one pool, never move, no overlap) and the records' encoding are
// package allocator's; this package stores bytes:
//
//	st, err := allocator.OpenStore(boltstore.Open(path, boltstore.Options{}))
//
// # Opening
//
// Open takes an exclusive file lock, or a shared one with
// Options.ReadOnly, and gives up after Options.Timeout with kv.ErrLocked
// instead of waiting forever. It creates a store only with
// Options.Create (kv.ErrNoStore otherwise), whole and with its schema
// marker: the file is made under a temporary name and linked into place.
// It refuses what is not a store of this package whatever the options
// (kv.ErrNotStore: an empty file, not a bbolt file, a bbolt file without
// meta/schema) and a schema it does not know (kv.ErrSchema). It checks
// the file before bbolt maps it (the meta page's high-water mark against
// the file's size) and, unless Options.NoVerify, reads every branch and
// leaf page once; a damaged file gives kv.ErrDamaged, from Open or from
// any later read (guard turns bbolt's panics and memory faults into it).
//
// # Bucket layout (schema 1)
//
//	bucket                    key space (package kv)
//	------------------------  ----------------------
//	meta                      Meta
//	pools/<pool>/alloc        Alloc, Space.Pool = <pool>
//	pools/<pool>/prefix       Prefix, Space.Pool = <pool>
//	macs                      MACs
//	bindings                  Bindings
//	binding-prefix            BindingPrefix
//	held                      Held (made on its first write)
//	history                   History (made on its first write)
//
// pools/<pool> is a bucket per pool, named by the pool's name, holding the
// two nested buckets alloc and prefix, made together on the first write
// to either; they stay when the pool's last key is deleted (Tx.Pools then
// still names the pool). Keys and values are the bytes package allocator
// gives (allocator/doc.go documents them). Every store written by an
// earlier version has this layout; the files in allocator/testdata open.
// held and history are made on their first write, so that a store of an
// earlier version opens read-only and checks clean without them (a
// missing one reads as an empty space).
//
// Store.WriteTo (kv.Backuper) is bbolt's hot copy: the file as one read
// transaction sees it, written while the server goes on writing.
//
// # Caveats
//
//   - Open the store from one process only. A second cloudstack-pd (a
//     server, or an import-kea run while the server runs) gets
//     kv.ErrLocked after the timeout; stop the server before importing.
//     The lock is per open file: a second Open in the same process
//     conflicts too.
//   - Never write the file with other tools (bbolt CLI, another program):
//     the indexes would drift from the records. Run allocator's Check
//     (which adds this package's CheckStructure: missing buckets, bbolt's
//     own check of every page) after anything unusual.
//   - Do not open a View from inside Update: bbolt can deadlock when a
//     goroutine holds a read and a write transaction.
//   - Options.NoSync trades durability for speed: tests only.
//   - An Update is one bbolt transaction, all or nothing, unless its
//     function allows splitting (kv.Splitter, a sync's writes): then it
//     commits in parts of whole groups (Options.SplitBytes each).
//     Updates are serialised by the Store, so that no other writer of the
//     process runs between two parts.
//   - bbolt maps 1 GiB of address space at open (not memory) and fills
//     the pages it splits to 90% (the history's, whose keys only grow, to
//     100%): a growing store is not remapped every time it doubles.
//   - Long scans (LoadTable's), Verify and every Update drop the store's
//     pages they read from the process's resident memory (madvise
//     DONTNEED on bbolt's read-only shared mapping; they stay in the page
//     cache): the table, not the file, is what the server keeps.
//   - Keys and values a Tx returns point into the mapped file: valid until
//     the transaction ends, never to be written.
package boltstore
