package server

import (
	"fmt"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// What the server trusts in a relayed message, and how much it answers.
//
// Identity comes only from the relay levels the operator's own relays add:
// the RelayDepth levels counted from the server (Levels[0:depth] of the
// chain). A VM can send its own Relay-Forward, with another VM's VLAN in
// interface-id and another VM's MAC in remote-id, and a relay wraps it like
// any client message: such a level is below the trusted ones. A chain that
// nests deeper than RelayDepth is dropped (untrusted-relay-level); in a
// chain accepted, the innermost trusted level is read for the MAC, the pool,
// and the relay data a binding records, and the Relay-Reply echoes the
// chain's levels, which are all trusted.

// PoolRule names a way to choose the pool of a relayed message.
type PoolRule string

// The pool rules.
const (
	// PoolByInterfaceID: the pool whose interface-id is the trusted
	// level's interface-id (option 18).
	PoolByInterfaceID PoolRule = "interface-id"
	// PoolByLinkAddress: the pool whose ip6-cidr holds the trusted level's
	// link-address, as Kea selects a subnet (not for :: or link-local).
	PoolByLinkAddress PoolRule = "link-address"
)

// DefaultPoolSelection is the pool rules tried, in order, when
// Options.PoolSelection is empty.
var DefaultPoolSelection = []PoolRule{PoolByInterfaceID, PoolByLinkAddress}

// poolRuleLabels are the label values of pool_selections_total: the rules
// and "none".
var poolRuleLabels = [...]string{string(PoolByInterfaceID), string(PoolByLinkAddress), "none"}

func poolRuleIndex(r PoolRule) int {
	switch r {
	case PoolByInterfaceID:
		return 0
	case PoolByLinkAddress:
		return 1
	}
	return 2
}

// ParsePoolRule checks a pool rule's name.
func ParsePoolRule(name string) (PoolRule, error) {
	switch r := PoolRule(name); r {
	case PoolByInterfaceID, PoolByLinkAddress:
		return r, nil
	}
	return "", fmt.Errorf("unknown pool rule %q: use %s or %s", name, PoolByInterfaceID, PoolByLinkAddress)
}

// DefaultRelayDepth is the relay levels trusted when Options.RelayDepth is
// 0: the one relay (a Juniper router) that sends the packet to the server.
const DefaultRelayDepth = 1

// Limits on the IAs of one message (IA_NA, IA_TA and IA_PD together).
const (
	// MaxAnsweredIAs is how many IAs of a message are answered; the IAs
	// after them are left out of the answer.
	MaxAnsweredIAs = 8
	// MaxIAs is how many IAs a message may carry; more and it is dropped
	// (too-many-ias).
	MaxIAs = 16
)

// relayDepth is the number of relay levels trusted.
func (o *Options) relayDepth() int {
	if o.RelayDepth <= 0 {
		return DefaultRelayDepth
	}
	return o.RelayDepth
}

// poolSelection is the pool rules in force.
func (o *Options) poolSelection() []PoolRule {
	if len(o.PoolSelection) == 0 {
		return DefaultPoolSelection
	}
	return o.PoolSelection
}

// selectPool chooses the pool of the message from the trusted level, by the
// first rule that names one. It does not allocate.
func selectPool(o *Options, table *allocator.Table, lvl *relay.Level) (*allocator.Pool, PoolRule) {
	for _, r := range o.poolSelection() {
		switch r {
		case PoolByInterfaceID:
			if lvl.InterfaceID == nil {
				continue
			}
			if p, ok := table.PoolByInterfaceID(lvl.InterfaceID); ok {
				return p, r
			}
		case PoolByLinkAddress:
			if p, ok := table.PoolByLinkAddress(lvl.LinkAddr); ok {
				return p, r
			}
		}
	}
	return nil, ""
}

func isIA(o dhcpv6.Option) bool {
	switch o.Code() {
	case dhcpv6.OptionIANA, dhcpv6.OptionIATA, dhcpv6.OptionIAPD:
		return true
	}
	return false
}

// limitIAs applies the IA limits to the decoded client message: more than
// MaxIAs is an error; the IAs after the first MaxAnsweredIAs are removed
// from the message, so that no rule answers them.
func (req *request) limitIAs() error {
	opts := req.msg.Options.Options
	n := 0
	for _, o := range opts {
		if isIA(o) {
			n++
		}
	}
	if n > MaxIAs {
		return drop(ReasonTooManyIAs, fmt.Errorf("%s with %d IAs: at most %d", req.msg.MessageType, n, MaxIAs))
	}
	if n <= MaxAnsweredIAs {
		return nil
	}
	kept, ias := opts[:0], 0
	for _, o := range opts {
		if isIA(o) {
			if ias == MaxAnsweredIAs {
				continue
			}
			ias++
		}
		kept = append(kept, o)
	}
	clear(opts[len(kept):])
	req.msg.Options.Options = kept
	return nil
}

// holder returns the index, in the client message's options, of the IA_PD
// that gets the MAC's prefix: the first that names it in an IA Prefix (the
// IA whose binding holds it: a Renew or Rebind names it), else the first
// IA_PD; an IA_PD whose IAID repeats an earlier one's is never chosen. -1
// when the message has no IA_PD. The choice depends only on the message, so
// a repeated message gives the prefix to the same IA.
func (r *rules) holder() int {
	first := -1
	for i, o := range r.req.msg.Options.Options {
		pd, ok := o.(*dhcpv6.OptIAPD)
		if !ok || r.repeatsIAID(i) {
			continue
		}
		if first < 0 {
			first = i
		}
		if r.id.hasAlloc && names(pd, r.id.alloc.Prefix) {
			return i
		}
	}
	return first
}

// repeatsIAID reports whether the IA_PD at index i of the client message's
// options has the IAID of an IA_PD before it.
func (r *rules) repeatsIAID(i int) bool {
	opts := r.req.msg.Options.Options
	pd := opts[i].(*dhcpv6.OptIAPD)
	for _, o := range opts[:i] {
		if q, ok := o.(*dhcpv6.OptIAPD); ok && q.IaId == pd.IaId {
			return true
		}
	}
	return false
}

// names reports whether ia names prefix p in one of its IA Prefixes.
func names(ia *dhcpv6.OptIAPD, p netip.Prefix) bool {
	for _, o := range ia.Options.Options {
		if ip, ok := o.(*dhcpv6.OptIAPrefix); ok {
			if named, ok := prefixOf(ip); ok && named == p {
				return true
			}
		}
	}
	return false
}
