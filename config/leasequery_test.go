package config

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestLeasequeryKeys: the defaults, requestors falling back to
// trusted-relays (and to nobody), and the staleness capped at a quarter of
// the valid lifetime.
func TestLeasequeryKeys(t *testing.T) {
	base := "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\n"
	c, err := Parse("cfg.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	lq := c.Server.Leasequery
	if lq.MaxConnections != 8 || lq.IdleTimeout != time.Minute || c.Server.LastExchangeStaleness != time.Hour {
		t.Errorf("defaults: %+v, staleness %s", lq, c.Server.LastExchangeStaleness)
	}
	if got := c.LeasequeryRequestors(); len(got) != 0 {
		t.Errorf("no requestors and no trusted relays: %v, want nobody", got)
	}
	if got := c.ExchangeStaleness(); got != time.Hour {
		t.Errorf("ExchangeStaleness = %s", got)
	}

	c, err = Parse("cfg.yaml", []byte(base+"server:\n  trusted-relays: [\"2001:db8:ffff::/48\"]\n  valid-lifetime: 4000\n  preferred-lifetime: 3000\n  renew-timer: 2\n  rebind-timer: 4\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.LeasequeryRequestors(); !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("2001:db8:ffff::/48")}) {
		t.Errorf("requestors default to trusted-relays: %v", got)
	}
	if got := c.ExchangeStaleness(); got != 1000*time.Second {
		t.Errorf("ExchangeStaleness with valid-lifetime 4000 = %s, want a quarter of it", got)
	}

	c, err = Parse("cfg.yaml", []byte(base+"server:\n  trusted-relays: [\"2001:db8:ffff::/48\"]\n  leasequery:\n    requestors: [\"2001:db8:eeee::1\", \"2001:db8:dddd::/64\"]\n    max-connections: 2\n    idle-timeout: 10s\n  last-exchange-staleness: 30m\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("2001:db8:eeee::1/128"), netip.MustParsePrefix("2001:db8:dddd::/64")}
	if got := c.LeasequeryRequestors(); !slices.Equal(got, want) {
		t.Errorf("requestors %v, want %v", got, want)
	}
	if lq := c.Server.Leasequery; lq.MaxConnections != 2 || lq.IdleTimeout != 10*time.Second || c.ExchangeStaleness() != 30*time.Minute {
		t.Errorf("%+v, staleness %s", lq, c.ExchangeStaleness())
	}
}

func TestLeasequeryKeysInvalid(t *testing.T) {
	base := "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\n"
	for _, tt := range []struct {
		name, yaml, key, want string
	}{
		{"requestor not a prefix", "server:\n  leasequery:\n    requestors: [router1]\n", "server.leasequery.requestors[0]", "not a prefix or address"},
		{"max-connections 0", "server:\n  leasequery:\n    max-connections: 0\n", "server.leasequery.max-connections", "must be 1 to 1024"},
		{"idle-timeout bare number", "server:\n  leasequery:\n    idle-timeout: 60\n", "server.leasequery.idle-timeout", "a bare number"},
		{"idle-timeout too short", "server:\n  leasequery:\n    idle-timeout: 10ms\n", "server.leasequery.idle-timeout", "must be 1s to 1h"},
		{"staleness too long", "server:\n  last-exchange-staleness: 48h\n", "server.last-exchange-staleness", "must be 1s to 24h"},
		{"unknown key", "server:\n  leasequery:\n    requestor: [\"::1\"]\n", "server.leasequery.requestor", "unknown key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("cfg.yaml", []byte(base+tt.yaml))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *config.Error", err)
			}
			if !hasProblem(ce, tt.key, tt.want) {
				t.Errorf("no problem of key %q with %q:\n%s", tt.key, tt.want, err)
			}
		})
	}
}
