// Package config loads and validates the cloudstack-pd configuration file.
//
// One file, JSON or YAML (chosen by its extension; anything else is read as
// YAML, of which JSON is a subset), read with viper. It accepts the old
// generator script's config.json unchanged (api, mapping) and adds the
// server, state and log sections. Any key can be overridden from the
// environment as CLOUDSTACK_PD_<KEY>, dots and dashes becoming underscores:
// CLOUDSTACK_PD_API_SECRETKEY, CLOUDSTACK_PD_STATE, CLOUDSTACK_PD_SERVER_RAPID_COMMIT.
//
// Load never returns a half-valid config: every problem is collected into
// one *Error whose lines each name the key and the value at fault.
package config

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/control"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// EnvPrefix is the prefix of environment overrides.
const EnvPrefix = "CLOUDSTACK_PD"

// Defaults of the old Kea setup.
const (
	DefaultPreferredLifetime = 86400
	DefaultValidLifetime     = 172800
	DefaultRenewTimer        = 1000
	DefaultRebindTimer       = 2000
	DefaultState             = "/var/lib/cloudstack-pd/state.db"
	DefaultPrefixLen         = 60
)

// Defaults of the CloudStack sync and the allocation rules.
const (
	DefaultAPIInterval        = 60 * time.Second
	DefaultAPIPageSize        = MaxAPIPageSize
	DefaultAPITimeout         = 60 * time.Second
	DefaultReleaseAfter       = 24 * time.Hour
	DefaultMaxReleaseFraction = 0.1
	// MaxAPIPageSize is CloudStack's default.page.size, the largest page
	// it serves (cloudstack.MaxPageSize).
	MaxAPIPageSize = 500
)

// Config is the whole configuration.
type Config struct {
	// API is the CloudStack API endpoint (the old config.json's "api").
	API API `mapstructure:"api"`
	// Mapping is keyed by CloudStack pod UUID (the old config.json's "mapping").
	Mapping map[string]Mapping `mapstructure:"mapping"`
	Server  Server             `mapstructure:"server"`
	// State is the path of the bbolt store.
	State string `mapstructure:"state"`
	Log   Log    `mapstructure:"log"`
	// Allocation holds the rules of the CloudStack sync.
	Allocation Allocation `mapstructure:"allocation"`
	HTTP       HTTP       `mapstructure:"http"`
	// Cluster, when it names etcd, keeps the table there (docs/ha.md).
	Cluster Cluster `mapstructure:"cluster"`
	// Webhook is the listener for CloudStack's webhook deliveries
	// (webhook.go).
	Webhook Webhook `mapstructure:"webhook"`
	// Control is the control socket the CLI's write commands reach a
	// running serve through.
	Control Control `mapstructure:"control"`
	// History is the allocation history kept in the store.
	History History `mapstructure:"history"`

	// Path is the file the config was read from.
	Path string `mapstructure:"-"`
}

// API is how to reach CloudStack, and how often to sync from it.
type API struct {
	// URL is the API endpoint, e.g. https://cloud.example.com/client/api;
	// empty: no sync.
	URL       string `mapstructure:"url"`
	APIKey    string `mapstructure:"apikey"`
	SecretKey string `mapstructure:"secretkey"`
	// Interval is how often serve syncs (default 60s); 0 syncs only at
	// start-up and on SIGHUP.
	Interval time.Duration `mapstructure:"interval"`
	// PageSize is the pagesize of listVirtualMachines, 1 to 500 (default).
	PageSize int `mapstructure:"page-size"`
	// Timeout bounds each API request, answer included (default 60s).
	Timeout time.Duration `mapstructure:"timeout"`
	// VerifyTLS checks the server's certificate (default true).
	VerifyTLS bool `mapstructure:"verify-tls"`
}

// SyncConfigured reports whether the config lets cloudstack-pd sync from
// CloudStack: api.url, api.apikey and api.secretkey all set. When not,
// WhyNoSync says what is missing.
func (a *API) SyncConfigured() bool { return a.WhyNoSync() == "" }

// WhyNoSync says why there is no sync, "" when there is one.
func (a *API) WhyNoSync() string {
	switch {
	case a.URL == "":
		return "api.url is not set"
	case a.APIKey == "" && a.SecretKey == "":
		return "api.apikey and api.secretkey are empty"
	case a.APIKey == "":
		return "api.apikey is empty"
	case a.SecretKey == "":
		return "api.secretkey is empty (set it, or CLOUDSTACK_PD_API_SECRETKEY)"
	}
	return ""
}

// Allocation holds the allocation rules of the CloudStack sync.
type Allocation struct {
	// ReleaseAfter is how long a NIC missing from CloudStack keeps its
	// prefix, still served, before the prefix is quarantined (default 24h).
	ReleaseAfter time.Duration `mapstructure:"release-after"`
	// Quarantine is how long a released prefix is kept out of use before
	// another NIC may get it; at least, and by default, the valid
	// lifetime, so that no router still routes it to the old VM.
	Quarantine time.Duration `mapstructure:"quarantine"`
	// MaxReleaseFraction is the safety valve: a sync that would mark more
	// than this share of a pool's active allocations gone is refused
	// (default 0.1; 1 turns the valve off).
	MaxReleaseFraction float64 `mapstructure:"max-release-fraction"`
}

// Mapping is one pool: a pod's /40 and the VLAN its relay names.
type Mapping struct {
	Pool        string `mapstructure:"pool"`
	PrefixLen   int    `mapstructure:"prefix-len"`
	InterfaceID string `mapstructure:"interface-id"`
	IP6CIDR     string `mapstructure:"ip6-cidr"`
	// VLAN, when set, selects every NIC on that VLAN instead of the VM's
	// default NIC (used by the CloudStack sync).
	VLAN int `mapstructure:"vlan"`
}

// Server is the DHCPv6 side.
type Server struct {
	// Listen lists the unicast [addr]:port endpoints the relays forward to.
	Listen []string `mapstructure:"listen"`
	// MACSources lists, in order, where the client MAC is read from (Kea names).
	MACSources []string `mapstructure:"mac-sources"`
	// TrustedRelays, when not empty, lists the prefixes Relay-Forwards may come from.
	TrustedRelays []string `mapstructure:"trusted-relays"`
	// RapidCommit lets a Solicit with Rapid Commit get a Reply at once.
	RapidCommit bool `mapstructure:"rapid-commit"`
	// RelayDepth and PoolSelection: see trust.go.
	RelayDepth    int      `mapstructure:"relay-depth"`
	PoolSelection []string `mapstructure:"pool-selection"`
	// Lifetimes and timers in seconds, with Kea's names.
	PreferredLifetime int `mapstructure:"preferred-lifetime"`
	ValidLifetime     int `mapstructure:"valid-lifetime"`
	RenewTimer        int `mapstructure:"renew-timer"`
	RebindTimer       int `mapstructure:"rebind-timer"`
	// Workers is the number of packet workers (0: one per CPU).
	Workers int `mapstructure:"workers"`
	// QueueLength bounds the packets waiting for a worker (0: 1024).
	QueueLength int `mapstructure:"queue-length"`
	// ReceiveBuffer is each DHCPv6 socket's receive buffer in bytes (0:
	// server.DefaultReadBuffer, 64 MiB): what holds a burst beyond what
	// the workers answer at once.
	ReceiveBuffer int `mapstructure:"receive-buffer"`
	// ShutdownDelay is how long serve keeps answering after SIGTERM or
	// SIGINT while /readyz already says not ready, so that health checks
	// see it go before it stops (0: stop at once).
	ShutdownDelay time.Duration `mapstructure:"shutdown-delay"`
	// Leasequery: who may ask, and the Bulk Leasequery connections.
	Leasequery Leasequery `mapstructure:"leasequery"`
	// LastExchangeStaleness is how long the time of a renewal that changes
	// nothing may stay in memory before it is written to the store.
	LastExchangeStaleness time.Duration `mapstructure:"last-exchange-staleness"`
}

// HTTP is the local HTTP endpoint: metrics, health and the read-only JSON API.
type HTTP struct {
	// Listen is the host:port to serve on (default 127.0.0.1:9547); "" turns it off.
	Listen string `mapstructure:"listen"`
}

// Control is the control socket (package control).
type Control struct {
	// Socket is the unix socket's path (default
	// /run/cloudstack-pd/control.sock); "" turns it off.
	Socket string `mapstructure:"socket"`
}

// History is the allocation history.
type History struct {
	// Retention is how long an event is kept (default 9600h, 400 days).
	Retention time.Duration `mapstructure:"retention"`
}

// maxSocketPath is the longest unix socket path Linux takes (sun_path
// holds 108 bytes with its terminating NUL).
const maxSocketPath = 107

// DefaultHTTPListen is where the metrics, health and JSON API are served by default.
const DefaultHTTPListen = "127.0.0.1:9547"

// Log configures slog.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `mapstructure:"level"`
	// Format is text or json.
	Format string `mapstructure:"format"`
}

// Problem is one thing wrong with a config.
type Problem struct {
	Key   string
	Value any
	Msg   string
	// Safe marks a problem of a secret key whose Msg the validator wrote
	// without quoting the value (it is nil): Msg is shown.
	Safe bool
}

// SecretKey reports whether key (a key path or its last segment) names a
// secret, whose value is never printed.
func SecretKey(key string) bool {
	k := strings.ToLower(key)
	for _, w := range []string{"apikey", "api-key", "secretkey", "secret", "password", "token"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

func (p Problem) String() string {
	if SecretKey(p.Key) && (p.Value != nil || (p.Msg != unknownKeyMsg && !p.Safe)) {
		// The value, and the decoder's message, may quote the secret.
		return fmt.Sprintf("%s: %q: invalid value (not shown: a secret); a string is expected", p.Key, "(set)")
	}
	if p.Value == nil {
		return fmt.Sprintf("%s: %s", p.Key, p.Msg)
	}
	// A list, a map, a section holding secrets or a URL's credentials
	// are not shown (secrets.go).
	val, msg := p.shown()
	return fmt.Sprintf("%s: %s: %s", p.Key, val, msg)
}

// Error lists every problem found in a config file.
type Error struct {
	Path     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "config %s: %d problem(s)", e.Path, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Load reads, defaults and validates the config at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load on data already read; path names the source in errors and
// its extension picks the format.
func Parse(path string, data []byte) (*Config, error) {
	v := viper.New()
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		v.SetConfigType("json")
	default:
		v.SetConfigType("yaml")
	}
	for _, d := range defaults {
		v.SetDefault(d.key, d.val)
	}
	// No default: unset, it follows server.valid-lifetime. Bound so that
	// the environment can set it.
	_ = v.BindEnv("allocation.quarantine")
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	v.AutomaticEnv()

	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, &Error{Path: path, Problems: []Problem{{Key: "(file)", Msg: "cannot parse: " + maskParseError(err.Error())}}}
	}
	var c Config
	dec := func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
		dc.WeaklyTypedInput = true
		dc.ZeroFields = true
	}
	// A value that does not decode is a problem, but not the end: the
	// field keeps its default and the rest is still validated, so that one
	// run lists every problem.
	var decoded []Problem
	var failed []string
	if err := v.Unmarshal(&c, dec); err != nil {
		decoded = decodeProblems(v, err)
		for _, p := range decoded {
			if p.Key == "(file)" {
				// Not tied to a key: nothing sound is left to validate.
				return nil, &Error{Path: path, Problems: decoded}
			}
			if p.Msg != unknownKeyMsg {
				failed = append(failed, p.Key)
			}
		}
		if err := resetDefaults(&c, failed); err != nil {
			return nil, &Error{Path: path, Problems: append(decoded, Problem{Key: "(file)", Msg: err.Error()})}
		}
	}
	c.Path = path
	for k, m := range c.Mapping {
		if m.PrefixLen == 0 {
			m.PrefixLen = DefaultPrefixLen
			c.Mapping[k] = m
		}
	}
	if !v.IsSet("allocation.quarantine") || covered("allocation.quarantine", failed) {
		c.Allocation.Quarantine = Seconds(c.Server.ValidLifetime)
	}
	c.Cluster.applyDefaults()
	probs := decoded
	if c.Webhook.Listen != "" && !intervalGiven(v) {
		c.API.Interval = DefaultAPIIntervalWebhook
	}
	for _, p := range slices.Concat(durationProblems(v), c.validate(), c.Cluster.problems(), c.validateLimits(), c.validateRanges(), c.validateWebhook()) {
		// A key that did not decode is reported once, by the decoder.
		if !covered(p.Key, failed) {
			probs = append(probs, p)
		}
	}
	if len(probs) > 0 {
		return nil, &Error{Path: path, Problems: probs}
	}
	return &c, nil
}

// defaults are the values of the keys the file may leave out.
var defaults = []struct {
	key string
	val any
}{
	{"state", DefaultState},
	{"server.mac-sources", []string{string(relay.SourceRemoteID)}},
	{"server.preferred-lifetime", DefaultPreferredLifetime},
	{"server.valid-lifetime", DefaultValidLifetime},
	{"server.renew-timer", DefaultRenewTimer},
	{"server.rebind-timer", DefaultRebindTimer},
	{"server.rapid-commit", false},
	{"server.listen", []string{}},
	{"server.trusted-relays", []string{}},
	{"server.relay-depth", DefaultRelayDepth},
	{"server.pool-selection", DefaultPoolSelection},
	{"server.workers", 0},
	{"server.queue-length", 0},
	{"server.receive-buffer", 0},
	{"server.shutdown-delay", "0s"},
	{"http.listen", DefaultHTTPListen},
	{"control.socket", control.DefaultSocket},
	{"history.retention", allocator.DefaultHistoryRetention.String()},
	{"log.level", "info"},
	{"log.format", "text"},
	{"api.url", ""},
	{"api.apikey", ""},
	{"api.secretkey", ""},
	{"api.interval", DefaultAPIInterval.String()},
	{"api.page-size", DefaultAPIPageSize},
	{"api.timeout", DefaultAPITimeout.String()},
	{"api.verify-tls", true},
	{"allocation.release-after", DefaultReleaseAfter.String()},
	{"allocation.max-release-fraction", DefaultMaxReleaseFraction},
	{"cluster.name", ""},
	{"cluster.etcd.prefix", DefaultClusterPrefix},
	{"cluster.etcd.username", ""},
	{"cluster.etcd.password", ""},
	{"cluster.lease-ttl", DefaultClusterLeaseTTL.String()},
	{"cluster.timeout", DefaultClusterTimeout.String()},
	{"cluster.max-txn-ops", DefaultClusterMaxTxnOps},
	{"webhook.listen", ""},
	{"webhook.secret", ""},
	{"webhook.cert-file", ""},
	{"webhook.key-file", ""},
}

// mapKey writes mapstructure's mapping[pod] as mapping.pod, as in the file.
func mapKey(key string) string { return strings.NewReplacer("[", ".", "]", "").Replace(key) }

// normKey writes a key path with dots only: mapping[pod].pool and
// server.listen[0] become mapping.pod.pool and server.listen.0.
func normKey(key string) string {
	return strings.ToLower(strings.NewReplacer("[", ".", "]", "").Replace(key))
}

// covered reports whether key is one of keys or lies under one of them.
func covered(key string, keys []string) bool {
	k := normKey(key)
	for _, f := range keys {
		f = normKey(f)
		if k == f || strings.HasPrefix(k, f+".") {
			return true
		}
	}
	return false
}

// resetDefaults gives the fields of the keys that failed to decode, and of
// the keys under them, their defaults back; those without a default keep
// the zero value the decoder left.
func resetDefaults(c *Config, failed []string) error {
	tree := map[string]any{}
	n := 0
	for _, d := range defaults {
		if !covered(d.key, failed) {
			continue
		}
		m := tree
		parts := strings.Split(d.key, ".")
		for _, part := range parts[:len(parts)-1] {
			sub, ok := m[part].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[part] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = d.val
		n++
	}
	if n == 0 {
		return nil
	}
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:           c,
		WeaklyTypedInput: true,
		DecodeHook:       mapstructure.StringToTimeDurationHookFunc(),
	})
	if err != nil {
		return err
	}
	return dec.Decode(tree)
}

// durationKeys are the keys holding Go durations.
var durationKeys = []string{"api.interval", "api.timeout", "allocation.release-after", "allocation.quarantine", "cluster.lease-ttl", "cluster.timeout", "history.retention"}

// durationProblems refuses a duration given as a bare number: decoded, 60
// would be 60 nanoseconds.
func durationProblems(v *viper.Viper) []Problem {
	var probs []Problem
	for _, key := range durationKeys {
		if !v.IsSet(key) {
			continue
		}
		switch v.Get(key).(type) {
		case string, time.Duration:
		default:
			probs = append(probs, Problem{Key: key, Value: v.Get(key), Msg: `a bare number: give a duration with its unit, e.g. "60s", "24h"`})
		}
	}
	return probs
}

// unknownKeyMsg is the message of a key the config does not know.
const unknownKeyMsg = "unknown key (a typo?); see example/cloudstack-pd.yaml for the keys"

// decodeProblems turns mapstructure's joined errors into problems, naming
// the value found at the key.
func decodeProblems(v *viper.Viper, err error) []Problem {
	var probs []Problem
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "*"))
		if line == "" || strings.HasPrefix(line, "decoding failed due to") || strings.HasSuffix(line, "error(s) decoding:") {
			continue
		}
		key := "(file)"
		if i := strings.Index(line, "'"); i >= 0 {
			if j := strings.Index(line[i+1:], "'"); j >= 0 {
				key = line[i+1 : i+1+j]
			}
		}
		p := Problem{Key: key, Msg: line}
		if key != "(file)" && key != "" && v.IsSet(key) {
			p.Value = v.Get(key)
			p.Msg = strings.TrimSpace(strings.TrimPrefix(line, "'"+key+"'"))
		}
		if strings.Contains(line, "has invalid keys:") {
			// One problem per key; a key that does not read as a name
			// (a value typed where a key was meant) is not shown.
			for _, name := range strings.Split(strings.TrimSpace(line[strings.Index(line, "has invalid keys:")+len("has invalid keys:"):]), ", ") {
				if key != "" {
					name = key + "." + name
				}
				probs = append(probs, Problem{Key: safeKey(mapKey(name)), Msg: unknownKeyMsg})
			}
			continue
		}
		p.Key = mapKey(p.Key)
		probs = append(probs, p)
	}
	if len(probs) == 0 {
		probs = []Problem{{Key: "(file)", Msg: err.Error()}}
	}
	return probs
}

func (c *Config) validate() []Problem {
	var probs []Problem
	add := func(key string, val any, format string, args ...any) {
		probs = append(probs, Problem{Key: key, Value: val, Msg: fmt.Sprintf(format, args...)})
	}

	iids := map[string]string{}
	type named struct {
		key string
		p   netip.Prefix
	}
	var pools []named
	for _, name := range slices.Sorted(maps.Keys(c.Mapping)) {
		m := c.Mapping[name]
		k := "mapping." + name
		if name == "" {
			add(k, name, "mapping key (pod UUID) is empty")
		}
		pool, err := netip.ParsePrefix(m.Pool)
		switch {
		case m.Pool == "":
			add(k+".pool", nil, "missing: give the pool prefix, e.g. 2001:db8:200::/40")
		case err != nil:
			add(k+".pool", m.Pool, "not a prefix: %v", err)
		case !pool.Addr().Is6() || pool.Addr().Is4In6():
			add(k+".pool", m.Pool, "not an IPv6 prefix")
		case pool.Masked() != pool:
			add(k+".pool", m.Pool, "host bits set: did you mean %s?", pool.Masked())
		default:
			for _, o := range pools {
				if o.p.Overlaps(pool) {
					add(k+".pool", m.Pool, "overlaps %s (%s)", o.key, o.p)
				}
			}
			pools = append(pools, named{k + ".pool", pool})
			if m.PrefixLen < pool.Bits() || m.PrefixLen > 128 {
				add(k+".prefix-len", m.PrefixLen, "must lie between the pool's length %d and 128", pool.Bits())
			}
		}
		switch {
		case m.InterfaceID == "":
			add(k+".interface-id", nil, "missing: give the interface-id the relay inserts for this VLAN")
		case iids[m.InterfaceID] != "":
			add(k+".interface-id", m.InterfaceID, "also used by %s", iids[m.InterfaceID])
		default:
			iids[m.InterfaceID] = k
		}
		if m.IP6CIDR != "" {
			if p, err := netip.ParsePrefix(m.IP6CIDR); err != nil || !p.Addr().Is6() {
				add(k+".ip6-cidr", m.IP6CIDR, "not an IPv6 prefix")
			}
		}
		if m.VLAN < 0 || m.VLAN > 4094 {
			add(k+".vlan", m.VLAN, "must be 1 to 4094")
		}
	}

	s := c.Server
	for i, l := range s.Listen {
		ap, err := netip.ParseAddrPort(l)
		key := fmt.Sprintf("server.listen[%d]", i)
		switch {
		case err != nil:
			add(key, l, "not [addr]:port: %v", err)
		case !ap.Addr().Is6() || ap.Addr().Is4In6():
			add(key, l, "not an IPv6 address")
		case ap.Addr().IsMulticast():
			add(key, l, "multicast: relays forward to a unicast address")
		case ap.Addr().IsUnspecified():
			add(key, l, "the unspecified address: list the unicast addresses the relays forward to, so that each reply leaves from the address its relay sent to")
		}
	}
	if len(s.MACSources) == 0 {
		add("server.mac-sources", nil, "empty: list at least one source, e.g. [remote-id]")
	}
	for i, src := range s.MACSources {
		if _, err := relay.ParseMACSource(src); err != nil {
			add(fmt.Sprintf("server.mac-sources[%d]", i), src, "%v", err)
		}
	}
	for i, tr := range s.TrustedRelays {
		if _, err := parsePrefixOrAddr(tr); err != nil {
			add(fmt.Sprintf("server.trusted-relays[%d]", i), tr, "not a prefix or address: %v", err)
		}
	}
	probs = append(probs, c.trustProblems()...)
	probs = append(probs, c.leasequeryProblems()...)
	for _, d := range []struct {
		key string
		v   int
	}{
		{"server.preferred-lifetime", s.PreferredLifetime},
		{"server.valid-lifetime", s.ValidLifetime},
		{"server.renew-timer", s.RenewTimer},
		{"server.rebind-timer", s.RebindTimer},
	} {
		if d.v < 0 || int64(d.v) > 0xffffffff {
			add(d.key, d.v, "must be 0 to 4294967295 seconds")
		}
	}
	// Each pair out of order names its first key: the one above the next.
	order := []struct {
		key string
		v   int
	}{
		{"server.renew-timer", s.RenewTimer},
		{"server.rebind-timer", s.RebindTimer},
		{"server.preferred-lifetime", s.PreferredLifetime},
		{"server.valid-lifetime", s.ValidLifetime},
	}
	for i := 0; i+1 < len(order); i++ {
		if a, b := order[i], order[i+1]; a.v > b.v {
			add(a.key, a.v, "is above %s (%d): need renew-timer (%d) <= rebind-timer (%d) <= preferred-lifetime (%d) <= valid-lifetime (%d)",
				b.key, b.v, s.RenewTimer, s.RebindTimer, s.PreferredLifetime, s.ValidLifetime)
		}
	}
	if s.ValidLifetime == 0 {
		add("server.valid-lifetime", 0, "must be positive: a prefix with valid lifetime 0 withdraws the route")
	}
	if s.ShutdownDelay < 0 || s.ShutdownDelay > 5*time.Minute {
		add("server.shutdown-delay", s.ShutdownDelay, "must be 0s to 5m")
	}
	if c.State == "" {
		add("state", nil, "empty: give the path of the state store")
	}

	a := c.API
	if a.URL != "" {
		if u, err := url.Parse(a.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			add("api.url", a.URL, "want http(s)://host/path without a query or user info, e.g. https://cloud.example.com/client/api")
		}
	}
	if a.Interval < 0 || (a.Interval > 0 && a.Interval < time.Second) {
		add("api.interval", a.Interval, "must be 0 (sync only at start-up and on SIGHUP) or at least 1s")
	}
	if a.PageSize < 1 || a.PageSize > MaxAPIPageSize {
		add("api.page-size", a.PageSize, "must be 1 to %d (CloudStack's default.page.size)", MaxAPIPageSize)
	}
	if a.Timeout <= 0 {
		add("api.timeout", a.Timeout, "must be positive, e.g. 60s")
	}
	al := c.Allocation
	if al.ReleaseAfter <= 0 {
		add("allocation.release-after", al.ReleaseAfter, "must be positive, e.g. 24h: a NIC missing from one listing must not lose its prefix")
	}
	if valid := Seconds(s.ValidLifetime); al.Quarantine < valid {
		add("allocation.quarantine", al.Quarantine, "shorter than server.valid-lifetime (%v): a router may still route a released prefix to the old VM when another VM gets it", valid)
	}
	if !(al.MaxReleaseFraction > 0 && al.MaxReleaseFraction <= 1) {
		add("allocation.max-release-fraction", al.MaxReleaseFraction, "must be more than 0 and at most 1 (1 turns the safety valve off)")
	}
	if l := c.HTTP.Listen; l != "" {
		host, port, err := net.SplitHostPort(l)
		pn, perr := strconv.Atoi(port)
		switch {
		case err != nil:
			add("http.listen", l, "not host:port: %v", err)
		case perr != nil || pn < 0 || pn > 65535:
			add("http.listen", l, "port must be 0 to 65535")
		case host != "" && host != "localhost" && net.ParseIP(host) == nil:
			add("http.listen", l, "host must be an IP address, localhost or empty (all addresses)")
		}
	}
	if l := len(c.Control.Socket); l > maxSocketPath {
		add("control.socket", c.Control.Socket, "%d bytes: a unix socket path has at most %d", l, maxSocketPath)
	}
	if c.History.Retention < 24*time.Hour {
		add("history.retention", c.History.Retention, "must be at least 24h (abuse and legal requests ask months later; default 9600h, 400 days)")
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", c.Log.Level, "must be debug, info, warn or error")
	}
	switch strings.ToLower(c.Log.Format) {
	case "text", "json":
	default:
		add("log.format", c.Log.Format, "must be text or json")
	}
	return probs
}

func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Pools returns the mapping as allocator pools, sorted by name.
func (c *Config) Pools() []allocator.Pool {
	names := slices.Sorted(maps.Keys(c.Mapping))
	pools := make([]allocator.Pool, 0, len(names))
	for _, name := range names {
		m := c.Mapping[name]
		p := allocator.Pool{
			Name:        name,
			Prefix:      netip.MustParsePrefix(m.Pool),
			PrefixLen:   m.PrefixLen,
			InterfaceID: m.InterfaceID,
			VLAN:        m.VLAN,
		}
		if m.IP6CIDR != "" {
			p.IP6CIDR = netip.MustParsePrefix(m.IP6CIDR)
		}
		pools = append(pools, p)
	}
	return pools
}

// MACSources returns the configured MAC sources, parsed.
func (c *Config) MACSources() []relay.MACSource {
	out := make([]relay.MACSource, 0, len(c.Server.MACSources))
	for _, s := range c.Server.MACSources {
		src, _ := relay.ParseMACSource(s) // validated by Load
		out = append(out, src)
	}
	return out
}

// TrustedRelays returns the trusted relay prefixes, parsed.
func (c *Config) TrustedRelays() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(c.Server.TrustedRelays))
	for _, s := range c.Server.TrustedRelays {
		p, _ := parsePrefixOrAddr(s) // validated by Load
		out = append(out, p.Masked())
	}
	return out
}

// ListenAddrs returns the listen endpoints, parsed.
func (c *Config) ListenAddrs() ([]netip.AddrPort, error) {
	if len(c.Server.Listen) == 0 {
		return nil, &Error{Path: c.Path, Problems: []Problem{{Key: "server.listen", Msg: `empty: list the unicast addresses the relays forward to, e.g. ["[2001:db8::100:69]:547"]`}}}
	}
	out := make([]netip.AddrPort, 0, len(c.Server.Listen))
	for _, l := range c.Server.Listen {
		out = append(out, netip.MustParseAddrPort(l))
	}
	return out, nil
}

// Seconds converts a lifetime in seconds to a Duration.
func Seconds(s int) time.Duration { return time.Duration(s) * time.Second }
