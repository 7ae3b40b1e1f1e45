package kea

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// Diff compares the prefix reservations of old and cur, hw-address by
// hw-address (subnets and shared networks alike), and writes one line per
// difference to w: "moved" (other prefixes, or a subnet with another
// interface-id or subnet), "added" (only in cur), "removed" (only in old).
// It returns the counts, kept included; kea-diff fails when moved > 0.
func Diff(w io.Writer, oldConfig, curConfig *Config) (kept, moved, added, removed int) {
	old, cur := reservationsOf(oldConfig), reservationsOf(curConfig)
	keys := make([]string, 0, len(old)+len(cur))
	for k := range old {
		keys = append(keys, k)
	}
	for k := range cur {
		if _, ok := old[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		o, inOld := old[k]
		n, inNew := cur[k]
		switch {
		case !inNew:
			removed++
			fmt.Fprintf(w, "removed  %s  %s in %s (%s)\n", k, o.prefixes, o.where, o.path)
		case !inOld:
			added++
			fmt.Fprintf(w, "added    %s  %s in %s (%s)\n", k, n.prefixes, n.where, n.path)
		case o.prefixes != n.prefixes || o.where != n.where:
			moved++
			fmt.Fprintf(w, "MOVED    %s  %s in %s (%s)  →  %s in %s (%s)\n", k, o.prefixes, o.where, o.path, n.prefixes, n.where, n.path)
		default:
			kept++
		}
	}
	return kept, moved, added, removed
}

// diffReservation is a prefix reservation as Diff compares it.
type diffReservation struct {
	path, where, prefixes string
}

// reservationsOf returns the prefix reservations of c by normalised
// hw-address (or "duid " and the DUID when it has none).
func reservationsOf(c *Config) map[string]diffReservation {
	out := map[string]diffReservation{}
	add := func(where string, rs []Reservation) {
		for _, r := range rs {
			if len(r.Prefixes) == 0 {
				continue
			}
			key := "duid " + r.DUID
			if m, err := r.MAC(); err == nil {
				key = m.String()
			} else if r.HWAddress != "" {
				key = r.HWAddress
			}
			ps := slices.Clone(r.Prefixes)
			slices.Sort(ps)
			out[key] = diffReservation{path: r.Path, where: where, prefixes: strings.Join(ps, " ")}
		}
	}
	add("global", c.Reservations)
	for _, s := range c.Subnets {
		add(fmt.Sprintf("subnet %s interface-id %q", s.Subnet, s.InterfaceID), s.Reservations)
	}
	return out
}
