package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
}

// BindingSink receives the bindings the handler makes and ends. It must
// not block: the handler calls it on the packet path.
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
	r, err := h.handle(x, dst, src, pkt, start)
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

// exchange is the state of one packet's handling. Handle recycles it, so
// that the relay chain, the client message and the answer are decoded,
// built and encoded in the same memory packet after packet: what the
// handler allocates itself per answered packet is the binding it records.
type exchange struct {
	h     *Handler
	opts  *Options
	src   netip.AddrPort
	chain relay.Chain
	// trusted is the chain's innermost trusted level (see trust.go)
	trusted *relay.Level
	// the client message, decoded by dec (which also keeps the bytes of
	// its first Client and Server Identifiers)
	req dhcpv6.Message
	dec *wire.Decoder
	// filled by identify
	mac      net.HardwareAddr
	table    *allocator.Table
	pool     *allocator.Pool
	poolRule PoolRule // the rule that chose pool
	alloc    allocator.Entry
	hasAlloc bool
	result   Result
	now      time.Time

	// scratch, reused by the next packet
	ans      dhcpv6.Message
	ansOpts  [8]dhcpv6.Option
	enc      []byte // the answer encoded, before the relay levels wrap it
	cid      dhcpv6.OptionGeneric
	ias      int // IA_PDs answered from the arrays below
	pds      [scratchIAs]dhcpv6.OptIAPD
	pdOpts   [scratchIAs][2]dhcpv6.Option
	prefixes [scratchIAs]dhcpv6.OptIAPrefix
	nets     [scratchIAs]net.IPNet
	ips      [scratchIAs][16]byte
	statuses [scratchIAs]dhcpv6.OptStatusCode
}

// scratchIAs is how many IA_PDs of one message are answered without
// allocating; more are answered too.
const scratchIAs = 4

func newExchange() *exchange {
	return &exchange{dec: wire.NewDecoder()}
}

// reset clears what refers to the packet, the table or the answer.
func (x *exchange) reset() {
	x.dec.Reset()
	*x = exchange{chain: x.chain, dec: x.dec, enc: x.enc[:0]}
}

func (h *Handler) handle(x *exchange, dst []byte, src netip.AddrPort, pkt []byte, now time.Time) (Reply, error) {
	x.h, x.opts, x.src, x.now = h, h.opts.Load(), src, now
	if len(pkt) == 0 {
		return Reply{}, drop(ReasonMalformed, errors.New("empty packet"))
	}
	if pkt[0] != relay.MsgRelayForward {
		h.metrics.countReceived(dhcpv6.MessageType(pkt[0]))
		return Reply{}, drop(ReasonUnrelayed, fmt.Errorf("%s sent straight to the server: its MAC cannot be trusted", dhcpv6.MessageType(pkt[0])))
	}
	if !x.trustedSource() {
		h.metrics.countReceived(dhcpv6.MessageTypeRelayForward)
		return Reply{}, drop(ReasonUntrustedRelay, fmt.Errorf("relay %s is not in trusted-relays", src.Addr()))
	}
	// Received counts the client's message inside, when there is one.
	if err := relay.DecodeInto(&x.chain, pkt); err != nil {
		h.metrics.countReceived(dhcpv6.MessageTypeRelayForward)
		if errors.Is(err, relay.ErrTooDeep) {
			return Reply{}, drop(ReasonTooDeep, err)
		}
		return Reply{}, drop(ReasonMalformedRelay, err)
	}
	h.metrics.countReceived(dhcpv6.MessageType(x.chain.Message[0]))
	for i := range x.chain.Levels {
		for _, m := range x.chain.Levels[i].Malformed {
			h.metrics.MalformedOptions.WithLabelValues(fmt.Sprint(m.Code)).Inc()
			h.log.Debug("malformed relay option ignored", "relay", src, "level", i, "option", m.String())
		}
	}
	depth := x.opts.relayDepth()
	if n := len(x.chain.Levels); n > depth {
		return Reply{}, drop(ReasonUntrustedRelayLevel, fmt.Errorf("%d relay levels, server.relay-depth is %d: the levels below the trusted ones may be the client's own", n, depth))
	}
	x.trusted = x.chain.Trusted(depth)
	if err := x.dec.Decode(&x.req, x.chain.Message); err != nil {
		return Reply{}, drop(ReasonMalformed, fmt.Errorf("client message: %w", err))
	}
	if err := x.limitIAs(); err != nil {
		return Reply{}, err
	}
	answer, err := x.dispatch()
	if err != nil {
		return Reply{}, err
	}
	if h.log.Enabled(context.Background(), slog.LevelDebug) {
		h.log.Debug("answered", "relay", src, "type", x.req.MessageType, "answer", answer.MessageType,
			"mac", x.mac.String(), "interface-id", relay.Printable(x.trusted.InterfaceID), "link-address", x.trusted.LinkAddr,
			"pool", x.poolName(), "pool-by", x.poolRule, "result", x.result)
	}
	x.enc = wire.AppendMessage(x.enc[:0], answer)
	return Reply{
		Data: x.chain.AppendReply(dst, x.enc)[len(dst):],
		Dst:  netip.AddrPortFrom(src.Addr(), x.chain.ReplyPort(src.Port())),
		Type: answer.MessageType,
	}, nil
}

// poolName is the chosen pool's name, "" when none.
func (x *exchange) poolName() string {
	if x.pool == nil {
		return ""
	}
	return x.pool.Name
}

func (x *exchange) trustedSource() bool {
	if len(x.opts.TrustedRelays) == 0 {
		return true
	}
	a := x.src.Addr().Unmap()
	for _, p := range x.opts.TrustedRelays {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
