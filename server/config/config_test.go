package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

func TestOldGeneratorConfigAcceptedUnchanged(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "testdata", "config", "old-generator-config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if c.API.URL != "https://cloud.example.com/client/api" || c.API.APIKey != "AKEY" || c.API.SecretKey != "SKEY" {
		t.Errorf("api = %+v", c.API)
	}
	pools := c.Pools()
	if len(pools) != 2 {
		t.Fatalf("%d pools", len(pools))
	}
	// Sorted by name; mapping keys (pod UUIDs) are kept as written.
	p := pools[1]
	if p.Name != "77828509-4043-40bc-8756-7745c8ec7a99" || p.Prefix != netip.MustParsePrefix("2001:db8:200::/40") ||
		p.PrefixLen != 60 || p.InterfaceID != "VLAN2701" || p.IP6CIDR != netip.MustParsePrefix("2001:db8:100::/64") {
		t.Errorf("pool = %+v", p)
	}
	// Defaults of the old Kea setup.
	s := c.Server
	if s.PreferredLifetime != 86400 || s.ValidLifetime != 172800 || s.RenewTimer != 1000 || s.RebindTimer != 2000 || s.RapidCommit {
		t.Errorf("server defaults = %+v", s)
	}
	if got := c.MACSources(); len(got) != 1 || got[0] != relay.SourceRemoteID {
		t.Errorf("mac-sources default = %v", got)
	}
	if c.State != DefaultState {
		t.Errorf("state default = %q", c.State)
	}
	if _, err := c.ListenAddrs(); err == nil || !strings.Contains(err.Error(), "server.listen") {
		t.Errorf("serve needs server.listen: %v", err)
	}
}

const fullYAML = `
api:
  url: https://cloud.example.com/client/api
  apikey: AKEY
mapping:
  pod-a:
    pool: 2001:db8:200::/40
    interface-id: VLAN2701
    ip6-cidr: 2001:db8:100::/64
    vlan: 2701
server:
  listen: ["[2001:db8::100:69]:547", "[::1]:547"]
  mac-sources: [remote-id, rfc6939, duid]
  trusted-relays: ["2001:db8:ffff::/48", "2001:db8::1"]
  rapid-commit: true
  preferred-lifetime: 3600
  valid-lifetime: 7200
  renew-timer: 1800
  rebind-timer: 2880
state: /tmp/x.db
log:
  level: debug
  format: json
`

func TestYAMLConfig(t *testing.T) {
	c, err := Parse("cfg.yaml", []byte(fullYAML))
	if err != nil {
		t.Fatal(err)
	}
	if c.Mapping["pod-a"].PrefixLen != DefaultPrefixLen {
		t.Errorf("prefix-len default = %d", c.Mapping["pod-a"].PrefixLen)
	}
	addrs, err := c.ListenAddrs()
	if err != nil || len(addrs) != 2 || addrs[0] != netip.MustParseAddrPort("[2001:db8::100:69]:547") {
		t.Errorf("listen = %v, %v", addrs, err)
	}
	if got := c.MACSources(); len(got) != 3 || got[1] != relay.SourceClientLinkAddr {
		t.Errorf("mac-sources = %v", got)
	}
	if got := c.TrustedRelays(); len(got) != 2 || got[1] != netip.MustParsePrefix("2001:db8::1/128") {
		t.Errorf("trusted-relays = %v", got)
	}
	if !c.Server.RapidCommit || c.Server.RenewTimer != 1800 || c.Log.Format != "json" {
		t.Errorf("server = %+v log = %+v", c.Server, c.Log)
	}
}

func TestSecretsFromEnvironment(t *testing.T) {
	t.Setenv("CLOUDSTACK_PD_API_SECRETKEY", "from-env")
	t.Setenv("CLOUDSTACK_PD_STATE", "/var/tmp/env.db")
	t.Setenv("CLOUDSTACK_PD_SERVER_RAPID_COMMIT", "true")
	c, err := Parse("cfg.yaml", []byte(fullYAML))
	if err != nil {
		t.Fatal(err)
	}
	if c.API.SecretKey != "from-env" || c.State != "/var/tmp/env.db" || !c.Server.RapidCommit {
		t.Errorf("env not applied: secret %q state %q rapid %v", c.API.SecretKey, c.State, c.Server.RapidCommit)
	}
}

func TestInvalidConfigsNameTheKey(t *testing.T) {
	base := "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\n"
	tests := []struct {
		name    string
		yaml    string
		wantKey string
		wantVal string
	}{
		{"pool not a prefix", "mapping:\n  pod-a:\n    pool: 2001:db8:200::/400\n    interface-id: V\n", "mapping.pod-a.pool", "2001:db8:200::/400"},
		{"pool missing", "mapping:\n  pod-a:\n    interface-id: V\n", "mapping.pod-a.pool", "missing"},
		{"pool IPv4", "mapping:\n  pod-a:\n    pool: 10.0.0.0/8\n    interface-id: V\n", "mapping.pod-a.pool", "10.0.0.0/8"},
		{"pool host bits", "mapping:\n  pod-a:\n    pool: 2001:db8:201::/40\n    interface-id: V\n", "mapping.pod-a.pool", "2001:db8:200::/40"},
		{"pools overlap", base + "  pod-b:\n    pool: 2001:db8:200::/44\n    interface-id: W\n", "mapping.pod-b.pool", "overlaps"},
		{"prefix-len shorter than pool", "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    prefix-len: 32\n    interface-id: V\n", "mapping.pod-a.prefix-len", "32"},
		{"interface-id missing", "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n", "mapping.pod-a.interface-id", "missing"},
		{"interface-id twice", base + "  pod-b:\n    pool: 2001:db8:300::/40\n    interface-id: VLAN2701\n", "mapping.pod-b.interface-id", "VLAN2701"},
		{"ip6-cidr bad", base + "    ip6-cidr: nope\n", "mapping.pod-a.ip6-cidr", "nope"},
		{"vlan out of range", base + "    vlan: 5000\n", "mapping.pod-a.vlan", "5000"},
		{"listen not addr:port", base + "server:\n  listen: [\"2001:db8::1\"]\n", "server.listen[0]", "2001:db8::1"},
		{"listen IPv4", base + "server:\n  listen: [\"127.0.0.1:547\"]\n", "server.listen[0]", "127.0.0.1:547"},
		{"mac source unknown", base + "server:\n  mac-sources: [remote-id, any]\n", "server.mac-sources[1]", "any"},
		{"mac sources empty", base + "server:\n  mac-sources: []\n", "server.mac-sources", "empty"},
		{"trusted relay bad", base + "server:\n  trusted-relays: [\"x/1\"]\n", "server.trusted-relays[0]", "x/1"},
		{"timers out of order", base + "server:\n  renew-timer: 3000\n", "server.renew-timer", "3000"},
		{"preferred above valid", base + "server:\n  preferred-lifetime: 200000\n", "server.renew-timer", "200000"},
		{"valid lifetime zero", base + "server:\n  valid-lifetime: 0\n  preferred-lifetime: 0\n  renew-timer: 0\n  rebind-timer: 0\n", "server.valid-lifetime", "positive"},
		{"lifetime not a number", base + "server:\n  valid-lifetime: forever\n", "server.valid-lifetime", "forever"},
		{"unknown key (typo)", base + "server:\n  rapid_commit: true\n", "server.rapid_commit", "unknown key"},
		{"unknown mapping key", base + "    prefixlen: 60\n", "mapping.pod-a.prefixlen", "unknown key"},
		{"log level", base + "log:\n  level: loud\n", "log.level", "loud"},
		{"not YAML", "mapping: [\n", "(file)", "cannot parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("cfg.yaml", []byte(tt.yaml))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *config.Error", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.wantKey) || !strings.Contains(msg, tt.wantVal) {
				t.Errorf("error does not name key %q and %q:\n%s", tt.wantKey, tt.wantVal, msg)
			}
		})
	}
}

func TestAllProblemsListedAtOnce(t *testing.T) {
	_, err := Parse("cfg.yaml", []byte("mapping:\n  pod-a:\n    pool: bad\n  pod-b:\n    pool: 2001:db8::/40\nlog:\n  format: xml\n"))
	var ce *Error
	if !errors.As(err, &ce) || len(ce.Problems) < 4 {
		t.Fatalf("want every problem listed, got %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "nope.yaml") {
		t.Errorf("err = %v", err)
	}
}
