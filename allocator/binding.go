package allocator

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// Binding is what the server recorded of one delegation to one IA_PD: what
// a router needs to rebuild its route (Leasequery).
//
// Stored as JSON with kebab-case names; byte strings (DUID, interface-id,
// remote-id, relay-id) are written as colon-separated lower-case hex, the
// way Kea prints DUIDs, and the MAC as aa:bb:cc:dd:ee:ff:
//
//	{"client-duid": "00:01:00:01:…", "mac": "06:32:b2:00:04:79", "iaid": 1,
//	 "pool": "77828509-…", "prefix": "2001:db8:200::/60",
//	 "preferred-lifetime": 86400, "valid-lifetime": 172800,
//	 "expires": "2026-…Z", "last-exchange": "2026-…Z", "last-message": "REQUEST",
//	 "relay-source": "[2001:db8::1]:547", "link-address": "2001:db8:100::1",
//	 "peer-address": "fe80::432:b2ff:fe00:479", "interface-id": "56:4c:…",
//	 "remote-id": "…", "relay-id": "…"}
type Binding struct {
	ClientDUID []byte
	MAC        net.HardwareAddr
	IAID       uint32
	Pool       string
	Prefix     netip.Prefix
	// Lifetimes in seconds, as sent.
	PreferredLifetime, ValidLifetime uint32
	// Expires is when the valid lifetime runs out.
	Expires time.Time
	// LastExchange is when the last message of this IA was answered, and
	// LastMessage its type, e.g. "REQUEST".
	LastExchange time.Time
	LastMessage  string
	// What the innermost relay said: where its Relay-Forward came from,
	// its link-address and peer-address, and its options.
	RelaySource netip.AddrPort
	LinkAddress netip.Addr
	PeerAddress netip.Addr
	InterfaceID []byte
	RemoteID    []byte
	RelayID     []byte
}

// Key returns the binding's store key: the client DUID's length (1 byte),
// the client DUID, and the IAID (4 bytes, big-endian). Keys of one client
// are adjacent, so a cursor can list a client's IAs.
func (b *Binding) Key() []byte { return BindingKey(b.ClientDUID, b.IAID) }

// BindingKey returns the store key of the binding of IA_PD iaid of the
// client with DUID clientDUID (see Binding.Key).
func BindingKey(clientDUID []byte, iaid uint32) []byte {
	return AppendBindingKey(make([]byte, 0, 1+len(clientDUID)+4), clientDUID, iaid)
}

// AppendBindingKey appends the store key of BindingKey to dst.
func AppendBindingKey(dst, clientDUID []byte, iaid uint32) []byte {
	dst = append(dst, byte(len(clientDUID)))
	dst = append(dst, clientDUID...)
	return binary.BigEndian.AppendUint32(dst, iaid)
}

// bindingJSON is the stored form of a Binding.
type bindingJSON struct {
	ClientDUID        string         `json:"client-duid"`
	MAC               string         `json:"mac,omitempty"`
	IAID              uint32         `json:"iaid"`
	Pool              string         `json:"pool,omitempty"`
	Prefix            netip.Prefix   `json:"prefix"`
	PreferredLifetime uint32         `json:"preferred-lifetime"`
	ValidLifetime     uint32         `json:"valid-lifetime"`
	Expires           time.Time      `json:"expires,omitzero"`
	LastExchange      time.Time      `json:"last-exchange,omitzero"`
	LastMessage       string         `json:"last-message,omitempty"`
	RelaySource       netip.AddrPort `json:"relay-source,omitzero"`
	LinkAddress       netip.Addr     `json:"link-address,omitzero"`
	PeerAddress       netip.Addr     `json:"peer-address,omitzero"`
	InterfaceID       string         `json:"interface-id,omitempty"`
	RemoteID          string         `json:"remote-id,omitempty"`
	RelayID           string         `json:"relay-id,omitempty"`
}

// MarshalJSON writes the stored form described on Binding.
func (b Binding) MarshalJSON() ([]byte, error) {
	return json.Marshal(bindingJSON{
		ClientDUID:        hexString(b.ClientDUID),
		MAC:               b.MAC.String(),
		IAID:              b.IAID,
		Pool:              b.Pool,
		Prefix:            b.Prefix,
		PreferredLifetime: b.PreferredLifetime,
		ValidLifetime:     b.ValidLifetime,
		Expires:           b.Expires,
		LastExchange:      b.LastExchange,
		LastMessage:       b.LastMessage,
		RelaySource:       b.RelaySource,
		LinkAddress:       b.LinkAddress,
		PeerAddress:       b.PeerAddress,
		InterfaceID:       hexString(b.InterfaceID),
		RemoteID:          hexString(b.RemoteID),
		RelayID:           hexString(b.RelayID),
	})
}

// UnmarshalJSON reads the stored form described on Binding.
func (b *Binding) UnmarshalJSON(data []byte) error {
	var j bindingJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	var out Binding
	var err error
	field := func(name, s string) []byte {
		v, e := parseHexString(s)
		if e != nil && err == nil {
			err = fmt.Errorf("binding %s %q: %w", name, s, e)
		}
		return v
	}
	out.ClientDUID = field("client-duid", j.ClientDUID)
	out.MAC = net.HardwareAddr(field("mac", j.MAC))
	out.InterfaceID = field("interface-id", j.InterfaceID)
	out.RemoteID = field("remote-id", j.RemoteID)
	out.RelayID = field("relay-id", j.RelayID)
	if err != nil {
		return err
	}
	out.IAID, out.Pool, out.Prefix = j.IAID, j.Pool, j.Prefix
	out.PreferredLifetime, out.ValidLifetime = j.PreferredLifetime, j.ValidLifetime
	out.Expires, out.LastExchange, out.LastMessage = j.Expires, j.LastExchange, j.LastMessage
	out.RelaySource, out.LinkAddress, out.PeerAddress = j.RelaySource, j.LinkAddress, j.PeerAddress
	*b = out
	return nil
}

// hexString writes b as colon-separated lower-case hex ("" for none), as a
// hardware address of any length is written.
func hexString(b []byte) string { return net.HardwareAddr(b).String() }

// parseHexString reads what hexString wrote; nil for "".
func parseHexString(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	return hex.DecodeString(strings.ReplaceAll(s, ":", ""))
}

// MaxClientDUID is the longest client DUID a binding key holds: its length
// is the key's first byte.
const MaxClientDUID = 255

// StorableClientDUID reports whether a binding can be keyed by d: not
// empty, at most MaxClientDUID bytes.
func StorableClientDUID(d []byte) bool { return len(d) > 0 && len(d) <= MaxClientDUID }

// Reasons a binding cannot be stored, as Binding.Problem gives them: short
// fixed words, fit for a metric label.
const (
	// ProblemClientDUID: the client DUID is empty or longer than 255 bytes.
	ProblemClientDUID = "client-duid-length"
	// ProblemPrefix: the prefix is not an IPv6 prefix.
	ProblemPrefix = "prefix"
	// ProblemTime: Expires or LastExchange is outside the years 0 to 9999,
	// which the stored form (RFC 3339) cannot write.
	ProblemTime = "time"
)

// Problem returns why b can never be stored (one of the Problem
// constants), or "" when it can.
func (b *Binding) Problem() string {
	switch {
	case !StorableClientDUID(b.ClientDUID):
		return ProblemClientDUID
	case !b.Prefix.IsValid() || !b.Prefix.Addr().Is6() || b.Prefix.Addr().Is4In6():
		return ProblemPrefix
	case !storableTime(b.Expires) || !storableTime(b.LastExchange):
		return ProblemTime
	}
	return ""
}

// storableTime reports whether json.Marshal writes t (the zero time is
// left out of the stored form).
func storableTime(t time.Time) bool {
	if t.IsZero() {
		return true
	}
	y := t.Year()
	return y >= 0 && y <= 9999
}

// BindingRelease names a binding its client gave up (a Release): the
// binding's key (client DUID and IAID) and the MAC of the VM that sent the
// Release, as the trusted relay identified it. Only that VM's binding is
// deleted: a Release carrying another client's DUID and IAID deletes
// nothing.
type BindingRelease struct {
	ClientDUID []byte
	IAID       uint32
	MAC        net.HardwareAddr
}

// PutBindings records a batch of binding changes in one transaction (one
// commit, one fsync pair): first it deletes the released bindings, each
// only when its recorded MAC is the MAC of the release, then it writes put
// in order, so a key in both ends up written and, within put, the last
// binding of a key wins. A prefix is bound to at most one IA: writing a
// binding whose prefix another key held deletes that other binding. (The
// server delegates a MAC only its own prefix, so the store keeps at most
// one binding per MAC and prefix, whatever DUIDs and IAIDs clients send:
// the newest replaces the older.) Releases of absent keys, or of bindings
// of another MAC, are not an error.
//
// A binding that can never be stored (Binding.Problem is not "") does not
// stop the others: the rest of the batch is written, and the error
// returned wraps ErrInvalidBinding and names each binding left out. Any
// other error means that nothing was written.
func (s *Store) PutBindings(put []Binding, del []BindingRelease) error {
	var invalid []error
	ok := put
	for i := range put {
		b := &put[i]
		if p := b.Problem(); p != "" {
			if len(invalid) == 0 {
				ok = slices.Clone(put[:i])
			}
			invalid = append(invalid, fmt.Errorf("binding of client DUID %s (%d bytes) IAID %d prefix %s: %s: %w",
				hexString(b.ClientDUID), len(b.ClientDUID), b.IAID, b.Prefix, p, ErrInvalidBinding))
			continue
		}
		if len(invalid) > 0 {
			ok = append(ok, *b)
		}
	}
	put = ok
	err := s.b.Update(func(kt kv.Tx) error {
		var kbuf []byte
		for _, r := range del {
			if !StorableClientDUID(r.ClientDUID) || len(r.MAC) == 0 {
				continue // no binding has this key, or no VM sent it
			}
			// A fresh key each time: a backend may keep it until the commit.
			kbuf = AppendBindingKey(nil, r.ClientDUID, r.IAID)
			if err := releaseBinding(kt, kbuf, r.MAC); err != nil {
				return err
			}
			endGroup(kt)
		}
		// Keys and values must stay valid until the commit: they are
		// written one after the other into arena, which is replaced,
		// not reused, when full. Bindings are written in key order (the
		// last of a key last), which walks the tree once instead of
		// jumping around it.
		var arena []byte
		keys := make([][]byte, len(put))
		order := make([]int, len(put))
		for i := range put {
			keys[i] = bindingKey(&arena, &put[i])
			order[i] = i
		}
		slices.SortStableFunc(order, func(a, b int) int { return bytes.Compare(keys[a], keys[b]) })
		for _, i := range order {
			if err := putBinding(kt, &put[i], keys[i], &arena); err != nil {
				return err
			}
			endGroup(kt)
		}
		return nil
	})
	if err != nil {
		return s.wrap(err)
	}
	if len(invalid) > 0 {
		return fmt.Errorf("store %s: %d bindings left out: %w", s.b.Name(), len(invalid), errors.Join(invalid...))
	}
	return nil
}

// releaseBinding deletes the binding at key when its recorded MAC is mac.
func releaseBinding(kt kv.Tx, key []byte, mac net.HardwareAddr) error {
	v := kt.Get(spaceBindings, key)
	if v == nil {
		return nil
	}
	var old struct {
		MAC string `json:"mac"`
	}
	if err := json.Unmarshal(v, &old); err != nil {
		return fmt.Errorf("bindings/%x: %w", key, err)
	}
	if recorded, err := parseHexString(old.MAC); err != nil || !bytes.Equal(recorded, mac) {
		return nil // another VM's binding (or one without a MAC): not the sender's to end
	}
	return deleteBinding(kt, key)
}

// deleteBinding removes the binding at key and its prefix index entry.
func deleteBinding(kt kv.Tx, key []byte) error {
	v := kt.Get(spaceBindings, key)
	if v == nil {
		return nil
	}
	var old Binding
	if err := json.Unmarshal(v, &old); err != nil {
		return fmt.Errorf("bindings/%x: %w", key, err)
	}
	if old.Prefix.IsValid() {
		if err := unindex(kt, spaceBindingPrefix, PrefixKey(old.Prefix), key); err != nil {
			return fmt.Errorf("delete binding-prefix/%s: %w", old.Prefix, err)
		}
	}
	if err := kt.Delete(spaceBindings, key); err != nil {
		return fmt.Errorf("delete bindings/%x: %w", key, err)
	}
	return nil
}

// arenaRoom returns *arena, replaced by a fresh buffer when it has less
// than room bytes free (see PutBindings).
func arenaRoom(arena *[]byte, room int) []byte {
	if cap(*arena)-len(*arena) < room {
		*arena = make([]byte, 0, max(64<<10, room))
	}
	return *arena
}

// bindingKey writes b's key into the arena and returns it.
func bindingKey(arena *[]byte, b *Binding) []byte {
	a := arenaRoom(arena, 1+len(b.ClientDUID)+4)
	n := len(a)
	a = AppendBindingKey(a, b.ClientDUID, b.IAID)
	*arena = a
	return a[n:len(a):len(a)]
}

// putBinding writes b at key and keeps binding-prefix pointing at it.
// arena is where it puts the value (see PutBindings).
func putBinding(kt kv.Tx, b *Binding, key []byte, arena *[]byte) error {
	pk := PrefixKey(b.Prefix)
	// When the prefix index already names this key, the key's stored
	// binding holds this very prefix: nothing else to unbind. (The
	// common case: a renewal of the same IA.)
	holder := kt.Get(spaceBindingPrefix, pk)
	indexed := bytes.Equal(holder, key)
	if !indexed {
		if v := kt.Get(spaceBindings, key); v != nil {
			var old struct {
				Prefix netip.Prefix `json:"prefix"`
			}
			if err := json.Unmarshal(v, &old); err != nil {
				return fmt.Errorf("bindings/%x: %w", key, err)
			}
			if old.Prefix.IsValid() && old.Prefix != b.Prefix {
				if err := unindex(kt, spaceBindingPrefix, PrefixKey(old.Prefix), key); err != nil {
					return fmt.Errorf("delete binding-prefix/%s: %w", old.Prefix, err)
				}
			}
		}
		if other := bytes.Clone(holder); other != nil {
			// The prefix moved to another IA (a new DUID after a reinstall,
			// say): the old binding is superseded.
			if err := deleteBinding(kt, other); err != nil {
				return err
			}
		}
	}
	a := arenaRoom(arena, 1024)
	n := len(a)
	a, err := appendBindingJSON(a, b)
	if err != nil {
		return fmt.Errorf("encode binding of %s: %w", b.Prefix, err)
	}
	val := a[n:len(a):len(a)]
	*arena = a
	if err := kt.Put(spaceBindings, key, val); err != nil {
		return fmt.Errorf("put bindings/%x: %w", key, err)
	}
	if !indexed {
		if err := kt.Put(spaceBindingPrefix, pk, key); err != nil {
			return fmt.Errorf("put binding-prefix/%s: %w", b.Prefix, err)
		}
	}
	return nil
}

// Bindings returns every recorded binding, in key order (by client DUID
// length, DUID, then IAID).
func (s *Store) Bindings() ([]Binding, error) {
	var out []Binding
	err := s.b.View(func(kt kv.Tx) error {
		return kt.Scan(spaceBindings, nil, func(k, v []byte) error {
			var b Binding
			if err := json.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("bindings/%x: %w", k, err)
			}
			out = append(out, b)
			return nil
		})
	})
	if err != nil {
		return nil, s.wrap(err)
	}
	return out, nil
}

// BindingByPrefix returns the binding that holds prefix p.
func (s *Store) BindingByPrefix(p netip.Prefix) (Binding, bool, error) {
	var (
		b  Binding
		ok bool
	)
	if !p.IsValid() {
		return b, false, nil
	}
	err := s.b.View(func(kt kv.Tx) error {
		key := kt.Get(spaceBindingPrefix, PrefixKey(p))
		if key == nil {
			return nil
		}
		v := kt.Get(spaceBindings, key)
		if v == nil {
			return fmt.Errorf("binding-prefix/%s names binding %x, which does not exist: store is inconsistent, run check", p, key)
		}
		if err := json.Unmarshal(v, &b); err != nil {
			return fmt.Errorf("bindings/%x: %w", key, err)
		}
		ok = true
		return nil
	})
	if err != nil {
		return Binding{}, false, s.wrap(err)
	}
	return b, ok, nil
}
