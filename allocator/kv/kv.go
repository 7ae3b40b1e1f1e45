// Package kv is the storage seam of the allocation store: the ordered key
// spaces a backend keeps and the transactions it runs on them. Package
// allocator writes every rule (one prefix one MAC, a MAC in one pool, an
// allocation never moves, no overlap across pools) and every record's
// encoding against these interfaces; a backend only stores bytes. Package
// boltstore is the bbolt backend; package etcdstore maps the same spaces
// to one flat key space under a key prefix (docs/design.md, "Storage
// seam"), naming each kind by Kind.String:
//
//	<prefix>meta/<key>                            Meta
//	<prefix>alloc/<escaped pool>/<mac>            Alloc
//	<prefix>prefix/<escaped pool>/<prefix key>    Prefix
//	<prefix>mac/<mac>                             MACs
//	<prefix>binding/<binding key>                 Bindings
//	<prefix>binding-prefix/<prefix key>           BindingPrefix
//	<prefix>held/<prefix key>                     Held
//	<prefix>history/<time><seq>                   History
//
// This package imports nothing of the project's and no backend: a backend
// implements it without importing allocator, and allocator uses it without
// importing a backend.
package kv

import (
	"errors"
	"io"
)

// SchemaVersion is the value of the meta key "schema" that this version
// writes and reads. A store with another value is refused with ErrSchema.
const SchemaVersion = "1"

// Kind names a key space.
type Kind uint8

// The key spaces. Keys and values are raw bytes; package allocator
// documents their encoding.
const (
	// Meta holds the store's own keys: "schema", "server-duid".
	Meta Kind = iota + 1
	// Alloc holds the allocations of one pool (Space.Pool), by MAC.
	Alloc
	// Prefix is the prefix index of one pool (Space.Pool): prefix key to MAC.
	Prefix
	// MACs maps a MAC to the name of the pool holding its allocation.
	MACs
	// Bindings holds the recorded bindings, by binding key.
	Bindings
	// BindingPrefix maps a prefix key to the binding key holding it.
	BindingPrefix
	// Held holds the prefixes kept in quarantine without an allocation
	// (moved away from, or of a forgotten pool), by prefix key.
	Held
	// History is the allocation history, by time then sequence.
	History
)

func (k Kind) String() string {
	switch k {
	case Meta:
		return "meta"
	case Alloc:
		return "alloc"
	case Prefix:
		return "prefix"
	case MACs:
		return "mac"
	case Bindings:
		return "binding"
	case BindingPrefix:
		return "binding-prefix"
	case Held:
		return "held"
	case History:
		return "history"
	}
	return "unknown"
}

// Space is one ordered key space: a Kind, and for Alloc and Prefix the pool.
type Space struct {
	Kind Kind
	Pool string
}

func (s Space) String() string {
	if s.Kind == Alloc || s.Kind == Prefix {
		return s.Kind.String() + "/" + s.Pool
	}
	return s.Kind.String()
}

// Backend is a store of the key spaces. It is safe for concurrent use.
type Backend interface {
	// Name says where the store is, for messages: a file, endpoints.
	Name() string
	// ReadOnly reports whether the backend refuses writes.
	ReadOnly() bool
	// View runs fn in a read-only transaction that sees one consistent
	// snapshot.
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction: everything fn wrote is
	// committed when it returns nil, nothing when it returns an error or
	// panics. It is serializable: a backend with several writers never
	// commits a transaction whose reads (keys, absent keys, ranges)
	// another writer changed meanwhile (docs/design.md, "The storage
	// seam"). On a read-only backend it fails with an error wrapping
	// ErrReadOnly.
	Update(fn func(Tx) error) error
	// Close releases the backend. Transactions in progress finish first.
	Close() error
}

// Tx is one transaction, valid only inside the function given to View or
// Update, and only in the goroutine that runs it. Keys and values it
// returns are valid until the transaction ends and must not be modified;
// keys and values given to Put must not be modified until it ends either.
type Tx interface {
	// Writable reports whether Put and Delete may be called.
	Writable() bool
	// Get returns the value of key in s, nil when absent.
	Get(s Space, key []byte) []byte
	// Put sets key in s to value (not nil), creating the space if need be.
	Put(s Space, key, value []byte) error
	// Delete removes key from s; an absent key is not an error.
	Delete(s Space, key []byte) error
	// Seek returns the first key of s at or after key, and its value; nil
	// when there is none.
	Seek(s Space, key []byte) (k, v []byte)
	// Last returns the last key of s before key (the last key of s when
	// key is nil), and its value; nil when there is none.
	Last(s Space, key []byte) (k, v []byte)
	// Scan calls fn with each key of s at or after from (every key when
	// from is nil), in byte order, and stops at fn's first error, which it
	// returns, but for ErrStop, which ends the scan without error. fn may
	// read the transaction but not write to it.
	Scan(s Space, from []byte, fn func(k, v []byte) error) error
	// Pools returns the names of the pools that have an Alloc or a Prefix
	// space, in byte order.
	Pools() []string
}

// Optional interfaces a Backend may implement; allocator.Store uses them
// when it does.
type (
	// Verifier reads the whole store, so that damage is found before it
	// is used (see allocator.Store.Verify). skipAlloc leaves out the Alloc
	// spaces, which the caller reads by itself.
	Verifier interface {
		Verify(skipAlloc bool) error
	}
	// BackgroundVerifier is a Verifier that can check the store while it
	// is read: VerifyBeforeWrites starts Verify(skipAlloc) and returns its
	// result on the channel; until it is known every write waits, and
	// after a failure every write fails with it.
	BackgroundVerifier interface {
		VerifyBeforeWrites(skipAlloc bool) <-chan error
	}
	// Checker reports what the backend finds wrong with its own
	// structure, one line each (allocator.Store.Check adds its rules'
	// findings); the error is for a store that does not read (ErrDamaged).
	Checker interface {
		CheckStructure() ([]string, error)
	}
	// Backuper writes a consistent copy of the whole store, as one
	// snapshot, in the backend's own file format (bbolt: a bbolt file,
	// which boltstore.Open opens). A backend without it is copied key
	// space by key space into a new bbolt store (allocator.CopyInto).
	Backuper interface {
		WriteTo(w io.Writer) (int64, error)
	}
	// Grouper is a Tx that may commit a large Update in several
	// transactions (an etcd backend, whose transactions hold a bounded
	// number of operations). EndGroup says that the writes since the
	// previous EndGroup (or the start) belong together: such a backend
	// commits each group whole, in one transaction, and splits an Update
	// only between groups, in order. An Update interrupted between two of
	// its transactions leaves a prefix of whole groups committed. Package
	// allocator ends a group after each allocation's writes (its record,
	// its prefix index and MAC index entries, its history event) and after
	// each binding's. A
	// backend that commits every Update at once need not implement it.
	Grouper interface {
		EndGroup()
	}
	// Splitter is a Tx that commits an Update at once unless its caller
	// allows otherwise: after AllowSplit it may commit what was written
	// so far at the end of a group (kv.Grouper's EndGroup), when the
	// transaction has grown past a bound of the backend's, and go on in
	// a new transaction, so that a large Update does not hold all its
	// writes in memory until the end. The contract is then the
	// Grouper's: an Update interrupted between two of its transactions
	// leaves a prefix of whole groups committed. Package allocator allows
	// it for a sync's writes, which are valid change by change, and never
	// for a change that must be all or nothing (an import, a copy, an
	// operator's command).
	Splitter interface {
		Grouper
		AllowSplit()
	}
	// Creator is a backend whose opening may have created the store.
	Creator interface {
		// Created reports whether opening created the store.
		Created() bool
		// Discard closes the backend and removes the store it created.
		Discard() error
	}
)

// ErrStop ends a Scan early, without error.
var ErrStop = errors.New("stop")

// Errors of the backends, re-exported by package allocator. The wrapping
// error names the store.
var (
	// ErrLocked: another process holds the store.
	ErrLocked = errors.New("store is locked by another process")
	// ErrNoStore: the store does not exist and creating it was not asked for.
	ErrNoStore = errors.New("no store")
	// ErrNotStore: what is there is not a cloudstack-pd store (refused
	// whatever the options, and never written to).
	ErrNotStore = errors.New("not a cloudstack-pd store")
	// ErrDamaged: the store does not read.
	ErrDamaged = errors.New("store is damaged")
	// ErrSchema: the store was written with a schema this version does
	// not know.
	ErrSchema = errors.New("unsupported store schema")
	// ErrReadOnly: a write to a store or transaction that is read-only.
	ErrReadOnly = errors.New("store or transaction is read-only")
)
