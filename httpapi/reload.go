package httpapi

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudstack-pd/cloudstack-pd/server"
)

// ReloadMetrics say whether the last config reload (SIGHUP) was put in
// force, named as Prometheus and Alertmanager name theirs.
type ReloadMetrics struct {
	// Successful is 1 when the last reload was put in force, 0 when it
	// was refused (the config before it stays in force).
	Successful prometheus.Gauge
	// LastSuccess is the Unix time of the last reload put in force, or of
	// the start-up's load of the config.
	LastSuccess prometheus.Gauge
}

// NewReloadMetrics creates the reload metrics and registers them with reg
// (nil: not registered). The start-up's load counts as a success: call
// Observe(true, start) once the config is in force.
func NewReloadMetrics(reg prometheus.Registerer) *ReloadMetrics {
	m := &ReloadMetrics{
		Successful: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: server.Namespace, Name: "config_last_reload_successful",
			Help: "1 when the last config reload (SIGHUP) was put in force, 0 when it was refused and the config before it stays in force.",
		}),
		LastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: server.Namespace, Name: "config_last_reload_success_timestamp_seconds",
			Help: "Unix time the config in force was loaded: the last reload put in force, or the start.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Successful, m.LastSuccess)
	}
	return m
}

// Observe records a load of the config at at: put in force (ok) or refused.
func (m *ReloadMetrics) Observe(ok bool, at time.Time) {
	if !ok {
		m.Successful.Set(0)
		return
	}
	m.Successful.Set(1)
	m.LastSuccess.Set(float64(at.UnixNano()) / 1e9)
}
