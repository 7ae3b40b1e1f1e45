package webhook

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudstack-pd/cloudstack-pd/server"
)

// The outcomes of a delivery, label values of
// cloudstack_pd_webhook_deliveries_total.
const (
	// OutcomeAccepted: signed, new, and handed to the sync (200).
	OutcomeAccepted = "accepted"
	// OutcomeIgnored: signed and new, of a type that changes no NIC (200).
	OutcomeIgnored = "ignored"
	// OutcomeDuplicate: an X-CS-Event-ID seen before (200, nothing done).
	OutcomeDuplicate = "duplicate"
	// OutcomeUnauthorized: no valid signature (401, nothing done).
	OutcomeUnauthorized = "unauthorized"
	// OutcomeTooLarge: a body over MaxBody (413, nothing done).
	OutcomeTooLarge = "too-large"
	// OutcomeBadRequest: not a POST to "/" with a JSON event (404, 405 or
	// 400, nothing done).
	OutcomeBadRequest = "bad-request"
)

// Outcomes lists the outcomes.
var Outcomes = []string{OutcomeAccepted, OutcomeIgnored, OutcomeDuplicate, OutcomeUnauthorized, OutcomeTooLarge, OutcomeBadRequest}

// Metrics are the webhook listener's metrics.
type Metrics struct {
	// Deliveries counts deliveries by event (an acted-on type, else
	// "other") and outcome.
	Deliveries *prometheus.CounterVec
	// SignatureFailures counts deliveries refused for their signature, by
	// reason: missing, invalid.
	SignatureFailures *prometheus.CounterVec
	// EventToServed observes, for each event that asked for a sync, the
	// time from its delivery to the end of the sync that handled it (the
	// table that sync swapped in serves it).
	EventToServed prometheus.Histogram
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: server.Namespace, Name: "webhook_deliveries_total",
			Help: "CloudStack webhook deliveries, by event type (the types acted on, else other) and outcome (accepted, ignored, duplicate, unauthorized, too-large, bad-request).",
		}, []string{"event", "outcome"}),
		SignatureFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: server.Namespace, Name: "webhook_signature_failures_total",
			Help: "Webhook deliveries refused with 401 for their X-CS-Signature, by reason (missing, invalid).",
		}, []string{"reason"}),
		EventToServed: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: server.Namespace, Name: "webhook_event_to_served_seconds",
			Help:    "Time from a webhook delivery that asked for a sync to the end of the sync that handled it.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
	}
	for _, r := range []string{"missing", "invalid"} {
		m.SignatureFailures.WithLabelValues(r)
	}
	for _, e := range append(EventTypes(), "other") {
		for _, o := range Outcomes {
			m.Deliveries.WithLabelValues(e, o)
		}
	}
	if reg != nil {
		reg.MustRegister(m.Deliveries, m.SignatureFailures, m.EventToServed)
	}
	return m
}

// ObserveServed records that an event delivered at received is served
// at now.
func (m *Metrics) ObserveServed(received, now time.Time) {
	if m == nil {
		return
	}
	m.EventToServed.Observe(max(now.Sub(received), 0).Seconds())
}
