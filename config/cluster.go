package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// Defaults of the cluster section.
const (
	DefaultClusterPrefix   = "/cloudstack-pd/"
	DefaultClusterLeaseTTL = 5 * time.Second
	DefaultClusterTimeout  = 5 * time.Second
	// DefaultClusterMaxTxnOps is etcd's own default --max-txn-ops.
	DefaultClusterMaxTxnOps = 128
)

// Cluster makes this server one of several sharing one table in etcd
// (docs/ha.md). Without etcd.endpoints and embedded.data-dir there is no
// cluster: the table is the bbolt file named by state, as always.
type Cluster struct {
	// Name is this server's member name (default: the host name).
	Name string `mapstructure:"name"`
	// Etcd is the etcd cluster to use, or only its key prefix and TLS
	// files when the members are embedded.
	Etcd ClusterEtcd `mapstructure:"etcd"`
	// Embedded runs an etcd member inside this server.
	Embedded ClusterEmbedded `mapstructure:"embedded"`
	// LeaseTTL is the lease of the syncer's leadership and of this
	// server's registration: a syncer that stops answering is replaced
	// about this long after (default 5s).
	LeaseTTL time.Duration `mapstructure:"lease-ttl"`
	// Timeout bounds connecting to etcd and each write (default 5s).
	Timeout time.Duration `mapstructure:"timeout"`
	// MaxTxnOps is the most operations cloudstack-pd puts in one etcd
	// transaction (default 128, etcd's --max-txn-ops default): with an
	// etcd cluster, at most its --max-txn-ops; embedded members are
	// started with it. Larger makes big writes (a migration, a first sync
	// of many VMs) faster.
	MaxTxnOps int `mapstructure:"max-txn-ops"`
}

// ClusterEtcd is how to reach etcd.
type ClusterEtcd struct {
	Endpoints []string `mapstructure:"endpoints"`
	// Prefix is the key prefix of the table (default /cloudstack-pd/).
	Prefix   string `mapstructure:"prefix"`
	CAFile   string `mapstructure:"ca-file"`
	CertFile string `mapstructure:"cert-file"`
	KeyFile  string `mapstructure:"key-file"`
	Username string `mapstructure:"username"`
	Password string `mapstructure:"password"`
}

// ClusterEmbedded is the etcd member run inside this server.
type ClusterEmbedded struct {
	DataDir        string `mapstructure:"data-dir"`
	PeerListen     string `mapstructure:"peer-listen"`
	ClientListen   string `mapstructure:"client-listen"`
	InitialCluster string `mapstructure:"initial-cluster"`
	// InitialClusterState is new (default) for the members that start a
	// cluster together, existing for a member added later.
	InitialClusterState string `mapstructure:"initial-cluster-state"`
}

// Enabled reports whether the config names a cluster.
func (c *Cluster) Enabled() bool {
	return len(c.Etcd.Endpoints) > 0 || c.Embedded.DataDir != ""
}

// IsEmbedded reports whether this server runs an etcd member.
func (c *Cluster) IsEmbedded() bool { return c.Embedded.DataDir != "" }

// InitialMembers parses embedded.initial-cluster: member name → peer URL.
func (c *ClusterEmbedded) InitialMembers() (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.Split(c.InitialCluster, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, u, ok := strings.Cut(part, "=")
		if !ok || name == "" || u == "" {
			return nil, fmt.Errorf("%q is not name=peer-url", part)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("member %q is named twice", name)
		}
		if err := checkEtcdURL(u); err != nil {
			return nil, fmt.Errorf("member %q: %v", name, err)
		}
		out[name] = u
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty: list every member as name=peer-url, separated by commas")
	}
	return out, nil
}

// checkEtcdURL accepts http(s)://host:port and unix:// URLs.
func checkEtcdURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL: %v", err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Hostname() == "" || u.Port() == "" {
			return fmt.Errorf("want scheme://host:port, e.g. https://10.0.0.1:2380")
		}
	case "unix", "unixs":
		if u.Host == "" && u.Path == "" {
			return fmt.Errorf("want unix://path")
		}
	default:
		return fmt.Errorf("scheme %q: want http, https or unix", u.Scheme)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("no user info, query or fragment, please")
	}
	return nil
}

// clusterDefaults fills in what a cluster needs but was not given.
func (c *Cluster) applyDefaults() {
	if len(c.Etcd.Endpoints) == 0 {
		c.Etcd.Endpoints = nil // absent and [] are the same
	}
	if c.Name == "" && c.Enabled() {
		c.Name, _ = os.Hostname()
	}
	if c.Etcd.Prefix == "" {
		c.Etcd.Prefix = DefaultClusterPrefix
	}
	if c.Embedded.InitialClusterState == "" {
		c.Embedded.InitialClusterState = "new"
	}
}

func (c *Cluster) problems() []Problem {
	var probs []Problem
	add := func(key string, val any, format string, args ...any) {
		probs = append(probs, Problem{Key: key, Value: val, Msg: fmt.Sprintf(format, args...)})
	}
	if c.LeaseTTL < 2*time.Second || c.LeaseTTL > time.Minute {
		add("cluster.lease-ttl", c.LeaseTTL, "must be 2s to 1m")
	}
	if c.Timeout < 100*time.Millisecond || c.Timeout > time.Minute {
		add("cluster.timeout", c.Timeout, "must be 100ms to 1m")
	}
	if c.MaxTxnOps < 16 || c.MaxTxnOps > 100000 {
		add("cluster.max-txn-ops", c.MaxTxnOps, "must be 16 to 100000, and at most the etcd members' --max-txn-ops (128 unless set)")
	}
	p := c.Etcd.Prefix
	if !strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") || strings.ContainsAny(p, " \t\n") {
		add("cluster.etcd.prefix", p, "must start and end with /, e.g. /cloudstack-pd/")
	}
	if !c.Enabled() {
		for _, k := range []struct {
			key string
			set bool
		}{
			{"cluster.name", c.Name != ""},
			{"cluster.embedded.peer-listen", c.Embedded.PeerListen != ""},
			{"cluster.embedded.client-listen", c.Embedded.ClientListen != ""},
			{"cluster.embedded.initial-cluster", c.Embedded.InitialCluster != ""},
		} {
			if k.set {
				add(k.key, nil, "set, but there is no cluster: give cluster.etcd.endpoints (an etcd cluster) or cluster.embedded.data-dir (a member in each server)")
			}
		}
		return probs
	}
	if c.Name == "" {
		add("cluster.name", nil, "empty and the host name is unknown: give this server's member name")
	} else if strings.ContainsAny(c.Name, "/=, \t\n") {
		add("cluster.name", c.Name, "must not hold /, =, commas or spaces")
	}
	if len(c.Etcd.Endpoints) > 0 && c.IsEmbedded() {
		add("cluster.embedded.data-dir", c.Embedded.DataDir, "set together with cluster.etcd.endpoints: use an etcd cluster (endpoints) or embedded members, not both")
	}
	for i, e := range c.Etcd.Endpoints {
		if err := checkEtcdURL(e); err != nil {
			add(fmt.Sprintf("cluster.etcd.endpoints[%d]", i), MaskURL(e), "%v", err)
		}
	}
	for _, f := range []struct{ key, path string }{
		{"cluster.etcd.ca-file", c.Etcd.CAFile},
		{"cluster.etcd.cert-file", c.Etcd.CertFile},
		{"cluster.etcd.key-file", c.Etcd.KeyFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			add(f.key, f.path, "cannot be read: %v", err)
		}
	}
	if (c.Etcd.CertFile == "") != (c.Etcd.KeyFile == "") {
		add("cluster.etcd.cert-file", c.Etcd.CertFile, "cert-file and key-file go together")
	}
	if c.Etcd.Password != "" && c.Etcd.Username == "" {
		add("cluster.etcd.username", nil, "empty while a password is set")
	}
	if !c.IsEmbedded() {
		return probs
	}
	e := c.Embedded
	for _, u := range []struct{ key, v string }{
		{"cluster.embedded.peer-listen", e.PeerListen},
		{"cluster.embedded.client-listen", e.ClientListen},
	} {
		if u.v == "" {
			add(u.key, nil, "missing: give a URL, e.g. https://10.0.0.1:2380 (peer) or https://127.0.0.1:2379 (client)")
		} else if err := checkEtcdURL(u.v); err != nil {
			add(u.key, u.v, "%v", err)
		} else if strings.HasPrefix(u.v, "https") && (c.Etcd.CertFile == "" || c.Etcd.CAFile == "") {
			add(u.key, u.v, "https needs cluster.etcd.cert-file, key-file and ca-file (used by the member and its clients)")
		}
	}
	members, err := e.InitialMembers()
	switch {
	case err != nil:
		add("cluster.embedded.initial-cluster", e.InitialCluster, "%v", err)
	case members[c.Name] == "":
		add("cluster.embedded.initial-cluster", e.InitialCluster, "does not name this member %q (cluster.name)", c.Name)
	case e.PeerListen != "" && members[c.Name] != e.PeerListen:
		add("cluster.embedded.initial-cluster", e.InitialCluster, "names %s for %q, but cluster.embedded.peer-listen is %s", members[c.Name], c.Name, e.PeerListen)
	}
	if s := e.InitialClusterState; s != "new" && s != "existing" {
		add("cluster.embedded.initial-cluster-state", s, "must be new or existing")
	}
	return probs
}
