// Package keaexport is the logic of 'cloudstack-pd kea-export' that is
// not the Kea format itself (package kea): the allocation table turned
// into kea.Export's subnets, the comparison of Kea's lifetimes with the
// server section, and the atomic replacement of the output file. Errors
// of WriteFile name the --output flag, as the command reports them.
package keaexport

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kea"
	"github.com/cloudstack-pd/cloudstack-pd/server/config"
)

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
