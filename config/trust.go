package config

import (
	"fmt"
	"slices"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// The keys that say which relay levels are trusted and how a pool is
// chosen (see docs/juniper-relay.md).
//
//   - server.relay-depth: how many relay levels, counted from the server,
//     the operator's own relays add: 1 (default) for a Juniper relay that
//     sends straight to the server, 2 with a Lightweight DHCPv6 Relay Agent
//     (or a second relay) in front of it. Identity (MAC, pool, the relay
//     data of a binding) is read from the innermost of them; a chain nested
//     deeper is dropped (drops_total{reason="untrusted-relay-level"}).
//     1 to 32 (relay.MaxLevels).
//   - server.pool-selection: the rules that choose a message's pool, in
//     order: interface-id (the pool whose interface-id the trusted level
//     carries), link-address (the pool whose ip6-cidr holds the trusted
//     level's link-address, Kea's subnet selection). Default both, in that
//     order; [interface-id] turns the fallback off.

// DefaultRelayDepth is server.relay-depth's default: one Juniper relay.
const DefaultRelayDepth = 1

// MaxRelayDepth is server.relay-depth's largest value: the relay levels
// decoded.
const MaxRelayDepth = relay.MaxLevels

// PoolRules are the names server.pool-selection takes.
var PoolRules = []string{"interface-id", "link-address"}

// DefaultPoolSelection is server.pool-selection's default.
var DefaultPoolSelection = []string{"interface-id", "link-address"}

// trustProblems checks server.relay-depth and server.pool-selection.
func (c *Config) trustProblems() []Problem {
	var probs []Problem
	add := func(key string, val any, format string, args ...any) {
		probs = append(probs, Problem{Key: key, Value: val, Msg: fmt.Sprintf(format, args...)})
	}
	s := c.Server
	if s.RelayDepth < 1 || s.RelayDepth > MaxRelayDepth {
		add("server.relay-depth", s.RelayDepth, "must be 1 to %d: the relay levels your own relays add, counted from the server (1: a Juniper relay; 2: with an LDRA in front of it)", MaxRelayDepth)
	}
	if len(s.PoolSelection) == 0 {
		add("server.pool-selection", nil, "empty: list interface-id, link-address or both")
	}
	for i, r := range s.PoolSelection {
		key := fmt.Sprintf("server.pool-selection[%d]", i)
		switch {
		case !slices.Contains(PoolRules, r):
			add(key, r, "unknown rule: use interface-id or link-address")
		case slices.Contains(s.PoolSelection[:i], r):
			add(key, r, "listed twice")
		}
	}
	return probs
}
