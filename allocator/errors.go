package allocator

import (
	"errors"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// Errors returned by the allocator. Callers test them with errors.Is; the
// wrapping error names the pool, MAC or prefix concerned.
var (
	// ErrDuplicatePool is returned when two pools have the same name.
	ErrDuplicatePool = errors.New("duplicate pool name")
	// ErrDuplicateInterfaceID is returned when two pools share an interface-id.
	ErrDuplicateInterfaceID = errors.New("duplicate interface-id")
	// ErrUnknownPool is returned when an allocation names a pool that is not configured.
	ErrUnknownPool = errors.New("unknown pool")
	// ErrOutsidePool is returned when a prefix is not inside its pool.
	ErrOutsidePool = errors.New("prefix outside pool")
	// ErrPrefixLength is returned when a prefix does not have the pool's delegated length or is not aligned to it.
	ErrPrefixLength = errors.New("prefix length or alignment does not match the pool")
	// ErrDuplicateMAC is returned when a MAC would own two allocations.
	ErrDuplicateMAC = errors.New("MAC allocated twice")
	// ErrDuplicatePrefix is returned when a prefix would belong to two MACs.
	ErrDuplicatePrefix = errors.New("prefix allocated twice")
	// ErrLocked is returned by a backend's Open when another process holds
	// the store. It and the other store errors below are package kv's,
	// which the backends return.
	ErrLocked = kv.ErrLocked
	// ErrPrefixMoved is returned when a write would give a MAC that already
	// has an allocation a different prefix: an allocation never moves.
	ErrPrefixMoved = errors.New("allocation would change prefix")
	// ErrPoolExhausted is returned when a pool has no free prefix left.
	ErrPoolExhausted = errors.New("pool has no free prefix")
	// ErrNoStore is returned by a backend's Open when the store does not
	// exist and creating it was not asked for (boltstore.Options.Create).
	ErrNoStore = kv.ErrNoStore
	// ErrNotStore is returned by a backend's Open for what is not a
	// cloudstack-pd store (bbolt: an empty file, not a bbolt file, or a
	// bbolt file without the schema marker). It is refused whatever the
	// options, and never written to.
	ErrNotStore = kv.ErrNotStore
	// ErrDamaged is returned when the store is damaged (bbolt: the file is
	// truncated, or a page does not read), from opening or any later read.
	// The error names the store.
	ErrDamaged = kv.ErrDamaged
	// ErrSchema is returned by a backend's Open when the store was written
	// with a schema this version does not know.
	ErrSchema = kv.ErrSchema
	// ErrReadOnly is returned by a write to a read-only store or in a View.
	ErrReadOnly = kv.ErrReadOnly
	// ErrInvalidMAC is returned when a MAC is empty, longer than 20 bytes or
	// cannot be parsed.
	ErrInvalidMAC = errors.New("invalid MAC")
	// ErrInvalidState is returned when an allocation's State is not one of
	// the State constants.
	ErrInvalidState = errors.New("invalid allocation state")
	// ErrInvalidBinding is returned when a binding can never be stored (see
	// Binding.Problem): its client DUID is empty or longer than 255 bytes,
	// its prefix is not an IPv6 prefix, or a time cannot be written.
	// PutBindings still writes the rest of its batch.
	ErrInvalidBinding = errors.New("invalid binding")
	// ErrInvalidReservation is returned for a Kea reservation that cannot be
	// adopted as it stands: no hw-address, several prefixes, a value that
	// does not parse.
	ErrInvalidReservation = errors.New("reservation cannot be adopted")
	// ErrImportConflicts is returned by Import and PlanImport when the Kea
	// config conflicts with itself, with the pools or with the store; the
	// ImportReport lists each conflict and nothing was written.
	ErrImportConflicts = errors.New("import conflicts")
	// ErrTooManyGone is returned by Store.Sync and Store.Reconcile when a
	// sync would newly mark more than SyncOptions.MaxReleaseFraction of a
	// pool's active allocations gone; the *RefusedError that wraps it names
	// the pools and the numbers, and nothing was written.
	ErrTooManyGone = errors.New("sync would mark too many allocations gone")
	// ErrNoListing is returned by Store.Reconcile when a configured pool
	// has no listing: every pool must be listed, completely, or nothing is
	// reconciled.
	ErrNoListing = errors.New("no listing for a configured pool")
)
