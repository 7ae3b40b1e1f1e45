package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/cloudstack-pd/cloudstack-pd/config"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// checkConfig runs check-config on a config written from text (named
// name, whose extension picks the format) with environ as the
// environment, and returns standard output, standard error and the error.
func checkConfig(t *testing.T, name, text string, environ []string, quiet bool) (stdout, stderr string, err error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	testenv.WriteFile(t, path, text)
	var out, errOut bytes.Buffer
	err = runCheckConfig(&out, &errOut, path, environ, quiet)
	return out.String(), errOut.String(), err
}

const checkConfigMinimal = `
mapping:
  pod-a:
    pool: 2001:db8:200::/40
    interface-id: VLAN2701
server:
  listen: ["[2001:db8::100:69]:547"]
`

func TestCheckConfigPrintsTheConfigInEffect(t *testing.T) {
	out, stderr, err := checkConfig(t, "config.yaml", checkConfigMinimal, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if stderr != "" {
		t.Errorf("warnings for a clean config: %s", stderr)
	}
	// Defaults filled in, in the file's key names.
	for _, want := range []string{
		"    prefix-len: 60\n",
		"    interface-id: VLAN2701\n",
		"  listen: ['[2001:db8::100:69]:547']\n",
		"  mac-sources: [remote-id]\n",
		"  valid-lifetime: 172800\n",
		"  rapid-commit: false\n",
		"state: " + config.DefaultState + "\n",
		"  level: info\n",
		"  format: text\n",
		"  secretkey: \"\"\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "path:") {
		t.Errorf("the config's own path is printed as a key:\n%s", out)
	}
}

func TestCheckConfigOutputReadsBackAsTheSameConfig(t *testing.T) {
	for _, name := range []string{"../../example/cloudstack-pd.yaml", "../../example/config.json", "../../testdata/config/old-generator-config.json"} {
		t.Run(filepath.Base(name), func(t *testing.T) {
			want, err := config.Load(name)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := runCheckConfig(&out, &bytes.Buffer{}, name, nil, false); err != nil {
				t.Fatal(err)
			}
			got, err := config.Parse("effective.yaml", out.Bytes())
			if err != nil {
				t.Fatalf("the printed config does not load: %v\n%s", err, out.String())
			}
			// Secrets come back masked; everything else is as loaded.
			for _, c := range []*config.Config{want, got} {
				c.Path = ""
				c.API.APIKey = strings.NewReplacer("AKEY", "(set)").Replace(c.API.APIKey)
				c.API.SecretKey = strings.NewReplacer("SKEY", "(set)").Replace(c.API.SecretKey)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("read back\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestCheckConfigMasksSecrets(t *testing.T) {
	const apikey, secret = "AKEY-do-not-print-4711", "SKEY-do-not-print-0815"
	text := "api:\n  url: https://cloud.example.com/client/api\n  apikey: " + apikey + "\n" + checkConfigMinimal
	t.Setenv("CLOUDSTACK_PD_API_SECRETKEY", secret)
	t.Setenv("CLOUDSTACK_PD_LOG_LEVEL", "debug")
	out, stderr, err := checkConfig(t, "config.yaml", text, os.Environ(), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{apikey, secret, "4711", "0815"} {
		if strings.Contains(out+stderr, s) {
			t.Errorf("secret %q printed:\n%s%s", s, out, stderr)
		}
	}
	for _, want := range []string{
		"  apikey: (set)\n",
		"  secretkey: (set)\n",
		"  level: debug\n", // the environment override applied
		"# From the environment: CLOUDSTACK_PD_API_SECRETKEY (api.secretkey), CLOUDSTACK_PD_LOG_LEVEL (log.level)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !config.SecretKey("webhook-secret") || !config.SecretKey("password") || config.SecretKey("interface-id") || config.SecretKey("url") {
		t.Error("config.SecretKey misjudges a key name")
	}
}

// TestCheckConfigEnvironment runs the command the way a shell does: the
// environment is what config.Load sees too.
func TestCheckConfigEnvironment(t *testing.T) {
	t.Setenv("CLOUDSTACK_PD_API_SECRETKEY", "from-the-env-zq7secret")
	t.Setenv("CLOUDSTACK_PD_SERVER_RAPID_COMMIT", "true")
	t.Setenv("CLOUDSTACK_PD_SERVR_WORKERS", "4") // a typo
	path := filepath.Join(t.TempDir(), "config.yaml")
	testenv.WriteFile(t, path, checkConfigMinimal)
	out, err := runCLI(t, "check-config", "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "zq7secret") || !strings.Contains(out, "secretkey: (set)") || !strings.Contains(out, "rapid-commit: true") {
		t.Errorf("output:\n%s", out)
	}
	if !strings.Contains(out, "warning: CLOUDSTACK_PD_SERVR_WORKERS is set but names no config key") {
		t.Errorf("no warning about the mistyped variable:\n%s", out)
	}
}

func TestCheckConfigWarnsWithoutListen(t *testing.T) {
	out, stderr, err := checkConfig(t, "config.json", `{"mapping": {"pod-a": {"pool": "2001:db8:200::/40", "interface-id": "V"}}}`, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if out != "" {
		t.Errorf("--quiet printed:\n%s", out)
	}
	if !strings.Contains(stderr, "warning: server.listen: empty") {
		t.Errorf("stderr %q", stderr)
	}
}

// TestCheckConfigInvalidNamesTheKey runs check-config on each kind of
// invalid config: the error lists the key and the value at fault.
func TestCheckConfigInvalidNamesTheKey(t *testing.T) {
	base := "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\n"
	tests := []struct {
		name    string
		yaml    string
		wantKey string
		wantVal string
	}{
		{"pool not a prefix", "mapping:\n  pod-a:\n    pool: 2001:db8:200::/400\n    interface-id: V\n", "mapping.pod-a.pool", "2001:db8:200::/400"},
		{"pool missing", "mapping:\n  pod-a:\n    interface-id: V\n", "mapping.pod-a.pool", "missing"},
		{"pool IPv4", "mapping:\n  pod-a:\n    pool: 10.0.0.0/8\n    interface-id: V\n", "mapping.pod-a.pool", "not an IPv6 prefix"},
		{"pool host bits", "mapping:\n  pod-a:\n    pool: 2001:db8:201::/40\n    interface-id: V\n", "mapping.pod-a.pool", "did you mean 2001:db8:200::/40"},
		{"pools overlap", base + "  pod-b:\n    pool: 2001:db8:200::/44\n    interface-id: W\n", "mapping.pod-b.pool", "overlaps"},
		{"prefix-len shorter than pool", "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    prefix-len: 32\n    interface-id: V\n", "mapping.pod-a.prefix-len", `"32"`},
		{"prefix-len not a number", base + "    prefix-len: sixty\n", "mapping.pod-a.prefix-len", "cannot parse value as 'int'"},
		{"interface-id missing", "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n", "mapping.pod-a.interface-id", "missing"},
		{"interface-id twice", base + "  pod-b:\n    pool: 2001:db8:300::/40\n    interface-id: VLAN2701\n", "mapping.pod-b.interface-id", "also used by mapping.pod-a"},
		{"ip6-cidr bad", base + "    ip6-cidr: nope\n", "mapping.pod-a.ip6-cidr", "nope"},
		{"vlan out of range", base + "    vlan: 5000\n", "mapping.pod-a.vlan", "5000"},
		{"listen not addr:port", base + "server:\n  listen: [\"2001:db8::1\"]\n", "server.listen[0]", "2001:db8::1"},
		{"listen IPv4", base + "server:\n  listen: [\"127.0.0.1:547\"]\n", "server.listen[0]", "not an IPv6 address"},
		{"listen multicast", base + "server:\n  listen: [\"[ff02::1:2]:547\"]\n", "server.listen[0]", "multicast"},
		{"mac source unknown", base + "server:\n  mac-sources: [remote-id, any]\n", "server.mac-sources[1]", "any"},
		{"mac sources empty", base + "server:\n  mac-sources: []\n", "server.mac-sources", "empty"},
		{"trusted relay bad", base + "server:\n  trusted-relays: [\"x/1\"]\n", "server.trusted-relays[0]", "x/1"},
		{"timers out of order", base + "server:\n  renew-timer: 3000\n", "server.renew-timer", "3000"},
		{"preferred above valid", base + "server:\n  preferred-lifetime: 200000\n", "server.preferred-lifetime", "200000"},
		{"valid lifetime zero", base + "server:\n  valid-lifetime: 0\n  preferred-lifetime: 0\n  renew-timer: 0\n  rebind-timer: 0\n", "server.valid-lifetime", "positive"},
		{"lifetime not a number", base + "server:\n  valid-lifetime: forever\n", "server.valid-lifetime", "forever"},
		{"negative workers", base + "server:\n  workers: -1\n", "server.workers", "-1"},
		{"unknown key (typo)", base + "server:\n  rapid_commit: true\n", "server.rapid_commit", "unknown key"},
		{"unknown mapping key", base + "    prefixlen: 60\n", "mapping.pod-a.prefixlen", "unknown key"},
		{"unknown section", base + "logging:\n  level: debug\n", "logging", "unknown key"},
		{"empty state", base + "state: \"\"\n", "state", "empty"},
		{"log level", base + "log:\n  level: loud\n", "log.level", "loud"},
		{"log format", base + "log:\n  format: xml\n", "log.format", "xml"},
		{"not YAML", "mapping: [\n", "(file)", "cannot parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := checkConfig(t, "config.yaml", tt.yaml, nil, false)
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *config.Error", err)
			}
			if out != "" {
				t.Errorf("an invalid config was printed:\n%s", out)
			}
			var line string
			for _, p := range ce.Problems {
				if s := p.String(); strings.HasPrefix(s, tt.wantKey+":") {
					line = s
				}
			}
			if line == "" || !strings.Contains(line, tt.wantVal) {
				t.Errorf("no problem line for key %q with %q:\n%v", tt.wantKey, tt.wantVal, err)
			}
		})
	}
}

func TestCheckConfigMasksSecretsInProblems(t *testing.T) {
	_, _, err := checkConfig(t, "config.yaml", "api:\n  secretkey: [s3cr3t-1]\n  apikey: {k: s3cr3t-2}\n"+checkConfigMinimal, nil, false)
	if err == nil {
		t.Fatal("a list as api.secretkey accepted")
	}
	msg := err.Error()
	if strings.Contains(msg, "s3cr3t") || !strings.Contains(msg, `api.secretkey: "(set)"`) || !strings.Contains(msg, `api.apikey: "(set)"`) {
		t.Errorf("problems:\n%s", msg)
	}
}

func TestCheckConfigListsEveryProblem(t *testing.T) {
	_, _, err := checkConfig(t, "config.yaml",
		"mapping:\n  pod-a:\n    pool: bad\n  pod-b:\n    pool: 2001:db8::/40\nserver:\n  mac-sources: [nope]\nlog:\n  format: xml\n", nil, false)
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v", err)
	}
	msg := err.Error()
	for _, key := range []string{"mapping.pod-a.pool", "mapping.pod-a.interface-id", "mapping.pod-b.interface-id", "server.mac-sources[0]", "log.format"} {
		if !strings.Contains(msg, "\n  "+key+":") {
			t.Errorf("problem of %s not listed:\n%s", key, msg)
		}
	}
	if !strings.Contains(msg, "5 problem(s)") {
		t.Errorf("count: %s", msg)
	}
}

func TestCheckConfigMissingFile(t *testing.T) {
	_, err := runCLI(t, "check-config", "--config", filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "nope.yaml") {
		t.Errorf("err = %v", err)
	}
}

// TestCheckConfigExitStatus runs the binary: status 1 and every problem on
// standard error for an invalid config, status 0 for a valid one.
func TestCheckConfigExitStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := testenv.BuildBinary(t, ".")
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	testenv.WriteFile(t, bad, "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    prefixlen: 60\n    interface-id: V\nserver:\n  valid-lifetime: forever\n")
	cmd := exec.Command(bin, "check-config", "--config", bad)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"2 problem(s)", "mapping.pod-a.prefixlen: unknown key", `server.valid-lifetime: "forever"`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout: %s", stdout.String())
	}

	good := filepath.Join(dir, "good.yaml")
	testenv.WriteFile(t, good, checkConfigMinimal)
	out, err := exec.Command(bin, "check-config", "-c", good).Output()
	if err != nil || !strings.Contains(string(out), "is valid") {
		t.Errorf("valid config: %v\n%s", err, out)
	}
}

// TestExampleConfigJSON: the old generator's config.json shape in
// example/ loads unchanged and holds the same pools as the YAML example.
func TestExampleConfigJSON(t *testing.T) {
	j, err := config.Load("../../example/config.json")
	if err != nil {
		t.Fatal(err)
	}
	y, err := config.Load("../../example/cloudstack-pd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(j.Pools(), y.Pools()) || len(j.Pools()) != 2 {
		t.Errorf("pools differ:\njson %+v\nyaml %+v", j.Pools(), y.Pools())
	}
	if j.API.URL != y.API.URL {
		t.Errorf("api.url %q vs %q", j.API.URL, y.API.URL)
	}
	// Only the old generator's sections.
	var raw map[string]any
	data, _ := os.ReadFile("../../example/config.json")
	if err := yaml.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) != 2 || raw["api"] == nil || raw["mapping"] == nil {
		t.Errorf("example/config.json has sections %v, want only api and mapping", raw)
	}
}

// TestExampleSystemdUnit checks example/cloudstack-pd.service with
// systemd-analyze verify, when it is installed.
func TestExampleSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("../../example/cloudstack-pd.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"User=cloudstack-pd", "DynamicUser=no", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "StateDirectory=cloudstack-pd",
		"ExecStart=/usr/local/bin/cloudstack-pd serve --config /etc/cloudstack-pd/config.yaml",
		"ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "NoNewPrivileges=yes",
		"ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "TimeoutStopSec=",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "EnvironmentFile=",
	} {
		if !bytes.Contains(unit, []byte("\n"+want)) {
			t.Errorf("unit lacks %q", want)
		}
	}
	analyze := testenv.Tool(t, "systemd-analyze")
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1)")
	}
	// verify insists that the binary exists: stand one in.
	path := filepath.Join(t.TempDir(), "cloudstack-pd.service")
	testenv.WriteFile(t, path, strings.ReplaceAll(string(unit), "/usr/local/bin/cloudstack-pd", truePath))
	// The man page of Documentation= is installed by the package, whose
	// own unit .ci/deb-check verifies with it.
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		// verify exits 0 on unknown keys and bad values, but says so.
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestExampleJunosRelay checks that example/junos-relay.conf goes with
// the example config: every pool's interface-id is a relayed unit's
// description, the relay inserts options 18, 37 and 79, and the braces
// balance.
func TestExampleJunosRelay(t *testing.T) {
	data, err := os.ReadFile("../../example/junos-relay.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(data)
	code := regexp.MustCompile(`(?s)/\*.*?\*/`).ReplaceAllString(conf, "")
	if strings.Count(code, "{") != strings.Count(code, "}") {
		t.Errorf("braces do not balance: %d { and %d }", strings.Count(code, "{"), strings.Count(code, "}"))
	}
	for _, line := range strings.Split(code, "\n") {
		l := strings.TrimSpace(line)
		if l != "" && !strings.HasSuffix(l, "{") && !strings.HasSuffix(l, "}") && !strings.HasSuffix(l, ";") {
			t.Errorf("statement without ; or braces: %q", l)
		}
	}
	for _, want := range []string{"server-group", "active-server-group cloudstack-pd;", "interface irb.2701;", "interface irb.2702;",
		"relay-agent-interface-id", "relay-agent-remote-id", "relay-agent-option-79;"} {
		if !strings.Contains(code, want) {
			t.Errorf("relay config lacks %q", want)
		}
	}
	cfg, err := config.Load("../../example/cloudstack-pd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range cfg.Pools() {
		if !strings.Contains(code, "description "+p.InterfaceID+";") {
			t.Errorf("no relayed unit is described %q (pool %s)", p.InterfaceID, p.Name)
		}
		if p.IP6CIDR.IsValid() && !strings.Contains(code, p.IP6CIDR.Addr().Next().String()+"/"+"64") {
			t.Errorf("no IRB address in %s (pool %s)", p.IP6CIDR, p.Name)
		}
	}
}

// TestCheckConfigNeverPrintsSecrets runs the check-config command on
// configs whose secrets sit where they should not, in every shape, with
// secrets from the environment too: no secret (each holds "s3cr3t") is
// printed, on standard output, standard error or in the error, and the
// problem still names its key.
func TestCheckConfigNeverPrintsSecrets(t *testing.T) {
	const base = "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\n"
	tests := []struct {
		name, file, text string
		env              map[string]string
		want             string
	}{
		{"api as a list", "config.yaml", base + "api:\n  - url: https://cloud/client/api\n    apikey: AK-s3cr3t-1\n    secretkey: SK-s3cr3t-2\n", nil, "api: (a list, not shown)"},
		{"api as a list, the old config.json", "config.json", `{"api": [{"url": "https://cloud/client/api", "apikey": "AK-s3cr3t-1", "secretkey": "SK-s3cr3t-2"}],
			"mapping": {"pod-a": {"pool": "2001:db8:200::/40", "interface-id": "V"}}}`, nil, "api: (a list, not shown)"},
		{"api as a string", "config.yaml", base + "api: SK-s3cr3t-2\n", nil, "api: (a string, not shown: api holds secrets)"},
		{"secret nested in api.url", "config.yaml", base + "api:\n  url: {secretkey: SK-s3cr3t-2}\n", nil, "api.url: (a map, not shown)"},
		{"yaml type error quoting the secret", "config.yaml", base + "api:\n  secretkey: !!int SK-s3cr3t-2\n", nil, "(file): cannot parse"},
		{"url with user info", "config.yaml", base + "api:\n  url: https://admin:pw-s3cr3t-3@cloud.example.com/client/api\n", nil,
			`api.url: "https://xxxxx@cloud.example.com/client/api"`},
		{"url with a signed query", "config.yaml", base + "api:\n  url: https://cloud.example.com/client/api?apikey=AK-s3cr3t-1&signature=S-s3cr3t-4\n", nil,
			`api.url: "https://cloud.example.com/client/api?apikey=xxxxx&signature=xxxxx"`},
		{"url with user info from the environment, secrets too", "config.yaml", base,
			map[string]string{"CLOUDSTACK_PD_API_URL": "https://admin:pw-s3cr3t-3@cloud/client/api", "CLOUDSTACK_PD_API_SECRETKEY": "SK-s3cr3t-2"},
			`api.url: "https://xxxxx@cloud/client/api"`},
		{"queue-length too long, secrets set", "config.yaml", base + "api:\n  apikey: AK-s3cr3t-1\n  secretkey: SK-s3cr3t-2\nserver:\n  queue-length: 100000\n", nil,
			`server.queue-length: "100000": must be 0 (default 1024) to 16384`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			path := filepath.Join(t.TempDir(), tt.file)
			testenv.WriteFile(t, path, tt.text)
			out, err := runCLI(t, "check-config", "--config", path)
			if err == nil {
				t.Fatalf("accepted:\n%s", out)
			}
			all := out + "\n" + err.Error()
			if strings.Contains(strings.ToLower(all), "s3cr3t") {
				t.Errorf("a secret is printed:\n%s", all)
			}
			if !strings.Contains(err.Error(), "\n  "+tt.want) {
				t.Errorf("no problem %q:\n%s", tt.want, all)
			}
		})
	}
}
