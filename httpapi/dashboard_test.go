package httpapi

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

const dashboardFile = "../docs/grafana/cloudstack-pd.json"

// futureMetrics are names the dashboard may use before this tree exports
// them (none now).
var futureMetrics = []string{}

// dashboardQueries returns every PromQL query of the dashboard: the
// panels' targets (expr) and the template variables' queries, by where
// they are.
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	out := map[string]string{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || (k == "query" && strings.HasPrefix(s, "label_values("))) {
					out[path+"."+k] = s
					continue
				}
				walk(path+"."+k, x)
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), x)
			}
		}
	}
	walk("", d)
	return out
}

var metricName = regexp.MustCompile(`\b(cloudstack_pd_[a-z0-9_]+|process_[a-z0-9_]+|go_[a-z0-9_]+)\b`)

// TestDashboardQueriesNameRealMetrics: every metric a query of the
// Grafana dashboard reads is one the server exports (or the cluster
// leader, coming), and the dashboard covers what issue 15 asks of it.
func TestDashboardQueriesNameRealMetrics(t *testing.T) {
	queries := dashboardQueries(t)
	if len(queries) < 20 {
		t.Fatalf("only %d queries found in %s", len(queries), dashboardFile)
	}
	exported := exportedMetrics(t)
	used := map[string]bool{}
	for where, q := range queries {
		names := metricName.FindAllString(q, -1)
		if len(names) == 0 {
			t.Errorf("%s: %q reads no metric", where, q)
		}
		for _, n := range names {
			if strings.HasPrefix(n, "process_") || strings.HasPrefix(n, "go_") {
				continue // the standard collectors, registered by NewCollectors
			}
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")
			if !slices.Contains(exported, base) && !slices.Contains(exported, n) && !slices.Contains(futureMetrics, n) {
				t.Errorf("%s: %s is not a metric the server exports", where, n)
			}
			used[base] = true
		}
	}
	for _, want := range []string{
		"cloudstack_pd_packets_answered_total", "cloudstack_pd_answers_total", "cloudstack_pd_drops_total",
		"cloudstack_pd_handle_seconds", "cloudstack_pd_sync_runs_total", "cloudstack_pd_sync_last_success_timestamp_seconds",
		"cloudstack_pd_sync_conflicts", "cloudstack_pd_pool_allocations", "cloudstack_pd_pool_prefixes",
		"cloudstack_pd_bindings", "cloudstack_pd_cluster_leader",
	} {
		if !used[want] {
			t.Errorf("the dashboard has no panel on %s", want)
		}
	}
}

// grafanaVars stands in for Grafana's variables, so that promtool can
// parse the queries.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h", "$instance", ".*", "$job", ".*")

// TestDashboardQueriesParse: every query of the dashboard is valid
// PromQL, checked by promtool as recording rules.
func TestDashboardQueriesParse(t *testing.T) {
	promtool := testenv.Tool(t, "promtool")
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	for where, q := range dashboardQueries(t) {
		if strings.HasPrefix(q, "label_values(") {
			// A Grafana function, not PromQL: check its selector.
			q = strings.TrimSuffix(strings.TrimSpace(strings.SplitN(strings.TrimPrefix(q, "label_values("), ",", 2)[0]), ")")
		}
		q = grafanaVars.Replace(q)
		if strings.Contains(q, "$") {
			t.Errorf("%s: %q uses a variable the test does not know", where, q)
			continue
		}
		n++
		b, _ := json.Marshal(q)
		fmt.Fprintf(&rules, "      - record: dashboard:query_%d\n        expr: %s\n", n, b)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules on the dashboard's queries: %v\n%s\n%s", err, out, rules.String())
	}
}

// TestDashboardPanels: panel ids are unique and every panel reads from
// the dashboard's data source variable.
func TestDashboardPanels(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []json.RawMessage `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" {
		t.Error("no uid")
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %v, %d targets", p.Title, p.Datasource, len(p.Targets))
		}
	}
}
