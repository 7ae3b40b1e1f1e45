package boltstore_test

import (
	"path/filepath"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/storetest"
)

// TestConformance runs the storage seam's conformance suite on bbolt.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) kv.Backend {
		b, err := boltstore.Open(filepath.Join(t.TempDir(), "state.db"), boltstore.Options{Create: true, NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}
