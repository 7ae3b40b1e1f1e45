package httpapi

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudstack-pd/cloudstack-pd/server"
)

// ClusterState is what a server in a cluster reports of the table it
// follows (allocator/etcdstore's watch state).
type ClusterState struct {
	// Watching: the server follows the table in etcd now.
	Watching bool
	// Revision is the etcd revision of the table answered from.
	Revision int64
	// Confirmed is when etcd last confirmed the table current.
	Confirmed time.Time
}

// NewClusterMetrics registers the cluster metrics of a server in a
// cluster (docs/ha.md) and returns the leader gauge, which the election
// sets: cluster_leader, cluster_watch_connected, cluster_table_revision,
// cluster_table_age_seconds.
func NewClusterMetrics(reg prometheus.Registerer, state func() ClusterState, now func() time.Time) prometheus.Gauge {
	ns := server.Namespace
	leader := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "cluster_leader",
		Help: "1 on the server elected to sync from CloudStack (the syncer), 0 on the others."})
	reg.MustRegister(leader,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "cluster_watch_connected",
			Help: "1 while this server follows the table in etcd by watch, 0 while it answers from the last table it has."},
			func() float64 {
				if state().Watching {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "cluster_table_revision",
			Help: "The etcd revision of the table this server answers from."},
			func() float64 { return float64(state().Revision) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "cluster_table_age_seconds",
			Help: "Seconds since etcd last confirmed this server's table current (events or progress on the watch): small while it follows etcd, growing while etcd is out of reach."},
			func() float64 {
				s := state()
				if s.Confirmed.IsZero() {
					return 0
				}
				return now().Sub(s.Confirmed).Seconds()
			}),
	)
	return leader
}
