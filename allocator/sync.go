package allocator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// SyncSource is the Source of allocations made by a sync.
const SyncSource = "sync"

// Defaults of SyncOptions.
const (
	// DefaultReleaseAfter is how long a gone allocation keeps its prefix
	// (and is still served) before the prefix is released into quarantine.
	DefaultReleaseAfter = 24 * time.Hour
	// DefaultQuarantine is how long a released prefix waits before reuse:
	// the default valid lifetime (172800 s), after which no router still
	// routes it to the old VM. Callers pass the configured valid lifetime.
	DefaultQuarantine = 48 * time.Hour
	// DefaultMaxReleaseFraction is the share of a pool's active
	// allocations one sync may newly mark gone.
	DefaultMaxReleaseFraction = 0.1
)

// SyncOptions are the allocation rules of a sync. Every zero value means
// the default.
type SyncOptions struct {
	// ReleaseAfter is how long an allocation stays gone (keeping its
	// prefix, still served) before it is quarantined. Zero or less means
	// DefaultReleaseAfter.
	ReleaseAfter time.Duration
	// Quarantine is how long a quarantined allocation keeps its prefix
	// out of use (not served) before it is deleted and the prefix may be
	// given to another NIC. Zero or less means DefaultQuarantine.
	Quarantine time.Duration
	// MaxReleaseFraction is the safety valve: a sync that would newly mark
	// gone more than this share of a pool's active allocations is refused
	// as a whole (ErrTooManyGone). Zero or less means
	// DefaultMaxReleaseFraction; 1 or more disables the valve.
	MaxReleaseFraction float64
	// Force overrides the safety valve.
	Force bool
	// DryRun plans the sync and reports it, writing nothing.
	DryRun bool
	// Now is the clock: the time of the listings, stored in UTC to the
	// second. Nil means time.Now.
	Now func() time.Time
}

func (o SyncOptions) withDefaults() SyncOptions {
	if o.ReleaseAfter <= 0 {
		o.ReleaseAfter = DefaultReleaseAfter
	}
	if o.Quarantine <= 0 {
		o.Quarantine = DefaultQuarantine
	}
	if o.MaxReleaseFraction <= 0 {
		o.MaxReleaseFraction = DefaultMaxReleaseFraction
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// SyncReport says what a sync did, or, when it was refused or a dry run,
// what it would have done.
type SyncReport struct {
	// At is the time of the sync (SyncOptions.Now, in UTC, to the second).
	At time.Time
	// DryRun is set when nothing was written on purpose.
	DryRun bool
	// Written is set when the changes were committed; false for a dry
	// run, a refused sync, and a sync that changed nothing.
	Written bool
	// Pools holds one entry per configured pool, by pool name.
	Pools []PoolSync
	// ReleasedHeld are the prefixes held in quarantine without an
	// allocation (left by `allocation move` and `pool forget`, in any
	// pool) whose quarantine has passed, now deleted: they are free.
	ReleasedHeld []Allocation
}

// PoolSync is what a sync did in one pool. The lists hold the allocations
// as they are after the change (Released: as they were before deletion),
// in MAC order except Added, which is in listing order.
type PoolSync struct {
	Pool string
	// Listed counts the NICs of the pod's listing that qualify for the
	// pool (see SelectNICs), whatever their VM's state.
	Listed int
	// Active counts the pool's active allocations before the sync: the
	// base of the safety valve.
	Active int
	// Added are new allocations, each with the lowest free prefix.
	Added []Allocation
	// Kept counts the listed allocations that stay active, Refreshed
	// those of them whose VM fields (id, name, NIC id, IPv6) or pool's
	// ip6-cidr changed.
	Kept, Refreshed int
	// Back are gone or quarantined allocations listed again: active, same
	// prefix.
	Back []Allocation
	// Gone are active allocations missing from the listing, now gone.
	Gone []Allocation
	// Quarantined are allocations gone for ReleaseAfter, now quarantined.
	Quarantined []Allocation
	// Released are allocations quarantined for Quarantine, now deleted:
	// their prefixes are free.
	Released []Allocation
	// StillGone and InQuarantine count the allocations waiting out
	// ReleaseAfter and Quarantine.
	StillGone, InQuarantine int
	// NotEligible counts the listed NICs without an allocation whose VM
	// is Destroyed, Expunging or in Error: they get none.
	NotEligible int
	// Conflicts are listed NICs that get no allocation for another reason.
	Conflicts []SyncConflict
	// Refused is set when this pool tripped the safety valve.
	Refused bool
}

// Changed reports whether the sync changes anything in the pool's
// allocations (refreshed VM fields included).
func (p *PoolSync) Changed() bool {
	return len(p.Added)+len(p.Back)+len(p.Gone)+len(p.Quarantined)+len(p.Released)+p.Refreshed > 0
}

// SyncConflict is a listed NIC that gets no allocation although it
// qualifies.
type SyncConflict struct {
	// Pool is the pool whose listing holds the NIC.
	Pool string
	NIC  NIC
	// Err says why and wraps ErrDuplicateMAC (the MAC is allocated in
	// another pool, or listed more than once) or ErrPoolExhausted.
	Err error
}

func (c SyncConflict) String() string {
	return fmt.Sprintf("pool %q: MAC %s (VM %s %s, NIC %s): %v", c.Pool, c.NIC.MAC, c.NIC.VMName, c.NIC.VMID, c.NIC.NICID, c.Err)
}

// SyncTotals sums a report over its pools.
type SyncTotals struct {
	Listed, Added, Kept, Refreshed, Back, Gone, Quarantined, Released int
	StillGone, InQuarantine, NotEligible, Conflicts                   int
}

// Totals sums the report over its pools.
func (r *SyncReport) Totals() SyncTotals {
	var t SyncTotals
	for i := range r.Pools {
		p := &r.Pools[i]
		t.Listed += p.Listed
		t.Added += len(p.Added)
		t.Kept += p.Kept
		t.Refreshed += p.Refreshed
		t.Back += len(p.Back)
		t.Gone += len(p.Gone)
		t.Quarantined += len(p.Quarantined)
		t.Released += len(p.Released)
		t.StillGone += p.StillGone
		t.InQuarantine += p.InQuarantine
		t.NotEligible += p.NotEligible
		t.Conflicts += len(p.Conflicts)
	}
	t.Released += len(r.ReleasedHeld)
	return t
}

// Changed reports whether the sync changes anything.
func (r *SyncReport) Changed() bool {
	if len(r.ReleasedHeld) > 0 {
		return true
	}
	for i := range r.Pools {
		if r.Pools[i].Changed() {
			return true
		}
	}
	return false
}

// RefusedError is the safety valve's refusal: a sync that would newly mark
// too many allocations gone. It wraps ErrTooManyGone.
type RefusedError struct {
	Pools []RefusedPool
	// MaxReleaseFraction is the limit that was exceeded.
	MaxReleaseFraction float64
}

// RefusedPool is one pool over the limit.
type RefusedPool struct {
	Pool string
	// Gone allocations of Active would be newly marked gone.
	Gone, Active int
}

func (e *RefusedError) Error() string {
	var b strings.Builder
	b.WriteString("sync refused, nothing changed: ")
	for i, p := range e.Pools {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "pool %q: the listing lacks %d of its %d active allocations (%.1f%%); max-release-fraction %g allows at most %d at once",
			p.Pool, p.Gone, p.Active, 100*float64(p.Gone)/float64(p.Active), e.MaxReleaseFraction, allowedGone(p.Active, e.MaxReleaseFraction))
	}
	return b.String()
}

func (e *RefusedError) Unwrap() error { return ErrTooManyGone }

// allowedGone is how many of active allocations a sync may newly mark gone.
func allowedGone(active int, fraction float64) int {
	return int(fraction * float64(active))
}

// Sync lists the pod of every pool from inv, one pool after the other, then
// reconciles the table with the listings (see Reconcile). Any listing
// error aborts the whole sync before the store is touched: the error names
// the pool and wraps the inventory's error.
func (s *Store) Sync(ctx context.Context, pools []Pool, inv Inventory, opts SyncOptions) (*SyncReport, error) {
	listings := make(map[string][]NIC, len(pools))
	for _, p := range pools {
		nics, err := inv.ListPodNICs(ctx, p.Name)
		if err != nil {
			return nil, fmt.Errorf("sync aborted, nothing changed: %w", err)
		}
		listings[p.Name] = nics
	}
	return s.Reconcile(pools, listings, opts)
}

// Reconcile brings the allocations of pools in line with listings (pool
// name → the complete listing of the pool's pod) in one transaction:
//
//   - a qualifying NIC (SelectNICs with the pool's VLAN) without an
//     allocation gets the lowest free prefix of its pool, unless its VM is
//     not Eligible, or its MAC is allocated in another pool or listed more
//     than once (a conflict: see SyncConflict);
//   - an allocation whose NIC is listed keeps its prefix and takes the
//     NIC's VM id, VM name, NIC id and IPv6 address and the pool's
//     ip6-cidr (a changed one counts as refreshed); gone or quarantined,
//     it is active again ("back") – a quarantined one only if its VM is
//     Eligible;
//   - an active allocation whose NIC is missing is marked gone (GoneAt);
//     gone for ReleaseAfter, it is quarantined (QuarantinedAt: no longer
//     served, prefix still taken); quarantined for Quarantine, it is
//     deleted and its prefix free from the next sync on.
//
// Every allocation it writes takes the pool's ip6-cidr: when the config's
// changes, the listed allocations are refreshed with it; the others (gone,
// quarantined) take it with their next change of state.
//
// If, in any pool, more than MaxReleaseFraction of the active allocations
// would be marked gone, nothing is written and the error is a
// *RefusedError (ErrTooManyGone), unless opts.Force. Allocations of pools
// that are not in pools are left alone. A sync that changes nothing
// commits nothing. The report is returned with a refusal too.
func (s *Store) Reconcile(pools []Pool, listings map[string][]NIC, opts SyncOptions) (*SyncReport, error) {
	opts = opts.withDefaults()
	for _, p := range pools {
		if _, ok := listings[p.Name]; !ok {
			return nil, fmt.Errorf("pool %q: %w", p.Name, ErrNoListing)
		}
	}
	// Stored times are UTC, to the second.
	now := opts.Now().UTC().Truncate(time.Second)
	var rep *SyncReport
	run := func(tx *Tx) error {
		tx.SetActor(Actor{At: now, By: SyncSource})
		plan, err := planSync(tx, listings, now, opts)
		rep = plan.report
		if err != nil || opts.DryRun {
			return err
		}
		if !plan.writes() {
			return errNothingToWrite
		}
		return plan.apply(tx)
	}
	var err error
	if opts.DryRun {
		err = s.View(pools, run)
	} else {
		err = s.Update(pools, run)
	}
	switch {
	case errors.Is(err, errNothingToWrite):
		err = nil
	case err == nil && !opts.DryRun:
		rep.Written = true
	}
	var refused *RefusedError
	if err != nil && !errors.As(err, &refused) {
		return rep, s.wrap(err)
	}
	return rep, err
}

// errNothingToWrite rolls back a sync that changes nothing, so that it
// does not commit (and fsync) an empty transaction.
var errNothingToWrite = errors.New("nothing to write")

// syncPlan is what a sync will write: the held prefixes released, the
// deletions, the changed allocations, then the new ones (the report's
// Added).
type syncPlan struct {
	dels   []Allocation
	puts   []Allocation
	report *SyncReport
}

// writes reports whether the plan writes anything.
func (p *syncPlan) writes() bool {
	if len(p.puts)+len(p.dels)+len(p.report.ReleasedHeld) > 0 {
		return true
	}
	for i := range p.report.Pools {
		if len(p.report.Pools[i].Added) > 0 {
			return true
		}
	}
	return false
}

func (p *syncPlan) apply(tx *Tx) error {
	// A large sync may be committed in parts, each of whole allocations
	// (kv.Splitter): what a sync writes is valid change by change, and a
	// sync cut short is completed by the next one.
	tx.allowSplit()
	for _, a := range p.report.ReleasedHeld {
		if err := tx.unhold(a); err != nil {
			return err
		}
	}
	for _, a := range p.dels {
		if err := tx.Delete(a.Pool, a.MAC); err != nil {
			return err
		}
	}
	for _, a := range p.puts {
		if err := tx.Put(a); err != nil {
			return err
		}
	}
	// The new allocations, from the report (one copy of them, not two).
	for i := range p.report.Pools {
		for _, a := range p.report.Pools[i].Added {
			if err := tx.Put(a); err != nil {
				return err
			}
		}
	}
	return nil
}

// listed is where a MAC shows up in the listings.
type listed struct {
	nic   *NIC     // the first qualifying NIC with the MAC
	pools []string // the pools whose listings hold it
	count int      // how many qualifying NICs carry it, over all pools
}

// planSync computes the writes of a sync and its report, reading tx only.
func planSync(tx *Tx, listings map[string][]NIC, now time.Time, opts SyncOptions) (*syncPlan, error) {
	pools := tx.Pools()
	plan := &syncPlan{report: &SyncReport{At: now, DryRun: opts.DryRun, Pools: make([]PoolSync, len(pools))}}

	// Every qualifying NIC, by MAC, over all pools: a MAC listed twice is
	// a conflict wherever it shows up.
	selected := make([][]NIC, len(pools))
	total := 0
	for _, p := range pools {
		total += len(listings[p.Name])
	}
	byMAC := make(map[string]*listed, total)
	for i, p := range pools {
		plan.report.Pools[i].Pool = p.Name
		nics := SelectNICs(listings[p.Name], p.VLAN)
		selected[i] = nics[:0]
		for _, n := range nics {
			if len(n.MAC) == 0 {
				continue
			}
			// In place: selected[i] never outgrows nics, so that l.nic
			// stays valid.
			selected[i] = append(selected[i], n)
			l := byMAC[string(n.MAC)]
			if l == nil {
				l = &listed{nic: &selected[i][len(selected[i])-1]}
				byMAC[string(n.MAC)] = l
			}
			l.count++
			if !slices.Contains(l.pools, p.Name) {
				l.pools = append(l.pools, p.Name)
			}
		}
		plan.report.Pools[i].Listed = len(selected[i])
	}
	var refused []RefusedPool
	for i, p := range pools {
		ps := &plan.report.Pools[i]
		stored := make(map[string]struct{}, len(selected[i]))
		if err := planExisting(tx, p, ps, plan, byMAC, stored, now, opts); err != nil {
			return plan, err
		}
		if err := planNew(tx, p, ps, plan, selected[i], byMAC, stored, now); err != nil {
			return plan, err
		}
		if !opts.Force && opts.MaxReleaseFraction < 1 && len(ps.Gone) > allowedGone(ps.Active, opts.MaxReleaseFraction) {
			ps.Refused = true
			refused = append(refused, RefusedPool{Pool: p.Name, Gone: len(ps.Gone), Active: ps.Active})
		}
	}
	held, err := tx.expiredHeld(now, opts.Quarantine)
	if err != nil {
		return plan, err
	}
	plan.report.ReleasedHeld = held
	if len(refused) > 0 {
		return plan, &RefusedError{Pools: refused, MaxReleaseFraction: opts.MaxReleaseFraction}
	}
	return plan, nil
}

// planExisting plans the fate of the pool's stored allocations, and notes
// their MACs in stored.
func planExisting(tx *Tx, p Pool, ps *PoolSync, plan *syncPlan, byMAC map[string]*listed, stored map[string]struct{}, now time.Time, opts SyncOptions) error {
	return tx.ForEach(p.Name, func(a Allocation) error {
		stored[string(a.MAC)] = struct{}{}
		if a.State == StateActive {
			ps.Active++
		}
		l := byMAC[string(a.MAC)]
		here := l != nil && slices.Contains(l.pools, p.Name)
		switch {
		case here && l.count > 1:
			// Listed more than once: keep it as it is, clocks stopped;
			// planNew reports the conflict.
			switch a.State {
			case StateActive:
				ps.Kept++
			case StateGone:
				ps.StillGone++
			default:
				ps.InQuarantine++
			}
			return nil
		case here && (a.State != StateQuarantined || Eligible(l.nic.VMState)):
			b := a
			b.VMID, b.VMName, b.NICID, b.IP6 = l.nic.VMID, l.nic.VMName, l.nic.NICID, l.nic.IP6
			b.IP6CIDR = p.IP6CIDR
			if a.State != StateActive {
				b.State, b.GoneAt, b.QuarantinedAt = StateActive, time.Time{}, time.Time{}
				ps.Back = append(ps.Back, b)
				plan.puts = append(plan.puts, b) // the state changed
			} else {
				ps.Kept++
				if !sameAllocation(a, b) {
					ps.Refreshed++
					plan.puts = append(plan.puts, b)
				}
			}
			return nil
		}
		// Missing from the listing (or listed again but not eligible
		// while quarantined: the quarantine runs on).
		b := a
		b.IP6CIDR = p.IP6CIDR
		switch a.State {
		case StateActive:
			b.State, b.GoneAt = StateGone, now
			ps.Gone = append(ps.Gone, b)
		case StateGone:
			switch {
			case a.GoneAt.IsZero(): // start the clock
				b.GoneAt = now
				ps.StillGone++
			case now.Sub(a.GoneAt) >= opts.ReleaseAfter:
				b.State, b.QuarantinedAt = StateQuarantined, now
				ps.Quarantined = append(ps.Quarantined, b)
			default:
				ps.StillGone++
			}
		case StateQuarantined:
			switch {
			case a.QuarantinedAt.IsZero():
				b.QuarantinedAt = now
				ps.InQuarantine++
			case now.Sub(a.QuarantinedAt) >= opts.Quarantine:
				ps.Released = append(ps.Released, a)
				plan.dels = append(plan.dels, a)
				return nil
			default:
				ps.InQuarantine++
			}
		default:
			return fmt.Errorf("pools/%s/alloc/%s: state %q: %w", p.Name, a.MAC, a.State, ErrInvalidState)
		}
		// The pool's ip6-cidr goes with another change; by itself it does
		// not rewrite a record the report does not list.
		unchanged := b
		unchanged.IP6CIDR = a.IP6CIDR
		if !sameAllocation(a, unchanged) {
			plan.puts = append(plan.puts, b)
		}
		return nil
	})
}

// planNew plans allocations for the pool's listed NICs that have none;
// stored holds the MACs the pool has allocations for.
func planNew(tx *Tx, p Pool, ps *PoolSync, plan *syncPlan, nics []NIC, byMAC map[string]*listed, stored map[string]struct{}, now time.Time) error {
	var want []int // indexes in nics
	for i, n := range nics {
		l := byMAC[string(n.MAC)]
		if l.count > 1 {
			ps.Conflicts = append(ps.Conflicts, SyncConflict{Pool: p.Name, NIC: n,
				Err: fmt.Errorf("listed %d times (on several NICs or in several pods): no new allocation, an existing one is kept as it is: %w", l.count, ErrDuplicateMAC)})
			continue
		}
		if _, ok := stored[string(n.MAC)]; ok {
			continue // planExisting's
		}
		a, ok, err := tx.Lookup(n.MAC)
		if err != nil {
			return err
		}
		switch {
		case ok && a.Pool == p.Name:
			continue // planExisting's
		case ok:
			ps.Conflicts = append(ps.Conflicts, SyncConflict{Pool: p.Name, NIC: n,
				Err: fmt.Errorf("allocated in pool %q (%s, %s): it gets a prefix here once that allocation is released: %w", a.Pool, a.Prefix, a.State, ErrDuplicateMAC)})
		case !Eligible(n.VMState):
			ps.NotEligible++
		default:
			want = append(want, i)
		}
	}
	if len(want) == 0 {
		return nil
	}
	ps.Added = make([]Allocation, 0, len(want))
	free, err := tx.lowestFree(p, len(want))
	if err != nil && !errors.Is(err, ErrPoolExhausted) {
		return err
	}
	for i, at := range want {
		n := &nics[at]
		if i >= len(free) {
			ps.Conflicts = append(ps.Conflicts, SyncConflict{Pool: p.Name, NIC: *n, Err: err})
			continue
		}
		a := Allocation{Pool: p.Name, MAC: cloneMAC(n.MAC), Prefix: free[i], State: StateActive, Since: now,
			VMID: n.VMID, VMName: n.VMName, NICID: n.NICID, IP6: n.IP6, IP6CIDR: p.IP6CIDR, Source: SyncSource}
		ps.Added = append(ps.Added, a) // syncPlan.apply writes them
	}
	return nil
}

func cloneMAC(m net.HardwareAddr) net.HardwareAddr { return append(net.HardwareAddr(nil), m...) }

// sameAllocation reports whether a and b would be stored alike.
func sameAllocation(a, b Allocation) bool {
	return a.Pool == b.Pool && bytes.Equal(a.MAC, b.MAC) && a.Prefix == b.Prefix && a.State == b.State &&
		a.Since.Equal(b.Since) && a.GoneAt.Equal(b.GoneAt) && a.QuarantinedAt.Equal(b.QuarantinedAt) &&
		a.VMID == b.VMID && a.VMName == b.VMName && a.NICID == b.NICID && a.IP6 == b.IP6 && a.IP6CIDR == b.IP6CIDR &&
		a.Source == b.Source
}
