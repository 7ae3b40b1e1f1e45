package allocator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// VMInventory lists the NICs of some VMs of a pod: what a targeted sync
// (a CloudStack event naming a VM) needs. *cloudstack.Client implements
// it.
type VMInventory interface {
	// ListVMNICs returns every NIC of the VMs of vmIDs that CloudStack
	// lists in the pod podID (a VM of another pod, or expunged, is simply
	// not listed), or an error; never a partial listing.
	ListVMNICs(ctx context.Context, podID string, vmIDs []string) ([]NIC, error)
}

// VMSyncReport says what a targeted sync did (or, for a dry run, would
// do). It holds the pools' reports as a full sync's does, with nothing ever
// gone, quarantined or released, and the VMs no pool listed.
type VMSyncReport struct {
	SyncReport
	// Missing are the VMs asked for that no pool's listing holds: deleted,
	// expunged, or in a pod that is not mapped. Nothing is done about
	// them: the full sync's grace period and quarantine decide.
	Missing []string
}

// SyncVMs lists the VMs of vmIDs in the pod of every pool from inv and
// reconciles their NICs (ReconcileVMs). Any listing error aborts it before
// the store is touched.
func (s *Store) SyncVMs(ctx context.Context, pools []Pool, inv VMInventory, vmIDs []string, opts SyncOptions) (*VMSyncReport, error) {
	listings := make(map[string][]NIC, len(pools))
	for _, p := range pools {
		nics, err := inv.ListVMNICs(ctx, p.Name, vmIDs)
		if err != nil {
			return nil, fmt.Errorf("VM sync aborted, nothing changed: %w", err)
		}
		listings[p.Name] = nics
	}
	return s.ReconcileVMs(pools, listings, vmIDs, opts)
}

// ReconcileVMs applies the rules of Reconcile to the NICs of some VMs only,
// in one transaction: listings holds, by pool name, the complete listing
// of those VMs in the pool's pod. For each NIC that qualifies (SelectNICs
// with the pool's VLAN):
//
//   - without an allocation, it gets the lowest free prefix of its pool,
//     unless its VM is not Eligible or its MAC is allocated in another pool
//     (a conflict, as in a full sync) or listed more than once in listings;
//   - with one in its pool, the allocation takes the NIC's VM fields and the
//     pool's ip6-cidr (refreshed), and a gone or quarantined one is active
//     again (a quarantined one only if its VM is Eligible).
//
// It never marks anything gone, never quarantines and never releases, and
// leaves every allocation of a MAC not listed alone: a VM that is missing
// (vmIDs that no listing holds) is only reported (Missing). Only a full
// sync, which sees every VM, may conclude that a NIC is gone. The safety
// valve has nothing to guard. A sync that changes nothing commits nothing.
func (s *Store) ReconcileVMs(pools []Pool, listings map[string][]NIC, vmIDs []string, opts SyncOptions) (*VMSyncReport, error) {
	opts = opts.withDefaults()
	now := opts.Now().UTC().Truncate(time.Second)
	rep := &VMSyncReport{}
	run := func(tx *Tx) error {
		var puts []Allocation
		r, err := planVMs(tx, listings, now, &puts)
		if err != nil {
			return err
		}
		r.DryRun = opts.DryRun
		rep.SyncReport = *r
		if opts.DryRun {
			return nil
		}
		if len(puts) == 0 {
			return errNothingToWrite
		}
		for _, a := range puts {
			if err := tx.Put(a); err != nil {
				return err
			}
		}
		return nil
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
	if err != nil {
		return rep, s.wrap(err)
	}
	listed := map[string]bool{}
	for _, nics := range listings {
		for _, n := range nics {
			listed[n.VMID] = true
		}
	}
	for _, id := range vmIDs {
		if !listed[id] && !slices.Contains(rep.Missing, id) {
			rep.Missing = append(rep.Missing, id)
		}
	}
	return rep, nil
}

// planVMs computes a targeted sync's writes (appended to puts) and its
// report, reading tx only.
func planVMs(tx *Tx, listings map[string][]NIC, now time.Time, puts *[]Allocation) (*SyncReport, error) {
	pools := tx.Pools()
	rep := &SyncReport{At: now, Pools: make([]PoolSync, len(pools))}
	selected := make([][]NIC, len(pools))
	count := map[string]int{}
	for i, p := range pools {
		rep.Pools[i].Pool = p.Name
		for _, n := range SelectNICs(listings[p.Name], p.VLAN) {
			if len(n.MAC) == 0 {
				continue
			}
			selected[i] = append(selected[i], n)
			count[string(n.MAC)]++
		}
		rep.Pools[i].Listed = len(selected[i])
	}
	for i, p := range pools {
		ps := &rep.Pools[i]
		var want []NIC
		for _, n := range selected[i] {
			if c := count[string(n.MAC)]; c > 1 {
				ps.Conflicts = append(ps.Conflicts, SyncConflict{Pool: p.Name, NIC: n,
					Err: fmt.Errorf("listed %d times (on several NICs or in several pods): no new allocation, an existing one is kept as it is: %w", c, ErrDuplicateMAC)})
				continue
			}
			a, ok, err := tx.Lookup(n.MAC)
			if err != nil {
				return rep, err
			}
			switch {
			case ok && a.Pool != p.Name:
				ps.Conflicts = append(ps.Conflicts, SyncConflict{Pool: p.Name, NIC: n,
					Err: fmt.Errorf("allocated in pool %q (%s, %s): it gets a prefix here once that allocation is released: %w", a.Pool, a.Prefix, a.State, ErrDuplicateMAC)})
			case ok && a.State == StateQuarantined && !Eligible(n.VMState):
				ps.InQuarantine++ // the quarantine runs on
			case ok:
				b := a
				b.VMID, b.VMName, b.NICID, b.IP6 = n.VMID, n.VMName, n.NICID, n.IP6
				b.IP6CIDR = p.IP6CIDR
				if a.State != StateActive {
					b.State, b.GoneAt, b.QuarantinedAt = StateActive, time.Time{}, time.Time{}
					ps.Back = append(ps.Back, b)
					*puts = append(*puts, b)
					continue
				}
				ps.Kept++
				if !sameAllocation(a, b) {
					ps.Refreshed++
					*puts = append(*puts, b)
				}
			case !Eligible(n.VMState):
				ps.NotEligible++
			default:
				want = append(want, n)
			}
		}
		if len(want) == 0 {
			continue
		}
		free, err := tx.lowestFree(p, len(want))
		if err != nil && !errors.Is(err, ErrPoolExhausted) {
			return rep, err
		}
		for j, n := range want {
			if j >= len(free) {
				ps.Conflicts = append(ps.Conflicts, SyncConflict{Pool: p.Name, NIC: n, Err: err})
				continue
			}
			a := Allocation{Pool: p.Name, MAC: cloneMAC(n.MAC), Prefix: free[j], State: StateActive, Since: now,
				VMID: n.VMID, VMName: n.VMName, NICID: n.NICID, IP6: n.IP6, IP6CIDR: p.IP6CIDR, Source: SyncSource}
			ps.Added = append(ps.Added, a)
			*puts = append(*puts, a)
		}
	}
	return rep, nil
}
