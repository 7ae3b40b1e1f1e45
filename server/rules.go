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

func (x *exchange) dispatch() (*dhcpv6.Message, error) {
	m := &x.req
	switch m.MessageType {
	case dhcpv6.MessageTypeSolicit:
		if err := x.checkIDs(false, true); err != nil {
			return nil, err
		}
		if x.opts.RapidCommit && m.GetOneOption(dhcpv6.OptionRapidCommit) != nil {
			ans := x.answer(dhcpv6.MessageTypeReply)
			ans.AddOption(rapidCommitOpt)
			return x.answerIAs(ans, modeAssign), nil
		}
		return x.answerIAs(x.answer(dhcpv6.MessageTypeAdvertise), modeAdvertise), nil

	case dhcpv6.MessageTypeRequest:
		if err := x.checkIDs(true, false); err != nil {
			return nil, err
		}
		return x.answerIAs(x.answer(dhcpv6.MessageTypeReply), modeAssign), nil

	case dhcpv6.MessageTypeRenew:
		if err := x.checkIDs(true, false); err != nil {
			return nil, err
		}
		return x.answerIAs(x.answer(dhcpv6.MessageTypeReply), modeRenew), nil

	case dhcpv6.MessageTypeRebind:
		if err := x.checkIDs(false, false); err != nil {
			return nil, err
		}
		return x.answerIAs(x.answer(dhcpv6.MessageTypeReply), modeRenew), nil

	case dhcpv6.MessageTypeRelease:
		if err := x.checkIDs(true, false); err != nil {
			return nil, err
		}
		return x.release(), nil

	case dhcpv6.MessageTypeDecline:
		if err := x.checkIDs(true, false); err != nil {
			return nil, err
		}
		return x.decline(), nil

	case dhcpv6.MessageTypeConfirm:
		if err := x.checkIDs(false, false); err != nil {
			return nil, err
		}
		return nil, drop(ReasonConfirm, fmt.Errorf("confirm: this server assigns no addresses"))

	case dhcpv6.MessageTypeInformationRequest:
		if hasIA(m) {
			return nil, drop(ReasonInfoRequestIA, fmt.Errorf("information-request carries an IA"))
		}
		if sids := count(m, dhcpv6.OptionServerID); sids > 0 && !x.ours(sids) {
			return nil, drop(ReasonServerIDMismatch, fmt.Errorf("information-request names another server"))
		}
		if n := count(m, dhcpv6.OptionClientID); n > 1 {
			return nil, drop(ReasonClientID, fmt.Errorf("%d client identifiers", n))
		}
		return x.answer(dhcpv6.MessageTypeReply), nil
	}
	return nil, drop(ReasonUnexpectedType, fmt.Errorf("%s is not a message a server answers", m.MessageType))
}

// checkIDs applies the Client and Server Identifier rules. With ours, the
// message must name this server; with !ours it must name no server.
// exactlyOneClient is the Solicit rule; the others need a Client ID too.
func (x *exchange) checkIDs(ours bool, exactlyOneClient bool) error {
	m := &x.req
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
	if !x.ours(sids) {
		return drop(ReasonServerIDMismatch, fmt.Errorf("%s for server %x", m.MessageType, x.dec.ServerID()))
	}
	return nil
}

// ours reports whether the message's sids Server Identifiers are one, ours.
func (x *exchange) ours(sids int) bool {
	return sids == 1 && bytes.Equal(x.dec.ServerID(), x.h.serverID)
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
func (x *exchange) answer(t dhcpv6.MessageType) *dhcpv6.Message {
	ans := &x.ans
	*ans = dhcpv6.Message{MessageType: t, TransactionID: x.req.TransactionID}
	ans.Options.Options = x.ansOpts[:0]
	ans.AddOption(&x.h.serverIDOpt)
	if x.dec.ClientID() != nil {
		x.cid = dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionClientID, OptionData: x.dec.ClientID()}
		ans.AddOption(&x.cid)
	}
	return ans
}

// identify finds the pool, the MAC and its allocation, and sets x.result
// to ResultPrefix when the MAC has a prefix to serve on this VLAN.
//
// Both come from the chain's innermost trusted level only (see trust.go).
// The MAC is read even when no pool is chosen: the prefixes a client names
// are judged by it (see withdrawOthers).
func (x *exchange) identify() {
	x.table = x.h.table.Current()
	lvl := x.trusted
	mac, _, macErr := lvl.MAC(x.opts.MACSources, x.dec.ClientID())
	if macErr == nil {
		x.mac = mac
	}
	pool, rule := x.selectPool(lvl)
	x.poolRule = rule
	x.h.metrics.countPoolSelection(rule)
	if pool == nil {
		x.result = ResultNoPool
		return
	}
	x.pool = pool
	if macErr != nil {
		x.result = ResultNoMAC
		x.h.log.Debug("no MAC", "relay", x.src, "err", macErr)
		return
	}
	a, ok := x.table.Find(mac)
	switch {
	case !ok:
		x.result = ResultUnknownMAC
	case a.Pool.Name != pool.Name:
		x.result = ResultOtherPool
	case !a.Served():
		x.result = ResultQuarantined
	default:
		x.alloc, x.hasAlloc = a, true
		x.result = ResultPrefix
	}
}

// answerIAs answers every IA of the client message into ans.
//
// A prefix is delegated in one IA only (RFC 8415 section 6.3): the MAC's
// prefix goes to the IA_PD holder chooses; every other IA_PD gets
// NoPrefixAvail with T1 = T2 = 0, and so does an IA_PD whose IAID repeats
// an earlier one's.
func (x *exchange) answerIAs(ans *dhcpv6.Message, md mode) *dhcpv6.Message {
	x.identify()
	holder := x.holder()
	n := 0
	for i, o := range x.req.Options.Options {
		switch ia := o.(type) {
		case *dhcpv6.OptIAPD:
			switch {
			case x.repeatsIAID(i):
				ans.AddOption(x.otherIA(ia, md, "IAID repeated in this message"))
			case x.hasAlloc && i != holder:
				ans.AddOption(x.otherIA(ia, md, "prefix delegated in another IA_PD"))
			default:
				ans.AddOption(x.answerPD(ia, md))
			}
			n++
		case *dhcpv6.OptIANA:
			ans.AddOption(&dhcpv6.OptIANA{IaId: ia.IaId, Options: dhcpv6.IdentityOptions{Options: dhcpv6.Options{
				noAddrs()}}})
			x.h.metrics.countAnswer(ResultNoAddrs)
			n++
		case *dhcpv6.OptIATA:
			ans.AddOption(&dhcpv6.OptIATA{IaId: ia.IaId, Options: dhcpv6.IdentityOptions{Options: dhcpv6.Options{
				noAddrs()}}})
			x.h.metrics.countAnswer(ResultNoAddrs)
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
// answered IA_PD: from the exchange's scratch arrays for the first
// scratchIAs IA_PDs, new ones after them.
func (x *exchange) pdScratch() (*dhcpv6.OptIAPD, *dhcpv6.OptIAPrefix, *dhcpv6.OptStatusCode, *net.IPNet, []byte) {
	if i := x.ias; i < scratchIAs {
		x.ias++
		x.pds[i].Options.Options = x.pdOpts[i][:0]
		return &x.pds[i], &x.prefixes[i], &x.statuses[i], &x.nets[i], x.ips[i][:]
	}
	return &dhcpv6.OptIAPD{}, &dhcpv6.OptIAPrefix{}, &dhcpv6.OptStatusCode{}, &net.IPNet{}, make([]byte, 16)
}

// otherIA answers an IA_PD that does not get the MAC's prefix although
// another IA_PD of the message may: NoPrefixAvail, T1 = T2 = 0. In a
// Request, Renew or Rebind the prefixes it names that may be withdrawn
// are, except the MAC's own prefix, which the holder IA keeps.
func (x *exchange) otherIA(req *dhcpv6.OptIAPD, md mode, why string) *dhcpv6.OptIAPD {
	out, _, status, _, _ := x.pdScratch()
	out.IaId = req.IaId
	if md != modeAdvertise {
		keep := netip.Prefix{}
		if x.hasAlloc {
			keep = x.alloc.Prefix
		}
		x.withdrawOthers(req, out, keep)
	}
	*status = dhcpv6.OptStatusCode{StatusCode: iana.StatusNoPrefixAvail, StatusMessage: why}
	out.Options.Add(status)
	x.h.metrics.countAnswer(ResultOtherIA)
	return out
}

// answerPD answers one IA_PD.
func (x *exchange) answerPD(req *dhcpv6.OptIAPD, md mode) *dhcpv6.OptIAPD {
	o := x.opts
	out, prefix, status, ipn, ip := x.pdScratch()
	out.IaId = req.IaId
	if x.hasAlloc {
		out.T1 = seconds(o.RenewTimer)
		out.T2 = seconds(o.RebindTimer)
		a16 := x.alloc.Prefix.Addr().As16()
		copy(ip, a16[:])
		*ipn = net.IPNet{IP: net.IP(ip), Mask: wire.Mask(x.alloc.Prefix.Bits())}
		*prefix = dhcpv6.OptIAPrefix{
			PreferredLifetime: seconds(o.PreferredLifetime),
			ValidLifetime:     seconds(o.ValidLifetime),
			Prefix:            ipn,
		}
		out.Options.Add(prefix)
		if md != modeAdvertise {
			x.withdrawOthers(req, out, x.alloc.Prefix)
			x.record(req, md)
		}
		x.h.metrics.countAnswer(ResultPrefix)
		return out
	}
	if md == modeRenew && x.withdrawOthers(req, out, netip.Prefix{}) > 0 {
		// Renew or Rebind naming prefixes the client may no longer use:
		// send them back with zero lifetimes (RFC 8415 18.3.4, 18.3.5).
		x.h.metrics.countAnswer(x.result)
		return out
	}
	*status = dhcpv6.OptStatusCode{StatusCode: iana.StatusNoPrefixAvail, StatusMessage: x.why()}
	result := x.result
	if md == modeRenew {
		status.StatusCode = iana.StatusNoBinding
		result = ResultNoBinding
	}
	out.Options.Add(status)
	x.h.metrics.countAnswer(result)
	if x.h.log.Enabled(context.Background(), slog.LevelDebug) {
		x.h.log.Debug("no prefix", "relay", x.src, "mac", x.mac.String(), "interface-id", relay.Printable(x.trusted.InterfaceID),
			"link-address", x.trusted.LinkAddr, "pool-by", x.poolRule, "result", x.result)
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
func (x *exchange) withdrawOthers(req, out *dhcpv6.OptIAPD, keep netip.Prefix) int {
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
		if x.table.OverlapsOther(named, x.mac) {
			continue
		}
		out.Options.Add(&dhcpv6.OptIAPrefix{Prefix: ipnet(named)})
		n++
	}
	return n
}

// why is the status message of an IA_PD that gets no prefix.
func (x *exchange) why() string {
	switch x.result {
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
func (x *exchange) record(req *dhcpv6.OptIAPD, md mode) {
	in := x.trusted // the relay data recorded is the trusted level's
	valid := x.opts.ValidLifetime
	// The byte strings the sink keeps, copied out of the packet into one
	// allocation.
	buf := make([]byte, 0, len(x.dec.ClientID())+len(x.mac)+len(in.InterfaceID)+len(in.RemoteID)+len(in.RelayID))
	keep := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		n := len(buf)
		buf = append(buf, b...)
		return buf[n:len(buf):len(buf)]
	}
	b := allocator.Binding{
		ClientDUID:        keep(x.dec.ClientID()),
		MAC:               keep(x.mac),
		IAID:              iaid(req.IaId),
		Pool:              x.pool.Name,
		Prefix:            x.alloc.Prefix,
		PreferredLifetime: x.opts.PreferredLifetime,
		ValidLifetime:     valid,
		Expires:           x.now.Add(time.Duration(valid) * time.Second),
		LastExchange:      x.now,
		LastMessage:       x.req.MessageType.String(),
		RelaySource:       x.src,
		LinkAddress:       in.LinkAddr,
		PeerAddress:       in.PeerAddr,
		InterfaceID:       keep(in.InterfaceID),
		RemoteID:          keep(in.RemoteID),
		RelayID:           keep(in.RelayID),
	}
	x.h.sink.Record(b)
}

// release answers a Release: top-level Success; an IA_PD the server has no
// binding for (no usable reservation, or naming a prefix that is not the
// reservation) comes back with NoBinding inside it (RFC 8415 18.3.7).
func (x *exchange) release() *dhcpv6.Message {
	ans := x.answer(dhcpv6.MessageTypeReply)
	ans.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess, StatusMessage: "released"})
	x.identify()
	for _, ia := range x.req.Options.IAPD() {
		if x.hasAlloc && namesOnly(ia, x.alloc.Prefix) {
			x.h.sink.Release(allocator.BindingRelease{
				ClientDUID: bytes.Clone(x.dec.ClientID()), IAID: iaid(ia.IaId), MAC: bytes.Clone(x.mac)})
			x.h.metrics.countAnswer(ResultReleased)
			continue
		}
		ans.AddOption(&dhcpv6.OptIAPD{IaId: ia.IaId, Options: dhcpv6.PDOptions{Options: dhcpv6.Options{
			&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoBinding, StatusMessage: "no binding for this IA"}}}})
		x.h.metrics.countAnswer(ResultNoBinding)
	}
	return ans
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
func (x *exchange) decline() *dhcpv6.Message {
	ans := x.answer(dhcpv6.MessageTypeReply)
	ans.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess, StatusMessage: "decline noted"})
	x.identify()
	x.h.metrics.countAnswer(ResultDeclined)
	x.h.log.Debug("client declined", "relay", x.src, "mac", x.mac.String(), "interface-id", relay.Printable(x.trusted.InterfaceID))
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
