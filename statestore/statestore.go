// Package statestore opens the state store named by a config (state) for
// a command: read-only, for writing, or creating it (serve and sync with
// --init, import-kea, kea-export), with an empty store in a temporary
// folder for a dry run, and every refusal explained to the operator: the
// path, why, and what to do. It is the one place where a command picks the
// storage backend: bbolt (allocator/boltstore), or the table in etcd when
// the config names a cluster (allocator/etcdstore: OpenCluster, OpenServe).
package statestore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/config"
)

// Mode says how a command opens the store (state).
type Mode int

const (
	// Read opens an existing store read-only (check, allocations,
	// kea-export --offline, …): it never creates a file.
	Read Mode = iota
	// Write opens an existing store for writing (serve, sync): a
	// missing one is refused, so that a typo in state or an unmounted
	// /var/lib never starts an empty store that numbers every VM afresh.
	Write
	// Create opens the store for writing and creates it when it does
	// not exist (serve and sync with --init, import-kea, kea-export).
	Create
)

// docStoreRefused is where the operator reads what to do with a store
// that is refused or damaged.
const docStoreRefused = "docs/operations.md, \"The store is refused or damaged\""

// Open opens cfg's store as mode says, for the command what, and
// explains a refusal: the path, why, and what to do.
func Open(cfg *config.Config, what string, mode Mode) (*allocator.Store, error) {
	return OpenOpts(cfg, what, mode, boltstore.Options{})
}

// OpenOpts is Open with opts (NoVerify, Timeout) besides what
// mode sets.
func OpenOpts(cfg *config.Config, what string, mode Mode, opts boltstore.Options) (*allocator.Store, error) {
	if cfg.Cluster.Enabled() {
		return OpenCluster(cfg, what, mode)
	}
	opts.ReadOnly, opts.Create = mode == Read, mode == Create
	st, err := OpenBolt(cfg.State, opts)
	if err == nil {
		return st, nil
	}
	return nil, Explain(err, cfg, what, mode)
}

// OpenBolt opens the bbolt store at path: the one place where a command
// picks the storage backend.
func OpenBolt(path string, opts boltstore.Options) (*allocator.Store, error) {
	return allocator.OpenStore(boltstore.Open(path, opts))
}

// Explain adds to an error of OpenBolt what the operator
// should do about it.
func Explain(err error, cfg *config.Config, what string, mode Mode) error {
	switch {
	case errors.Is(err, allocator.ErrNoStore) && mode == Write:
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

// OpenForWrite opens the state store for what (serve, sync) to write,
// failing fast when another process holds it; it creates a missing store
// only with init (--init). opts adds NoVerify.
func OpenForWrite(cfg *config.Config, what string, init bool, opts boltstore.Options) (*allocator.Store, error) {
	mode := Write
	if init {
		mode = Create
	}
	return OpenOpts(cfg, what, mode, opts)
}

// OpenDryRun opens the store read-only for what, or, when there is
// none yet and create allows the real run to make one, an empty one in a
// temporary folder, so that a dry run creates nothing.
func OpenDryRun(cfg *config.Config, what string, create bool) (*allocator.Store, error) {
	if cfg.Cluster.Enabled() {
		st, err := OpenCluster(cfg, what, Read)
		if err == nil || !errors.Is(err, allocator.ErrNoStore) || !create {
			return st, err
		}
		return emptyStore()
	}
	if _, err := os.Stat(cfg.State); err == nil || !errors.Is(err, fs.ErrNotExist) || !create {
		mode := Read
		if !create {
			mode = Write // explains a missing store as serve and sync do
		}
		st, err := OpenBolt(cfg.State, boltstore.Options{ReadOnly: true})
		if err != nil {
			return nil, Explain(err, cfg, what, mode)
		}
		return st, nil
	}
	return emptyStore()
}

// emptyStore is a new, empty store in a temporary folder, gone on Close.
func emptyStore() (*allocator.Store, error) {
	dir, err := os.MkdirTemp("", "cloudstack-pd-dry-run-")
	if err != nil {
		return nil, err
	}
	st, err := OpenBolt(filepath.Join(dir, "state.db"), boltstore.Options{Create: true, NoSync: true})
	// The open file lives on until Close; the name can go now.
	_ = os.RemoveAll(dir)
	return st, err
}
