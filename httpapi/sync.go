package httpapi

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudstack-pd/cloudstack-pd/server"
)

// The outcomes of a sync run, label values of cloudstack_pd_sync_runs_total.
const (
	// SyncOK: the listing was complete and the new table is in force.
	SyncOK = "ok"
	// SyncFailed: CloudStack or the store failed; nothing changed.
	SyncFailed = "failed"
	// SyncRefused: the safety valve refused the run (too many NICs would
	// go at once); nothing changed.
	SyncRefused = "refused"
)

// SyncOutcomes lists the outcomes, for documentation and metric set-up.
var SyncOutcomes = []string{SyncOK, SyncFailed, SyncRefused}

// SyncChangeKinds lists the kinds of change a sync counts, label values of
// cloudstack_pd_sync_changes_total: new NICs that got a prefix (added),
// NICs newly missing (gone), gone NICs that came back in time (returned),
// prefixes released into quarantine (quarantined), and quarantined
// prefixes freed for reuse (released). Allocations a sync leaves as they
// were are no change: they set the gauge cloudstack_pd_sync_kept_allocations
// (SyncKept).
var SyncChangeKinds = []string{"added", "gone", "returned", "quarantined", "released"}

// SyncKept is the key of Observe's changes whose count, allocations left
// as they were, sets the kept gauge instead of counting a change.
const SyncKept = "kept"

// SyncMetrics are the CloudStack sync's metrics. Register them only when a
// sync is configured: the stale-sync alert reads the last-success gauge.
type SyncMetrics struct {
	// Runs counts sync runs by outcome.
	Runs *prometheus.CounterVec
	// LastSuccess is the Unix time the last successful run finished.
	LastSuccess prometheus.Gauge
	// Duration observes how long each run took, whatever its outcome.
	Duration prometheus.Histogram
	// Changes counts what successful runs changed, by kind.
	Changes *prometheus.CounterVec
	// Kept is how many allocations the last successful run left as they were.
	Kept prometheus.Gauge
	// Conflicts is, by pool, how many NICs the last successful run could
	// not give a prefix (SetConflicts).
	Conflicts *prometheus.GaugeVec

	last atomic.Int64 // Unix nanoseconds of the last success; 0: none
}

// NewSyncMetrics creates the sync metrics and registers them with reg
// (nil: not registered). It panics when reg already has them, as
// server.NewMetrics does.
func NewSyncMetrics(reg prometheus.Registerer) *SyncMetrics {
	m := &SyncMetrics{
		Runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: server.Namespace, Name: "sync_runs_total",
			Help: "CloudStack sync runs, by outcome (ok, failed, refused).",
		}, []string{"outcome"}),
		LastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: server.Namespace, Name: "sync_last_success_timestamp_seconds",
			Help: "Unix time the last successful CloudStack sync finished; 0 before the first.",
		}),
		Duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: server.Namespace, Name: "sync_duration_seconds",
			Help:    "Time a CloudStack sync run took, whatever its outcome.",
			Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}),
		Changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: server.Namespace, Name: "sync_changes_total",
			Help: "Allocation changes made by successful syncs, by kind (added, gone, returned, quarantined, released).",
		}, []string{"kind"}),
		Kept: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: server.Namespace, Name: "sync_kept_allocations",
			Help: "Allocations the last successful CloudStack sync found listed and left as they were.",
		}),
		Conflicts: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: server.Namespace, Name: "sync_conflicts",
			Help: "NICs the last successful CloudStack sync could not give a prefix (a conflict: the sync log names each), by pool.",
		}, []string{"pool"}),
	}
	for _, o := range SyncOutcomes {
		m.Runs.WithLabelValues(o)
	}
	for _, k := range SyncChangeKinds {
		m.Changes.WithLabelValues(k)
	}
	if reg != nil {
		reg.MustRegister(m.Runs, m.LastSuccess, m.Duration, m.Changes, m.Kept, m.Conflicts)
	}
	return m
}

// Observe records one sync run that finished at at, took d and ended with
// outcome (SyncOK, SyncFailed or SyncRefused). changes, by kind (see
// SyncChangeKinds), are counted only for SyncOK: a failed or refused run
// changes nothing. Negative counts are ignored. changes[SyncKept] sets
// the kept gauge.
func (m *SyncMetrics) Observe(outcome string, d time.Duration, changes map[string]int, at time.Time) {
	m.Runs.WithLabelValues(outcome).Inc()
	m.Duration.Observe(d.Seconds())
	if outcome != SyncOK {
		return
	}
	m.LastSuccess.Set(float64(at.UnixNano()) / 1e9)
	m.last.Store(at.UnixNano())
	for kind, n := range changes {
		switch {
		case kind == SyncKept:
			m.Kept.Set(float64(max(n, 0)))
		case n > 0:
			m.Changes.WithLabelValues(kind).Add(float64(n))
		}
	}
}

// SetConflicts sets the conflicts gauge to byPool, the conflicts of the
// last successful sync by pool: every pool the sync went through, with
// 0 for none. Pools it does not name lose their series.
func (m *SyncMetrics) SetConflicts(byPool map[string]int) {
	m.Conflicts.Reset()
	for pool, n := range byPool {
		m.Conflicts.WithLabelValues(pool).Set(float64(n))
	}
}

// LastSuccessTime returns when the last successful run finished (zero: none),
// for Readiness.LastSync.
func (m *SyncMetrics) LastSuccessTime() time.Time {
	ns := m.last.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
