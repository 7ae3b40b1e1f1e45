package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

func TestOldGeneratorConfigAcceptedUnchanged(t *testing.T) {
	c, err := Load(filepath.Join("..", "testdata", "config", "old-generator-config.json"))
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
	if p := c.Pools(); p[0].VLAN != 2701 {
		t.Errorf("pool VLAN = %d", p[0].VLAN)
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
		{"listen multicast", base + "server:\n  listen: [\"[ff02::1:2]:547\"]\n", "server.listen[0]", "multicast"},
		{"listen unspecified", base + "server:\n  listen: [\"[::]:547\"]\n", "server.listen[0]", "unspecified"},
		{"mac source unknown", base + "server:\n  mac-sources: [remote-id, any]\n", "server.mac-sources[1]", "any"},
		{"mac sources empty", base + "server:\n  mac-sources: []\n", "server.mac-sources", "empty"},
		{"trusted relay bad", base + "server:\n  trusted-relays: [\"x/1\"]\n", "server.trusted-relays[0]", "x/1"},
		{"timers out of order", base + "server:\n  renew-timer: 3000\n", "server.renew-timer", `"3000": is above server.rebind-timer (2000)`},
		{"preferred above valid", base + "server:\n  preferred-lifetime: 200000\n", "server.preferred-lifetime", `"200000": is above server.valid-lifetime (172800)`},
		{"rebind above preferred", base + "server:\n  rebind-timer: 90000\n", "server.rebind-timer", `"90000": is above server.preferred-lifetime (86400)`},
		{"valid lifetime zero", base + "server:\n  valid-lifetime: 0\n  preferred-lifetime: 0\n  renew-timer: 0\n  rebind-timer: 0\n", "server.valid-lifetime", "positive"},
		{"lifetime not a number", base + "server:\n  valid-lifetime: forever\n", "server.valid-lifetime", "forever"},
		{"unknown key (typo)", base + "server:\n  rapid_commit: true\n", "server.rapid_commit", "unknown key"},
		{"unknown mapping key", base + "    prefixlen: 60\n", "mapping.pod-a.prefixlen", "unknown key"},
		{"log level", base + "log:\n  level: loud\n", "log.level", "loud"},
		{"shutdown delay negative", base + "server:\n  shutdown-delay: -1s\n", "server.shutdown-delay", "-1s"},
		{"shutdown delay too long", base + "server:\n  shutdown-delay: 1h\n", "server.shutdown-delay", "1h0m0s"},
		{"api.url not http", base + "api:\n  url: cloud.example.com/client/api\n", "api.url", "cloud.example.com/client/api"},
		{"api.url with a query", base + "api:\n  url: https://cloud/client/api?command=x\n", "api.url", "without a query"},
		{"api.interval a bare number", base + "api:\n  interval: 60\n", "api.interval", `"60": a bare number: give a duration with its unit`},
		{"api.interval negative", base + "api:\n  interval: -1m\n", "api.interval", "-1m0s"},
		{"api.interval under a second", base + "api:\n  interval: 10ms\n", "api.interval", "at least 1s"},
		{"api.interval not a duration", base + "api:\n  interval: 1d\n", "api.interval", "1d"},
		{"api.page-size too big", base + "api:\n  page-size: 501\n", "api.page-size", "must be 1 to 500"},
		{"api.page-size zero", base + "api:\n  page-size: 0\n", "api.page-size", "must be 1 to 500"},
		{"api.timeout zero", base + "api:\n  timeout: 0s\n", "api.timeout", "must be positive"},
		{"api.verify-tls not a bool", base + "api:\n  verify-tls: maybe\n", "api.verify-tls", "maybe"},
		{"release-after zero", base + "allocation:\n  release-after: 0s\n", "allocation.release-after", "must be positive"},
		{"release-after a bare number", base + "allocation:\n  release-after: 86400\n", "allocation.release-after", "a bare number"},
		{"quarantine below the valid lifetime", base + "allocation:\n  quarantine: 24h\n", "allocation.quarantine", "shorter than server.valid-lifetime (48h0m0s)"},
		{"max-release-fraction zero", base + "allocation:\n  max-release-fraction: 0\n", "allocation.max-release-fraction", "more than 0 and at most 1"},
		{"max-release-fraction above 1", base + "allocation:\n  max-release-fraction: 1.5\n", "allocation.max-release-fraction", "1.5"},
		{"unknown allocation key", base + "allocation:\n  release_after: 1h\n", "allocation.release_after", "unknown key"},
		{"history.retention under a day", base + "history:\n  retention: 1h\n", "history.retention", "at least 24h"},
		{"history.retention a bare number", base + "history:\n  retention: 400\n", "history.retention", "a bare number"},
		{"control.socket too long", base + "control:\n  socket: /run/" + strings.Repeat("x", 110) + "\n", "control.socket", "at most 107"},
		{"not YAML", "mapping: [\n", "(file)", "cannot parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("cfg.yaml", []byte(tt.yaml))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *config.Error", err)
			}
			// The problem must name the key itself, not merely mention it.
			if !hasProblem(ce, tt.wantKey, tt.wantVal) {
				t.Errorf("no problem of key %q with %q:\n%s", tt.wantKey, tt.wantVal, err)
			}
		})
	}
}

// hasProblem reports whether ce lists a problem of key whose line holds want.
func hasProblem(ce *Error, key, want string) bool {
	for _, p := range ce.Problems {
		if p.Key == key && strings.Contains(p.String(), want) {
			return true
		}
	}
	return false
}

// TestDecodeProblemsDoNotHideTheRest: a value of the wrong type or an
// unknown key does not stop the validation of everything else; every
// problem is listed, once, with its key.
func TestDecodeProblemsDoNotHideTheRest(t *testing.T) {
	base := "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\n"
	type want struct{ key, val string }
	tests := []struct {
		name string
		yaml string
		want []want
	}{
		{"type error, unknown key, bad values, lifetimes out of order",
			base + "unknownkey: 1\nserver:\n  renew-timer: nope\n  preferred-lifetime: 200000\nlog:\n  format: xml\n",
			[]want{
				{"server.renew-timer", `"nope"`},
				{"unknownkey", "unknown key"},
				{"log.format", `"xml": must be text or json`},
				{"server.preferred-lifetime", `"200000": is above server.valid-lifetime (172800)`},
			}},
		{"type errors in a pool and a duration, a bad level",
			"mapping:\n  pod-a:\n    pool: [x]\n    vlan: nope\n    interface-id: V\napi:\n  interval: [1]\n  page-size: 501\nlog:\n  level: loud\n",
			[]want{
				{"mapping.pod-a.pool", "expected type 'string'"},
				{"mapping.pod-a.vlan", "cannot parse"},
				{"api.interval", "time.Duration"},
				{"api.page-size", `"501"`},
				{"log.level", `"loud"`},
			}},
		{"a section of the wrong type, an unknown key in another",
			base + "server: 5\nallocation:\n  release_after: 1h\n  max-release-fraction: 2\n",
			[]want{
				{"server", `"5"`},
				{"allocation.release_after", "unknown key"},
				{"allocation.max-release-fraction", `"2"`},
			}},
		{"a secret of the wrong type, a bad url",
			base + "api:\n  secretkey: [hunter2]\n  url: ftp://cloud/client/api\n",
			[]want{
				{"api.secretkey", `"(set)"`},
				{"api.url", "ftp://cloud/client/api"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("cfg.yaml", []byte(tt.yaml))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *config.Error", err)
			}
			for _, w := range tt.want {
				if !hasProblem(ce, w.key, w.val) {
					t.Errorf("no problem of key %q with %q:\n%s", w.key, w.val, err)
				}
			}
			// A field that did not decode keeps its default: no second
			// problem for its key, nor one caused by its zero value.
			if len(ce.Problems) != len(tt.want) {
				t.Errorf("%d problems, want %d:\n%s", len(ce.Problems), len(tt.want), err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows the secret:\n%s", err)
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

func TestSyncDefaults(t *testing.T) {
	c, err := Parse("cfg.yaml", []byte(fullYAML))
	if err != nil {
		t.Fatal(err)
	}
	a, al := c.API, c.Allocation
	if a.Interval != 60*time.Second || a.PageSize != 500 || a.Timeout != 60*time.Second || !a.VerifyTLS {
		t.Errorf("api defaults = %+v", a)
	}
	// The quarantine follows the valid lifetime (7200 s in fullYAML).
	if al.ReleaseAfter != 24*time.Hour || al.Quarantine != 2*time.Hour || al.MaxReleaseFraction != 0.1 {
		t.Errorf("allocation defaults = %+v", al)
	}
	if c.Control.Socket != "/run/cloudstack-pd/control.sock" || c.History.Retention != 400*24*time.Hour {
		t.Errorf("control and history defaults = %+v, %+v", c.Control, c.History)
	}
	old, err := Load(filepath.Join("..", "testdata", "config", "old-generator-config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if old.Allocation.Quarantine != 48*time.Hour || !old.API.SyncConfigured() {
		t.Errorf("old config: quarantine %v, sync configured %v", old.Allocation.Quarantine, old.API.SyncConfigured())
	}
}

func TestSyncKeys(t *testing.T) {
	const yaml = `
api:
  url: https://cloud.example.com/client/api
  apikey: AKEY
  secretkey: SKEY
  interval: 5m
  page-size: 200
  timeout: 30s
  verify-tls: false
allocation:
  release-after: 72h
  quarantine: 96h
  max-release-fraction: 1
mapping:
  pod-a:
    pool: 2001:db8:200::/40
    interface-id: VLAN2701
`
	c, err := Parse("cfg.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	want := API{URL: "https://cloud.example.com/client/api", APIKey: "AKEY", SecretKey: "SKEY",
		Interval: 5 * time.Minute, PageSize: 200, Timeout: 30 * time.Second, VerifyTLS: false}
	if c.API != want {
		t.Errorf("api = %+v", c.API)
	}
	if (c.Allocation != Allocation{ReleaseAfter: 72 * time.Hour, Quarantine: 96 * time.Hour, MaxReleaseFraction: 1}) {
		t.Errorf("allocation = %+v", c.Allocation)
	}
	// JSON, as the old config.json would carry them, and the environment.
	t.Setenv("CLOUDSTACK_PD_ALLOCATION_QUARANTINE", "120h")
	t.Setenv("CLOUDSTACK_PD_API_INTERVAL", "0s")
	c, err = Parse("cfg.json", []byte(`{"api": {"url": "https://cloud/client/api", "page-size": 100, "timeout": "10s"},
		"allocation": {"release-after": "1h"}, "mapping": {"pod-a": {"pool": "2001:db8:200::/40", "interface-id": "V"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.API.PageSize != 100 || c.API.Timeout != 10*time.Second || c.API.Interval != 0 || c.Allocation.ReleaseAfter != time.Hour || c.Allocation.Quarantine != 120*time.Hour {
		t.Errorf("from JSON and env: api %+v allocation %+v", c.API, c.Allocation)
	}
	if c.API.SyncConfigured() || c.API.WhyNoSync() != "api.apikey and api.secretkey are empty" {
		t.Errorf("sync configured without keys: %q", c.API.WhyNoSync())
	}
}

func TestHTTPListen(t *testing.T) {
	base := "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\n"
	c, err := Parse("cfg.yaml", []byte(base))
	if err != nil || c.HTTP.Listen != DefaultHTTPListen {
		t.Fatalf("default http.listen = %q, %v", c.HTTP.Listen, err)
	}
	for _, ok := range []string{"", "[::1]:9547", "0.0.0.0:9547", ":9547", "localhost:0"} {
		if _, err := Parse("cfg.yaml", []byte(base+"http:\n  listen: \""+ok+"\"\n")); err != nil {
			t.Errorf("http.listen %q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"9547", "example.com:9547", "[::1]:99999", "[::1]:http"} {
		_, err := Parse("cfg.yaml", []byte(base+"http:\n  listen: \""+bad+"\"\n"))
		if err == nil || !strings.Contains(err.Error(), "http.listen") || !strings.Contains(err.Error(), bad) {
			t.Errorf("http.listen %q: err = %v", bad, err)
		}
	}
}

func TestProblemsNeverShowSecrets(t *testing.T) {
	for _, y := range []string{
		"api:\n  secretkey: [hunter2-secret]\n",
		"api:\n  apikey: {k: hunter2-secret}\n",
	} {
		_, err := Parse("cfg.yaml", []byte(y))
		if err == nil {
			t.Fatalf("%q accepted", y)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error shows the secret:\n%s", err)
		}
		if !strings.Contains(err.Error(), "api.") {
			t.Errorf("error does not name the key:\n%s", err)
		}
	}
}

// TestListenerLimits: server.workers, server.queue-length and
// server.receive-buffer are bounded,
// so that the buffers the listener allocates at start-up stay bounded; the
// problem names the key, the value and the bound.
func TestListenerLimits(t *testing.T) {
	base := "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\n"
	tests := []struct {
		name string
		yaml string
		env  map[string]string
		key  string // "" when accepted
		want []string
	}{
		{"workers at the bound", base + "server:\n  workers: 256\n", nil, "", nil},
		{"queue-length at the bound", base + "server:\n  queue-length: 16384\n", nil, "", nil},
		{"workers above the bound", base + "server:\n  workers: 257\n", nil, "server.workers", []string{`"257"`, "to 256"}},
		{"workers huge", base + "server:\n  workers: 1000000\n", nil, "server.workers", []string{`"1000000"`, "to 256", "1 MiB"}},
		{"workers negative", base + "server:\n  workers: -1\n", nil, "server.workers", []string{`"-1"`, "0 (one per CPU) to 256"}},
		{"queue-length above the bound", base + "server:\n  queue-length: 16385\n", nil, "server.queue-length", []string{`"16385"`, "to 16384", "64 KiB"}},
		{"queue-length huge", base + "server:\n  queue-length: 100000000\n", nil, "server.queue-length", []string{`"100000000"`, "to 16384"}},
		{"queue-length negative", base + "server:\n  queue-length: -5\n", nil, "server.queue-length", []string{`"-5"`}},
		{"workers from the environment", base, map[string]string{"CLOUDSTACK_PD_SERVER_WORKERS": "4096"}, "server.workers", []string{`"4096"`, "to 256"}},
		{"queue-length from the environment", base, map[string]string{"CLOUDSTACK_PD_SERVER_QUEUE_LENGTH": "65536"}, "server.queue-length", []string{`"65536"`, "to 16384"}},
		{"receive-buffer at the bounds", base + "server:\n  receive-buffer: 1073741824\n", nil, "", nil},
		{"receive-buffer at the low bound", base + "server:\n  receive-buffer: 65536\n", nil, "", nil},
		{"receive-buffer too small", base + "server:\n  receive-buffer: 4096\n", nil, "server.receive-buffer", []string{`"4096"`, "64 KiB", "1 GiB"}},
		{"receive-buffer too large", base + "server:\n  receive-buffer: 2147483648\n", nil, "server.receive-buffer", []string{`"2147483648"`, "1 GiB"}},
		{"receive-buffer negative", base + "server:\n  receive-buffer: -1\n", nil, "server.receive-buffer", []string{`"-1"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c, err := Parse("cfg.yaml", []byte(tt.yaml))
			if tt.key == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if c.Server.Workers > MaxWorkers || c.Server.QueueLength > MaxQueueLength {
					t.Errorf("server = %+v", c.Server)
				}
				return
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *config.Error", err)
			}
			for _, w := range tt.want {
				if !hasProblem(ce, tt.key, w) {
					t.Errorf("no problem of key %q with %q:\n%s", tt.key, w, err)
				}
			}
		})
	}
}

// TestPoolsOutsideReservedRanges: a pool or an ip6-cidr that overlaps
// multicast, link-local, loopback, the unspecified address or the
// IPv4-mapped range (in part or in whole, ::/0 included) is refused, the
// key named.
func TestPoolsOutsideReservedRanges(t *testing.T) {
	mapping := func(pool, cidr string) string {
		y := "mapping:\n  pod-a:\n    pool: \"" + pool + "\"\n    prefix-len: 128\n    interface-id: VLAN2701\n"
		if cidr != "" {
			y += "    ip6-cidr: \"" + cidr + "\"\n"
		}
		return y
	}
	tests := []struct {
		name, pool, cidr string
		key              string // "" when accepted
		want             string
	}{
		{"global unicast", "2001:db8:200::/40", "2001:db8:100::/64", "", ""},
		{"unique local", "fd00::/40", "fd01::/64", "", ""},
		{"the largest global pool", "2000::/3", "", "", ""},
		{"pool multicast", "ff02::/16", "", "mapping.pod-a.pool", "overlaps ff00::/8 (multicast)"},
		{"pool inside multicast", "ff05:1::/48", "", "mapping.pod-a.pool", "multicast"},
		{"pool link-local", "fe80::/64", "", "mapping.pod-a.pool", "overlaps fe80::/10 (link-local)"},
		{"pool around link-local", "fe00::/7", "", "mapping.pod-a.pool", "overlaps fe80::/10 (link-local)"},
		{"pool loopback", "::1/128", "", "mapping.pod-a.pool", "loopback"},
		{"pool holding the unspecified address", "::/64", "", "mapping.pod-a.pool", "overlaps ::/128 (the unspecified address)"},
		{"pool holding IPv4-mapped", "::/80", "", "mapping.pod-a.pool", "::"},
		{"pool ::/0", "::/0", "", "mapping.pod-a.pool", "the whole address space"},
		{"pool the upper half", "8000::/1", "", "mapping.pod-a.pool", "link-local"},
		{"ip6-cidr link-local", "2001:db8:200::/40", "fe80::/64", "mapping.pod-a.ip6-cidr", "overlaps fe80::/10 (link-local)"},
		{"ip6-cidr multicast", "2001:db8:200::/40", "ff05::/64", "mapping.pod-a.ip6-cidr", "multicast"},
		{"ip6-cidr loopback", "2001:db8:200::/40", "::1/128", "mapping.pod-a.ip6-cidr", "loopback"},
		{"ip6-cidr IPv4-mapped", "2001:db8:200::/40", "::ffff:10.0.0.0/104", "mapping.pod-a.ip6-cidr", "IPv4-mapped"},
		{"ip6-cidr ::/0", "2001:db8:200::/40", "::/0", "mapping.pod-a.ip6-cidr", "the whole address space"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("cfg.yaml", []byte(mapping(tt.pool, tt.cidr)))
			if tt.key == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
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

// TestSecretsNeverInProblems feeds configs of every wrong shape, through
// the real loading path, and checks that no secret (each holds "s3cr3t",
// in any case, in whole or in part) appears in the error, which is what
// serve, check-config and a refused reload print.
func TestSecretsNeverInProblems(t *testing.T) {
	const base = "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\n"
	tests := []struct {
		name string
		file string // its extension picks the format
		text string
		env  map[string]string
		key  string // the problem's key
		want string // in the problem's line
	}{
		{"api as a list", "cfg.yaml", base + "api:\n  - url: https://cloud/client/api\n    apikey: AK-s3cr3t-1\n    secretkey: SK-s3cr3t-2\n", nil,
			"api", "(a list, not shown)"},
		{"api as a list, JSON", "cfg.json", `{"api": [{"apikey": "AK-s3cr3t-1", "secretkey": "SK-s3cr3t-2"}]}`, nil,
			"api", "(a list, not shown)"},
		{"api as a list of strings", "cfg.yaml", base + "api: [AK-s3cr3t-1, SK-s3cr3t-2]\n", nil, "api", "(a list, not shown)"},
		{"api as a string", "cfg.yaml", base + "api: SK-s3cr3t-2\n", nil, "api", "(a string, not shown: api holds secrets)"},
		{"api as a number", "cfg.json", `{"api": 4711}`, nil, "api", "(a number, not shown: api holds secrets)"},
		{"api.secretkey as a list", "cfg.yaml", base + "api:\n  secretkey: [SK-s3cr3t-2]\n", nil, "api.secretkey", `"(set)"`},
		{"api.apikey as a map", "cfg.yaml", base + "api:\n  apikey: {k: AK-s3cr3t-1}\n", nil, "api.apikey", `"(set)"`},
		{"secret nested in api.url", "cfg.yaml", base + "api:\n  url:\n    secretkey: SK-s3cr3t-2\n", nil, "api.url", "(a map, not shown)"},
		{"secret nested in a pool", "cfg.yaml", base + "  pod-b:\n    pool: {apikey: AK-s3cr3t-1}\n    interface-id: W\n", nil, "mapping.pod-b.pool", "expected type 'string'"},
		{"secret nested in server.listen", "cfg.yaml", base + "server:\n  listen: [{secretkey: SK-s3cr3t-2}]\n", nil, "server.listen.0", "expected type 'string'"},
		{"secret in a list under server", "cfg.yaml", base + "server: [SK-s3cr3t-2]\n", nil, "server", "(a list, not shown)"},
		{"secret typed as a key", "cfg.yaml", base + "api:\n  secretkey=SK-s3cr3t-2: x\n", nil, "api.(a key that is not a name; not shown)", "unknown key"},
		{"secret typed as keys, with others", "cfg.yaml", base + "api: {url: https://cloud/client/api, 'apikey AK-s3cr3t-1': 1, typo: 2}\n", nil, "api.typo", "unknown key"},
		{"yaml type tag on a secret", "cfg.yaml", base + "api:\n  secretkey: !!int SK-s3cr3t-2\n", nil, "(file)", "(value not shown)"},
		{"the whole file a secret", "cfg.yaml", "SK-s3cr3t-2\n", nil, "(file)", "(value not shown)"},
		{"url with user info", "cfg.yaml", base + "api:\n  url: https://admin:pw-s3cr3t-3@cloud.example.com/client/api\n", nil,
			"api.url", `"https://xxxxx@cloud.example.com/client/api"`},
		{"url with a user that is a key", "cfg.yaml", base + "api:\n  url: https://AK-s3cr3t-1@cloud.example.com/client/api\n", nil,
			"api.url", `"https://xxxxx@cloud.example.com/client/api"`},
		{"url with keys in the query", "cfg.yaml", base + "api:\n  url: https://cloud.example.com/client/api?command=listZones&apikey=AK-s3cr3t-1&signature=S-s3cr3t-4&secretkey=SK-s3cr3t-2\n", nil,
			"api.url", `"https://cloud.example.com/client/api?command=xxxxx&apikey=xxxxx&signature=xxxxx&secretkey=xxxxx"`},
		{"url with a fragment", "cfg.yaml", base + "api:\n  url: https://cloud.example.com/client/api#SK-s3cr3t-2\n", nil,
			"api.url", `"https://cloud.example.com/client/api#xxxxx"`},
		{"url without a scheme, with user info", "cfg.yaml", base + "api:\n  url: admin:pw-s3cr3t-3@cloud.example.com/client/api\n", nil,
			"api.url", `"xxxxx@cloud.example.com/client/api"`},
		{"url with user info, JSON", "cfg.json", `{"api": {"url": "http://admin:pw-s3cr3t-3@cloud/client/api"}}`, nil, "api.url", `"http://xxxxx@cloud/client/api"`},
		{"url with user info from the environment", "cfg.yaml", base,
			map[string]string{"CLOUDSTACK_PD_API_URL": "https://admin:pw-s3cr3t-3@cloud.example.com/client/api"},
			"api.url", `"https://xxxxx@cloud.example.com/client/api"`},
		{"secret from the environment, api a list in the file", "cfg.yaml", base + "api: [x]\n",
			map[string]string{"CLOUDSTACK_PD_API_SECRETKEY": "SK-s3cr3t-2", "CLOUDSTACK_PD_API_APIKEY": "AK-s3cr3t-1"},
			"api", "(a list, not shown)"},
		{"api from the environment as a string", "cfg.yaml", base + "api: [x]\n",
			map[string]string{"CLOUDSTACK_PD_API": "SK-s3cr3t-2"}, "api", "not shown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := Parse(tt.file, []byte(tt.text))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *config.Error", err)
			}
			if strings.Contains(strings.ToLower(err.Error()), "s3cr3t") || strings.Contains(err.Error(), "4711") {
				t.Errorf("error shows a secret:\n%s", err)
			}
			if !hasProblem(ce, tt.key, tt.want) {
				t.Errorf("no problem of key %q with %q:\n%s", tt.key, tt.want, err)
			}
		})
	}
}

func TestMaskURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"https://cloud.example.com/client/api", "https://cloud.example.com/client/api"},
		{"https://user:pass@cloud.example.com/client/api", "https://xxxxx@cloud.example.com/client/api"},
		{"https://user@cloud.example.com:8443/client/api", "https://xxxxx@cloud.example.com:8443/client/api"},
		{"https://u:p?ss#w@rd@cloud/client/api", "https://xxxxx@cloud/client/api"},
		{"https://cloud/client/api?apikey=K&signature=S;secretkey=X", "https://cloud/client/api?apikey=xxxxx&signature=xxxxx;secretkey=xxxxx"},
		{"https://cloud/client/api?K", "https://cloud/client/api?xxxxx"},
		{"https://cloud/client/api?", "https://cloud/client/api?"},
		{"https://cloud/client/api#frag", "https://cloud/client/api#xxxxx"},
		{"user:pass@cloud/client/api?x=1", "xxxxx@cloud/client/api?x=xxxxx"},
		{"https://cloud/a@b/c", "https://cloud/a@b/c"},
		{"not a url", "not a url"},
		{"", ""},
	} {
		if got := MaskURL(tt.in); got != tt.want {
			t.Errorf("MaskURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
