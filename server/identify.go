package server

import (
	"net"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
)

// identity is who the client is, as identify finds it: one step of the
// packet path, run once, before any answer is built.
type identity struct {
	// mac is the client's MAC; nil when none of the MAC sources gives one.
	mac net.HardwareAddr
	// pool is the pool chosen for the message, by poolRule; nil when none.
	pool     *allocator.Pool
	poolRule PoolRule
	// alloc is the MAC's allocation, when hasAlloc: in pool and served.
	alloc    allocator.Entry
	hasAlloc bool
	// result is ResultPrefix when the MAC has a prefix to serve on this
	// VLAN, else why not.
	result Result
}

// identify finds the pool, the MAC and its allocation in e.table, into
// id, which is zero.
//
// All come from the chain's innermost trusted level only (see trust.go).
// The MAC is read even when no pool is chosen: the prefixes a client names
// are judged by it (see withdrawOthers).
func identify(id *identity, e *env, req *request) {
	lvl := req.trusted
	mac, _, macErr := lvl.MAC(e.opts.MACSources, req.clientID())
	if macErr == nil {
		id.mac = mac
	}
	pool, rule := selectPool(e.opts, e.table, lvl)
	id.poolRule = rule
	e.metrics.countPoolSelection(rule)
	if pool == nil {
		id.result = ResultNoPool
		return
	}
	id.pool = pool
	if macErr != nil {
		id.result = ResultNoMAC
		e.log.Debug("no MAC", "relay", req.src, "err", macErr)
		return
	}
	a, ok := e.table.Find(mac)
	switch {
	case !ok:
		id.result = ResultUnknownMAC
	case a.Pool.Name != pool.Name:
		id.result = ResultOtherPool
	case !a.Served():
		id.result = ResultQuarantined
	default:
		id.alloc, id.hasAlloc = a, true
		id.result = ResultPrefix
	}
}

// poolName is the chosen pool's name, "" when none.
func (id *identity) poolName() string {
	if id.pool == nil {
		return ""
	}
	return id.pool.Name
}
