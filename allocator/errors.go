package allocator

import "errors"

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
	// ErrLocked is returned by Open when another process holds the store.
	ErrLocked = errors.New("store is locked by another process")
)
