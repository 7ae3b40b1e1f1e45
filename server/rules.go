package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
	"github.com/cloudstack-pd/cloudstack-pd/server/wire"
)

// The message rules of RFC 8415 for a server that delegates prefixes and
// assigns no addresses. What a server does with each client message:
//
//	Solicit        exactly one Client ID, no Server ID; Advertise, or Reply
//	               with Rapid Commit when the client asks and rapid-commit is on
//	Request        Server ID must be ours; Reply with the reserved prefix
//	Renew          Server ID must be ours; Reply, fresh lifetimes
//	Rebind         no Server ID; Reply, fresh lifetimes
//	Release        Server ID must be ours; Reply, top-level Success
//	Decline        Server ID must be ours; Reply, top-level Success
//	Confirm        no Server ID; dropped (no addresses to confirm)
//	Info-request   dropped when it carries an IA; else Reply with our Server ID
//
// In every answer: an IA_PD whose MAC has no usable reservation gets status
// NoPrefixAvail with T1 = T2 = 0 (Renew and Rebind: see renewIA); an IA_NA
// or IA_TA gets status NoAddrsAvail. The reservation goes in one IA_PD only
// (see holder); the other IA_PDs, and an IA_PD whose IAID repeats, get
// NoPrefixAvail. A prefix the client names in a Request, Renew or Rebind
// that is not its reservation goes back with preferred = valid = 0, so that
// a router snooping the Reply withdraws it, unless it overlaps another
// MAC's allocation: then it is left out (see withdrawOthers). At most
// MaxAnsweredIAs IAs are answered (see limitIAs). What identifies the
// client is read from the innermost trusted relay level (see trust.go).
//
// Renew or Rebind for an IA the server recorded no binding for: the binding
// is re-created from the reservation. The reservation table, not the
// binding record, decides what a MAC gets, so a server that lost its
// bindings (or took over from Kea) renews every VM without a gap.

// rapidCommitOpt is the Rapid Commit option of answers, shared: the encoder
// only reads it.
var rapidCommitOpt = &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit}

// mode is what an IA_PD answer is for.
type mode int

const (
	modeAdvertise mode = iota // Solicit without rapid commit: offer, bind nothing
	modeAssign                // Request, Solicit with rapid commit
	modeRenew                 // Renew, Rebind
)

// rules builds the answer to one request: the message rules above applied
// to what decode and identify found, with what they need of the handler
// in env, into the scratch memory out.
type rules struct {
	env *env
	req *request
	id  *identity // zero until identify ran (see plan.identifies)
	out *scratch
}

// scratch is the memory an answer is built in, reused by the next packet.
type scratch struct {
	ans      dhcpv6.Message
	ansOpts  [8]dhcpv6.Option
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

// action is what an answer does beyond its header.
type action int

const (
	actIAs     action = iota // answer each IA (Solicit, Request, Renew, Rebind)
	actRelease               // end the bindings named
	actDecline               // note the decline
	actInfo                  // nothing: an Information-request's Reply
)

// plan is the answer the rules decided on, before the client is
// identified.
type plan struct {
	typ         dhcpv6.MessageType // Advertise or Reply
	act         action
	md          mode // for actIAs
	rapidCommit bool // the answer carries Rapid Commit
}

// identifies reports whether the answer depends on who the client is.
func (p plan) identifies() bool { return p.act != actInfo }

// accept applies the rules on the message alone (its type, its Client and
// Server Identifiers): a plan for the answer, or a drop.
func (r *rules) accept() (plan, error) {
	m := &r.req.msg
	switch m.MessageType {
	case dhcpv6.MessageTypeSolicit:
		if err := r.checkIDs(false, true); err != nil {
			return plan{}, err
		}
		if r.env.opts.RapidCommit && m.GetOneOption(dhcpv6.OptionRapidCommit) != nil {
			return plan{typ: dhcpv6.MessageTypeReply, act: actIAs, md: modeAssign, rapidCommit: true}, nil
		}
		return plan{typ: dhcpv6.MessageTypeAdvertise, act: actIAs, md: modeAdvertise}, nil

	case dhcpv6.MessageTypeRequest:
		if err := r.checkIDs(true, false); err != nil {
			return plan{}, err
		}
		return plan{typ: dhcpv6.MessageTypeReply, act: actIAs, md: modeAssign}, nil

	case dhcpv6.MessageTypeRenew:
		if err := r.checkIDs(true, false); err != nil {
			return plan{}, err
		}
		return plan{typ: dhcpv6.MessageTypeReply, act: actIAs, md: modeRenew}, nil

	case dhcpv6.MessageTypeRebind:
		if err := r.checkIDs(false, false); err != nil {
			return plan{}, err
		}
		return plan{typ: dhcpv6.MessageTypeReply, act: actIAs, md: modeRenew}, nil

	case dhcpv6.MessageTypeRelease:
		if err := r.checkIDs(true, false); err != nil {
			return plan{}, err
		}
		return plan{typ: dhcpv6.MessageTypeReply, act: actRelease}, nil

	case dhcpv6.MessageTypeDecline:
		if err := r.checkIDs(true, false); err != nil {
			return plan{}, err
		}
		return plan{typ: dhcpv6.MessageTypeReply, act: actDecline}, nil

	case dhcpv6.MessageTypeConfirm:
		if err := r.checkIDs(false, false); err != nil {
			return plan{}, err
		}
		return plan{}, drop(ReasonConfirm, fmt.Errorf("confirm: this server assigns no addresses"))

	case dhcpv6.MessageTypeInformationRequest:
		if hasIA(m) {
			return plan{}, drop(ReasonInfoRequestIA, fmt.Errorf("information-request carries an IA"))
		}
		if sids := count(m, dhcpv6.OptionServerID); sids > 0 && !r.ours(sids) {
			return plan{}, drop(ReasonServerIDMismatch, fmt.Errorf("information-request names another server"))
		}
		if n := count(m, dhcpv6.OptionClientID); n > 1 {
			return plan{}, drop(ReasonClientID, fmt.Errorf("%d client identifiers", n))
		}
		return plan{typ: dhcpv6.MessageTypeReply, act: actInfo}, nil
	}
	return plan{}, drop(ReasonUnexpectedType, fmt.Errorf("%s is not a message a server answers", m.MessageType))
}

// build builds the answer p says, for the client r.id names.
func (r *rules) build(p plan) *dhcpv6.Message {
	ans := r.answer(p.typ)
	switch p.act {
	case actIAs:
		if p.rapidCommit {
			ans.AddOption(rapidCommitOpt)
		}
		return r.answerIAs(ans, p.md)
	case actRelease:
		return r.release(ans)
	case actDecline:
		return r.decline(ans)
	}
	return ans
}

// checkIDs applies the Client and Server Identifier rules. With ours, the
// message must name this server; with !ours it must name no server.
// exactlyOneClient is the Solicit rule; the others need a Client ID too.
func (r *rules) checkIDs(ours bool, exactlyOneClient bool) error {
	m := &r.req.msg
	cids := count(m, dhcpv6.OptionClientID)
	switch {
	case cids == 0:
		return drop(ReasonClientID, fmt.Errorf("%s without client identifier", m.MessageType))
	case cids > 1 && exactlyOneClient:
		return drop(ReasonClientID, fmt.Errorf("%s with %d client identifiers", m.MessageType, cids))
	}
	sids := count(m, dhcpv6.OptionServerID)
	if !ours {
		if sids > 0 {
			return drop(ReasonServerIDPresent, fmt.Errorf("%s carries a server identifier", m.MessageType))
		}
		return nil
	}
	if sids == 0 {
		return drop(ReasonServerIDMismatch, fmt.Errorf("%s without server identifier", m.MessageType))
	}
	if !r.ours(sids) {
		return drop(ReasonServerIDMismatch, fmt.Errorf("%s for server %x", m.MessageType, r.req.dec.ServerID()))
	}
	return nil
}

// ours reports whether the message's sids Server Identifiers are one, ours.
func (r *rules) ours(sids int) bool {
	return sids == 1 && bytes.Equal(r.req.dec.ServerID(), r.env.serverID)
}

// count returns how many options of code m carries.
func count(m *dhcpv6.Message, code dhcpv6.OptionCode) int {
	n := 0
	for _, o := range m.Options.Options {
		if o.Code() == code {
			n++
		}
	}
	return n
}

func hasIA(m *dhcpv6.Message) bool {
	for _, o := range m.Options.Options {
		switch o.Code() {
		case dhcpv6.OptionIANA, dhcpv6.OptionIATA, dhcpv6.OptionIAPD:
			return true
		}
	}
	return false
}

// answer starts the answer to the client message: same transaction id,
// our Server ID, the client's Client ID.
func (r *rules) answer(t dhcpv6.MessageType) *dhcpv6.Message {
	out := r.out
	ans := &out.ans
	*ans = dhcpv6.Message{MessageType: t, TransactionID: r.req.msg.TransactionID}
	ans.Options.Options = out.ansOpts[:0]
	ans.AddOption(r.env.serverIDOpt)
	if cid := r.req.clientID(); cid != nil {
		out.cid = dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionClientID, OptionData: cid}
		ans.AddOption(&out.cid)
	}
	return ans
}

// answerIAs answers every IA of the client message into ans.
//
// A prefix is delegated in one IA only (RFC 8415 section 6.3): the MAC's
// prefix goes to the IA_PD holder chooses; every other IA_PD gets
// NoPrefixAvail with T1 = T2 = 0, and so does an IA_PD whose IAID repeats
// an earlier one's.
func (r *rules) answerIAs(ans *dhcpv6.Message, md mode) *dhcpv6.Message {
	holder := r.holder()
	n := 0
	for i, o := range r.req.msg.Options.Options {
		switch ia := o.(type) {
		case *dhcpv6.OptIAPD:
			switch {
			case r.repeatsIAID(i):
				ans.AddOption(r.otherIA(ia, md, "IAID repeated in this message"))
			case r.id.hasAlloc && i != holder:
				ans.AddOption(r.otherIA(ia, md, "prefix delegated in another IA_PD"))
			default:
				ans.AddOption(r.answerPD(ia, md))
			}
			n++
		case *dhcpv6.OptIANA:
			ans.AddOption(&dhcpv6.OptIANA{IaId: ia.IaId, Options: dhcpv6.IdentityOptions{Options: dhcpv6.Options{
				noAddrs()}}})
			r.env.metrics.countAnswer(ResultNoAddrs)
			n++
		case *dhcpv6.OptIATA:
			ans.AddOption(&dhcpv6.OptIATA{IaId: ia.IaId, Options: dhcpv6.IdentityOptions{Options: dhcpv6.Options{
				noAddrs()}}})
			r.env.metrics.countAnswer(ResultNoAddrs)
			n++
		}
	}
	if n == 0 {
		ans.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoPrefixAvail, StatusMessage: "no IA_PD in the request"})
	}
	return ans
}

func noAddrs() dhcpv6.Option {
	return &dhcpv6.OptStatusCode{StatusCode: iana.StatusNoAddrsAvail, StatusMessage: "this server assigns no addresses, only prefixes"}
}

// pdScratch returns the IA_PD, its prefix, status and address of the next
// answered IA_PD: from the scratch arrays for the first
// scratchIAs IA_PDs, new ones after them.
func (r *rules) pdScratch() (*dhcpv6.OptIAPD, *dhcpv6.OptIAPrefix, *dhcpv6.OptStatusCode, *net.IPNet, []byte) {
	if i := r.out.ias; i < scratchIAs {
		r.out.ias++
		r.out.pds[i].Options.Options = r.out.pdOpts[i][:0]
		return &r.out.pds[i], &r.out.prefixes[i], &r.out.statuses[i], &r.out.nets[i], r.out.ips[i][:]
	}
	return &dhcpv6.OptIAPD{}, &dhcpv6.OptIAPrefix{}, &dhcpv6.OptStatusCode{}, &net.IPNet{}, make([]byte, 16)
}

// otherIA answers an IA_PD that does not get the MAC's prefix although
// another IA_PD of the message may: NoPrefixAvail, T1 = T2 = 0. In a
// Request, Renew or Rebind the prefixes it names that may be withdrawn
// are, except the MAC's own prefix, which the holder IA keeps.
func (r *rules) otherIA(req *dhcpv6.OptIAPD, md mode, why string) *dhcpv6.OptIAPD {
	out, _, status, _, _ := r.pdScratch()
	out.IaId = req.IaId
	if md != modeAdvertise {
		keep := netip.Prefix{}
		if r.id.hasAlloc {
			keep = r.id.alloc.Prefix
		}
		r.withdrawOthers(req, out, keep)
	}
	*status = dhcpv6.OptStatusCode{StatusCode: iana.StatusNoPrefixAvail, StatusMessage: why}
	out.Options.Add(status)
	r.env.metrics.countAnswer(ResultOtherIA)
	return out
}

// answerPD answers one IA_PD.
func (r *rules) answerPD(req *dhcpv6.OptIAPD, md mode) *dhcpv6.OptIAPD {
	o := r.env.opts
	out, prefix, status, ipn, ip := r.pdScratch()
	out.IaId = req.IaId
	if r.id.hasAlloc {
		out.T1 = seconds(o.RenewTimer)
		out.T2 = seconds(o.RebindTimer)
		a16 := r.id.alloc.Prefix.Addr().As16()
		copy(ip, a16[:])
		*ipn = net.IPNet{IP: net.IP(ip), Mask: wire.Mask(r.id.alloc.Prefix.Bits())}
		*prefix = dhcpv6.OptIAPrefix{
			PreferredLifetime: seconds(o.PreferredLifetime),
			ValidLifetime:     seconds(o.ValidLifetime),
			Prefix:            ipn,
		}
		out.Options.Add(prefix)
		if md != modeAdvertise {
			r.withdrawOthers(req, out, r.id.alloc.Prefix)
			r.record(req, md)
		}
		r.env.metrics.countAnswer(ResultPrefix)
		return out
	}
	if md == modeRenew && r.withdrawOthers(req, out, netip.Prefix{}) > 0 {
		// Renew or Rebind naming prefixes the client may no longer use:
		// send them back with zero lifetimes (RFC 8415 18.3.4, 18.3.5).
		r.env.metrics.countAnswer(r.id.result)
		return out
	}
	*status = dhcpv6.OptStatusCode{StatusCode: iana.StatusNoPrefixAvail, StatusMessage: r.why()}
	result := r.id.result
	if md == modeRenew {
		status.StatusCode = iana.StatusNoBinding
		result = ResultNoBinding
	}
	out.Options.Add(status)
	r.env.metrics.countAnswer(result)
	if r.env.log.Enabled(context.Background(), slog.LevelDebug) {
		r.env.log.Debug("no prefix", "relay", r.req.src, "mac", r.id.mac.String(), "interface-id", relay.Printable(r.req.trusted.InterfaceID),
			"link-address", r.req.trusted.LinkAddr, "pool-by", r.id.poolRule, "result", r.id.result)
	}
	return out
}

// withdrawOthers adds, with zero lifetimes, each prefix the client named
// that is not keep (hints of :: are not prefixes). It returns how many.
//
// A prefix that overlaps the allocation of another MAC than the client's
// (in any pool and state; any MAC's when the client's is not known) is
// left out of the answer altogether: echoed, even with zero lifetimes, it
// would tell a router snooping the Reply something about another VM's
// route. Withdrawn are only the prefixes allocated to nobody or to this
// MAC.
func (r *rules) withdrawOthers(req, out *dhcpv6.OptIAPD, keep netip.Prefix) int {
	n := 0
	for _, o := range req.Options.Options {
		p, ok := o.(*dhcpv6.OptIAPrefix)
		if !ok {
			continue
		}
		named, ok := prefixOf(p)
		if !ok || named == keep {
			continue
		}
		if r.env.table.OverlapsOther(named, r.id.mac) {
			continue
		}
		out.Options.Add(&dhcpv6.OptIAPrefix{Prefix: ipnet(named)})
		n++
	}
	return n
}

// why is the status message of an IA_PD that gets no prefix.
func (r *rules) why() string {
	switch r.id.result {
	case ResultNoPool:
		return "no pool for this interface-id or link"
	case ResultNoMAC:
		return "no MAC found in the relayed request"
	case ResultOtherPool:
		return "MAC belongs to another pool"
	case ResultQuarantined:
		return "prefix released"
	}
	return "no prefix reserved for this MAC"
}

// record hands the binding just made to the sink.
func (r *rules) record(req *dhcpv6.OptIAPD, md mode) {
	in := r.req.trusted // the relay data recorded is the trusted level's
	valid := r.env.opts.ValidLifetime
	// The byte strings the sink keeps, copied out of the packet into one
	// allocation.
	buf := make([]byte, 0, len(r.req.clientID())+len(r.id.mac)+len(in.InterfaceID)+len(in.RemoteID)+len(in.RelayID))
	keep := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		n := len(buf)
		buf = append(buf, b...)
		return buf[n:len(buf):len(buf)]
	}
	b := allocator.Binding{
		ClientDUID:        keep(r.req.clientID()),
		MAC:               keep(r.id.mac),
		IAID:              iaid(req.IaId),
		Pool:              r.id.pool.Name,
		Prefix:            r.id.alloc.Prefix,
		PreferredLifetime: r.env.opts.PreferredLifetime,
		ValidLifetime:     valid,
		Expires:           r.env.now.Add(time.Duration(valid) * time.Second),
		LastExchange:      r.env.now,
		LastMessage:       r.req.msg.MessageType.String(),
		RelaySource:       r.req.src,
		LinkAddress:       in.LinkAddr,
		PeerAddress:       in.PeerAddr,
		InterfaceID:       keep(in.InterfaceID),
		RemoteID:          keep(in.RemoteID),
		RelayID:           keep(in.RelayID),
	}
	r.env.sink.Record(b)
}

// release answers a Release: top-level Success; an IA_PD the server has no
// binding for (no usable reservation, or naming a prefix that is not the
// reservation) comes back with NoBinding inside it (RFC 8415 18.3.7).
func (r *rules) release(ans *dhcpv6.Message) *dhcpv6.Message {
	ans.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess, StatusMessage: "released"})
	for _, ia := range r.req.msg.Options.IAPD() {
		if r.id.hasAlloc && namesOnly(ia, r.id.alloc.Prefix) {
			r.env.sink.Release(allocator.BindingRelease{
				ClientDUID: bytes.Clone(r.req.clientID()), IAID: iaid(ia.IaId), MAC: bytes.Clone(r.id.mac)})
			r.env.metrics.countAnswer(ResultReleased)
			r.logRelease(ia, ResultReleased)
			continue
		}
		ans.AddOption(&dhcpv6.OptIAPD{IaId: ia.IaId, Options: dhcpv6.PDOptions{Options: dhcpv6.Options{
			&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoBinding, StatusMessage: "no binding for this IA"}}}})
		r.env.metrics.countAnswer(ResultNoBinding)
		r.logRelease(ia, ResultNoBinding)
	}
	return ans
}

// logRelease writes the debug line of one IA of a Release: what it did,
// and the prefix it ended or why it ended none. Nothing is built unless
// debug is on.
func (r *rules) logRelease(ia *dhcpv6.OptIAPD, result Result) {
	if !r.env.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	attrs := []any{"relay", r.req.src, "mac", r.id.mac.String(), "iaid", iaid(ia.IaId), "result", result}
	if result == ResultReleased {
		attrs = append(attrs, "prefix", r.id.alloc.Prefix.String())
	} else {
		attrs = append(attrs, "why", r.id.result)
	}
	r.env.log.Debug("release", attrs...)
}

// namesOnly reports whether every prefix ia names is p.
func namesOnly(ia *dhcpv6.OptIAPD, p netip.Prefix) bool {
	for _, o := range ia.Options.Prefixes() {
		if named, ok := prefixOf(o); ok && named != p {
			return false
		}
	}
	return true
}

// decline answers a Decline with top-level Success. A VM that declines its
// prefix has a problem an operator should see: it is counted
// (answers_total{result="declined"}) and logged at debug, as every
// per-packet line is.
func (r *rules) decline(ans *dhcpv6.Message) *dhcpv6.Message {
	ans.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess, StatusMessage: "decline noted"})
	r.env.metrics.countAnswer(ResultDeclined)
	if r.env.log.Enabled(context.Background(), slog.LevelDebug) {
		prefix := ""
		if r.id.hasAlloc {
			prefix = r.id.alloc.Prefix.String()
		}
		// The reservation stays: a declined prefix is the VM's and is never
		// given to another, so a Decline changes nothing but this count.
		r.env.log.Debug("client declined", "relay", r.req.src, "mac", r.id.mac.String(), "interface-id", relay.Printable(r.req.trusted.InterfaceID),
			"prefix", prefix, "result", "reservation kept")
	}
	return ans
}

func seconds(s uint32) time.Duration { return time.Duration(s) * time.Second }

func iaid(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: wire.Mask(p.Bits())}
}

// prefixOf converts a named prefix; a hint (:: or no prefix) is not one.
func prefixOf(o *dhcpv6.OptIAPrefix) (netip.Prefix, bool) {
	if o.Prefix == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(o.Prefix.IP.To16())
	if !ok || a.IsUnspecified() {
		return netip.Prefix{}, false
	}
	bits, _ := o.Prefix.Mask.Size()
	return netip.PrefixFrom(a, bits).Masked(), true
}
