package relay

import (
	"flag"
	"path/filepath"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/relay")

// golden compares got with testdata/relay/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("..", "testdata", "relay", name)
	testenv.Golden(t, path, got, *update, "update")
}
