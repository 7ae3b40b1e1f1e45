package config

import (
	"fmt"
	"net/netip"
	"time"
)

// Leasequery configures Leasequery (RFC 5007, UDP) and Bulk Leasequery
// (RFC 5460, TCP on the server.listen addresses): server.leasequery.
type Leasequery struct {
	// Requestors lists the prefixes leasequeries may come from; empty:
	// server.trusted-relays (and nobody when that is empty too).
	Requestors []string `mapstructure:"requestors"`
	// MaxConnections bounds the Bulk Leasequery connections open at once.
	MaxConnections int `mapstructure:"max-connections"`
	// IdleTimeout closes a Bulk Leasequery connection that sends no query
	// for that long.
	IdleTimeout time.Duration `mapstructure:"idle-timeout"`
}

// Defaults of server.leasequery and server.last-exchange-staleness.
const (
	DefaultLeasequeryConnections = 8
	DefaultLeasequeryIdleTimeout = 60 * time.Second
	DefaultExchangeStaleness     = time.Hour
)

func init() {
	defaults = append(defaults,
		struct {
			key string
			val any
		}{"server.leasequery.requestors", []string{}},
		struct {
			key string
			val any
		}{"server.leasequery.max-connections", DefaultLeasequeryConnections},
		struct {
			key string
			val any
		}{"server.leasequery.idle-timeout", DefaultLeasequeryIdleTimeout.String()},
		struct {
			key string
			val any
		}{"server.last-exchange-staleness", DefaultExchangeStaleness.String()},
	)
	durationKeys = append(durationKeys, "server.leasequery.idle-timeout", "server.last-exchange-staleness")
}

// leasequeryProblems checks server.leasequery and
// server.last-exchange-staleness.
func (c *Config) leasequeryProblems() []Problem {
	var probs []Problem
	add := func(key string, val any, format string, args ...any) {
		probs = append(probs, Problem{Key: key, Value: val, Msg: fmt.Sprintf(format, args...)})
	}
	lq := c.Server.Leasequery
	for i, r := range lq.Requestors {
		if _, err := parsePrefixOrAddr(r); err != nil {
			add(fmt.Sprintf("server.leasequery.requestors[%d]", i), r, "not a prefix or address: %v", err)
		}
	}
	if lq.MaxConnections < 1 || lq.MaxConnections > 1024 {
		add("server.leasequery.max-connections", lq.MaxConnections, "must be 1 to 1024")
	}
	if lq.IdleTimeout < time.Second || lq.IdleTimeout > time.Hour {
		add("server.leasequery.idle-timeout", lq.IdleTimeout, "must be 1s to 1h")
	}
	if st := c.Server.LastExchangeStaleness; st < time.Second || st > 24*time.Hour {
		add("server.last-exchange-staleness", st, "must be 1s to 24h")
	}
	return probs
}

// ExchangeStaleness is how long a last-exchange time may stay in memory
// only: server.last-exchange-staleness, but at most a quarter of
// server.valid-lifetime, so that a binding whose client renews never
// looks expired to another server reading the store.
func (c *Config) ExchangeStaleness() time.Duration {
	st := c.Server.LastExchangeStaleness
	if v := Seconds(c.Server.ValidLifetime) / 4; v > 0 && st > v {
		st = v
	}
	return max(st, time.Second)
}

// LeasequeryRequestors returns who may send leasequeries:
// server.leasequery.requestors, or else server.trusted-relays; empty:
// nobody.
func (c *Config) LeasequeryRequestors() []netip.Prefix {
	if len(c.Server.Leasequery.Requestors) == 0 {
		return c.TrustedRelays()
	}
	out := make([]netip.Prefix, 0, len(c.Server.Leasequery.Requestors))
	for _, s := range c.Server.Leasequery.Requestors {
		p, _ := parsePrefixOrAddr(s) // validated by Load
		out = append(out, p.Masked())
	}
	return out
}
