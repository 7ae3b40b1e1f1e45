package daemon

import (
	"slices"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/server"
)

// TestHandlerOptionsTrustKeys: server.relay-depth and server.pool-selection
// reach the handler (at start and on every reload, which converts the
// config the same way).
func TestHandlerOptionsTrustKeys(t *testing.T) {
	c, err := config.Parse("c.yaml", []byte("mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\n"+
		"server:\n  relay-depth: 2\n  pool-selection: [link-address, interface-id]\n"))
	if err != nil {
		t.Fatal(err)
	}
	o := HandlerOptions(c)
	if o.RelayDepth != 2 || !slices.Equal(o.PoolSelection, []server.PoolRule{server.PoolByLinkAddress, server.PoolByInterfaceID}) {
		t.Errorf("relay-depth %d, pool-selection %v", o.RelayDepth, o.PoolSelection)
	}
}
