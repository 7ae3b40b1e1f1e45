package config

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// Upper bounds of the listener's sizes. server/listener.go gives every
// queued packet, and every packet a worker holds, a buffer of its own,
// allocated at start-up: 64 KiB each (the largest UDP payload), DefaultBatch
// (16) of them per worker.
const (
	// MaxWorkers bounds server.workers. The handler does no I/O (bindings
	// are written by the recorder in the background), so a worker is
	// CPU-bound and workers beyond the CPUs add memory, not answers; 256
	// is the hardware threads of a large two-socket server. Each worker
	// costs 1 MiB of buffers (16 × 64 KiB): 256 MiB at the bound.
	MaxWorkers = 256
	// MaxQueueLength bounds server.queue-length. Each slot costs a 64 KiB
	// buffer: 1 GiB at the bound (the default, 1024, is 64 MiB). A queue
	// only absorbs bursts: 16384 packets are about 0.2 s of work for two
	// cores (about 80,000 packets/s, docs/BENCHMARKS.md), and a client
	// retransmits after 1 s (RFC 8415 SOL_TIMEOUT, REQ_TIMEOUT), so a
	// longer queue would hold answers that come too late.
	MaxQueueLength = 16384
	// MinReceiveBuffer and MaxReceiveBuffer bound server.receive-buffer:
	// the kernel's receive buffer of each DHCPv6 socket, memory only while
	// a burst fills it (about 1 KiB per small datagram).
	MinReceiveBuffer = 64 << 10
	MaxReceiveBuffer = 1 << 30
)

// validateLimits checks the listener's sizes: 0 (the default) up to their
// bounds.
func (c *Config) validateLimits() []Problem {
	var probs []Problem
	s := c.Server
	if s.Workers < 0 || s.Workers > MaxWorkers {
		probs = append(probs, Problem{Key: "server.workers", Value: s.Workers, Msg: fmt.Sprintf(
			"must be 0 (one per CPU) to %d: each worker holds 1 MiB of packet buffers, and workers beyond the CPUs add memory, not answers", MaxWorkers)})
	}
	if s.QueueLength < 0 || s.QueueLength > MaxQueueLength {
		probs = append(probs, Problem{Key: "server.queue-length", Value: s.QueueLength, Msg: fmt.Sprintf(
			"must be 0 (default 1024) to %d: each queued packet holds a 64 KiB buffer (%d: 1 GiB), and a client retransmits after 1 s anyway", MaxQueueLength, MaxQueueLength)})
	}
	if r := s.ReceiveBuffer; r != 0 && (r < MinReceiveBuffer || r > MaxReceiveBuffer) {
		probs = append(probs, Problem{Key: "server.receive-buffer", Value: r, Msg: fmt.Sprintf(
			"must be 0 (default 64 MiB) or %d (64 KiB) to %d (1 GiB) bytes", MinReceiveBuffer, MaxReceiveBuffer)})
	}
	return probs
}

// reservedRange is an IPv6 range no pool and no ip6-cidr may touch: a
// prefix there is not a route a relay can install towards a VM.
type reservedRange struct {
	prefix netip.Prefix
	what   string
}

// reservedRanges are refused for mapping.<pod>.pool and
// mapping.<pod>.ip6-cidr, in part as well as in whole.
var reservedRanges = []reservedRange{
	{netip.MustParsePrefix("::/128"), "the unspecified address"},
	{netip.MustParsePrefix("::1/128"), "the loopback address"},
	{netip.MustParsePrefix("::ffff:0:0/96"), "IPv4-mapped addresses"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// reservedPrefix says why p, an IPv6 prefix, cannot be a pool or an
// ip6-cidr; "" when it can.
func reservedPrefix(p netip.Prefix) string {
	p = p.Masked()
	if p.Bits() == 0 {
		return "the whole address space: it covers multicast, link-local and loopback"
	}
	for _, r := range reservedRanges {
		if r.prefix.Overlaps(p) {
			return fmt.Sprintf("overlaps %s (%s): give a global unicast prefix the relays can route to the VMs", r.prefix, r.what)
		}
	}
	return ""
}

// validateRanges refuses pools and ip6-cidrs in the reserved ranges.
// Prefixes that do not parse, or are not IPv6, are validate's to report.
func (c *Config) validateRanges() []Problem {
	var probs []Problem
	for _, name := range slices.Sorted(maps.Keys(c.Mapping)) {
		m := c.Mapping[name]
		for _, f := range []struct {
			key, val string
			// v4ok: an IPv4-mapped prefix is left to validate, which
			// refuses it as "not an IPv6 prefix".
			v4ok bool
		}{
			{"mapping." + name + ".pool", m.Pool, true},
			{"mapping." + name + ".ip6-cidr", m.IP6CIDR, false},
		} {
			p, err := netip.ParsePrefix(f.val)
			if err != nil || !p.Addr().Is6() || (f.v4ok && p.Addr().Is4In6()) {
				continue
			}
			if why := reservedPrefix(p); why != "" {
				probs = append(probs, Problem{Key: f.key, Value: f.val, Msg: why})
			}
		}
	}
	return probs
}
