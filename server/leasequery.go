package server

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/leasequery"
)

// Leasequery (RFC 5007) and Bulk Leasequery (RFC 5460): a router that
// lost its routes asks which prefixes are delegated, by address, client,
// relay, link or remote-id, and rebuilds them from the answers.
//
// A LEASEQUERY is not a client message: it comes straight from the
// requestor (a router), never in a Relay-Forward, and is answered straight
// back, to its source address and port, with a LEASEQUERY-REPLY. Over UDP
// (HandleAppend) only the queries by address and by client-id are
// answered; the others are Bulk Leasequery's (NotAllowed). Over TCP
// (AnswerBulk, with BulkListener owning the connections) every type is
// answered as a stream: a REPLY with the first binding, a DATA per
// further binding, a DONE; no match is a single REPLY.
//
// Who may ask: Options.LeasequeryRequestors (server.leasequery.requestors,
// by default the trusted relays); nobody when it is empty. Others get
// NotAllowed over UDP; their TCP connections are closed at once.
//
// Answers are read from the binding store (LeaseSource), never from a
// record of this server's own exchanges, so that every server sharing a
// store answers for every binding; only the last-exchange times this
// server has not persisted yet, and the releases it has not written yet,
// come from its Recorder (Exchanges.Fresh). An expired binding, or one a
// Release ended, is never answered. The lifetimes answered are what
// remains of them; CLT_TIME is the time since the last exchange.

// LeaseSource is where Leasequery answers are read: *allocator.Store is
// one.
type LeaseSource interface {
	BindingByAddress(a netip.Addr) (allocator.Binding, bool, error)
	BindingsOfClient(duid []byte) ([]allocator.Binding, error)
	BindingsPage(after []byte, limit int, q allocator.BindingQuery) ([]allocator.Binding, []byte, error)
}

// Exchanges brings a stored binding up to date with what this server
// knows and has not written: *Recorder is one.
type Exchanges interface {
	// Fresh updates b's last exchange and expiry, and returns false when
	// this server has ended the binding.
	Fresh(b *allocator.Binding) bool
}

type storedOnly struct{}

func (storedOnly) Fresh(*allocator.Binding) bool { return true }

// bulkPage is how many bindings a bulk answer reads from the store at a
// time: memory holds at most one page, whatever the number of bindings.
const bulkPage = 256

// Leasequery outcomes, the outcome label of leasequeries_total.
const (
	LQFound       = "found"        // bindings answered
	LQNotFound    = "not-found"    // no binding matches
	LQNotAllowed  = "not-allowed"  // requestor not allowed, or a bulk-only type over UDP
	LQUnknownType = "unknown-type" // query type this server does not know
	LQMalformed   = "malformed"    // no OPTION_LQ_QUERY, or a query missing what its type needs
	LQError       = "error"        // the store could not be read
	LQTerminated  = "terminated"   // a bulk answer cut short (store error, connection lost)
)

// LeasequeryAllowed reports whether a may send leasequeries.
func (h *Handler) LeasequeryAllowed(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range h.opts.Load().LeasequeryRequestors {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// lqRequest is a decoded LEASEQUERY.
type lqRequest struct {
	msg       *dhcpv6.Message
	requestor []byte // its Client ID, echoed
}

// decodeLQ decodes a LEASEQUERY; a message that is not one, or names
// another server, is dropped.
func (h *Handler) decodeLQ(pkt []byte) (*lqRequest, error) {
	m, err := leasequery.DecodeMessage(pkt)
	if err != nil {
		return nil, drop(ReasonMalformed, fmt.Errorf("leasequery: %w", err))
	}
	if m.MessageType != dhcpv6.MessageTypeLeaseQuery {
		return nil, drop(ReasonUnexpectedType, fmt.Errorf("%s is not a message a server answers", m.MessageType))
	}
	if sid := m.Options.GetOne(dhcpv6.OptionServerID); sid != nil && !bytes.Equal(sid.ToBytes(), h.serverID) {
		return nil, drop(ReasonServerIDMismatch, fmt.Errorf("leasequery for server %x", sid.ToBytes()))
	}
	req := &lqRequest{msg: m}
	if cid, ok := m.Options.GetOne(dhcpv6.OptionClientID).(*leasequery.OptBytes); ok {
		req.requestor = cid.Data
	}
	return req, nil
}

// reply starts an answer of type t to req.
func (h *Handler) lqReply(t dhcpv6.MessageType, req *lqRequest) *dhcpv6.Message {
	ans := &dhcpv6.Message{MessageType: t, TransactionID: req.msg.TransactionID}
	ans.AddOption(&h.serverIDOpt)
	if req.requestor != nil {
		ans.AddOption(&leasequery.OptBytes{OptionCode: dhcpv6.OptionClientID, Data: req.requestor})
	}
	return ans
}

func status(code iana.StatusCode, msg string) *dhcpv6.OptStatusCode {
	return &dhcpv6.OptStatusCode{StatusCode: code, StatusMessage: msg}
}

// queryStatus is the status answer to a query error, and its outcome.
func queryStatus(err error) (*dhcpv6.OptStatusCode, string) {
	if qe, ok := leasequery.IsQueryError(err); ok {
		outcome := LQMalformed
		switch qe.Status {
		case leasequery.StatusUnknownQueryType:
			outcome = LQUnknownType
		case leasequery.StatusNotAllowed:
			outcome = LQNotAllowed
		}
		return status(qe.Status, qe.Msg), outcome
	}
	return status(iana.StatusUnspecFail, "bindings cannot be read now; ask again"), LQError
}

// leasequeryUDP answers a LEASEQUERY received over UDP from src.
func (h *Handler) leasequeryUDP(dst []byte, src netip.AddrPort, pkt []byte, now time.Time) (Reply, error) {
	h.metrics.countReceived(dhcpv6.MessageTypeLeaseQuery)
	if h.leases == nil {
		return Reply{}, drop(ReasonUnexpectedType, errors.New("leasequery: this handler has no binding store to answer from"))
	}
	req, err := h.decodeLQ(pkt)
	if err != nil {
		return Reply{}, err
	}
	ans := h.lqReply(dhcpv6.MessageTypeLeaseQueryReply, req)
	typ, outcome := h.answerUDP(ans, src, req, now)
	h.metrics.Leasequery.count("udp", typ, outcome)
	h.log.Debug("leasequery", "requestor", src, "transport", "udp", "type", typ, "outcome", outcome,
		"xid", fmt.Sprintf("%x", req.msg.TransactionID[:]))
	return Reply{Data: append(dst, ans.ToBytes()...)[len(dst):], Dst: src, Type: ans.MessageType}, nil
}

// answerUDP fills ans, and returns the query type and the outcome.
func (h *Handler) answerUDP(ans *dhcpv6.Message, src netip.AddrPort, req *lqRequest, now time.Time) (typ, outcome string) {
	q, err := leasequery.DecodeQuery(req.msg)
	typ = q.Type.String()
	if !h.LeasequeryAllowed(src.Addr()) {
		ans.AddOption(status(leasequery.StatusNotAllowed, "this requestor is not in server.leasequery.requestors"))
		return typ, LQNotAllowed
	}
	if err == nil && q.Type.BulkOnly() {
		err = &leasequery.QueryError{Status: leasequery.StatusNotAllowed, Msg: fmt.Sprintf("query by %s is answered over TCP only (Bulk Leasequery)", q.Type)}
	}
	if err != nil {
		st, outcome := queryStatus(err)
		ans.AddOption(st)
		return typ, outcome
	}
	bs, err := h.findUDP(q, now)
	if err != nil {
		h.log.Error("leasequery: cannot read bindings", "requestor", src, "type", typ, "err", err)
		st, outcome := queryStatus(err)
		ans.AddOption(st)
		return typ, outcome
	}
	if len(bs) == 0 {
		ans.AddOption(status(iana.StatusSuccess, "no binding matches"))
		return typ, LQNotFound
	}
	// One client on several links, and the query names none: the links
	// (RFC 5007 4.3.3), for the requestor to ask again naming one.
	if links := linksOf(bs); len(links) > 1 {
		ans.AddOption(&leasequery.OptLQClientLink{Links: links})
		return typ, LQFound
	}
	l := h.clientLease(bs, now)
	ans.AddOption(l.ClientData(false))
	if l.Relay != nil {
		ans.AddOption(l.Relay.Option())
	}
	h.metrics.Leasequery.Bindings.WithLabelValues("udp").Add(float64(len(bs)))
	return typ, LQFound
}

// findUDP returns the live bindings a query by address or client-id
// selects, on the query's link when it names one.
func (h *Handler) findUDP(q leasequery.Query, now time.Time) ([]allocator.Binding, error) {
	var bs []allocator.Binding
	switch q.Type {
	case leasequery.ByAddress:
		b, ok, err := h.leases.BindingByAddress(q.Address)
		if err != nil || !ok {
			return nil, err
		}
		bs = []allocator.Binding{b}
	case leasequery.ByClientID:
		var err error
		if bs, err = h.leases.BindingsOfClient(q.ClientID); err != nil {
			return nil, err
		}
	}
	live := bs[:0]
	tbl := h.table.Current()
	for i := range bs {
		if h.answerable(tbl, &bs[i], q, now) {
			live = append(live, bs[i])
		}
	}
	return live, nil
}

// answerable reports whether b may be answered to q now: on the query's
// link, still the MAC's served prefix in the allocation table (a prefix
// quarantined or moved since was withdrawn at the next renewal: a router
// must not route it again), not ended by a Release, not expired. It brings
// b's last exchange up to date.
func (h *Handler) answerable(tbl *allocator.Table, b *allocator.Binding, q leasequery.Query, now time.Time) bool {
	if !q.LinkAddress.IsUnspecified() && b.LinkAddress != q.LinkAddress {
		return false
	}
	if a, ok := tbl.Find(b.MAC); !ok || !a.Served() || a.Prefix != b.Prefix {
		return false
	}
	if !h.fresh.Fresh(b) {
		return false
	}
	return expiry(b).After(now)
}

// expiry is when b's valid lifetime runs out.
func expiry(b *allocator.Binding) time.Time {
	if b.LastExchange.IsZero() {
		return b.Expires
	}
	return b.LastExchange.Add(time.Duration(b.ValidLifetime) * time.Second)
}

// linksOf returns the distinct link-addresses of bs, when more than one.
func linksOf(bs []allocator.Binding) []netip.Addr {
	var links []netip.Addr
	for i := range bs {
		a := bs[i].LinkAddress
		if !a.IsValid() {
			a = netip.IPv6Unspecified()
		}
		if !slices.Contains(links, a) {
			links = append(links, a)
		}
	}
	if len(links) < 2 {
		return nil
	}
	return links
}

// clientLease is what an answer says of bs, one client's live bindings
// on one link: every prefix with its remaining lifetimes, the time since
// the latest exchange, and the relay level of that exchange.
func (h *Handler) clientLease(bs []allocator.Binding, now time.Time) leasequery.Lease {
	latest := 0
	for i := range bs {
		if bs[i].LastExchange.After(bs[latest].LastExchange) {
			latest = i
		}
	}
	l := lease(&bs[latest], now)
	l.Prefixes = l.Prefixes[:0]
	for i := range bs {
		l.Prefixes = append(l.Prefixes, remaining(&bs[i], now))
	}
	return l
}

// lease is what an answer says of one binding.
func lease(b *allocator.Binding, now time.Time) leasequery.Lease {
	l := leasequery.Lease{ClientID: b.ClientDUID, Prefixes: []leasequery.Prefix{remaining(b, now)}}
	if !b.LastExchange.IsZero() && now.After(b.LastExchange) {
		l.CLT = now.Sub(b.LastExchange)
	}
	if b.RelaySource.IsValid() || b.LinkAddress.IsValid() {
		l.Relay = &leasequery.Relay{Source: b.RelaySource.Addr(), LinkAddress: b.LinkAddress, PeerAddress: b.PeerAddress,
			InterfaceID: b.InterfaceID, RemoteID: b.RemoteID, RelayID: b.RelayID}
	}
	return l
}

// remaining is b's prefix with what remains of its lifetimes at now.
func remaining(b *allocator.Binding, now time.Time) leasequery.Prefix {
	left := func(lifetime uint32) uint32 {
		if b.LastExchange.IsZero() {
			return 0
		}
		end := b.LastExchange.Add(time.Duration(lifetime) * time.Second)
		if !end.After(now) {
			return 0
		}
		return uint32(end.Sub(now) / time.Second)
	}
	return leasequery.Prefix{Prefix: b.Prefix, Preferred: left(b.PreferredLifetime), Valid: left(b.ValidLifetime)}
}

// ErrBulkMessage is returned by AnswerBulk for a message that is not a
// LEASEQUERY: the connection is closed (RFC 5460 7.3).
var ErrBulkMessage = errors.New("not a leasequery")

// AnswerBulk answers one LEASEQUERY received over TCP from src, handing
// each message of the answer, in order, to emit: a REPLY with the first
// binding, a DATA per further binding, a DONE; no match or a refused
// query is a single REPLY with a status. Bindings are read a page at a
// time, so memory does not grow with their number. It returns emit's
// error, or an error wrapping ErrBulkMessage for a message that is not a
// well-formed LEASEQUERY for this server: either way the connection is to
// be closed. The requestor was checked when its connection was accepted.
func (h *Handler) AnswerBulk(src netip.AddrPort, pkt []byte, emit func([]byte) error) error {
	now := h.now()
	h.metrics.countReceived(dhcpv6.MessageTypeLeaseQuery)
	req, err := h.decodeLQ(pkt)
	if err != nil {
		if d := (*Drop)(nil); errors.As(err, &d) {
			h.metrics.countDrop(d.Reason)
		}
		return fmt.Errorf("%w: %w", ErrBulkMessage, err)
	}
	q, err := leasequery.DecodeQuery(req.msg)
	typ := q.Type.String()
	if err != nil {
		st, outcome := queryStatus(err)
		h.metrics.Leasequery.count("tcp", typ, outcome)
		ans := h.lqReply(dhcpv6.MessageTypeLeaseQueryReply, req)
		ans.AddOption(st)
		return h.emitBulk(emit, ans)
	}
	sent := 0
	send := func(b *allocator.Binding) error {
		l := lease(b, now)
		t := dhcpv6.MessageTypeLeaseQueryData
		var ans *dhcpv6.Message
		if sent == 0 {
			t = dhcpv6.MessageTypeLeaseQueryReply
			ans = h.lqReply(t, req)
		} else {
			ans = &dhcpv6.Message{MessageType: t, TransactionID: req.msg.TransactionID}
		}
		ans.AddOption(l.ClientData(true))
		sent++
		return h.emitBulk(emit, ans)
	}
	err = h.eachBinding(q, now, send)
	h.metrics.Leasequery.Bindings.WithLabelValues("tcp").Add(float64(sent))
	var emitErr *emitError
	switch {
	case errors.As(err, &emitErr):
		h.metrics.Leasequery.count("tcp", typ, LQTerminated)
		return emitErr.err
	case err != nil && sent == 0:
		h.log.Error("bulk leasequery: cannot read bindings", "requestor", src, "type", typ, "err", err)
		st, outcome := queryStatus(err)
		h.metrics.Leasequery.count("tcp", typ, outcome)
		ans := h.lqReply(dhcpv6.MessageTypeLeaseQueryReply, req)
		ans.AddOption(st)
		return h.emitBulk(emit, ans)
	case err != nil:
		h.log.Error("bulk leasequery: cannot read bindings; answer cut short", "requestor", src, "type", typ, "sent", sent, "err", err)
		h.metrics.Leasequery.count("tcp", typ, LQTerminated)
		done := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeLeaseQueryDone, TransactionID: req.msg.TransactionID}
		done.AddOption(status(leasequery.StatusQueryTerminated, "bindings cannot be read now; ask again"))
		return h.emitBulk(emit, done)
	case sent == 0:
		h.metrics.Leasequery.count("tcp", typ, LQNotFound)
		h.log.Info("bulk leasequery: no binding matches", "requestor", src, "type", typ)
		ans := h.lqReply(dhcpv6.MessageTypeLeaseQueryReply, req)
		ans.AddOption(status(iana.StatusSuccess, "no binding matches"))
		return h.emitBulk(emit, ans)
	}
	h.metrics.Leasequery.count("tcp", typ, LQFound)
	// A router asks this after a reboot: rare, and worth a line.
	h.log.Info("bulk leasequery answered", "requestor", src, "type", typ, "bindings", sent, "took", h.now().Sub(now).Round(time.Millisecond))
	done := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeLeaseQueryDone, TransactionID: req.msg.TransactionID}
	// tshark 4.0 flags a DONE without options as malformed.
	done.AddOption(status(iana.StatusSuccess, fmt.Sprintf("%d bindings", sent)))
	return h.emitBulk(emit, done)
}

// emitError is emit's error, told apart from the store's.
type emitError struct{ err error }

func (e *emitError) Error() string { return e.err.Error() }

func (h *Handler) emitBulk(emit func([]byte) error, m *dhcpv6.Message) error {
	if err := emit(m.ToBytes()); err != nil {
		return &emitError{err}
	}
	return nil
}

// eachBinding calls fn with each live binding q selects, in store order,
// reading the store a page at a time. fn's error (an *emitError) stops
// it and is returned; so is a store error.
func (h *Handler) eachBinding(q leasequery.Query, now time.Time, fn func(*allocator.Binding) error) error {
	var bq allocator.BindingQuery
	switch q.Type {
	case leasequery.ByAddress, leasequery.ByClientID:
		bs, err := h.findUDP(q, now)
		if err != nil {
			return err
		}
		for i := range bs {
			if err := fn(&bs[i]); err != nil {
				return err
			}
		}
		return nil
	case leasequery.ByRelayID:
		bq.RelayID = q.RelayID
	case leasequery.ByLinkAddress:
		bq.LinkAddress = q.LinkAddress
	case leasequery.ByRemoteID:
		bq.RemoteID = q.RemoteID
	}
	var after []byte
	for {
		page, next, err := h.leases.BindingsPage(after, bulkPage, bq)
		if err != nil {
			return err
		}
		tbl := h.table.Current()
		for i := range page {
			if !h.answerable(tbl, &page[i], q, now) {
				continue
			}
			if err := fn(&page[i]); err != nil {
				return err
			}
		}
		if next == nil {
			return nil
		}
		after = next
	}
}
