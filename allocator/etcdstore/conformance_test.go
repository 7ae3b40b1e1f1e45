package etcdstore_test

import (
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/storetest"
	"github.com/cloudstack-pd/cloudstack-pd/internal/etcdtest"
)

// TestConformance runs the storage seam's conformance suite on a
// three-member cluster, each store under its own prefix, fenced by a
// leader key as the syncer's is.
func TestConformance(t *testing.T) {
	c := etcdtest.Start(t, 3)
	cli := c.Client(t)
	storetest.Run(t, func(t *testing.T) kv.Backend {
		return fencedStore(t, c, cli, etcdstoreOptions())
	})
}
