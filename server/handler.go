package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
	"github.com/cloudstack-pd/cloudstack-pd/server/wire"
)

// Options are the handler's settings that a reload may change.
type Options struct {
	// MACSources lists where the client MAC is read from, in order.
	MACSources []relay.MACSource
	// TrustedRelays, when not empty, are the only sources Relay-Forwards
	// are accepted from.
	TrustedRelays []netip.Prefix
	// RelayDepth is how many relay levels, counted from the server, the
	// operator's own relays add (0: DefaultRelayDepth, 1). The innermost
	// of them is read; a deeper chain is dropped (see trust.go).
	RelayDepth int
	// PoolSelection lists the rules that choose a message's pool, tried
	// in order (empty: DefaultPoolSelection).
	PoolSelection []PoolRule
	// RapidCommit answers a Solicit carrying Rapid Commit with a Reply.
	RapidCommit bool
	// Lifetimes and timers, in seconds, as sent.
	PreferredLifetime uint32
	ValidLifetime     uint32
	RenewTimer        uint32
	RebindTimer       uint32
	// LeasequeryRequestors are the sources that may send leasequeries
	// (server.leasequery.requestors, by default the trusted relays);
	// empty: nobody (see leasequery.go).
	LeasequeryRequestors []netip.Prefix
}

// BindingSink receives the bindings the handler makes and ends. The
// handler calls it on the packet path, holding no lock: it may wait only
// briefly and boundedly (the Recorder waits for room, at most its
// MaxRecordWait, only while its store keeps up).
type BindingSink interface {
	// Record notes that b was delegated (or renewed). The sink owns b.
	Record(b allocator.Binding)
	// Release notes that the client ended a binding: r names it by client
	// DUID and IAID, and the MAC the relay identified as its sender; only
	// a binding of that MAC may end. The sink owns r.
	Release(r allocator.BindingRelease)
}

// Handler answers relayed DHCPv6 prefix-delegation requests. It is pure:
// bytes and the relay's address in, reply bytes and their destination out;
// the listener owns the sockets. It is safe for concurrent use.
type Handler struct {
	table    allocator.Reader
	serverID []byte
	// serverIDOpt is the Server Identifier option of every answer, shared
	// by them: the library only reads it.
	serverIDOpt dhcpv6.OptionGeneric
	opts        atomic.Pointer[Options]
	sink        BindingSink
	now         func() time.Time
	log         *slog.Logger
	metrics     *Metrics
	// exchanges recycles the per-packet state with its scratch space.
	exchanges sync.Pool
	// Leasequery (leasequery.go): where bindings are read, and what this
	// server knows of them that the store does not yet.
	leases LeaseSource
	fresh  Exchanges
}

// HandlerConfig gathers what NewHandler needs.
type HandlerConfig struct {
	// Table is where allocations are read from.
	Table allocator.Reader
	// ServerID is the server's DUID, as kept in the store.
	ServerID []byte
	// Options are the initial settings.
	Options Options
	// Bindings receives the bindings made and released; nil discards them.
	Bindings BindingSink
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil discards.
	Logger *slog.Logger
	// Metrics; nil counts into a private, unregistered set.
	Metrics *Metrics
	// Leases is where leasequeries are answered from; nil: leasequeries
	// are dropped (unexpected-type).
	Leases LeaseSource
	// Exchanges brings the bindings read from Leases up to date; nil:
	// Bindings when it is an Exchanges (the Recorder), else as stored.
	Exchanges Exchanges
}

// NewHandler returns a Handler.
func NewHandler(c HandlerConfig) (*Handler, error) {
	if _, err := dhcpv6.DUIDFromBytes(c.ServerID); err != nil || len(c.ServerID) < 3 {
		return nil, fmt.Errorf("server id %x is not a DUID: %v", c.ServerID, err)
	}
	h := &Handler{
		table:    c.Table,
		serverID: bytes.Clone(c.ServerID),
		sink:     c.Bindings,
		now:      c.Now,
		log:      c.Logger,
		metrics:  c.Metrics,
	}
	if h.sink == nil {
		h.sink = discardSink{}
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.metrics == nil {
		h.metrics = NewMetrics(nil)
	}
	h.serverIDOpt = dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionServerID, OptionData: h.serverID}
	h.leases, h.fresh = c.Leases, c.Exchanges
	if h.fresh == nil {
		h.fresh, _ = c.Bindings.(Exchanges)
	}
	if h.fresh == nil {
		h.fresh = storedOnly{}
	}
	h.SetOptions(c.Options)
	return h, nil
}

// SetOptions puts new settings in force for the packets that follow.
func (h *Handler) SetOptions(o Options) { h.opts.Store(&o) }

// ServerID returns the server's DUID.
func (h *Handler) ServerID() []byte { return h.serverID }

// Metrics returns the handler's counters.
func (h *Handler) Metrics() *Metrics { return h.metrics }

type discardSink struct{}

func (discardSink) Record(allocator.Binding)         {}
func (discardSink) Release(allocator.BindingRelease) {}

// Reply is an answer to send.
type Reply struct {
	// Data is the encoded Relay-Reply.
	Data []byte
	// Dst is where to send it: the relay, at port 547 or its source port.
	Dst netip.AddrPort
	// Type is the type of the message inside (Advertise or Reply).
	Type dhcpv6.MessageType
}

// Handle answers one packet received from src. It returns the reply, or an
// error wrapping a *Drop that names why the packet gets no answer. Every
// packet is counted exactly once, as answered or as dropped with its reason.
// The reply's Data is a new slice; HandleAppend writes it into the caller's.
func (h *Handler) Handle(src netip.AddrPort, pkt []byte) (Reply, error) {
	return h.HandleAppend(nil, src, pkt)
}

// HandleAppend is Handle with the reply appended to dst (Reply.Data is the
// appended part), so that a listener reusing its buffers answers without
// allocating for the reply.
func (h *Handler) HandleAppend(dst []byte, src netip.AddrPort, pkt []byte) (Reply, error) {
	start := h.now()
	x, _ := h.exchanges.Get().(*exchange)
	if x == nil {
		x = newExchange()
	}
	var (
		r   Reply
		err error
	)
	if len(pkt) > 0 && pkt[0] == byte(dhcpv6.MessageTypeLeaseQuery) {
		// A leasequery is not a client message: it comes from a router,
		// unrelayed (leasequery.go).
		r, err = h.leasequeryUDP(dst, src, pkt, start)
	} else {
		r, err = h.handle(x, dst, src, pkt, start)
	}
	x.reset()
	h.exchanges.Put(x)
	if err == nil {
		h.metrics.countReply(r.Type)
	} else if d := (*Drop)(nil); errors.As(err, &d) {
		h.metrics.countDrop(d.Reason)
	}
	h.metrics.Latency.Observe(h.now().Sub(start).Seconds())
	return r, err
}

// The packet path is four steps, each owning its part of the exchange:
//
//  1. decode (decode.go): the relay chain, its trusted level and the client
//     message, into a request;
//  2. the message rules accept the request or drop it (rules.accept), and
//     say what answer to build: a plan;
//  3. identify (identify.go): pool, MAC and allocation, read from the
//     trusted level and a table snapshot, into an identity, once, before
//     any answer is built;
//  4. the rules build the answer from the request and the identity
//     (rules.build), and it is encoded inside the Relay-Reply levels.
//
// The rules reach nothing of the Handler: what they need of it (settings,
// server id, sink, metrics, logger, clock) they get in an env.

// exchange is the memory of one packet's handling. Handle recycles it, so
// that the relay chain, the client message and the answer are decoded,
// built and encoded in the same memory packet after packet: what the
// handler allocates itself per answered packet is the binding it records.
type exchange struct {
	env env      // the handler's, for this packet
	req request  // decode's
	id  identity // identify's
	out scratch  // the rules' answer
	enc []byte   // the answer encoded, before the relay levels wrap it
}

func newExchange() *exchange {
	return &exchange{req: request{dec: wire.NewDecoder()}}
}

// reset clears what refers to the packet, the table or the answer.
func (x *exchange) reset() {
	x.req.dec.Reset()
	chain, dec, enc := x.req.chain, x.req.dec, x.enc[:0]
	// Cleared in place: a literal naming x's own fields would be built
	// in a copy on the stack, then moved.
	*x = exchange{}
	x.req.chain, x.req.dec, x.enc = chain, dec, enc
}

// env is what the rules and identify need of the Handler, for one packet.
type env struct {
	opts        *Options
	serverID    []byte
	serverIDOpt *dhcpv6.OptionGeneric
	table       *allocator.Table // the snapshot this packet is answered from
	sink        BindingSink
	metrics     *Metrics
	log         *slog.Logger
	now         time.Time
}

func (h *Handler) handle(x *exchange, dst []byte, src netip.AddrPort, pkt []byte, now time.Time) (Reply, error) {
	// env lives in the recycled exchange (on the stack, the rules'
	// pointers to it would move it to the heap, one allocation a packet),
	// zero here; set field by field, it is not built in a copy.
	e := &x.env
	e.opts, e.serverID, e.serverIDOpt = h.opts.Load(), h.serverID, &h.serverIDOpt
	e.sink, e.metrics, e.log, e.now = h.sink, h.metrics, h.log, now
	req := &x.req
	if err := req.decode(e, src, pkt); err != nil {
		return Reply{}, err
	}
	r := rules{env: e, req: req, id: &x.id, out: &x.out}
	p, err := r.accept()
	if err != nil {
		return Reply{}, err
	}
	if p.identifies() {
		e.table = h.table.Current()
		identify(&x.id, e, req)
	}
	answer := r.build(p)
	if h.log.Enabled(context.Background(), slog.LevelDebug) {
		prefix := ""
		if x.id.hasAlloc {
			prefix = x.id.alloc.Prefix.String()
		}
		h.log.Debug("answered", "relay", src, "type", req.msg.MessageType, "answer", answer.MessageType,
			"xid", fmt.Sprintf("%x", req.msg.TransactionID[:]), "client-duid", fmt.Sprintf("%x", req.clientID()),
			"mac", x.id.mac.String(), "interface-id", relay.Printable(req.trusted.InterfaceID), "link-address", req.trusted.LinkAddr,
			"pool", x.id.poolName(), "pool-by", x.id.poolRule, "result", x.id.result, "prefix", prefix)
	}
	x.enc = wire.AppendMessage(x.enc[:0], answer)
	return Reply{
		Data: req.chain.AppendReply(dst, x.enc)[len(dst):],
		Dst:  netip.AddrPortFrom(src.Addr(), req.chain.ReplyPort(src.Port())),
		Type: answer.MessageType,
	}, nil
}
