package server

import "github.com/prometheus/client_golang/prometheus"

// LeasequeryMetrics count Leasequery and Bulk Leasequery (leasequery.go,
// bulk.go).
type LeasequeryMetrics struct {
	// Queries counts leasequeries by transport (udp, tcp), query type
	// (address, client-id, relay-id, link-address, remote-id, unknown)
	// and outcome (the LQ constants).
	Queries *prometheus.CounterVec
	// Bindings counts the bindings answered (OPTION_CLIENT_DATA sent), by
	// transport.
	Bindings *prometheus.CounterVec
	// Connections is the number of Bulk Leasequery connections open.
	Connections prometheus.Gauge
	// ConnectionsClosed counts Bulk Leasequery connections closed, by
	// reason (the Close constants).
	ConnectionsClosed *prometheus.CounterVec
}

// Reasons a Bulk Leasequery connection is closed: the reason label of
// leasequery_connections_closed_total.
const (
	CloseDone       = "done"            // the requestor closed it
	CloseNotAllowed = "not-allowed"     // the requestor is not in server.leasequery.requestors
	CloseFull       = "max-connections" // server.leasequery.max-connections are open
	CloseIdle       = "idle"            // no query within the idle timeout
	CloseSlow       = "slow"            // a frame took too long to arrive, or an answer to be taken
	CloseTruncated  = "truncated"       // the stream ended inside a frame
	CloseOversized  = "oversized"       // a frame longer than a query can be (or empty)
	CloseMalformed  = "malformed"       // a frame that is not a LEASEQUERY for this server
	CloseError      = "error"           // the connection failed
	CloseShutdown   = "shutdown"        // the server stopped
)

var closeReasons = []string{CloseDone, CloseNotAllowed, CloseFull, CloseIdle, CloseSlow, CloseTruncated,
	CloseOversized, CloseMalformed, CloseError, CloseShutdown}

func newLeasequeryMetrics() *LeasequeryMetrics {
	m := &LeasequeryMetrics{
		Queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "leasequeries_total",
			Help: "Leasequeries answered, by transport (udp, tcp), query type (address, client-id, relay-id, link-address, remote-id, unknown) and outcome (found, not-found, not-allowed, unknown-type, malformed, error, terminated).",
		}, []string{"transport", "type", "outcome"}),
		Bindings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "leasequery_bindings_total",
			Help: "Bindings sent in leasequery answers, by transport.",
		}, []string{"transport"}),
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "leasequery_connections",
			Help: "Bulk Leasequery TCP connections open.",
		}),
		ConnectionsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "leasequery_connections_closed_total",
			Help: "Bulk Leasequery TCP connections closed, by reason (done, not-allowed, max-connections, idle, slow, truncated, oversized, malformed, error, shutdown).",
		}, []string{"reason"}),
	}
	for _, tr := range []string{"udp", "tcp"} {
		m.Bindings.WithLabelValues(tr)
	}
	for _, r := range closeReasons {
		m.ConnectionsClosed.WithLabelValues(r)
	}
	return m
}

func (m *LeasequeryMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Queries, m.Bindings, m.Connections, m.ConnectionsClosed}
}

func (m *LeasequeryMetrics) count(transport, typ, outcome string) {
	m.Queries.WithLabelValues(transport, typ, outcome).Inc()
}
