package allocator

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// The events of the allocation history (HistoryEvent.Event).
const (
	// EventAllocated: a new allocation (the sync's lowest free prefix).
	EventAllocated = "allocated"
	// EventAdopted: a new allocation adopted from a Kea reservation.
	EventAdopted = "adopted"
	// EventUpdated: what CloudStack says of the NIC changed (VM id, VM
	// name, NIC id, IPv6 address); prefix and state did not.
	EventUpdated = "updated"
	// EventGone: the NIC went missing from CloudStack; still served.
	EventGone = "gone"
	// EventBack: a gone or quarantined NIC is active again, same prefix.
	EventBack = "back"
	// EventQuarantined: the prefix is no longer served and waits out the
	// quarantine: by the sync, by `allocation release`, or held without
	// an allocation (`allocation move`, `pool forget`).
	EventQuarantined = "quarantined"
	// EventReleased: the allocation (or held prefix) is deleted; its
	// prefix is free.
	EventReleased = "released"
	// EventMoved: a new allocation in another pool for a MAC that had
	// one (`allocation move`): FromPool and FromPrefix name the old one.
	EventMoved = "moved"
)

// AdminSource is the Source of an allocation an operator made
// (`allocation move`).
const AdminSource = "admin"

// historySpace is the history's key space. A key is the event's time
// (UnixNano, 8 bytes big-endian) then a sequence number (4 bytes
// big-endian) that orders the events of one instant: keys sort by time.
var historySpace = kv.Space{Kind: kv.History}

const historyKeyLen = 12

// DefaultHistoryRetention is how long the history keeps an event by
// default (history.retention): 400 days.
const DefaultHistoryRetention = 400 * 24 * time.Hour

// HistoryEvent is one change of an allocation, as the history keeps it:
// what happened, to which allocation, as it was after the change (for
// EventReleased, as it was before), who did it and why.
type HistoryEvent struct {
	// At is when the change was made (the transaction's Actor.At).
	At    time.Time        `json:"at"`
	Event string           `json:"event"`
	Pool  string           `json:"pool"`
	MAC   net.HardwareAddr `json:"-"`
	// Prefix is the allocation's prefix.
	Prefix netip.Prefix `json:"prefix"`
	// State is the allocation's state after the change; empty for
	// EventReleased (no allocation any more).
	State State `json:"state,omitempty"`
	// PrevState is the state before the change; empty for a new
	// allocation.
	PrevState State `json:"prev-state,omitempty"`
	// Since is when the allocation was made.
	Since  time.Time  `json:"since,omitzero"`
	VMID   string     `json:"vm-id,omitempty"`
	VMName string     `json:"vm-name,omitempty"`
	NICID  string     `json:"nic-id,omitempty"`
	IP6    netip.Addr `json:"ip6,omitzero"`
	// FromPool and FromPrefix are, for EventMoved, the allocation the MAC
	// had before.
	FromPool   string       `json:"from-pool,omitempty"`
	FromPrefix netip.Prefix `json:"from-prefix,omitzero"`
	// By says who made the change: "sync", "import-kea", or an operator
	// ("admin alice").
	By string `json:"by,omitempty"`
	// Note says why: the command an operator ran.
	Note string `json:"note,omitempty"`
}

// historyRecord is an event as stored: the MAC as text, first.
type historyRecord struct {
	MAC string `json:"mac"`
	plainEvent
}

// plainEvent is HistoryEvent without its methods (no recursion).
type plainEvent HistoryEvent

// MarshalJSON writes the event with its MAC.
func (e HistoryEvent) MarshalJSON() ([]byte, error) {
	return marshalHistoryRecord(&e)
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (e *HistoryEvent) UnmarshalJSON(b []byte) error {
	var r historyRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	*e = HistoryEvent(r.plainEvent)
	mac, err := parseColonMAC(r.MAC)
	if err != nil {
		return err
	}
	e.MAC = mac
	return nil
}

// parseColonMAC reads a MAC as net.HardwareAddr.String writes it, 1 to 20
// bytes.
func parseColonMAC(s string) (net.HardwareAddr, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(s, ":", ""))
	if err != nil || len(b) == 0 || len(b) > maxMACLen {
		return nil, fmt.Errorf("MAC %q: %w", s, ErrInvalidMAC)
	}
	return b, nil
}

func historyKey(at time.Time, seq uint32) []byte {
	k := make([]byte, historyKeyLen)
	binary.BigEndian.PutUint64(k, uint64(at.UnixNano()))
	binary.BigEndian.PutUint32(k[8:], seq)
	return k
}

// historyKeyTime reads the time of a history key; false for a malformed
// one.
func historyKeyTime(k []byte) (int64, bool) {
	if len(k) != historyKeyLen {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(k)), true
}

// Actor says who changes allocations in a transaction, when, and why: the
// history records it with each change (Tx.SetActor).
type Actor struct {
	// At is the time of the changes, kept to the second; zero: the time
	// of the first change (time.Now).
	At time.Time
	// By is who: "sync", "import-kea", "admin alice".
	By string
	// Note is why, e.g. the command line an operator ran.
	Note string
}

// SetActor sets who makes the transaction's changes, for the history.
// Times are kept to the second, as the allocations' (the sequence
// orders the events of one second).
func (t *Tx) SetActor(a Actor) {
	if !a.At.IsZero() {
		a.At = a.At.UTC().Truncate(time.Second)
	}
	t.actor = a
}

// KeepEvents makes the transaction keep the events it writes, for Events
// (Store.Admin does).
func (t *Tx) KeepEvents() { t.keepEvents = true }

// Events returns the history events the transaction wrote since
// KeepEvents.
func (t *Tx) Events() []HistoryEvent { return t.events }

// eventOf returns the event of a, its state after the change, as written
// by the transaction's actor.
func (t *Tx) eventOf(event string, a Allocation, prev State) HistoryEvent {
	if t.actor.At.IsZero() {
		t.actor.At = time.Now().UTC().Truncate(time.Second)
	}
	return HistoryEvent{At: t.actor.At, Event: event, Pool: a.Pool, MAC: cloneMAC(a.MAC), Prefix: a.Prefix,
		State: a.State, PrevState: prev, Since: a.Since, VMID: a.VMID, VMName: a.VMName, NICID: a.NICID, IP6: a.IP6,
		By: t.actor.By, Note: t.actor.Note}
}

// record appends e to the history, in the transaction.
func (t *Tx) record(e HistoryEvent) error {
	if t.copying {
		return nil
	}
	at := e.At.UnixNano()
	if !t.seqKnown || t.seqAt != at {
		// The first event of this instant in this transaction: continue
		// after the last one stored for it (two transactions of one
		// second, or one clock for several writers).
		t.seqAt, t.seqKnown, t.seq = at, true, 0
		if k, _ := t.kt.Last(historySpace, historyKey(time.Unix(0, at+1), 0)); k != nil {
			if kt, ok := historyKeyTime(k); ok && kt == at {
				t.seq = binary.BigEndian.Uint32(k[8:]) + 1
			}
		}
	}
	key := historyKey(e.At, t.seq)
	t.seq++
	val, err := marshalHistoryRecord(&e)
	if err != nil {
		return fmt.Errorf("encode history event %s of %s: %w", e.Event, e.MAC, err)
	}
	if err := t.kt.Put(historySpace, key, val); err != nil {
		return fmt.Errorf("put history/%x: %w", key, err)
	}
	if t.keepEvents {
		t.events = append(t.events, e)
	}
	return nil
}

// putEvent names the change from prev (had: whether there was one) to a;
// "" when nothing the history keeps changed.
func putEvent(prev Allocation, had bool, a Allocation) string {
	switch {
	case !had && a.Source == ImportSource:
		return EventAdopted
	case !had:
		return EventAllocated
	case prev.State != a.State:
		switch a.State {
		case StateGone:
			return EventGone
		case StateQuarantined:
			return EventQuarantined
		default:
			return EventBack
		}
	case prev.VMID != a.VMID || prev.VMName != a.VMName || prev.NICID != a.NICID || prev.IP6 != a.IP6:
		return EventUpdated
	}
	return ""
}

// DecodeHistoryEvent decodes a value of the history space.
func DecodeHistoryEvent(key, val []byte) (HistoryEvent, error) {
	var e HistoryEvent
	if err := json.Unmarshal(val, &e); err != nil {
		return e, fmt.Errorf("history/%x: %w", key, err)
	}
	return e, nil
}

// HistoryQuery selects events: those of MAC, and those whose prefix
// overlaps Prefix (either may be zero; both: events matching both).
type HistoryQuery struct {
	MAC    net.HardwareAddr
	Prefix netip.Prefix
}

func (q HistoryQuery) match(e *HistoryEvent) bool {
	if len(q.MAC) > 0 && !slices.Equal(q.MAC, e.MAC) {
		return false
	}
	if q.Prefix.IsValid() && (!e.Prefix.IsValid() || !q.Prefix.Overlaps(e.Prefix)) {
		return false
	}
	return true
}

// History returns the events q selects, oldest first. A record that does
// not decode is an error naming its key (Check reports it too).
func (s *Store) History(q HistoryQuery) ([]HistoryEvent, error) {
	var out []HistoryEvent
	err := s.b.View(func(kt kv.Tx) error {
		return kt.Scan(historySpace, nil, func(k, v []byte) error {
			e, err := DecodeHistoryEvent(k, v)
			if err != nil {
				return err
			}
			if q.match(&e) {
				out = append(out, e)
			}
			return nil
		})
	})
	if err != nil {
		return nil, s.wrap(err)
	}
	return out, nil
}

// Holding is an allocation as it was at an instant (Store.HeldAt).
type Holding struct {
	Pool   string           `json:"pool"`
	MAC    net.HardwareAddr `json:"-"`
	Prefix netip.Prefix     `json:"prefix"`
	// State at the instant: active or gone (served), quarantined (not
	// served, not given to anyone else).
	State  State      `json:"state"`
	Since  time.Time  `json:"since,omitzero"`
	VMID   string     `json:"vm-id,omitempty"`
	VMName string     `json:"vm-name,omitempty"`
	NICID  string     `json:"nic-id,omitempty"`
	IP6    netip.Addr `json:"ip6,omitzero"`
	// Basis says what the answer rests on: "history" (the last event at
	// or before the instant), "history-after" (the first event after it,
	// its older events pruned) or "current" (no event: the allocation as
	// stored now, made before the instant).
	Basis string `json:"basis"`
}

// MarshalJSON writes the holding with its MAC.
func (h Holding) MarshalJSON() ([]byte, error) {
	type plain Holding
	return json.Marshal(struct {
		MAC string `json:"mac"`
		plain
	}{h.MAC.String(), plain(h)})
}

// HeldAt answers "who held what q selects at instant at": every
// allocation (or held prefix) matching q that existed at that instant,
// with its state then. It replays the history: the last event at or
// before at gives the state; an allocation whose earlier events were
// pruned is known from its first event after at (the state before it)
// or, without any event, from the store as it is now when it was made
// before at.
func (s *Store) HeldAt(q HistoryQuery, at time.Time) ([]Holding, error) {
	type key struct {
		pool, mac string
		prefix    netip.Prefix
	}
	type track struct {
		before, after *HistoryEvent
	}
	tracks := map[key]*track{}
	var order []key
	var out []Holding
	err := s.b.View(func(kt kv.Tx) error {
		err := kt.Scan(historySpace, nil, func(k, v []byte) error {
			e, err := DecodeHistoryEvent(k, v)
			if err != nil {
				return err
			}
			if !q.match(&e) {
				return nil
			}
			id := key{e.Pool, string(e.MAC), e.Prefix}
			tr := tracks[id]
			if tr == nil {
				tr = &track{}
				tracks[id] = tr
				order = append(order, id)
			}
			switch {
			case !e.At.After(at):
				tr.before = &e
			case tr.after == nil:
				tr.after = &e
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, id := range order {
			tr := tracks[id]
			switch {
			case tr.before != nil && tr.before.Event != EventReleased:
				out = append(out, holdingOf(tr.before, tr.before.State, "history"))
			case tr.before == nil && tr.after.PrevState != "" && !tr.after.Since.After(at):
				out = append(out, holdingOf(tr.after, tr.after.PrevState, "history-after"))
			}
		}
		// Allocations and held prefixes without any event (pruned, or
		// written before the history was kept).
		current := func(a Allocation) {
			if _, seen := tracks[key{a.Pool, string(a.MAC), a.Prefix}]; seen || a.Since.After(at) {
				return
			}
			e := HistoryEvent{Pool: a.Pool, MAC: a.MAC, Prefix: a.Prefix, Since: a.Since, VMID: a.VMID, VMName: a.VMName, NICID: a.NICID, IP6: a.IP6}
			if q.match(&e) {
				out = append(out, holdingOf(&e, a.State, "current"))
			}
		}
		for _, pool := range kt.Pools() {
			err := kt.Scan(allocSpace(pool), nil, func(k, v []byte) error {
				a, err := DecodeAllocation(pool, k, v)
				if err != nil {
					return err
				}
				current(a)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return kt.Scan(heldSpace, nil, func(k, v []byte) error {
			a, err := decodeHeld(k, v)
			if err != nil {
				return err
			}
			current(a)
			return nil
		})
	})
	if err != nil {
		return nil, s.wrap(err)
	}
	return out, nil
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (h *Holding) UnmarshalJSON(b []byte) error {
	type plain Holding
	var r struct {
		MAC string `json:"mac"`
		plain
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	*h = Holding(r.plain)
	mac, err := parseColonMAC(r.MAC)
	h.MAC = mac
	return err
}

func holdingOf(e *HistoryEvent, state State, basis string) Holding {
	return Holding{Pool: e.Pool, MAC: e.MAC, Prefix: e.Prefix, State: state, Since: e.Since,
		VMID: e.VMID, VMName: e.VMName, NICID: e.NICID, IP6: e.IP6, Basis: basis}
}

// PruneHistory deletes up to max events older than before (max ≤ 0: all
// of them), in one transaction, and returns how many it deleted: a caller
// with a long history to prune calls it again while it returns max, so
// that no transaction grows without bound.
func (s *Store) PruneHistory(before time.Time, max int) (int, error) {
	cut := before.UnixNano()
	n := 0
	err := s.b.Update(func(kt kv.Tx) error {
		var keys [][]byte
		err := kt.Scan(historySpace, nil, func(k, _ []byte) error {
			t, ok := historyKeyTime(k)
			if ok && t >= cut || max > 0 && len(keys) >= max {
				return kv.ErrStop
			}
			keys = append(keys, slices.Clone(k))
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := kt.Delete(historySpace, k); err != nil {
				return fmt.Errorf("delete history/%x: %w", k, err)
			}
		}
		n = len(keys)
		return nil
	})
	if err != nil {
		return 0, s.wrap(err)
	}
	return n, nil
}

func checkHistory(kt kv.Tx, add func(string, ...any)) {
	_ = kt.Scan(historySpace, nil, func(k, v []byte) error {
		if _, ok := historyKeyTime(k); !ok {
			add("history/%x: malformed key", k)
			return nil
		}
		if _, err := DecodeHistoryEvent(k, v); err != nil {
			add("%v", err)
		}
		return nil
	})
}

// CountHistory returns how many events the history holds.
func (s *Store) CountHistory() (int, error) {
	n := 0
	err := s.b.View(func(kt kv.Tx) error {
		return kt.Scan(historySpace, nil, func(_, _ []byte) error { n++; return nil })
	})
	if err != nil {
		return 0, s.wrap(err)
	}
	return n, nil
}

// CountAllocations returns how many allocations the store holds, in any
// pool, configured or not.
func (s *Store) CountAllocations() (int, error) {
	n := 0
	err := s.b.View(func(kt kv.Tx) error {
		for _, pool := range kt.Pools() {
			if err := kt.Scan(allocSpace(pool), nil, func(_, _ []byte) error { n++; return nil }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, s.wrap(err)
	}
	return n, nil
}
