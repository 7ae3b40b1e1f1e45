package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClusterConfig(t *testing.T) {
	base := `
mapping:
  pod-a: {pool: "2001:db8:200::/40", interface-id: VLAN2701}
`
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		yaml    string
		env     map[string]string
		wantErr []string // each must appear in the error
		check   func(t *testing.T, c *Config)
	}{
		{name: "no cluster", yaml: "", check: func(t *testing.T, c *Config) {
			if c.Cluster.Enabled() {
				t.Error("a config without cluster enables one")
			}
		}},
		{name: "external etcd", yaml: `
cluster:
  name: dhcp-a
  etcd:
    endpoints: ["https://10.0.0.11:2379", "http://10.0.0.12:2379"]
    ca-file: ` + ca + `
    username: pd
`, env: map[string]string{"CLOUDSTACK_PD_CLUSTER_ETCD_PASSWORD": "s3cret"}, check: func(t *testing.T, c *Config) {
			if !c.Cluster.Enabled() || c.Cluster.IsEmbedded() {
				t.Errorf("enabled=%v embedded=%v", c.Cluster.Enabled(), c.Cluster.IsEmbedded())
			}
			if c.Cluster.Etcd.Password != "s3cret" {
				t.Errorf("password from the environment not read")
			}
			if c.Cluster.Etcd.Prefix != DefaultClusterPrefix || c.Cluster.LeaseTTL != DefaultClusterLeaseTTL || c.Cluster.Timeout != DefaultClusterTimeout {
				t.Errorf("defaults: %q %v %v", c.Cluster.Etcd.Prefix, c.Cluster.LeaseTTL, c.Cluster.Timeout)
			}
		}},
		{name: "embedded, name defaults to the host", yaml: `
cluster:
  embedded:
    data-dir: /var/lib/x
    peer-listen: http://10.0.0.1:2380
    client-listen: http://127.0.0.1:2379
    initial-cluster: "HOST=http://10.0.0.1:2380,dhcp-b=http://10.0.0.2:2380"
`, check: func(t *testing.T, c *Config) {
			h, _ := os.Hostname()
			if c.Cluster.Name != h || !c.Cluster.IsEmbedded() || c.Cluster.Embedded.InitialClusterState != "new" {
				t.Errorf("name %q, embedded %v, state %q", c.Cluster.Name, c.Cluster.IsEmbedded(), c.Cluster.Embedded.InitialClusterState)
			}
		}},
		{name: "both", yaml: `
cluster:
  name: a
  etcd: {endpoints: ["http://10.0.0.11:2379"]}
  embedded: {data-dir: /x, peer-listen: "http://10.0.0.1:2380", client-listen: "http://127.0.0.1:2379", initial-cluster: "a=http://10.0.0.1:2380"}
`, wantErr: []string{"cluster.embedded.data-dir", "not both"}},
		{name: "bad endpoint", yaml: `
cluster: {name: a, etcd: {endpoints: ["10.0.0.11:2379", "ftp://x:1"]}}
`, wantErr: []string{"cluster.etcd.endpoints[0]", "cluster.etcd.endpoints[1]", `scheme "ftp"`}},
		{name: "member not in initial-cluster", yaml: `
cluster:
  name: dhcp-z
  embedded: {data-dir: /x, peer-listen: "http://10.0.0.1:2380", client-listen: "http://127.0.0.1:2379", initial-cluster: "dhcp-a=http://10.0.0.1:2380"}
`, wantErr: []string{"cluster.embedded.initial-cluster", `does not name this member "dhcp-z"`}},
		{name: "peer-listen differs from initial-cluster", yaml: `
cluster:
  name: dhcp-a
  embedded: {data-dir: /x, peer-listen: "http://10.0.0.9:2380", client-listen: "http://127.0.0.1:2379", initial-cluster: "dhcp-a=http://10.0.0.1:2380"}
`, wantErr: []string{"names http://10.0.0.1:2380"}},
		{name: "https without certificates", yaml: `
cluster:
  name: a
  embedded: {data-dir: /x, peer-listen: "https://10.0.0.1:2380", client-listen: "https://127.0.0.1:2379", initial-cluster: "a=https://10.0.0.1:2380"}
`, wantErr: []string{"cluster.embedded.peer-listen", "https needs cluster.etcd.cert-file"}},
		{name: "cluster keys without a cluster", yaml: `
cluster: {name: a}
`, wantErr: []string{"cluster.name", "there is no cluster"}},
		{name: "ttl as a bare number", yaml: `
cluster: {name: a, lease-ttl: 5, etcd: {endpoints: ["http://127.0.0.1:2379"]}}
`, wantErr: []string{"cluster.lease-ttl", "bare number"}},
		{name: "prefix", yaml: `
cluster: {name: a, etcd: {endpoints: ["http://127.0.0.1:2379"], prefix: "pd"}}
`, wantErr: []string{"cluster.etcd.prefix"}},
		{name: "missing ca file", yaml: `
cluster: {name: a, etcd: {endpoints: ["https://127.0.0.1:2379"], ca-file: /nonexistent/ca.pem}}
`, wantErr: []string{"cluster.etcd.ca-file", "/nonexistent/ca.pem"}},
		{name: "password never shown", yaml: `
cluster: {name: a, etcd: {endpoints: ["https://127.0.0.1:2379"], password: hunter2}}
`, wantErr: []string{"cluster.etcd.username"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			y := strings.ReplaceAll(tc.yaml, "HOST=", mustHost(t)+"=")
			c, err := Parse("c.yaml", []byte(base+y))
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatal("accepted")
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q:\n%v", w, err)
					}
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Errorf("the password is in the error:\n%v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func mustHost(t *testing.T) string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		t.Skip("no host name")
	}
	return h
}

// TestExampleClusterConfig: example/cluster-dhcp-a.yaml loads, with its
// TLS files where it names them.
func TestExampleClusterConfig(t *testing.T) {
	data, err := os.ReadFile("../example/cluster-dhcp-a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range []string{"etcd-ca.pem", "etcd-dhcp-a.pem", "etcd-dhcp-a-key.pem"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := Parse("cluster-dhcp-a.yaml", []byte(strings.ReplaceAll(string(data), "/etc/cloudstack-pd/", dir+"/")))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Cluster.IsEmbedded() || c.Cluster.Name != "dhcp-a" || c.Cluster.Etcd.CertFile == "" {
		t.Errorf("cluster: %+v", c.Cluster)
	}
	// As shipped, the missing TLS files are named.
	if _, err := Parse("cluster-dhcp-a.yaml", data); err == nil || !strings.Contains(err.Error(), "cluster.etcd.ca-file") {
		t.Errorf("missing TLS files: %v", err)
	}
}
