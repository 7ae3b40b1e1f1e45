package daemon

import (
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"

	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
)

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	fakeKey    = "Pl4in-API_key"
	fakeSecret = "s3cr3t-Secret_key"
	fixturePod = "77828509-4043-40bc-8756-7745c8ec7a99"
)

// syncSite is a fake CloudStack serving the fixture pod and a config
// file that syncs from it into a store in a temporary folder.
type syncSite struct {
	fake    *cloudstacktest.Server
	cfgPath string
	state   string
}

const syncSiteConfig = `api:
  url: URL
  apikey: ` + fakeKey + `
  secretkey: ` + fakeSecret + `
  page-size: 3
  timeout: 2s
mapping:
  ` + fixturePod + `:
    pool: 2001:db8:200::/40
    interface-id: VLAN2701
    ip6-cidr: 2001:db8:100::/64
state: STATE
http:
  listen: ""
log:
  level: warn
`

func newSyncSite(t *testing.T) *syncSite {
	t.Helper()
	fake := cloudstacktest.NewServer(fakeKey, fakeSecret)
	t.Cleanup(fake.Close)
	vms, err := cloudstacktest.LoadVMs("../testdata/cloudstack/listVirtualMachines-pod.json")
	if err != nil {
		t.Fatal(err)
	}
	fake.SetPod(fixturePod, vms)
	dir := t.TempDir()
	s := &syncSite{fake: fake, cfgPath: filepath.Join(dir, "cloudstack-pd.yaml"), state: filepath.Join(dir, "state.db")}
	testenv.WriteFile(t, s.cfgPath, strings.NewReplacer("URL", s.fake.URL, "STATE", s.state).Replace(syncSiteConfig))
	return s
}
