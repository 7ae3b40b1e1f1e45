// Package keaexport is the logic of 'cloudstack-pd kea-export' that is
// not the Kea format itself (package kea): the allocation table turned
// into kea.Export's subnets, the comparison of Kea's lifetimes with the
// server section, and the atomic replacement of the output file. Errors
// of WriteFile name the --output flag, as the command reports them.
package keaexport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/kea"
)

// Options are how Export runs.
type Options struct {
	// Offline exports the table as stored, and adopts the --keacfg
	// reservations into the export only, writing nothing.
	Offline bool
	// Sync syncs st from CloudStack before the export, unless Offline
	// (required then).
	Sync func(ctx context.Context, cfg *config.Config, st *allocator.Store, out io.Writer) error
	// StoreError explains an error of the table's load; nil: as it is.
	StoreError func(error) error
	// Stderr receives warnings and what the export did.
	Stderr io.Writer
	// Now stamps the adopted reservations.
	Now time.Time
}

// Export is kea-export without its flags and output file: it adopts
// src's reservations the store does not hold (Adopt), syncs (unless
// o.Offline), and turns the table into src with its reservations
// replaced (kea.Export), reporting warnings and each subnet on o.Stderr.
func Export(ctx context.Context, cfg *config.Config, st *allocator.Store, src *kea.Config, o Options) (*kea.ExportResult, error) {
	kept, err := Adopt(st, cfg, src, o.Offline, o.Stderr, o.Now)
	if err != nil {
		return nil, err
	}
	tbl, err := exportTable(ctx, cfg, st, o)
	if err != nil {
		return nil, err
	}
	if tbl.Len()+len(kept) == 0 {
		fmt.Fprintf(o.Stderr, "warning: the table in %s holds no allocation: the export has no reservation\n", cfg.State)
	}
	res, err := kea.Export(src, Subnets(tbl, kept...), kea.ExportOptions{MACSources: cfg.Server.MACSources})
	if err != nil {
		return nil, err
	}
	for _, w := range append(res.Warnings, LifetimeWarnings(src, cfg)...) {
		fmt.Fprintf(o.Stderr, "warning: %s\n", w)
	}
	for _, s := range res.Subnets {
		from := "new entry"
		if s.Source != "" {
			from = "reuses " + s.Source
		}
		fmt.Fprintf(o.Stderr, "subnet6 id %d (%s) %s interface-id %q, mapping %s: %d reservation(s), %d added, %d removed (%s)\n",
			s.ID, s.IDFrom, s.Subnet, s.InterfaceID, s.Name, s.Reservations, s.Added, s.Removed, from)
	}
	return res, nil
}

// Adopt adopts the reservations of --keacfg (src) that the store
// does not hold, exactly as import-kea does, so that a reservation Kea
// hands out never moves: not by a sync on a fresh or stale store, not by
// an export that leaves it out. Any conflict (a reservation the store
// gives another prefix, a prefix the store gives another MAC, …) refuses
// the export, naming each one. With offline nothing is written: the
// reservations to adopt are returned, to be exported with the table.
func Adopt(st *allocator.Store, cfg *config.Config, src *kea.Config, offline bool, stderr io.Writer, now time.Time) ([]allocator.Allocation, error) {
	rep, err := allocator.ImportInto(st, cfg.Pools(), src, now, offline)
	if errors.Is(err, allocator.ErrImportConflicts) && rep != nil {
		var b strings.Builder
		fmt.Fprintf(&b, "--keacfg %s: %d reservation(s) would move or cannot be kept, nothing exported and nothing written:", src.Path, len(rep.Conflicts))
		for _, c := range rep.Conflicts {
			fmt.Fprintf(&b, "\n  %s", c)
		}
		for _, sk := range rep.SkippedSubnets {
			if sk.WithPrefixes > 0 {
				fmt.Fprintf(&b, "\n  %s", sk)
			}
		}
		fmt.Fprintf(&b, "\nkea-export adopts the --keacfg reservations the store (state %s) does not hold, as 'cloudstack-pd import-kea' does, "+
			"so that no VM's prefix moves: is --keacfg the config Kea serves, and state the store that made it? (%s)", cfg.State, "docs/migration-from-kea.md")
		return nil, errors.New(b.String())
	}
	if err != nil {
		return nil, fmt.Errorf("adopt --keacfg %s: %w", src.Path, err)
	}
	for _, w := range rep.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if len(rep.Added) == 0 {
		return nil, nil
	}
	if !offline {
		fmt.Fprintf(stderr, "--keacfg %s: %d reservation(s) the store did not hold adopted into %s\n", src.Path, len(rep.Added), cfg.State)
		return nil, nil
	}
	fmt.Fprintf(stderr, "--keacfg %s: %d reservation(s) the store does not hold are kept in the export (--offline: the store is not written; 'cloudstack-pd import-kea' adopts them)\n", src.Path, len(rep.Added))
	kept := make([]allocator.Allocation, len(rep.Added))
	for i, it := range rep.Added {
		kept[i] = it.Allocation
	}
	return kept, nil
}

// exportTable reads the table to export from st: after a sync, or with
// o.Offline as stored.
func exportTable(ctx context.Context, cfg *config.Config, st *allocator.Store, o Options) (*allocator.Table, error) {
	if !o.Offline {
		if err := o.Sync(ctx, cfg, st, o.Stderr); err != nil {
			return nil, fmt.Errorf("sync from CloudStack: %w (nothing exported; --offline exports the stored table)", err)
		}
	}
	tbl, rep, err := st.LoadTable(cfg.Pools())
	if err != nil {
		if o.StoreError != nil {
			err = o.StoreError(err)
		}
		return nil, err
	}
	if pools := rep.OrphanedByPool(); pools != nil {
		fmt.Fprintf(o.Stderr, "warning: the store holds allocations of pools that are not configured; they are not exported: %v\n", pools)
	}
	return tbl, nil
}

// Subnets turns the table into Export's subnets: every pool, with
// its served (active or gone) allocations, and the allocations kept (the
// --keacfg reservations --offline adopts without writing them).
func Subnets(tbl *allocator.Table, kept ...allocator.Allocation) []kea.ExportSubnet {
	byPool := map[string][]kea.ExportReservation{}
	for i := range tbl.Len() {
		if a := tbl.At(i); a.Served() {
			byPool[a.Pool] = append(byPool[a.Pool], kea.ExportReservation{MAC: a.MAC, Prefix: a.Prefix, IP6: a.IP6})
		}
	}
	for _, a := range kept {
		byPool[a.Pool] = append(byPool[a.Pool], kea.ExportReservation{MAC: a.MAC, Prefix: a.Prefix, IP6: a.IP6})
	}
	var out []kea.ExportSubnet
	for _, p := range tbl.Pools() {
		out = append(out, kea.ExportSubnet{
			Name: p.Name, Subnet: p.IP6CIDR, InterfaceID: p.InterfaceID,
			Pool: p.Prefix, PrefixLen: p.PrefixLen, Reservations: byPool[p.Name],
		})
	}
	return out
}

// LifetimeWarnings compares Kea's global lifetimes and timers with the
// server section, which 'cloudstack-pd serve' would hand out instead.
func LifetimeWarnings(src *kea.Config, cfg *config.Config) []string {
	d6, _ := src.Raw["Dhcp6"].(map[string]any)
	var out []string
	for _, l := range []struct {
		key  string
		want int
	}{
		{"preferred-lifetime", cfg.Server.PreferredLifetime},
		{"valid-lifetime", cfg.Server.ValidLifetime},
		{"renew-timer", cfg.Server.RenewTimer},
		{"rebind-timer", cfg.Server.RebindTimer},
	} {
		v, ok := d6[l.key]
		if !ok {
			out = append(out, fmt.Sprintf("Dhcp6.%s is not set (Kea's default applies); cloudstack-pd serve would use server.%s %d", l.key, l.key, l.want))
			continue
		}
		if n, ok := v.(json.Number); ok && n.String() == fmt.Sprint(l.want) {
			continue
		}
		out = append(out, fmt.Sprintf("Dhcp6.%s is %v; cloudstack-pd serve would use server.%s %d", l.key, v, l.key, l.want))
	}
	return out
}

// WriteFile replaces path with data atomically: a temporary file in
// the same folder, fsync, rename (by rename: os.Rename but in tests), fsync
// of the folder. It does not touch a file whose content is data already
// (changed is then false). A symbolic link is followed, so that the file it
// names is replaced, not the link. A replaced file keeps its mode and
// owner; a new one gets mode. On error the old file is as it was and the
// temporary file is removed.
func WriteFile(path string, data []byte, mode fs.FileMode, rename func(oldpath, newpath string) error) (changed bool, err error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if path, err = filepath.EvalSymlinks(path); err != nil {
			return false, fmt.Errorf("--output: %w", err)
		}
	}
	var uid, gid = -1, -1
	switch fi, err := os.Stat(path); {
	case err == nil && !fi.Mode().IsRegular():
		return false, fmt.Errorf("--output %s: not a regular file", path)
	case err == nil:
		old, err := os.ReadFile(path)
		if err != nil {
			return false, fmt.Errorf("--output: %w", err)
		}
		if bytes.Equal(old, data) {
			return false, nil
		}
		mode = fi.Mode().Perm()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("--output: %w", err)
	}

	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("--output %s: %w", path, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return false, fmt.Errorf("--output %s: write %s: %w", path, tmp.Name(), err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return false, fmt.Errorf("--output %s: %w", path, err)
	}
	if uid >= 0 && (uid != os.Geteuid() || gid != os.Getegid()) {
		if err := tmp.Chown(uid, gid); err != nil {
			return false, fmt.Errorf("--output %s: keep its owner %d:%d: %w", path, uid, gid, err)
		}
	}
	if err := tmp.Sync(); err != nil {
		return false, fmt.Errorf("--output %s: fsync %s: %w", path, tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("--output %s: %w", path, err)
	}
	if err := rename(tmp.Name(), path); err != nil {
		return false, fmt.Errorf("--output %s: %w", path, err)
	}
	renamed = true
	d, err := os.Open(dir)
	if err == nil {
		err = d.Sync()
		_ = d.Close()
	}
	if err != nil {
		return true, fmt.Errorf("--output %s written, but the folder's fsync failed (the new content may not survive a crash): %w", path, err)
	}
	return true, nil
}
