package server

import (
	"strconv"
	"sync/atomic"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// Namespace is the Prometheus namespace of every metric.
const Namespace = "cloudstack_pd"

// Metrics are the packet path's counters.
type Metrics struct {
	// Received counts packets by message type: the client's message inside
	// the relay chain, or the packet's own type when it is not a
	// Relay-Forward or its relay levels do not decode (RELAY-FORW).
	Received *prometheus.CounterVec
	// Replies counts answers sent by message type (ADVERTISE, REPLY).
	Replies *prometheus.CounterVec
	// Drops counts packets that got no answer, by Reason.
	Drops *prometheus.CounterVec
	// Answers counts answered IAs by Result.
	Answers *prometheus.CounterVec
	// MalformedOptions counts relay options ignored as malformed, by option code.
	MalformedOptions *prometheus.CounterVec
	// PoolSelections counts the pool choices made for messages with IAs,
	// by the rule that chose the pool (interface-id, link-address) or
	// none when no rule did.
	PoolSelections *prometheus.CounterVec
	// Latency observes the time to handle one packet.
	Latency prometheus.Histogram
	// Batches counts the listener's batches of datagrams read, by who
	// answered them: the reader (the batch did not fill) or the workers.
	Batches *prometheus.CounterVec
	// Leasequery counts leasequeries and bulk connections.
	Leasequery *LeasequeryMetrics

	// The packet path counts through these caches of the vectors'
	// children: a label lookup hashes the values and takes the vector's
	// lock, which every worker would contend for on every packet. A
	// child is made on first use, so the exported series are the same.
	received, replies counterCache // by message type
	drops, answers    counterCache // by index in Reasons, results
	pools             counterCache // by index in poolRuleLabels
	batches           counterCache // by byReader, byWorkers
}

// counterCache holds the children of a CounterVec by a small index.
type counterCache struct {
	vec *prometheus.CounterVec
	c   [256]atomic.Pointer[prometheus.Counter]
}

// inc increments the child of index i, whose label value is label().
func (cc *counterCache) inc(i int, label func() string) {
	if i < 0 || i >= len(cc.c) {
		cc.vec.WithLabelValues(label()).Inc()
		return
	}
	if p := cc.c[i].Load(); p != nil {
		(*p).Inc()
		return
	}
	c := cc.vec.WithLabelValues(label())
	cc.c[i].Store(&c)
	c.Inc()
}

func (m *Metrics) countReceived(t dhcpv6.MessageType) {
	m.received.inc(int(t), t.String)
}

func (m *Metrics) countReply(t dhcpv6.MessageType) {
	m.replies.inc(int(t), t.String)
}

// batchLabels are the label values of listener_batches_total, by
// byReader and byWorkers.
var batchLabels = [...]string{"reader", "workers"}

func (m *Metrics) countBatch(by int) {
	m.batches.inc(by, func() string { return batchLabels[by] })
}

func (m *Metrics) countDrop(r Reason) {
	m.drops.inc(reasonIndex(r), func() string { return string(r) })
}

func (m *Metrics) countAnswer(r Result) {
	m.answers.inc(resultIndex(r), func() string { return string(r) })
}

// countPoolSelection counts a pool choice by rule; "" is none.
func (m *Metrics) countPoolSelection(r PoolRule) {
	i := poolRuleIndex(r)
	m.pools.inc(i, func() string { return poolRuleLabels[i] })
}

func reasonIndex(r Reason) int {
	for i, x := range Reasons {
		if x == r {
			return i
		}
	}
	return -1
}

// ReceivedTypes are the message types whose packets_received_total
// series exist from the start: the client messages a PD server is sent,
// and RELAY-FORW (relay levels that do not decode). Other types appear
// when first received.
var ReceivedTypes = []dhcpv6.MessageType{
	dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeConfirm,
	dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind, dhcpv6.MessageTypeRelease,
	dhcpv6.MessageTypeDecline, dhcpv6.MessageTypeInformationRequest, dhcpv6.MessageTypeRelayForward,
}

// results lists the Results, for resultIndex.
var results = [...]Result{ResultPrefix, ResultNoPool, ResultNoMAC, ResultUnknownMAC, ResultOtherPool,
	ResultQuarantined, ResultNoBinding, ResultReleased, ResultDeclined, ResultNoAddrs, ResultOtherIA}

func resultIndex(r Result) int {
	for i, x := range results {
		if x == r {
			return i
		}
	}
	return -1
}

// NewMetrics creates the metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "packets_received_total",
			Help: "DHCPv6 packets received, by the type of the client's message inside the relays (RELAY-FORW: relay levels that do not decode; any other outer type: not relayed).",
		}, []string{"type"}),
		Replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "packets_answered_total",
			Help: "Relay-Replies sent, by the type of the message inside.",
		}, []string{"type"}),
		Drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "drops_total",
			Help: "Packets that got no answer, by reason.",
		}, []string{"reason"}),
		Answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "answers_total",
			Help: "IAs answered, by result (prefix, unknown-mac, no-pool, ...).",
		}, []string{"result"}),
		MalformedOptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "malformed_relay_options_total",
			Help: "Relay options ignored because their value is malformed, by option code.",
		}, []string{"code"}),
		PoolSelections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "pool_selections_total",
			Help: "Pools chosen for relayed messages with IAs, by the rule that chose (interface-id, link-address; none: no pool).",
		}, []string{"rule"}),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "handle_seconds",
			Help:    "Time to handle one packet, from bytes in to bytes out.",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .05},
		}),
		Batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "listener_batches_total",
			Help: "Batches of datagrams the listener read, by who answered them: the reader (the batch did not fill: no backlog) or the workers (a full batch).",
		}, []string{"handled_by"}),
	}
	m.Leasequery = newLeasequeryMetrics()
	m.received.vec, m.replies.vec, m.drops.vec, m.answers.vec = m.Received, m.Replies, m.Drops, m.Answers
	m.pools.vec, m.batches.vec = m.PoolSelections, m.Batches
	for _, l := range batchLabels {
		m.Batches.WithLabelValues(l)
	}
	// Every series an alert or a dashboard reads starts at 0, so that
	// rate() and increase() see the first event (the first Decline, the
	// first malformed remote-id) instead of a series that appears with 1.
	for _, r := range Reasons {
		m.Drops.WithLabelValues(string(r))
	}
	for _, r := range results {
		m.Answers.WithLabelValues(string(r))
	}
	for _, t := range ReceivedTypes {
		m.Received.WithLabelValues(t.String())
	}
	for _, t := range []dhcpv6.MessageType{dhcpv6.MessageTypeAdvertise, dhcpv6.MessageTypeReply} {
		m.Replies.WithLabelValues(t.String())
	}
	for _, code := range []int{relay.OptRemoteID, relay.OptRelayID, relay.OptClientLinkLayer, relay.OptRelaySourcePort} {
		m.MalformedOptions.WithLabelValues(strconv.Itoa(code))
	}
	for _, l := range poolRuleLabels {
		m.PoolSelections.WithLabelValues(l)
	}
	if reg != nil {
		reg.MustRegister(m.Received, m.Replies, m.Drops, m.Answers, m.MalformedOptions, m.PoolSelections, m.Latency, m.Batches)
		reg.MustRegister(m.Leasequery.collectors()...)
	}
	return m
}
