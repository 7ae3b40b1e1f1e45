package statestore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/config"
)

// Backup writes a consistent copy of st to the file to, as a bbolt store,
// while st stays in use (serve goes on answering and writing): the
// backend's own copy when it has one (kv.Backuper: bbolt's read
// transaction WriteTo), else every key space copied into a new bbolt
// store (allocator.CopyInto). The copy is written under a temporary
// name in to's folder, synced, opened (every page read) and checked
// (allocator.Store.Check against cfg's pools, bbolt's check of every page
// included): a copy that does not open or read is refused; the rules'
// violations it reports are the store's own (the copy holds the store's
// bytes) and come back in the report. Only then is it renamed to to,
// replacing an older file there. A failed backup leaves nothing behind.
//
// The store itself is not checked: bbolt's page check in a read
// transaction reports false damage while another transaction commits,
// and serve commits every second.
func Backup(st *allocator.Store, cfg *config.Config, to string) (*allocator.BackupReport, error) {
	to, err := filepath.Abs(to)
	if err != nil {
		return nil, err
	}
	if same(to, st.Path()) {
		return nil, fmt.Errorf("backup --to %s: that is the store itself (state)", to)
	}
	pools := cfg.Pools()
	dir, base := filepath.Split(to)
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("backup --to %s: %w", to, err)
	}
	tmp := f.Name()
	keep := false
	defer func() {
		if !keep {
			_ = os.Remove(tmp)
		}
	}()
	if b, ok := st.Backend().(kv.Backuper); ok {
		_, err = b.WriteTo(f)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	} else {
		err = copyInto(st, f)
	}
	if err != nil {
		return nil, fmt.Errorf("backup --to %s: writing %s: %w", to, tmp, err)
	}
	rep, err := verifyCopy(tmp, pools)
	if err != nil {
		return nil, fmt.Errorf("backup --to %s: the copy %s does not check, not kept: %w", to, tmp, err)
	}
	if err := os.Rename(tmp, to); err != nil {
		return nil, fmt.Errorf("backup --to %s: %w", to, err)
	}
	keep = true
	syncDir(dir)
	rep.Path = to
	return rep, nil
}

// copyInto copies st key space by key space into a new bbolt store at
// f's name (the generic backup).
func copyInto(st *allocator.Store, f *os.File) error {
	name := f.Name()
	f.Close()
	// boltstore makes a new store only where no file is.
	if err := os.Remove(name); err != nil {
		return err
	}
	dst, err := OpenBolt(name, boltstore.Options{Create: true})
	if err != nil {
		return err
	}
	if _, err := allocator.CopyInto(dst, st); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

// verifyCopy opens the copy at path read-only (every page read), checks
// it against pools and counts what it holds: an error when it does not
// open or read, the violations in the report.
func verifyCopy(path string, pools []allocator.Pool) (*allocator.BackupReport, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	cp, err := OpenBolt(path, boltstore.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer cp.Close()
	lines, err := cp.Check(pools)
	if err != nil {
		return nil, err
	}
	rep := &allocator.BackupReport{Bytes: fi.Size(), Violations: lines}
	if rep.Allocations, err = cp.CountAllocations(); err != nil {
		return nil, err
	}
	if rep.Events, err = cp.CountHistory(); err != nil {
		return nil, err
	}
	return rep, nil
}

// same reports whether paths a and b name one file (or one path).
func same(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// RestoreReport says what Restore did.
type RestoreReport struct {
	// From is the backup restored, State the store it replaced.
	From, State string
	// Kept is where the store that was replaced was moved; empty when
	// there was none.
	Kept string
	// Allocations and Events count what the restored store holds;
	// Violations are what check finds in it (restored with --force).
	Allocations, Events int
	Violations          []string
}

// ErrRestoreViolations is returned by Restore for a backup that check
// finds violations in, unless forced.
var ErrRestoreViolations = errors.New("the backup has violations")

// Restore replaces cfg's store (state) with the backup at from. The
// backup is opened read-only and checked against cfg's pools first: a
// damaged file or one that is not a store is refused, one with
// violations too unless force. The store in place must not be held by
// another process (serve, sync: ErrLocked); it is moved aside to
// <state>.before-restore-<UTC time>, not deleted, and the backup is
// copied in under a temporary name, synced, then renamed into place.
func Restore(cfg *config.Config, from string, force bool, now time.Time) (*RestoreReport, error) {
	from, err := filepath.Abs(from)
	if err != nil {
		return nil, err
	}
	state, err := filepath.Abs(cfg.State)
	if err != nil {
		return nil, err
	}
	if same(from, state) {
		return nil, fmt.Errorf("restore --from %s: that is the store itself (state)", from)
	}
	rep := &RestoreReport{From: from, State: state}
	src, err := OpenBolt(from, boltstore.Options{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("restore --from %s: %w", from, err)
	}
	lines, err := src.Check(cfg.Pools())
	if err == nil {
		rep.Allocations, err = src.CountAllocations()
	}
	if err == nil {
		rep.Events, err = src.CountHistory()
	}
	src.Close()
	if err != nil {
		return nil, fmt.Errorf("restore --from %s: %w", from, err)
	}
	rep.Violations = lines
	if len(lines) > 0 && !force {
		return rep, fmt.Errorf("restore --from %s: %d violation(s): %w (see check; --force restores it anyway)", from, len(lines), ErrRestoreViolations)
	}
	// Hold the store in place while it is replaced: nobody else may.
	if _, err := os.Stat(state); err == nil {
		cur, err := OpenBolt(state, boltstore.Options{Timeout: -1, NoVerify: true})
		if err != nil && !errors.Is(err, allocator.ErrDamaged) && !errors.Is(err, allocator.ErrNotStore) {
			return nil, Explain(err, cfg, "restore", Write)
		}
		if cur != nil {
			defer cur.Close()
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	dir := filepath.Dir(state)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	tmp, err := copyFile(from, dir, "."+filepath.Base(state)+".restore-*")
	if err != nil {
		return nil, fmt.Errorf("restore --from %s: %w", from, err)
	}
	if _, err := os.Stat(state); err == nil {
		rep.Kept = state + ".before-restore-" + now.UTC().Format("20060102T150405Z")
		if err := os.Rename(state, rep.Kept); err != nil {
			os.Remove(tmp)
			return nil, fmt.Errorf("restore: moving the store aside: %w", err)
		}
	}
	if err := os.Rename(tmp, state); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("restore: %w (the store was moved to %s)", err, rep.Kept)
	}
	syncDir(dir)
	return rep, nil
}

// copyFile copies from into a new file in dir named by pattern, mode
// 0600, synced; it returns the new file's name.
func copyFile(from, dir, pattern string) (string, error) {
	in, err := os.Open(from)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out.Name())
		return "", err
	}
	return out.Name(), nil
}
