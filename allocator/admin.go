package allocator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// The operator's actions on allocations: Release, Move and ForgetPool, run
// through Store.Admin. Each keeps the rules of the sync: a prefix is never
// given to another MAC before its quarantine has passed.
//
// A prefix quarantined without an allocation – the one a MAC moved away
// from, or one of a forgotten pool – is "held": its record (an allocation
// record, state quarantined) sits in the Held space under its prefix key,
// its pool's prefix index keeps naming its MAC (so the prefix stays taken
// there and in every overlapping pool), and the MAC itself is free to hold
// an allocation elsewhere. The sync deletes a held prefix once it has
// been quarantined for the quarantine (SyncReport.ReleasedHeld).

var heldSpace = kv.Space{Kind: kv.Held}

// Errors of the operator's actions.
var (
	// ErrNoAllocation is returned when a MAC has no allocation to act on.
	ErrNoAllocation = errors.New("no allocation")
	// ErrNothingToDo is returned when an action would change nothing
	// (release of a quarantined allocation, move to the pool it is in).
	ErrNothingToDo = errors.New("nothing to do")
	// ErrPoolConfigured is returned by ForgetPool for a pool the config
	// still maps.
	ErrPoolConfigured = errors.New("pool is configured")
)

// AdminReport says what an operator's action did or, for a dry run,
// would do: the history events it wrote (would write).
type AdminReport struct {
	DryRun bool `json:"dry-run"`
	// Written is set when the changes were committed.
	Written bool           `json:"written"`
	Events  []HistoryEvent `json:"events"`
}

// errDryRun rolls back a dry run's transaction.
var errDryRun = errors.New("dry run")

// Admin runs fn, an operator's action (Tx.Release, Tx.Move,
// Tx.ForgetPool), in one read-write transaction, as actor: everything or
// nothing is written, each change with its history event. A dry run runs
// the same transaction and rolls it back, so that it reports exactly what
// the action would write (it needs a writable store).
func (s *Store) Admin(pools []Pool, actor Actor, dryRun bool, fn func(tx *Tx) error) (*AdminReport, error) {
	rep := &AdminReport{DryRun: dryRun}
	err := s.Update(pools, func(tx *Tx) error {
		tx.SetActor(actor)
		tx.KeepEvents()
		if err := fn(tx); err != nil {
			return err
		}
		rep.Events = slices.Clone(tx.Events())
		if dryRun {
			return errDryRun
		}
		return nil
	})
	switch {
	case errors.Is(err, errDryRun):
		return rep, nil
	case err != nil:
		return nil, err
	}
	rep.Written = len(rep.Events) > 0
	return rep, nil
}

// actorTime is the time of the transaction's changes.
func (t *Tx) actorTime() time.Time {
	if t.actor.At.IsZero() {
		t.actor.At = time.Now().UTC().Truncate(time.Second)
	}
	return t.actor.At
}

// Release quarantines the allocation of mac at once, knowingly: its
// prefix is no longer served, and is kept out of use for the quarantine,
// after which the sync deletes it. A NIC that CloudStack still lists and
// whose VM is eligible comes back (same prefix) at the next sync, as any
// quarantined allocation does. The allocation's pool must be configured
// (for a pool the config no longer maps, see ForgetPool).
func (t *Tx) Release(mac net.HardwareAddr) error {
	a, ok, err := t.Lookup(mac)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("MAC %s: %w", mac, ErrNoAllocation)
	case a.State == StateQuarantined:
		return fmt.Errorf("MAC %s: %s in pool %q is quarantined already (since %s): %w", mac, a.Prefix, a.Pool, a.QuarantinedAt.Format(time.RFC3339), ErrNothingToDo)
	}
	if _, ok := t.pools[a.Pool]; !ok {
		return fmt.Errorf("MAC %s: %s is in pool %q, which is not configured (to quarantine a removed pool's allocations, forget the pool): %w", mac, a.Prefix, a.Pool, ErrUnknownPool)
	}
	now := t.actorTime()
	b := a
	b.State, b.QuarantinedAt = StateQuarantined, now
	if b.GoneAt.IsZero() {
		b.GoneAt = now
	}
	return t.put(b, EventQuarantined, nil)
}

// Move gives mac the lowest free prefix of pool now (a VM that moved to
// another pod), and quarantines the prefix it had: held without an
// allocation until the quarantine has passed, so that nobody else gets it
// before. The new allocation is active, since now, keeps the NIC's VM id,
// VM name and NIC id (the next sync refreshes them) and its Source is
// AdminSource. The old allocation may be in a pool that is not configured.
func (t *Tx) Move(mac net.HardwareAddr, pool string) error {
	p, ok := t.pools[pool]
	if !ok {
		return fmt.Errorf("move %s to pool %q: %w", mac, pool, ErrUnknownPool)
	}
	a, ok, err := t.Lookup(mac)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("MAC %s: %w", mac, ErrNoAllocation)
	case a.Pool == pool:
		return fmt.Errorf("MAC %s: %s is in pool %q already: %w", mac, a.Prefix, pool, ErrNothingToDo)
	}
	// One group with the new allocation: a backend that splits large
	// updates never commits the hold without the move.
	if err := t.hold(a, false); err != nil {
		return err
	}
	free, err := t.LowestFree(p)
	if err != nil {
		return fmt.Errorf("move %s to pool %q: %w", mac, pool, err)
	}
	b := Allocation{Pool: pool, MAC: cloneMAC(mac), Prefix: free, State: StateActive, Since: t.actorTime(),
		VMID: a.VMID, VMName: a.VMName, NICID: a.NICID, IP6CIDR: p.IP6CIDR, Source: AdminSource}
	return t.put(b, EventMoved, func(e *HistoryEvent) { e.FromPool, e.FromPrefix = a.Pool, a.Prefix })
}

// ForgetPool quarantines every allocation of pool, a pool the config no
// longer maps: each prefix is held without an allocation until the
// quarantine has passed (then the sync deletes it), and each MAC is free
// to get a prefix in another pool at once. It returns how many it held.
func (t *Tx) ForgetPool(pool string) (int, error) {
	if _, ok := t.pools[pool]; ok {
		return 0, fmt.Errorf("pool %q: %w: remove it from mapping (and reload) first", pool, ErrPoolConfigured)
	}
	if !slices.Contains(t.kt.Pools(), pool) {
		return 0, fmt.Errorf("pool %q: not in the store: %w", pool, ErrNothingToDo)
	}
	var all []Allocation
	if err := t.ForEach(pool, func(a Allocation) error { all = append(all, a); return nil }); err != nil {
		return 0, err
	}
	for _, a := range all {
		if err := t.hold(a, true); err != nil {
			return 0, err
		}
	}
	return len(all), nil
}

// hold quarantines a's prefix without an allocation: the record goes to
// the Held space (quarantined since now, or since it was), the allocation
// and the MAC's index entry are deleted, the prefix index entry stays.
// end ends the group of writes (kv.Grouper).
func (t *Tx) hold(a Allocation, end bool) error {
	now := t.actorTime()
	if _, _, err := t.unlink(a.Pool, a.MAC, false); err != nil {
		return err
	}
	b := a
	prev := a.State
	b.State = StateQuarantined
	if b.QuarantinedAt.IsZero() || prev != StateQuarantined {
		b.QuarantinedAt = now
	}
	if b.GoneAt.IsZero() {
		b.GoneAt = now
	}
	val, err := EncodeAllocation(b)
	if err != nil {
		return err
	}
	if err := t.kt.Put(heldSpace, PrefixKey(b.Prefix), val); err != nil {
		return fmt.Errorf("put held/%s: %w", b.Prefix, err)
	}
	if err := t.record(t.eventOf(EventQuarantined, b, prev)); err != nil {
		return err
	}
	if end {
		endGroup(t.kt)
	}
	return nil
}

// decodeHeld decodes a record of the Held space.
func decodeHeld(k, v []byte) (Allocation, error) {
	var r allocRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return Allocation{}, fmt.Errorf("held/%x: %w", k, err)
	}
	mac, err := parseColonMAC(r.MAC)
	if err != nil {
		return Allocation{}, fmt.Errorf("held/%x: %w", k, err)
	}
	a := r.Allocation
	a.MAC = mac
	return a, nil
}

// Held returns the prefixes held in quarantine without an allocation, in
// address order.
func (t *Tx) Held() ([]Allocation, error) {
	var out []Allocation
	err := t.kt.Scan(heldSpace, nil, func(k, v []byte) error {
		a, err := decodeHeld(k, v)
		if err != nil {
			return err
		}
		out = append(out, a)
		return nil
	})
	return out, err
}

// expiredHeld returns the held prefixes whose quarantine has passed at
// now.
func (t *Tx) expiredHeld(now time.Time, quarantine time.Duration) ([]Allocation, error) {
	held, err := t.Held()
	if err != nil {
		return nil, err
	}
	var out []Allocation
	for _, a := range held {
		if !a.QuarantinedAt.IsZero() && now.Sub(a.QuarantinedAt) >= quarantine {
			out = append(out, a)
		}
	}
	return out, nil
}

// unhold deletes the held prefix a: its record and its prefix index entry
// (if it still names a's MAC). The prefix is free.
func (t *Tx) unhold(a Allocation) error {
	pk := PrefixKey(a.Prefix)
	if err := unindex(t.kt, prefixSpace(a.Pool), pk, a.MAC); err != nil {
		return fmt.Errorf("delete pools/%s/prefix/%s: %w", a.Pool, a.Prefix, err)
	}
	if err := t.kt.Delete(heldSpace, pk); err != nil {
		return fmt.Errorf("delete held/%s: %w", a.Prefix, err)
	}
	e := t.eventOf(EventReleased, a, a.State)
	e.State = ""
	if err := t.record(e); err != nil {
		return err
	}
	endGroup(t.kt)
	return nil
}

// heldBy reports whether the Held space holds prefix key pk for pool and
// MAC owner (a prefix index entry without an allocation is then sound).
func heldBy(kt kv.Tx, pool string, pk, owner []byte) bool {
	v := kt.Get(heldSpace, pk)
	if v == nil {
		return false
	}
	a, err := decodeHeld(pk, v)
	return err == nil && a.Pool == pool && bytes.Equal(a.MAC, owner)
}

func checkHeld(kt kv.Tx, add func(string, ...any)) {
	_ = kt.Scan(heldSpace, nil, func(k, v []byte) error {
		pfx, ok := ParsePrefixKey(k)
		if !ok {
			add("held/%x: malformed key", k)
			return nil
		}
		at := fmt.Sprintf("held/%s", pfx)
		a, err := decodeHeld(k, v)
		switch {
		case err != nil:
			add("%s: does not decode: %v", at, err)
			return nil
		case a.Prefix != pfx:
			add("%s: record says prefix %s", at, a.Prefix)
		case a.State != StateQuarantined:
			add("%s: state %q, want quarantined", at, a.State)
		}
		if v := kt.Get(allocSpace(a.Pool), a.MAC); v != nil {
			if b, err := DecodeAllocation(a.Pool, a.MAC, v); err == nil && b.Prefix == pfx {
				add("%s: also allocated at pools/%s/alloc/%s: %v", at, a.Pool, a.MAC, ErrDuplicatePrefix)
			}
		}
		if owner := kt.Get(prefixSpace(a.Pool), k); !bytes.Equal(owner, a.MAC) {
			if owner == nil {
				add("%s: prefix missing from pools/%s/prefix", at, a.Pool)
			} else {
				add("%s: pools/%s/prefix/%s names %s instead", at, a.Pool, pfx, net.HardwareAddr(owner))
			}
		}
		return nil
	})
}
