package storetest_test

import (
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/storetest"
)

func TestMemory(t *testing.T) {
	storetest.Run(t, func(*testing.T) kv.Backend { return storetest.NewMemory() })
}
