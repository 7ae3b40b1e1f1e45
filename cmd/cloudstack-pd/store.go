package main

import (
	"errors"
	"fmt"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/config"
)

// storeMode says how a command opens the store (state).
type storeMode int

const (
	// storeRead opens an existing store read-only (check, allocations,
	// kea-export --offline, …): it never creates a file.
	storeRead storeMode = iota
	// storeWrite opens an existing store for writing (serve, sync): a
	// missing one is refused, so that a typo in state or an unmounted
	// /var/lib never starts an empty store that numbers every VM afresh.
	storeWrite
	// storeCreate opens the store for writing and creates it when it does
	// not exist (serve and sync with --init, import-kea, kea-export).
	storeCreate
)

// docStoreRefused is where the operator reads what to do with a store
// that is refused or damaged.
const docStoreRefused = "docs/operations.md, \"The store is refused or damaged\""

// openState opens cfg's store as mode says, for the command what, and
// explains a refusal: the path, why, and what to do.
func openState(cfg *config.Config, what string, mode storeMode) (*allocator.Store, error) {
	return openStateOpts(cfg, what, mode, boltstore.Options{})
}

// openStateOpts is openState with opts (NoVerify, Timeout) besides what
// mode sets.
func openStateOpts(cfg *config.Config, what string, mode storeMode, opts boltstore.Options) (*allocator.Store, error) {
	opts.ReadOnly, opts.Create = mode == storeRead, mode == storeCreate
	st, err := openBolt(cfg.State, opts)
	if err == nil {
		return st, nil
	}
	return nil, explainStoreError(err, cfg, what, mode)
}

// openBolt opens the bbolt store at path: the one place where a command
// picks the storage backend.
func openBolt(path string, opts boltstore.Options) (*allocator.Store, error) {
	return allocator.OpenStore(boltstore.Open(path, opts))
}

// explainStoreError adds to an error of openBolt what the operator
// should do about it.
func explainStoreError(err error, cfg *config.Config, what string, mode storeMode) error {
	switch {
	case errors.Is(err, allocator.ErrNoStore) && mode == storeWrite:
		return fmt.Errorf("state %s does not exist: give --init to create a new store for a new cloud, "+
			"or fix `state` in %s (a typo? /var/lib not mounted?); to adopt a Kea site's reservations, run 'cloudstack-pd import-kea' first. "+
			"Without its store, %s would number every VM afresh", cfg.State, cfg.Path, what)
	case errors.Is(err, allocator.ErrNoStore):
		return fmt.Errorf("state %s does not exist: there is no table yet ('serve --init', 'sync --init', import-kea and kea-export create it); "+
			"is `state` right in %s (a typo? /var/lib not mounted?)", cfg.State, cfg.Path)
	case errors.Is(err, allocator.ErrNotStore):
		return fmt.Errorf("%w\n%s refuses this file whatever the flags, and writes nothing to it: if `state` in %s names the wrong file, fix it; "+
			"if it is the store and was emptied or overwritten, restore it from a backup; only for a new cloud, remove the file and start with --init (%s)",
			err, what, cfg.Path, docStoreRefused)
	case errors.Is(err, allocator.ErrDamaged):
		return fmt.Errorf("%w\n%s does not use a damaged store: stop cloudstack-pd, keep a copy of the file, restore the last backup and run 'cloudstack-pd check' on it (%s)",
			err, what, docStoreRefused)
	}
	return err
}
