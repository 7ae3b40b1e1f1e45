package allocator

import "github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"

// The tests of this package run on the bbolt backend, opened as the
// commands open it.

// StoreOptions are the bbolt backend's options.
type StoreOptions = boltstore.Options

// Open opens the bbolt store at path.
func Open(path string, opts StoreOptions) (*Store, error) {
	return OpenStore(boltstore.Open(path, opts))
}
