package httpapi

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/server"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

const (
	alertsFile     = "../docs/alerts.yml"
	operationsFile = "../docs/operations.md"
)

// descRecorder is a Registerer that notes the names of the metrics
// registered with it, children or not.
type descRecorder struct{ names map[string]bool }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d *descRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		if m := fqName.FindStringSubmatch(desc.String()); m != nil {
			d.names[m[1]] = true
		}
	}
	return nil
}

func (d *descRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = d.Register(c)
	}
}

func (d *descRecorder) Unregister(prometheus.Collector) bool { return false }

// countingFile is a store file that counts its bindings, as
// allocator.Store does.
type countingFile struct{ missingFile }

func (countingFile) CountBindings() (int, error) { return 0, nil }

// exportedMetrics names every cloudstack_pd metric a server exports.
func exportedMetrics(t *testing.T) []string {
	t.Helper()
	d := &descRecorder{names: map[string]bool{}}
	server.NewMetrics(d)
	if err := NewCollectors(d, allocator.NewLive(nil), countingFile{}, "x"); err != nil {
		t.Fatal(err)
	}
	NewSyncMetrics(d)
	NewClusterMetrics(d, func() ClusterState { return ClusterState{} }, time.Now)
	NewReloadMetrics(d)
	d.MustRegister(server.NewRecorder(nil, 0, nil).Collectors()...)
	d.MustRegister((&server.Listener{}).Collectors()...)
	var out []string
	for n := range d.names {
		if strings.HasPrefix(n, server.Namespace+"_") {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	if len(out) < 15 {
		t.Fatalf("only %d metrics found: %v", len(out), out)
	}
	return out
}

// TestExampleAlertRulesNameRealMetrics: every cloudstack_pd metric an
// alert uses exists, and docs/operations.md explains every metric and
// every alert.
func TestExampleAlertRulesNameRealMetrics(t *testing.T) {
	rules, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := os.ReadFile(operationsFile)
	if err != nil {
		t.Fatal(err)
	}
	metrics := exportedMetrics(t)
	for _, used := range regexp.MustCompile(`cloudstack_pd_[a-z0-9_]+`).FindAllString(string(rules), -1) {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(used, "_bucket"), "_sum"), "_count")
		if !slices.Contains(metrics, base) {
			t.Errorf("docs/alerts.yml uses %s, which no collector exports", used)
		}
	}
	for _, m := range metrics {
		if !strings.Contains(string(ops), m) {
			t.Errorf("docs/operations.md does not explain %s", m)
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*- alert: (\S+)`).FindAllStringSubmatch(string(rules), -1) {
		if !strings.Contains(string(ops), m[1]) {
			t.Errorf("docs/operations.md does not explain alert %s", m[1])
		}
	}
	for _, r := range server.Reasons {
		if !strings.Contains(string(ops), "`"+string(r)+"`") {
			t.Errorf("docs/operations.md does not explain drop reason %s", r)
		}
	}
}

// promtoolTests are unit tests of the alert rules, run by promtool test
// rules. Series are sampled every minute.
const promtoolTests = `
rule_files: [RULES]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'cloudstack_pd_pool_prefixes{instance="a",job="cloudstack-pd",pool="pod-a",interface_id="VLAN2701"}'
        values: '100+0x120'
      - series: 'cloudstack_pd_pool_allocations{instance="a",job="cloudstack-pd",pool="pod-a",interface_id="VLAN2701",state="active"}'
        values: '90+0x120'
      - series: 'cloudstack_pd_pool_allocations{instance="a",job="cloudstack-pd",pool="pod-a",interface_id="VLAN2701",state="quarantined"}'
        values: '5+0x120'
      - series: 'cloudstack_pd_pool_prefixes{instance="a",job="cloudstack-pd",pool="pod-b",interface_id="VLAN2702"}'
        values: '100+0x120'
      - series: 'cloudstack_pd_pool_allocations{instance="a",job="cloudstack-pd",pool="pod-b",interface_id="VLAN2702",state="active"}'
        values: '50+0x120'
    alert_rule_test:
      - eval_time: 30m
        alertname: CloudstackPDPoolNearlyFull
        exp_alerts: []
      - eval_time: 90m
        alertname: CloudstackPDPoolNearlyFull
        exp_alerts:
          - exp_labels: {severity: warning, instance: a, pool: pod-a}
            exp_annotations:
              summary: "Pool pod-a is 95% full on a"
              description: "Active, gone and quarantined allocations all hold a prefix. When the pool is full, new NICs get none: add a pool (a new mapping) or shorten release-after/quarantine."
      - eval_time: 90m
        alertname: CloudstackPDPoolFull
        exp_alerts: []

  - interval: 1m
    input_series:
      - series: 'cloudstack_pd_drops_total{instance="a",job="cloudstack-pd",reason="panic"}'
        values: '0 0 0 1 1 1'
      - series: 'cloudstack_pd_drops_total{instance="a",job="cloudstack-pd",reason="unrelayed"}'
        values: '0+1x40'
      - series: 'cloudstack_pd_packets_received_total{instance="a",job="cloudstack-pd",type="RELAY-FORW"}'
        values: '0+10x40'
      - series: 'cloudstack_pd_packets_answered_total{instance="a",job="cloudstack-pd",type="REPLY"}'
        values: '0+9x40'
    alert_rule_test:
      - eval_time: 5m
        alertname: CloudstackPDPanic
        exp_alerts:
          - exp_labels: {severity: critical, instance: a, job: cloudstack-pd, reason: panic}
            exp_annotations:
              summary: "cloudstack-pd on a panicked handling a packet"
              description: "A bug: the packet was dropped and the server went on. The log holds the packet in hex and the stack; file them with the project."
      - eval_time: 35m
        alertname: CloudstackPDDropRate
        exp_alerts:
          - exp_labels: {severity: warning, instance: a, reason: unrelayed}
            exp_annotations:
              summary: "cloudstack-pd on a drops 10% of packets as unrelayed"
              description: "See docs/operations.md, Alerts, for what each drop reason means."
      - eval_time: 35m
        alertname: CloudstackPDNoAnswers
        exp_alerts: []

  - interval: 1m
    input_series:
      - series: 'up{instance="a",job="cloudstack-pd"}'
        values: '1+0x60'
      - series: 'cloudstack_pd_packets_received_total{instance="a",job="cloudstack-pd",type="RELAY-FORW"}'
        values: '0+10x60'
      - series: 'up{instance="b",job="cloudstack-pd"}'
        values: '1+0x60'
    alert_rule_test:
      - eval_time: 40m
        alertname: CloudstackPDNoAnswers
        exp_alerts:
          - exp_labels: {severity: critical, instance: a}
            exp_annotations:
              summary: "cloudstack-pd on a receives packets but answers none"
              description: "Every packet is dropped: look at cloudstack_pd_drops_total by reason (untrusted-relay after a router change? unrelayed?)."
      - eval_time: 50m
        alertname: CloudstackPDNoPackets
        exp_alerts:
          - exp_labels: {severity: warning, instance: b}
            exp_annotations:
              summary: "cloudstack-pd on b has received no DHCPv6 packet for 30 minutes"
              description: "VMs renew every renew-timer: silence means the relays do not reach the server (relay config, firewall, server.listen address)."

  - interval: 1m
    input_series:
      # a: one Decline at minute 10 into a series that starts at 0.
      - series: 'cloudstack_pd_answers_total{instance="a",job="cloudstack-pd",result="declined"}'
        values: '0x9 1+0x80'
      - series: 'cloudstack_pd_answers_total{instance="b",job="cloudstack-pd",result="declined"}'
        values: '0+0x90'
      # a: a conflict in pod-a for two hours; b: none.
      - series: 'cloudstack_pd_sync_conflicts{instance="a",job="cloudstack-pd",pool="pod-a"}'
        values: '2+0x90'
      - series: 'cloudstack_pd_sync_conflicts{instance="b",job="cloudstack-pd",pool="pod-a"}'
        values: '0+0x90'
      # a: every flush fails from minute 20; b: one failure, then none.
      - series: 'cloudstack_pd_bindings_flush_errors_total{instance="a",job="cloudstack-pd"}'
        values: '0x19 1+1x70'
      - series: 'cloudstack_pd_bindings_flush_errors_total{instance="b",job="cloudstack-pd"}'
        values: '0x19 1+0x70'
      - series: 'cloudstack_pd_config_last_reload_successful{instance="a",job="cloudstack-pd"}'
        values: '1x29 0x60'
      - series: 'cloudstack_pd_bindings_dropped_total{instance="a",job="cloudstack-pd",reason="pending-full"}'
        values: '0x49 50+0x40'
    alert_rule_test:
      - eval_time: 5m
        alertname: CloudstackPDDeclines
        exp_alerts: []
      - eval_time: 15m
        alertname: CloudstackPDDeclines
        exp_alerts:
          - exp_labels: {severity: warning, instance: a}
            exp_annotations:
              summary: "A VM declined its delegated prefix on a"
              description: "A Decline says the VM found the prefix in use on its link, or is misconfigured. The reservation stays the VM's and is never given to another. Find the VM in the debug log (Decline lines name the MAC and the prefix), then /v1/allocations?mac=..."
      - eval_time: 30m
        alertname: CloudstackPDSyncConflicts
        exp_alerts: []
      - eval_time: 70m
        alertname: CloudstackPDSyncConflicts
        exp_alerts:
          - exp_labels: {severity: warning, instance: a, pool: pod-a}
            exp_annotations:
              summary: "2 NIC(s) of pool pod-a get no prefix on a: sync conflicts"
              description: "The last successful sync could not give these NICs a prefix (each is logged as 'sync: conflict'). They get NoPrefixAvail until the conflict is resolved."
      - eval_time: 40m
        alertname: CloudstackPDBindingFlushFailing
        exp_alerts:
          - exp_labels: {severity: warning, instance: a, job: cloudstack-pd}
            exp_annotations:
              summary: "cloudstack-pd on a cannot write bindings to its store"
              description: "Every flush of the recorded bindings fails (the 'cannot record bindings' log line has the store's error: a full disk, an I/O error). Answers go on; bindings wait in memory, up to 20,000 IAs, then are dropped (cloudstack_pd_bindings_dropped_total). A sync will fail the same way."
      - eval_time: 40m
        alertname: CloudstackPDReloadFailed
        exp_alerts:
          - exp_labels: {severity: warning, instance: a, job: cloudstack-pd}
            exp_annotations:
              summary: "The last config reload of cloudstack-pd on a was refused"
              description: "The config before it stays in force, and a restart would fail on the file as it is. The 'reload refused' log line names each problem with its key; cloudstack-pd check-config shows them too."
      - eval_time: 55m
        alertname: CloudstackPDBindingsDropped
        exp_alerts:
          - exp_labels: {severity: warning, instance: a, reason: pending-full}
            exp_annotations:
              summary: "cloudstack-pd on a dropped bindings (pending-full)"
              description: "Bindings were not recorded (pending-full: a flood of new DUIDs or a failing store; the others: records the store cannot hold). Answers are not affected; the next Renew or Rebind records them again. See docs/operations.md, Metrics."

  - interval: 1m
    input_series:
      # a: never synced since its start at time 0; b: synced a minute ago, every minute.
      - series: 'cloudstack_pd_sync_last_success_timestamp_seconds{instance="a",job="cloudstack-pd"}'
        values: '0+0x90'
      - series: 'process_start_time_seconds{instance="a",job="cloudstack-pd"}'
        values: '0+0x90'
      - series: 'cloudstack_pd_sync_last_success_timestamp_seconds{instance="b",job="cloudstack-pd"}'
        values: '0+60x90'
      - series: 'process_start_time_seconds{instance="b",job="cloudstack-pd"}'
        values: '0+0x90'
      - series: 'cloudstack_pd_sync_runs_total{instance="a",job="cloudstack-pd",outcome="failed"}'
        values: '0+1x90'
      - series: 'cloudstack_pd_sync_runs_total{instance="a",job="cloudstack-pd",outcome="ok"}'
        values: '0+0x90'
      - series: 'cloudstack_pd_sync_runs_total{instance="b",job="cloudstack-pd",outcome="ok"}'
        values: '0+1x90'
      - series: 'cloudstack_pd_sync_runs_total{instance="b",job="cloudstack-pd",outcome="failed"}'
        values: '0+0x90'
    alert_rule_test:
      - eval_time: 50m
        alertname: CloudstackPDSyncStale
        exp_alerts: []
      - eval_time: 70m
        alertname: CloudstackPDSyncStale
        exp_alerts:
          - exp_labels: {severity: warning, instance: a, job: cloudstack-pd}
            exp_annotations:
              summary: "No successful CloudStack sync on a for over an hour"
              description: "New VMs get no prefix, gone VMs keep theirs. Answers go on from the stored table. /readyz lists the same as a warning."
      - eval_time: 40m
        alertname: CloudstackPDSyncFailing
        exp_alerts:
          - exp_labels: {severity: warning, instance: a}
            exp_annotations:
              summary: "Every CloudStack sync of cloudstack-pd on a failed for 30 minutes"
              description: "The server keeps answering from its stored table; new VMs get no prefix until a sync succeeds. The log line of each failed sync names the pod, the API call and CloudStack's errortext."
`

// TestExampleAlertRulesPromtool checks docs/alerts.yml with promtool and
// runs the rules' unit tests, when promtool is installed (Debian package
// prometheus).
func TestExampleAlertRulesPromtool(t *testing.T) {
	promtool := testenv.Tool(t, "promtool")
	rules, err := filepath.Abs(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", rules).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	tests := filepath.Join(t.TempDir(), "alerts_test.yml")
	if err := os.WriteFile(tests, []byte(strings.Replace(promtoolTests, "RULES", rules, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "test", "rules", tests).CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}
