package cloudstacktest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The credentials and the pod of the fixture site.
const (
	SiteKey    = "Pl4in-API_key"
	SiteSecret = "s3cr3t-Secret_key"
	SitePod    = "77828509-4043-40bc-8756-7745c8ec7a99"
)

// Site is a fake CloudStack serving the fixture pod
// (testdata/cloudstack/listVirtualMachines-pod.json) and a cloudstack-pd
// config file that syncs from it into a store in a temporary folder: what
// the tests of sync, serve and kea-export start from.
type Site struct {
	Fake       *Server
	ConfigPath string
	State      string
}

// siteConfig is the site's config; URL and STATE are filled in.
const siteConfig = `api:
  url: URL
  apikey: ` + SiteKey + `
  secretkey: ` + SiteSecret + `
  page-size: 3
  timeout: 2s
mapping:
  ` + SitePod + `:
    pool: 2001:db8:200::/40
    interface-id: VLAN2701
    ip6-cidr: 2001:db8:100::/64
state: STATE
control:
  socket: STATE.sock
http:
  listen: ""
log:
  level: warn
`

// NewSite starts the fake with the fixture pod read from fixtures (the
// path of testdata/cloudstack as seen from the test's package) and writes
// the config. The fake stops when the test ends.
func NewSite(t testing.TB, fixtures string) *Site {
	t.Helper()
	fake := NewServer(SiteKey, SiteSecret)
	t.Cleanup(fake.Close)
	vms, err := LoadVMs(filepath.Join(fixtures, "listVirtualMachines-pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	fake.SetPod(SitePod, vms)
	dir := t.TempDir()
	s := &Site{Fake: fake, ConfigPath: filepath.Join(dir, "cloudstack-pd.yaml"), State: filepath.Join(dir, "state.db")}
	s.WriteConfig(t, "")
	return s
}

// WriteConfig writes the site's config with extra (YAML) appended.
func (s *Site) WriteConfig(t testing.TB, extra string) {
	t.Helper()
	cfg := SiteConfig(s.Fake.URL, s.State) + extra
	if err := os.WriteFile(s.ConfigPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// SiteConfig is the site's config for a CloudStack API at url and a store
// at state.
func SiteConfig(url, state string) string {
	return strings.NewReplacer("URL", url, "STATE", state).Replace(siteConfig)
}
