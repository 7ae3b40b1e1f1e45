package kea

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// ExportSubnet is one pool (one mapping entry) to write as a Dhcp6.subnet6
// entry.
type ExportSubnet struct {
	// Name is the mapping key (the pod UUID). Problems name the subnet as
	// "mapping.<Name>", the key in cloudstack-pd's config.
	Name string
	// Subnet is the mapping's ip6-cidr, written as the entry's "subnet".
	// The zero Prefix (no ip6-cidr) makes Export refuse.
	Subnet netip.Prefix
	// InterfaceID is written as the entry's "interface-id"; empty is refused.
	InterfaceID string
	// Pool and PrefixLen are the pool every reservation's prefix must be a
	// delegated prefix of.
	Pool      netip.Prefix
	PrefixLen int
	// Reservations are written one per entry, in prefix order whatever
	// their order here.
	Reservations []ExportReservation
}

// ExportReservation is one MAC's prefix.
type ExportReservation struct {
	MAC    net.HardwareAddr
	Prefix netip.Prefix
	// IP6 is the NIC's address, written as "ip-addresses" when valid and
	// inside the subnet (Kea refuses a reserved address outside it).
	IP6 netip.Addr
}

// ExportOptions are the Dhcp6 settings Export writes besides the subnets.
type ExportOptions struct {
	// MACSources is written as Dhcp6.mac-sources, in order, with Kea's
	// names. It must not be empty.
	MACSources []string
}

// ExportResult is an exported config and what Export noticed on the way.
type ExportResult struct {
	// Data is the config: JSON, indented by two spaces, keys in byte
	// order, ending with a newline. The same source, subnets and options
	// always give the same bytes.
	Data []byte
	// Subnets describes each subnet6 entry written, in output order.
	Subnets []ExportedSubnet
	// Warnings are oddities that did not stop the export, each naming
	// the key concerned.
	Warnings []string
}

// ExportedSubnet describes one subnet6 entry written.
type ExportedSubnet struct {
	Name        string
	ID          int
	Subnet      netip.Prefix
	InterfaceID string
	// Source is the JSON path of the source entry that was reused, "" when
	// the entry is new.
	Source string
	// IDFrom says where the id came from: "source" (the reused entry's
	// "id"), "kea-auto" (the id Kea 2.2 numbered the id-less source entry
	// with) or "new" (the lowest unused one).
	IDFrom string
	// Reservations counts the reservations written; Added those whose MAC
	// and prefix the source entry did not hold, Removed the source entry's
	// reservations that are not written again (same MAC and prefix).
	Reservations, Added, Removed int
}

// ExportError lists every reason Export refused to write a config.
type ExportError struct {
	File     string
	Problems []Problem
}

func (e *ExportError) Error() string {
	return formatProblems("kea export from "+e.File+" refused", e.Problems)
}

// identifierKeys are the reservation keys naming the host; a reservation
// carries exactly one of them.
var identifierKeys = []string{"hw-address", "duid", "circuit-id", "client-id", "flex-id"}

// keaDefaultIdentifiers is Kea's default host-reservation-identifiers for
// DHCPv6 (CfgHostOperations::createConfig6).
var keaDefaultIdentifiers = []any{"hw-address", "duid"}

// Export writes src back with its Dhcp6.subnet6 replaced by one entry per
// subnet, and returns it. Every other key of src is kept as it was, except
// Dhcp6.mac-sources (set to opts.MACSources) and
// Dhcp6.host-reservation-identifiers (made to include "hw-address").
//
// Each subnet6 entry holds "subnet" (ExportSubnet.Subnet), "interface-id",
// "reservations-in-subnet": true, "reservations-out-of-pool": true, "id"
// and "reservations": set on every entry, so that no global
// reservations-in-subnet: false or reservation-mode: "disabled" / "global"
// inherited from Dhcp6 makes Kea ignore the reservations. When src's
// Dhcp6.subnet6 has an entry with the same subnet (compared as prefixes),
// that entry is reused: its other keys (option-data, pools, relay, …) are
// kept, "reservation-mode" is dropped (Kea 2.6 removed it and Kea refuses
// it beside reservations-out-of-pool; what it said of reservations-global is
// written out), and "interface" is dropped (Kea refuses it beside
// interface-id). Source entries that no subnet reuses are left out, as the
// old generator did. shared-networks are kept as they are, but for
// reservation-mode.
//
// reservation-mode survives at no level: at Dhcp6, in a shared network or
// in one of its subnets it is replaced by the keys Kea 2.2 translates it
// into (reservations-global, -in-subnet, -out-of-pool), with a warning
// naming where it was; beside one of those keys (which Kea refuses) or with
// a value Kea does not know, it is only dropped.
//
// Each reservation is {"hw-address", "prefixes": [prefix], "ip-addresses":
// [IP6]}; when the reused entry had a reservation for the same hw-address,
// its other keys (hostname, option-data, …) are kept.
//
// Subnet ids, so that Kea's leases (keyed by subnet id) stay attached:
//  1. a reused entry keeps its "id";
//  2. a reused entry without one gets the id Kea 2.2 gave it when it read
//     src: Kea numbers id-less subnets 1, 2, … in the order it reads them,
//     the shared-networks' subnets first, then subnet6;
//  3. every other entry gets the lowest positive id not used by the above
//     nor by shared-networks' subnets (including the ids Kea will number
//     their id-less ones with), in subnet Name order.
//
// An id of rule 2 that is taken falls back to rule 3 with a warning. An
// export fed back in as the next src keeps every id (rule 1), and a later
// new entry never changes an existing one's. src is the only record of the
// ids: a src without the previous entries (a template without subnet6)
// numbers them anew in Name order, so a new Name sorting first shifts them;
// Export warns when it reuses no src entry at all.
//
// Export refuses, returning an *ExportError that names each problem and no
// result, a config with: a subnet without ip6-cidr or interface-id, two
// subnets with the same interface-id (shared-networks included), overlapping
// subnets (shared-networks included), a prefix outside its pool, not of the
// pool's prefix length or misaligned, a MAC or a prefix reserved twice, two
// subnets with the same id, or no mac-sources. Kea 2.2 itself accepts an
// empty or duplicate interface-id, overlapping subnets, a prefix reserved
// in two subnets, and any prefix at all in a reservation: it then hands
// out or routes the wrong prefixes.
func Export(src *Config, subnets []ExportSubnet, opts ExportOptions) (*ExportResult, error) {
	x := &exporter{src: src, res: &ExportResult{}}
	x.run(subnets, opts)
	if len(x.probs) > 0 {
		return nil, &ExportError{File: src.Path, Problems: x.probs}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(x.root); err != nil {
		return nil, fmt.Errorf("kea export from %s: encode: %w", src.Path, err)
	}
	x.res.Data = buf.Bytes()
	return x.res, nil
}

// exporter holds one Export's state.
type exporter struct {
	src   *Config
	root  map[string]any
	res   *ExportResult
	probs []Problem
}

func (x *exporter) problem(path string, v any, format string, args ...any) {
	x.probs = append(x.probs, Problem{Path: path, Value: v, Msg: fmt.Sprintf(format, args...)})
}

func (x *exporter) warn(format string, args ...any) {
	x.res.Warnings = append(x.res.Warnings, fmt.Sprintf(format, args...))
}

// sourceSubnet is a Dhcp6.subnet6 entry of the source.
type sourceSubnet struct {
	path   string
	prefix netip.Prefix
	entry  map[string]any
	autoID int // the id Kea numbered it with, when it has none
	used   bool
}

// keptSubnet is a shared-networks subnet, kept as it is.
type keptSubnet struct {
	path   string
	prefix netip.Prefix
	iid    string
	id     int // explicit, or the one Kea will number it with
}

// outSubnet is one subnet6 entry being written.
type outSubnet struct {
	in    *ExportSubnet
	key   string // "mapping.<Name>"
	src   *sourceSubnet
	entry map[string]any
	info  ExportedSubnet
}

func (x *exporter) run(subnets []ExportSubnet, opts ExportOptions) {
	root, ok := deepCopy(x.src.Raw).(map[string]any)
	if !ok {
		x.problem("(top level)", nil, "not an object")
		return
	}
	x.root = root
	d6, ok := root["Dhcp6"].(map[string]any)
	if !ok {
		x.problem("Dhcp6", nil, "missing or not an object: not a Kea DHCPv6 config")
		return
	}

	// Kea numbers id-less subnets in reading order: shared networks first.
	autoID := 0
	kept := x.sharedSubnets(d6, &autoID)
	sources := x.sourceSubnets(d6, &autoID)

	sorted := slices.Clone(subnets)
	slices.SortStableFunc(sorted, func(a, b ExportSubnet) int { return cmp.Compare(a.Name, b.Name) })
	outs := make([]*outSubnet, 0, len(sorted))
	for i := range sorted {
		outs = append(outs, &outSubnet{in: &sorted[i], key: "mapping." + sorted[i].Name})
	}
	x.checkSubnets(outs, kept)
	x.buildEntries(outs, sources)
	x.assignIDs(outs, kept)
	x.reservations(outs)

	if len(outs) > 0 && !slices.ContainsFunc(outs, func(o *outSubnet) bool { return o.src != nil }) {
		x.warn("Dhcp6.subnet6: no entry of the source is reused, so the ids are numbered anew in mapping-key order: feed this output back as the next source (--keacfg, or --keacfg = --output), else a new mapping key that sorts first shifts the ids and orphans Kea's leases")
	}

	for _, s := range sources {
		if !s.used {
			n := 0
			if l, ok := s.entry["reservations"].([]any); ok {
				n = len(l)
			}
			x.warn("%s: subnet %s is no mapping's ip6-cidr: left out with its %d reservation(s), as the old generator did", s.path, s.prefix, n)
		}
	}

	list := make([]any, 0, len(outs))
	for _, o := range outs {
		list = append(list, o.entry)
		x.res.Subnets = append(x.res.Subnets, o.info)
	}
	d6["subnet6"] = list

	if len(opts.MACSources) == 0 {
		x.problem("server.mac-sources", nil, "empty: Kea needs at least one source to read the client MAC from")
	}
	ms := make([]any, 0, len(opts.MACSources))
	for _, s := range opts.MACSources {
		ms = append(ms, s)
	}
	d6["mac-sources"] = ms
	x.identifiers(d6)

	x.dropReservationModes(d6)
}

// identifiers makes Dhcp6.host-reservation-identifiers include hw-address:
// first when the source lists others, Kea's default (hw-address, duid)
// written out when it lists none.
func (x *exporter) identifiers(d6 map[string]any) {
	v, ok := d6["host-reservation-identifiers"]
	if !ok {
		d6["host-reservation-identifiers"] = slices.Clone(keaDefaultIdentifiers)
		return
	}
	l, ok := v.([]any)
	if !ok {
		x.problem("Dhcp6.host-reservation-identifiers", v, "not a list")
		return
	}
	if slices.Contains(l, any("hw-address")) {
		return
	}
	d6["host-reservation-identifiers"] = append([]any{"hw-address"}, l...)
	x.warn("Dhcp6.host-reservation-identifiers: hw-address added first, the reservations are by hw-address")
}

// sharedSubnets lists the subnets of Dhcp6.shared-networks, which are kept.
func (x *exporter) sharedSubnets(d6 map[string]any, autoID *int) []keptSubnet {
	var out []keptSubnet
	nets, _ := d6["shared-networks"].([]any)
	for i, nv := range nets {
		n, ok := nv.(map[string]any)
		if !ok {
			continue
		}
		netIID, _ := n["interface-id"].(string)
		subs, _ := n["subnet6"].([]any)
		for j, sv := range subs {
			s, ok := sv.(map[string]any)
			if !ok {
				continue
			}
			k := keptSubnet{path: fmt.Sprintf("Dhcp6.shared-networks[%d].subnet6[%d]", i, j), iid: netIID}
			if iid, ok := s["interface-id"].(string); ok {
				k.iid = iid
			}
			if str, ok := s["subnet"].(string); ok {
				if p, err := netip.ParsePrefix(str); err == nil {
					k.prefix = p.Masked()
				}
			}
			if id, ok := subnetID(s); ok {
				k.id = id
			} else {
				*autoID++
				k.id = *autoID
			}
			out = append(out, k)
		}
	}
	return out
}

// sourceSubnets lists the source's Dhcp6.subnet6 entries.
func (x *exporter) sourceSubnets(d6 map[string]any, autoID *int) []*sourceSubnet {
	var out []*sourceSubnet
	l, _ := d6["subnet6"].([]any)
	for i, sv := range l {
		s, ok := sv.(map[string]any)
		if !ok {
			continue
		}
		ss := &sourceSubnet{path: fmt.Sprintf("Dhcp6.subnet6[%d]", i), entry: s}
		if str, ok := s["subnet"].(string); ok {
			if p, err := netip.ParsePrefix(str); err == nil {
				ss.prefix = p.Masked()
			}
		}
		if _, ok := subnetID(s); !ok {
			*autoID++
			ss.autoID = *autoID
		}
		out = append(out, ss)
	}
	return out
}

// subnetID returns a subnet entry's "id" when it is set (not 0).
func subnetID(s map[string]any) (int, bool) {
	n, ok := s["id"].(json.Number)
	if !ok {
		return 0, false
	}
	id, err := n.Int64()
	if err != nil || id <= 0 || id > math.MaxUint32 {
		return 0, false
	}
	return int(id), true
}

// checkSubnets checks the subnets' own keys: ip6-cidr and interface-id
// present, interface-ids unique, no overlap, shared networks included.
func (x *exporter) checkSubnets(outs []*outSubnet, kept []keptSubnet) {
	iids := map[string]string{}
	for _, k := range kept {
		if k.iid != "" {
			if _, dup := iids[k.iid]; !dup {
				iids[k.iid] = k.path + " (a shared network's subnet, kept from the source)"
			}
		}
	}
	for _, o := range outs {
		s := o.in
		switch {
		case s.InterfaceID == "":
			x.problem(o.key+".interface-id", nil, "empty: give the interface-id the relay inserts, Kea selects the subnet by it")
		case iids[s.InterfaceID] != "":
			x.problem(o.key+".interface-id", s.InterfaceID, "also the interface-id of %s: Kea would serve only one of them", iids[s.InterfaceID])
		default:
			iids[s.InterfaceID] = o.key
		}
		if !s.Subnet.IsValid() {
			x.problem(o.key+".ip6-cidr", nil, "missing: kea-export writes it as the subnet of the pool's Kea subnet6 entry")
			continue
		}
		if !s.Subnet.Addr().Is6() || s.Subnet.Addr().Is4In6() {
			x.problem(o.key+".ip6-cidr", s.Subnet.String(), "not an IPv6 prefix")
		}
	}
	type named struct {
		key string
		p   netip.Prefix
	}
	var seen []named
	for _, k := range kept {
		if k.prefix.IsValid() {
			seen = append(seen, named{k.path + " (kept from the source)", k.prefix})
		}
	}
	for _, o := range outs {
		p := o.in.Subnet
		if !p.IsValid() {
			continue
		}
		for _, n := range seen {
			if n.p.Overlaps(p) {
				x.problem(o.key+".ip6-cidr", p.String(), "overlaps %s (%s): Kea would select either subnet for the same link", n.key, n.p)
			}
		}
		seen = append(seen, named{o.key + ".ip6-cidr", p})
	}
}

// buildEntries makes each subnet6 entry, reusing the source entry of the
// same subnet.
func (x *exporter) buildEntries(outs []*outSubnet, sources []*sourceSubnet) {
	for _, o := range outs {
		s := o.in
		o.info = ExportedSubnet{Name: s.Name, Subnet: s.Subnet.Masked(), InterfaceID: s.InterfaceID}
		o.entry = map[string]any{}
		if s.Subnet.IsValid() {
			for _, src := range sources {
				if !src.used && src.prefix.IsValid() && src.prefix == s.Subnet.Masked() {
					src.used = true
					o.src = src
					o.entry = src.entry
					o.info.Source = src.path
					break
				}
			}
		}
		e := o.entry
		if o.src != nil {
			if old, ok := e["interface-id"].(string); ok && old != s.InterfaceID {
				x.warn("%s: interface-id %q replaced by %s's %q", o.src.path, old, o.key, s.InterfaceID)
			}
			if v, ok := e["reservation-mode"]; ok {
				// reservations-in-subnet and -out-of-pool are set to
				// true below whatever the mode said; what it said of
				// reservations-global is kept.
				written := x.moveReservationMode(e)
				keys := "reservations-out-of-pool: true, reservations-in-subnet: true"
				if g, ok := written["reservations-global"]; ok {
					keys += fmt.Sprintf(", reservations-global: %t", g)
				}
				x.warn("%s: reservation-mode %v replaced by %s (Kea 2.6 removed reservation-mode)", o.src.path, v, keys)
			}
			if v, ok := e["interface"]; ok {
				delete(e, "interface")
				x.warn("%s: interface %v dropped: Kea refuses it beside interface-id, and the subnet is reached through relays", o.src.path, v)
			}
			if v, ok := e["reservations-in-subnet"]; ok && v != true {
				x.warn("%s: reservations-in-subnet %v set to true: Kea would ignore the subnet's reservations", o.src.path, v)
			}
			if v, ok := e["reservations-out-of-pool"]; ok && v != true {
				x.warn("%s: reservations-out-of-pool %v set to true: the reservations are outside the subnet's pools", o.src.path, v)
			}
			if _, ok := e["pd-pools"]; ok {
				x.warn("%s: pd-pools kept: Kea will delegate prefixes from them to MACs without a reservation, which cloudstack-pd refuses", o.src.path)
			}
		}
		if s.Subnet.IsValid() {
			e["subnet"] = s.Subnet.Masked().String()
			if s.Subnet.Masked() != s.Subnet {
				x.warn("%s.ip6-cidr %s has host bits set: written as %s", o.key, s.Subnet, s.Subnet.Masked())
			}
		}
		e["interface-id"] = s.InterfaceID
		// Set on every entry, so that no global or inherited
		// reservations-in-subnet: false (or reservation-mode: disabled,
		// "global") makes Kea ignore the entry's reservations.
		e["reservations-in-subnet"] = true
		e["reservations-out-of-pool"] = true
	}
}

// reservationModeFlags are the keys Kea 2.0 to 2.4 translate the removed
// reservation-mode into, in the order warnings name them.
var reservationModeFlags = []string{"reservations-global", "reservations-in-subnet", "reservations-out-of-pool"}

// reservationModeKeys is Kea's translation of a reservation-mode value
// (BaseNetworkParser::moveReservationMode); nil for a value Kea refuses.
func reservationModeKeys(mode any) map[string]bool {
	s, _ := mode.(string)
	switch s {
	case "disabled", "off":
		return map[string]bool{"reservations-global": false, "reservations-in-subnet": false}
	case "out-of-pool":
		return map[string]bool{"reservations-global": false, "reservations-in-subnet": true, "reservations-out-of-pool": true}
	case "global":
		return map[string]bool{"reservations-global": true, "reservations-in-subnet": false}
	case "all":
		return map[string]bool{"reservations-global": false, "reservations-in-subnet": true, "reservations-out-of-pool": false}
	}
	return nil
}

// moveReservationMode removes m's reservation-mode and writes it as Kea
// reads it, in the modern keys, returning what it wrote. It writes nothing
// when the value is not one Kea knows or when m already has a modern key
// (Kea refuses both: the explicit keys are kept).
func (x *exporter) moveReservationMode(m map[string]any) map[string]bool {
	v := m["reservation-mode"]
	delete(m, "reservation-mode")
	for _, k := range reservationModeFlags {
		if _, ok := m[k]; ok {
			return nil
		}
	}
	keys := reservationModeKeys(v)
	for k, b := range keys {
		m[k] = b
	}
	return keys
}

// dropReservationModes removes reservation-mode from Dhcp6 and from the
// kept shared networks and their subnets (Kea 2.6 refuses it), writing
// its meaning in the modern keys, with a warning naming each place.
func (x *exporter) dropReservationModes(d6 map[string]any) {
	drop := func(path string, m map[string]any) {
		v, ok := m["reservation-mode"]
		if !ok {
			return
		}
		written := x.moveReservationMode(m)
		if written == nil {
			if reservationModeKeys(v) == nil {
				x.warn("%s.reservation-mode %v dropped: not a mode Kea knows (Kea refuses it), nothing written in its place", path, v)
			} else {
				x.warn("%s.reservation-mode %v dropped (Kea 2.6 removed it): the reservations-* keys beside it are kept (Kea refuses both)", path, v)
			}
			return
		}
		var keys []string
		for _, k := range reservationModeFlags {
			if b, ok := written[k]; ok {
				keys = append(keys, fmt.Sprintf("%s: %t", k, b))
			}
		}
		x.warn("%s.reservation-mode %v replaced by %s, as Kea 2.2 reads it (Kea 2.6 removed reservation-mode)", path, v, strings.Join(keys, ", "))
	}
	drop("Dhcp6", d6)
	nets, _ := d6["shared-networks"].([]any)
	for i, nv := range nets {
		n, ok := nv.(map[string]any)
		if !ok {
			continue
		}
		drop(fmt.Sprintf("Dhcp6.shared-networks[%d]", i), n)
		subs, _ := n["subnet6"].([]any)
		for j, sv := range subs {
			if s, ok := sv.(map[string]any); ok {
				drop(fmt.Sprintf("Dhcp6.shared-networks[%d].subnet6[%d]", i, j), s)
			}
		}
	}
}

// assignIDs gives every entry its id (see Export) and checks that no two
// subnets share one.
func (x *exporter) assignIDs(outs []*outSubnet, kept []keptSubnet) {
	owner := map[int]string{}
	claim := func(id int, who string) bool {
		if prev, dup := owner[id]; dup {
			x.problem(who+".id", id, "also the id of %s: Kea refuses two subnets with one id", prev)
			return false
		}
		owner[id] = who
		return true
	}
	for _, k := range kept {
		claim(k.id, k.path)
	}
	for _, o := range outs {
		if o.src == nil {
			continue
		}
		if id, ok := subnetID(o.src.entry); ok && claim(id, o.src.path) {
			o.info.ID, o.info.IDFrom = id, "source"
		}
	}
	for _, o := range outs {
		if o.src == nil || o.info.ID != 0 || o.src.autoID == 0 {
			continue
		}
		if prev, taken := owner[o.src.autoID]; taken {
			x.warn("%s had no id; Kea numbered it %d, which %s now holds: it gets a new id, and Kea's leases in it are orphaned", o.src.path, o.src.autoID, prev)
			continue
		}
		owner[o.src.autoID] = o.src.path
		o.info.ID, o.info.IDFrom = o.src.autoID, "kea-auto"
	}
	next := 1
	for _, o := range outs {
		if o.info.ID != 0 {
			continue
		}
		for owner[next] != "" {
			next++
		}
		owner[next] = o.key
		o.info.ID, o.info.IDFrom = next, "new"
	}
	for _, o := range outs {
		if o.info.ID != 0 {
			o.entry["id"] = json.Number(strconv.Itoa(o.info.ID))
		}
	}
}

// resKey is a (MAC, prefix) pair.
type resKey struct {
	mac    string
	prefix netip.Prefix
}

// reservations writes each entry's reservations and checks every prefix.
func (x *exporter) reservations(outs []*outSubnet) {
	macs := map[string]string{}           // MAC bytes → subnet key
	prefixes := map[netip.Prefix]string{} // prefix → MAC
	for _, o := range outs {
		s := o.in
		// The source entry's reservations by MAC (as Kea decodes it).
		srcByMAC := map[string]map[string]any{}
		srcKeys := map[resKey]bool{}
		if o.src != nil {
			l, _ := o.src.entry["reservations"].([]any)
			for _, rv := range l {
				r, ok := rv.(map[string]any)
				if !ok {
					continue
				}
				hw, _ := r["hw-address"].(string)
				mac, err := DecodeHex(hw)
				if hw == "" || err != nil {
					continue
				}
				if _, dup := srcByMAC[string(mac)]; !dup {
					srcByMAC[string(mac)] = r
				}
				ps, _ := r["prefixes"].([]any)
				for _, pv := range ps {
					if str, ok := pv.(string); ok {
						if p, err := netip.ParsePrefix(str); err == nil {
							srcKeys[resKey{string(mac), p}] = true
						}
					}
				}
			}
			o.info.Removed = len(l)
		}

		rs := slices.Clone(s.Reservations)
		slices.SortStableFunc(rs, func(a, b ExportReservation) int {
			if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
				return c
			}
			return cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits())
		})
		ips := map[netip.Addr]string{}
		out := make([]any, 0, len(rs))
		for _, r := range rs {
			who := fmt.Sprintf("%s: reservation of %s", o.key, r.MAC)
			ok := true
			if err := checkPrefix(s, r.Prefix); err != "" {
				x.problem(who, r.Prefix.String(), "%s", err)
				ok = false
			}
			if len(r.MAC) == 0 || len(r.MAC) > maxHWAddrLen {
				x.problem(who, r.MAC.String(), "MAC of %d bytes: Kea takes 1 to %d", len(r.MAC), maxHWAddrLen)
				ok = false
			} else if prev, dup := macs[string(r.MAC)]; dup {
				x.problem(who, r.MAC.String(), "MAC also reserved in %s: a MAC gets one prefix", prev)
				ok = false
			} else {
				macs[string(r.MAC)] = o.key
			}
			if prev, dup := prefixes[r.Prefix.Masked()]; dup && r.Prefix.IsValid() {
				x.problem(who, r.Prefix.String(), "prefix also reserved for %s", prev)
				ok = false
			} else if r.Prefix.IsValid() {
				prefixes[r.Prefix.Masked()] = r.MAC.String()
			}
			if !ok {
				continue
			}
			res := map[string]any{}
			if prev, ok := srcByMAC[string(r.MAC)]; ok {
				for k, v := range prev {
					if !slices.Contains(identifierKeys, k) && k != "prefixes" && k != "ip-addresses" {
						res[k] = v
					}
				}
			}
			res["hw-address"] = r.MAC.String()
			res["prefixes"] = []any{r.Prefix.String()}
			switch {
			case !r.IP6.IsValid():
			case !s.Subnet.IsValid() || !s.Subnet.Contains(r.IP6) || r.IP6.Zone() != "":
				x.warn("%s: ip6 %s is not inside ip6-cidr %s: ip-addresses left out (Kea refuses it)", who, r.IP6, s.Subnet)
			case ips[r.IP6] != "":
				x.warn("%s: ip6 %s is also %s's: ip-addresses left out (Kea refuses an address reserved twice)", who, r.IP6, ips[r.IP6])
			default:
				ips[r.IP6] = r.MAC.String()
				res["ip-addresses"] = []any{r.IP6.String()}
			}
			out = append(out, res)
			if srcKeys[resKey{string(r.MAC), r.Prefix}] {
				o.info.Removed--
			} else {
				o.info.Added++
			}
		}
		o.info.Reservations = len(out)
		o.entry["reservations"] = out
	}
}

// checkPrefix says what is wrong with prefix as a delegated prefix of s's
// pool, "" when nothing is.
func checkPrefix(s *ExportSubnet, p netip.Prefix) string {
	switch {
	case !p.IsValid() || !p.Addr().Is6() || p.Addr().Is4In6():
		return "not an IPv6 prefix"
	case !s.Pool.IsValid():
		return "the pool has no prefix"
	case !s.Pool.Contains(p.Addr()) || p.Bits() < s.Pool.Bits():
		return fmt.Sprintf("not inside pool %s", s.Pool)
	case p.Bits() != s.PrefixLen:
		return fmt.Sprintf("a /%d, the pool delegates /%d", p.Bits(), s.PrefixLen)
	case p.Masked() != p:
		return fmt.Sprintf("misaligned: host bits set (the /%d is %s)", p.Bits(), p.Masked())
	}
	return ""
}

// deepCopy copies a decoded JSON document, so that the source stays as it
// was read.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = deepCopy(e)
		}
		return l
	}
	return v
}
