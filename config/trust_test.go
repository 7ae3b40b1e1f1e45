package config

import (
	"errors"
	"slices"
	"testing"
)

func TestTrustKeys(t *testing.T) {
	base := "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\n"
	c, err := Parse("cfg.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.RelayDepth != 1 || !slices.Equal(c.Server.PoolSelection, []string{"interface-id", "link-address"}) {
		t.Errorf("defaults: relay-depth %d, pool-selection %v", c.Server.RelayDepth, c.Server.PoolSelection)
	}
	c, err = Parse("cfg.yaml", []byte(base+"server:\n  relay-depth: 2\n  pool-selection: [interface-id]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.RelayDepth != 2 || !slices.Equal(c.Server.PoolSelection, []string{"interface-id"}) {
		t.Errorf("relay-depth %d, pool-selection %v", c.Server.RelayDepth, c.Server.PoolSelection)
	}
	t.Setenv("CLOUDSTACK_PD_SERVER_RELAY_DEPTH", "3")
	if c, err = Parse("cfg.yaml", []byte(base)); err != nil || c.Server.RelayDepth != 3 {
		t.Errorf("relay-depth from the environment: %v, %v", c, err)
	}
}

func TestTrustKeysInvalid(t *testing.T) {
	base := "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\n"
	tests := []struct {
		name, yaml, key, want string
	}{
		{"relay-depth 0", "server:\n  relay-depth: 0\n", "server.relay-depth", "must be 1 to 32"},
		{"relay-depth 33", "server:\n  relay-depth: 33\n", "server.relay-depth", `"33"`},
		{"relay-depth not a number", "server:\n  relay-depth: two\n", "server.relay-depth", "two"},
		{"pool-selection empty", "server:\n  pool-selection: []\n", "server.pool-selection", "empty"},
		{"pool-selection unknown", "server:\n  pool-selection: [interface-id, subnet]\n", "server.pool-selection[1]", `"subnet": unknown rule`},
		{"pool-selection twice", "server:\n  pool-selection: [link-address, link-address]\n", "server.pool-selection[1]", `"link-address": listed twice`},
	}
	for _, tt := range tests {
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
