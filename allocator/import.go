package allocator

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/kea"
)

// ImportSource is the Source of allocations adopted from a Kea config.
const ImportSource = "import-kea"

// ImportReport says what an import of a Kea config did, or would do.
type ImportReport struct {
	// File is the Kea config imported.
	File string
	// Added are the allocations written (by PlanImport: to be written).
	Added []ImportItem
	// Present are reservations the store already holds: same MAC, same
	// pool, same prefix. They are left as they are.
	Present []ImportItem
	// SkippedSubnets are subnets whose interface-id names no configured
	// pool. Their reservations with prefixes are conflicts.
	SkippedSubnets []SkippedSubnet
	// NoPrefix counts the reservations without prefixes, which are ignored.
	NoPrefix int
	// Warnings are oddities that do not stop the import, e.g. a subnet
	// whose prefix differs from its pool's ip6-cidr.
	Warnings []string
	// Conflicts lists every reservation that cannot be adopted, in file
	// order. When there is one, nothing is written.
	Conflicts []Conflict
}

// ImportItem is one reservation adopted (or already present).
type ImportItem struct {
	// Path is the reservation's JSON path in the Kea config.
	Path       string
	Allocation Allocation
}

// SkippedSubnet is a subnet6 entry that maps to no pool.
type SkippedSubnet struct {
	Path        string
	Subnet      string
	InterfaceID string
	// Reservations counts its reservations, WithPrefixes those that carry
	// prefixes (each of those is also a conflict).
	Reservations, WithPrefixes int
}

func (s SkippedSubnet) String() string {
	iid := fmt.Sprintf("interface-id %q", s.InterfaceID)
	if s.InterfaceID == "" {
		iid = "no interface-id"
	}
	return fmt.Sprintf("%s: subnet %s, %s: no configured pool has this interface-id (%d reservation(s), %d with prefixes)",
		s.Path, s.Subnet, iid, s.Reservations, s.WithPrefixes)
}

// Conflict is one reason a reservation cannot be adopted.
type Conflict struct {
	// Path is the JSON path of the value at fault, e.g.
	// "Dhcp6.subnet6[0].reservations[3].prefixes[0]".
	Path string
	// MAC is the reservation's MAC (normalised when it parses), Prefix the
	// prefix concerned, as written; either may be empty.
	MAC, Prefix string
	// Err says what is wrong and wraps a sentinel: ErrUnknownPool,
	// ErrOutsidePool, ErrPrefixLength, ErrDuplicatePrefix, ErrDuplicateMAC,
	// ErrPrefixMoved, ErrInvalidMAC or ErrInvalidReservation.
	Err error
}

func (c Conflict) String() string { return c.Path + ": " + c.Err.Error() }

// PlanImport works out what Import would do with cfg, without writing: tx
// may come from View. It adopts, for each reservation of a subnet whose
// interface-id is a configured pool's, its hw-address → its one prefix, as
// an active allocation since now, with ip-addresses[0] as IP6.
//
// It collects every conflict: a reservation with prefixes in a subnet that
// maps to no pool (or a global one), without hw-address, with several
// prefixes, with a prefix that is not a delegated prefix of the pool
// (outside, wrong length, misaligned), a prefix listed twice in the file, a
// MAC listed twice with different prefixes, a prefix held by another MAC in
// the store, a MAC that has another prefix (or another pool) in the store.
// With any conflict it returns the report and an error wrapping
// ErrImportConflicts.
func PlanImport(tx *Tx, cfg *kea.Config, now time.Time) (*ImportReport, error) {
	pl := &importPlan{
		tx:       tx,
		rep:      &ImportReport{File: cfg.Path},
		now:      now,
		byIID:    make(map[string]Pool, len(tx.pools)),
		prefixes: map[netip.Prefix]seenAt{},
		macs:     map[string]seenAt{},
	}
	for _, p := range tx.pools {
		pl.byIID[p.InterfaceID] = p
	}
	for _, s := range cfg.Subnets {
		pool, ok := pl.byIID[s.InterfaceID]
		if !ok {
			sk := SkippedSubnet{Path: s.Path, Subnet: s.Subnet, InterfaceID: s.InterfaceID, Reservations: len(s.Reservations)}
			for _, r := range s.Reservations {
				if len(r.Prefixes) > 0 {
					sk.WithPrefixes++
				}
			}
			pl.rep.SkippedSubnets = append(pl.rep.SkippedSubnets, sk)
		} else if sp, err := netip.ParsePrefix(s.Subnet); err == nil && pool.IP6CIDR.IsValid() && sp.Masked() != pool.IP6CIDR.Masked() {
			pl.rep.Warnings = append(pl.rep.Warnings, fmt.Sprintf("%s: subnet %s differs from pool %q's ip6-cidr %s", s.Path, s.Subnet, pool.Name, pool.IP6CIDR))
		}
		var (
			p      *Pool
			noPool string // only for p == nil
		)
		if ok {
			p = &pool
		} else {
			noPool = fmt.Sprintf("subnet %s: interface-id %q names no configured pool", s.Subnet, s.InterfaceID)
		}
		for i := range s.Reservations {
			if err := pl.reservation(&s.Reservations[i], p, noPool); err != nil {
				return pl.rep, err
			}
		}
	}
	for i := range cfg.Reservations {
		if err := pl.reservation(&cfg.Reservations[i], nil, "global reservation: no subnet, so no pool"); err != nil {
			return pl.rep, err
		}
	}
	if n := len(pl.rep.Conflicts); n > 0 {
		return pl.rep, fmt.Errorf("import %s: %d conflict(s), nothing written: %w", cfg.Path, n, ErrImportConflicts)
	}
	return pl.rep, nil
}

// Import is PlanImport followed, when there is no conflict, by writing the
// added allocations in tx. Run it in Store.Update: the transaction commits
// all of them or, on any error, none. Importing the same file again adds
// nothing: every reservation is then Present. Each adoption goes to the
// history (EventAdopted, by "import-kea", the file as the note).
func Import(tx *Tx, cfg *kea.Config, now time.Time) (*ImportReport, error) {
	rep, err := PlanImport(tx, cfg, now)
	if err != nil {
		return rep, err
	}
	tx.SetActor(Actor{At: now, By: ImportSource, Note: cfg.Path})
	for _, it := range rep.Added {
		if err := tx.Put(it.Allocation); err != nil {
			return rep, fmt.Errorf("import %s: %s: %w", cfg.Path, it.Path, err)
		}
	}
	return rep, nil
}

type seenAt struct {
	path, mac string
	prefix    netip.Prefix
}

type importPlan struct {
	tx       *Tx
	rep      *ImportReport
	now      time.Time
	byIID    map[string]Pool
	prefixes map[netip.Prefix]seenAt // first reservation naming each prefix
	macs     map[string]seenAt       // first reservation with prefixes of each MAC
}

func (pl *importPlan) conflict(path, mac, prefix string, err error) {
	pl.rep.Conflicts = append(pl.rep.Conflicts, Conflict{Path: path, MAC: mac, Prefix: prefix, Err: err})
}

// reservation plans one reservation; pool is nil when its subnet maps to
// none, noPool then says why. The error is only for failing to read the
// store.
func (pl *importPlan) reservation(r *kea.Reservation, pool *Pool, noPool string) error {
	if len(r.Prefixes) == 0 {
		pl.rep.NoPrefix++
		return nil
	}
	var mac net.HardwareAddr
	macStr := r.HWAddress
	switch m, err := r.MAC(); {
	case r.HWAddress == "":
		pl.conflict(r.Path, "", r.Prefixes[0], fmt.Errorf("no hw-address (duid %q): only hw-address reservations can be adopted: %w", r.DUID, ErrInvalidReservation))
	case err != nil || len(m) > maxMACLen:
		if err == nil {
			err = fmt.Errorf("%d bytes, at most %d", len(m), maxMACLen)
		}
		pl.conflict(r.Path+".hw-address", r.HWAddress, r.Prefixes[0], fmt.Errorf("hw-address %q: %v: %w", r.HWAddress, err, ErrInvalidMAC))
	default:
		mac, macStr = m, m.String()
	}
	who := macStr
	if who == "" {
		who = "duid " + r.DUID
	}
	if pool == nil {
		pl.conflict(r.Path, macStr, r.Prefixes[0], fmt.Errorf("%s: %s cannot be adopted: %w", noPool, strings.Join(r.Prefixes, ", "), ErrUnknownPool))
	}
	if len(r.Prefixes) > 1 {
		pl.conflict(r.Path+".prefixes", macStr, strings.Join(r.Prefixes, " "),
			fmt.Errorf("%d prefixes for %s: a MAC gets exactly one: %w", len(r.Prefixes), who, ErrInvalidReservation))
	}
	var good []netip.Prefix
	for i, ps := range r.Prefixes {
		path := r.PrefixPath(i)
		p, err := netip.ParsePrefix(ps)
		if err != nil {
			pl.conflict(path, macStr, ps, fmt.Errorf("%q is not a prefix: %w", ps, ErrInvalidReservation))
			continue
		}
		ok := true
		if pool != nil {
			if err := pool.Contains(p); err != nil {
				pl.conflict(path, macStr, ps, fmt.Errorf("%s: %w", who, err))
				ok = false
			}
		}
		if first, dup := pl.prefixes[p]; dup {
			pl.conflict(path, macStr, ps, fmt.Errorf("prefix %s for %s is also reserved at %s for %s: %w", p, who, first.path, first.mac, ErrDuplicatePrefix))
			ok = false
		} else {
			pl.prefixes[p] = seenAt{path: path, mac: who}
		}
		if ok {
			good = append(good, p)
		}
	}
	if mac != nil {
		first, _ := netip.ParsePrefix(r.Prefixes[0])
		if prev, dup := pl.macs[string(mac)]; dup {
			if prev.prefix != first { // the same prefix twice is a duplicate prefix already
				pl.conflict(r.Path+".hw-address", macStr, r.Prefixes[0],
					fmt.Errorf("%s gets %s here but %s at %s: %w", macStr, r.Prefixes[0], prev.prefix, prev.path, ErrDuplicateMAC))
			}
			return nil
		}
		pl.macs[string(mac)] = seenAt{path: r.Path, prefix: first}
	}
	if mac == nil || pool == nil || len(r.Prefixes) != 1 || len(good) != 1 {
		return nil
	}
	a := Allocation{Pool: pool.Name, MAC: mac, Prefix: good[0], State: StateActive, Since: pl.now,
		IP6CIDR: pool.IP6CIDR, Source: ImportSource}
	if len(r.IPAddresses) > 0 {
		ip, err := netip.ParseAddr(r.IPAddresses[0])
		if err != nil || !ip.Is6() || ip.Is4In6() {
			pl.conflict(r.Path+".ip-addresses[0]", macStr, r.Prefixes[0], fmt.Errorf("%q is not an IPv6 address: %w", r.IPAddresses[0], ErrInvalidReservation))
			return nil
		}
		a.IP6 = ip
	}
	return pl.againstStore(ImportItem{Path: r.Path, Allocation: a})
}

// againstStore sorts a conflict-free reservation into added, present, or
// a conflict with what the store holds.
func (pl *importPlan) againstStore(it ImportItem) error {
	a := it.Allocation
	path, macStr, ps := it.Path+".prefixes[0]", a.MAC.String(), a.Prefix.String()
	if owner, ok := pl.tx.PrefixOwner(a.Pool, a.Prefix); ok && !bytes.Equal(owner, a.MAC) {
		pl.conflict(path, macStr, ps, fmt.Errorf("prefix %s for %s is allocated to %s in the store: %w", a.Prefix, macStr, owner, ErrDuplicatePrefix))
		return nil
	}
	if owner, in, ok := pl.tx.PrefixElsewhere(a.Pool, a.Prefix); ok {
		pl.conflict(path, macStr, ps, fmt.Errorf("prefix %s for %s overlaps what %s holds in pool %q in the store: %w", a.Prefix, macStr, owner, in, ErrDuplicatePrefix))
		return nil
	}
	have, ok, err := pl.tx.Lookup(a.MAC)
	switch {
	case err != nil:
		return err
	case !ok:
		pl.rep.Added = append(pl.rep.Added, it)
	case have.Pool != a.Pool:
		pl.conflict(path, macStr, ps, fmt.Errorf("%s has %s in pool %q in the store, cannot take %s in pool %q: %w", macStr, have.Prefix, have.Pool, a.Prefix, a.Pool, ErrDuplicateMAC))
	case have.Prefix != a.Prefix:
		pl.conflict(path, macStr, ps, fmt.Errorf("%s has %s in the store, not %s: a prefix never moves: %w", macStr, have.Prefix, a.Prefix, ErrPrefixMoved))
	default:
		pl.rep.Present = append(pl.rep.Present, ImportItem{Path: it.Path, Allocation: have})
	}
	return nil
}

// ImportInto adopts cfg's reservations into st for pools in one
// transaction (Import), or, with plan, only reports what it would adopt
// in a read transaction (PlanImport). The report comes back with the
// error whenever one was made, so that a caller can list the conflicts.
func ImportInto(st *Store, pools []Pool, cfg *kea.Config, now time.Time, plan bool) (*ImportReport, error) {
	var rep *ImportReport
	if plan {
		err := st.View(pools, func(tx *Tx) (err error) {
			rep, err = PlanImport(tx, cfg, now)
			return err
		})
		return rep, err
	}
	err := st.Update(pools, func(tx *Tx) (err error) {
		rep, err = Import(tx, cfg, now)
		return err
	})
	return rep, err
}
