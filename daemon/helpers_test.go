package daemon

import (
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
)

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newSyncSite is the fixture site (cloudstacktest.NewSite) as seen from
// this package.
func newSyncSite(t *testing.T) *cloudstacktest.Site {
	return cloudstacktest.NewSite(t, "../testdata/cloudstack")
}
