package httpapi

import (
	"errors"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/buildinfo"
	"github.com/cloudstack-pd/cloudstack-pd/server"
)

// StoreFile is the store whose file size is exported. *allocator.Store is
// one, and a BindingCounter too.
type StoreFile interface {
	Path() string
}

// BindingCounter counts the recorded bindings (allocator.Store.CountBindings):
// a StoreFile that is one has cloudstack_pd_bindings exported.
type BindingCounter interface {
	CountBindings() (int, error)
}

// BindingsCountEvery is how long a count of the bindings is reused: the
// count walks every binding key, which a scrape every few seconds of a
// store of a million should not repeat.
const BindingsCountEvery = time.Minute

var (
	descPoolPrefixes = prometheus.NewDesc(
		prometheus.BuildFQName(server.Namespace, "pool", "prefixes"),
		"Delegable prefixes in the pool: 2^(prefix-len - pool length).",
		[]string{"pool", "interface_id"}, nil)
	descPoolAllocations = prometheus.NewDesc(
		prometheus.BuildFQName(server.Namespace, "pool", "allocations"),
		"Allocations in the pool by state: active and gone are served, quarantined are not; all three hold their prefix.",
		[]string{"pool", "interface_id", "state"}, nil)
	descTableLoaded = prometheus.NewDesc(
		prometheus.BuildFQName(server.Namespace, "table", "loaded"),
		"1 when an allocation table is in force, 0 before it is loaded.",
		nil, nil)
	descStoreSize = prometheus.NewDesc(
		prometheus.BuildFQName(server.Namespace, "store", "size_bytes"),
		"Size of the bbolt store file in bytes (bbolt files grow and do not shrink by themselves).",
		nil, nil)
	descBindings = prometheus.NewDesc(
		prometheus.BuildFQName(server.Namespace, "", "bindings"),
		"Bindings (delegations to an IA_PD, expired or not) recorded in the store, counted at most once a minute.",
		nil, nil)
	descStoreStatOK = prometheus.NewDesc(
		prometheus.BuildFQName(server.Namespace, "store", "stat_ok"),
		"1 when the store file could be read for its size at this scrape, 0 otherwise.",
		nil, nil)
)

// tableCollector exports the per-pool gauges of the table in force,
// computed at scrape time.
type tableCollector struct {
	table  allocator.Reader
	counts *countCache
}

func (c *tableCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPoolPrefixes
	ch <- descPoolAllocations
	ch <- descTableLoaded
}

func (c *tableCollector) Collect(ch chan<- prometheus.Metric) {
	var t *allocator.Table
	if c.table != nil {
		t = c.table.Current()
	}
	if t == nil {
		ch <- prometheus.MustNewConstMetric(descTableLoaded, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descTableLoaded, prometheus.GaugeValue, 1)
	counts := c.counts.get(t)
	pools := t.Pools()
	for i := range pools {
		p := &pools[i]
		ch <- prometheus.MustNewConstMetric(descPoolPrefixes, prometheus.GaugeValue, PoolSize(p), p.Name, p.InterfaceID)
		n := counts[p.Name]
		for _, s := range []struct {
			state allocator.State
			n     int
		}{{allocator.StateActive, n.Active}, {allocator.StateGone, n.Gone}, {allocator.StateQuarantined, n.Quarantined}} {
			ch <- prometheus.MustNewConstMetric(descPoolAllocations, prometheus.GaugeValue, float64(s.n), p.Name, p.InterfaceID, string(s.state))
		}
	}
}

// storeCollector exports the store file's size, read at scrape time, and
// the bindings' count, counted at most every BindingsCountEvery.
type storeCollector struct {
	store StoreFile
	now   func() time.Time

	mu      sync.Mutex
	counted time.Time // when n was counted; zero: never
	n       int
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descStoreSize
	ch <- descStoreStatOK
	if _, ok := c.store.(BindingCounter); ok {
		ch <- descBindings
	}
}

// bindings returns the count of bindings, counting again when the last
// count is older than BindingsCountEvery; false when the count fails.
func (c *storeCollector) bindings(bc BindingCounter) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if !c.counted.IsZero() && now.Sub(c.counted) < BindingsCountEvery {
		return c.n, true
	}
	n, err := bc.CountBindings()
	if err != nil {
		return 0, false
	}
	c.counted, c.n = now, n
	return n, true
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	if bc, ok := c.store.(BindingCounter); ok {
		if n, ok := c.bindings(bc); ok {
			ch <- prometheus.MustNewConstMetric(descBindings, prometheus.GaugeValue, float64(n))
		}
	}
	fi, err := os.Stat(c.store.Path())
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descStoreStatOK, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descStoreStatOK, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(descStoreSize, prometheus.GaugeValue, float64(fi.Size()))
}

// NewCollectors registers with reg the gauges computed at scrape time:
//
//   - cloudstack_pd_pool_prefixes{pool,interface_id}: the pool's size;
//   - cloudstack_pd_pool_allocations{pool,interface_id,state}: allocations by
//     state (active, gone, quarantined), from the table in force, counted
//     once per table snapshot;
//   - cloudstack_pd_table_loaded: 1 once a table is in force;
//   - cloudstack_pd_store_size_bytes and cloudstack_pd_store_stat_ok: the
//     store file's size (store nil: not exported);
//   - cloudstack_pd_bindings: the recorded bindings, counted at most once
//     a minute (when store is a BindingCounter);
//   - cloudstack_pd_build_info{version,revision,goversion}: always 1;
//   - the Go runtime (go_*) and process (process_*) collectors, unless reg
//     has them already.
//
// Nothing here runs on the packet path.
func NewCollectors(reg prometheus.Registerer, table allocator.Reader, store StoreFile, version string) error {
	cs := []prometheus.Collector{
		&tableCollector{table: table, counts: &countCache{}},
		buildInfo(version),
	}
	if store != nil {
		cs = append(cs, &storeCollector{store: store, now: time.Now})
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

// buildInfo is the constant build-info gauge; version, when set, is the
// release set at link time (buildinfo.Get).
func buildInfo(version string) prometheus.Collector {
	in := buildinfo.Get(version)
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: server.Namespace, Name: "build_info",
		Help:        "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": in.Version, "revision": in.Revision, "goversion": in.GoVersion},
	})
	g.Set(1)
	return g
}
