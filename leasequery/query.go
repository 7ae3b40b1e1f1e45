package leasequery

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

// QueryType is the query-type of OPTION_LQ_QUERY.
type QueryType uint8

// The query types of RFC 5007 (1, 2) and RFC 5460 (3 to 5).
const (
	ByAddress     QueryType = 1
	ByClientID    QueryType = 2
	ByRelayID     QueryType = 3
	ByLinkAddress QueryType = 4
	ByRemoteID    QueryType = 5
)

// QueryTypes lists the query types this package knows, in order.
var QueryTypes = []QueryType{ByAddress, ByClientID, ByRelayID, ByLinkAddress, ByRemoteID}

// String is the type's short name, as metrics label it: address,
// client-id, relay-id, link-address, remote-id; "unknown" for others.
func (t QueryType) String() string {
	switch t {
	case ByAddress:
		return "address"
	case ByClientID:
		return "client-id"
	case ByRelayID:
		return "relay-id"
	case ByLinkAddress:
		return "link-address"
	case ByRemoteID:
		return "remote-id"
	}
	return "unknown"
}

// BulkOnly reports whether RFC 5460 allows the type over TCP only.
func (t QueryType) BulkOnly() bool { return t >= ByRelayID && t <= ByRemoteID }

// Query is one decoded OPTION_LQ_QUERY.
type Query struct {
	Type QueryType
	// LinkAddress is the link the query is about; :: for any link. A
	// by-link-address query names its link here.
	LinkAddress netip.Addr
	// Address: by-address, the address of an IAADDR (or the prefix of an
	// IAPREFIX) among the query options.
	Address netip.Addr
	// ClientID, RelayID, RemoteID: the raw data of the query option of
	// that type (a remote-id with its enterprise number).
	ClientID []byte
	RelayID  []byte
	RemoteID []byte
}

// Status codes of RFC 5007 and 5460, as the library names them.
const (
	StatusUnknownQueryType = iana.StatusUnknownQueryType // 7
	StatusMalformedQuery   = iana.StatusMalformedQuery   // 8
	StatusNotConfigured    = iana.StatusNotConfigured    // 9
	StatusNotAllowed       = iana.StatusNotAllowed       // 10
	StatusQueryTerminated  = iana.StatusQueryTerminated  // 11
)

// QueryError is a query the server answers with a status instead of
// bindings.
type QueryError struct {
	Status iana.StatusCode
	Msg    string
}

func (e *QueryError) Error() string { return fmt.Sprintf("%s: %s", e.Status, e.Msg) }

func queryErr(s iana.StatusCode, format string, args ...any) error {
	return &QueryError{Status: s, Msg: fmt.Sprintf(format, args...)}
}

// DecodeQuery reads the query of a LEASEQUERY message. A message without
// OPTION_LQ_QUERY, with more than one, or whose query lacks what its type
// needs or names a link-address that cannot be a link's, is a
// MalformedQuery; an unknown type an UnknownQueryType: both as a
// *QueryError. The type is returned whenever the option was read, so that
// the error can be counted by type. Whether the type is allowed over the
// transport is the caller's to judge (QueryType.BulkOnly).
func DecodeQuery(m *dhcpv6.Message) (Query, error) {
	var lq *OptLQQuery
	n := 0
	for _, o := range m.Options.Options {
		if o.Code() != dhcpv6.OptionLQQuery {
			continue
		}
		n++
		if q, ok := o.(*OptLQQuery); ok {
			lq = q
		}
	}
	switch {
	case n == 0:
		return Query{}, queryErr(StatusMalformedQuery, "no OPTION_LQ_QUERY")
	case n > 1:
		return Query{}, queryErr(StatusMalformedQuery, "%d OPTION_LQ_QUERY options", n)
	case lq == nil:
		return Query{}, queryErr(StatusMalformedQuery, "OPTION_LQ_QUERY does not decode")
	}
	q := Query{Type: lq.Type, LinkAddress: lq.LinkAddress}
	if !q.LinkAddress.IsValid() {
		q.LinkAddress = netip.IPv6Unspecified()
	}
	if err := checkLink(q.LinkAddress); err != nil {
		return q, err
	}
	opts := lq.Options
	switch q.Type {
	case ByAddress:
		a, ok := queryAddress(opts)
		if !ok {
			return q, queryErr(StatusMalformedQuery, "query by address without an IAADDR (or IAPREFIX) naming an address")
		}
		q.Address = a
	case ByClientID:
		b, ok := optionBytes(opts, dhcpv6.OptionClientID)
		if !ok || len(b) == 0 {
			return q, queryErr(StatusMalformedQuery, "query by client-id without a Client ID")
		}
		q.ClientID = b
	case ByRelayID:
		b, ok := optionBytes(opts, dhcpv6.OptionRelayID)
		if !ok || len(b) == 0 {
			return q, queryErr(StatusMalformedQuery, "query by relay-id without a Relay ID (option 53)")
		}
		q.RelayID = b
	case ByLinkAddress:
		if q.LinkAddress.IsUnspecified() {
			return q, queryErr(StatusMalformedQuery, "query by link-address with link-address ::")
		}
	case ByRemoteID:
		b, ok := optionBytes(opts, dhcpv6.OptionRemoteID)
		if !ok || len(b) < 5 {
			return q, queryErr(StatusMalformedQuery, "query by remote-id without a Remote ID of at least 5 bytes (option 37)")
		}
		q.RemoteID = b
	default:
		return q, queryErr(StatusUnknownQueryType, "query type %d", uint8(q.Type))
	}
	return q, nil
}

// checkLink refuses a link-address no link can have: multicast, loopback,
// an IPv4-mapped address. :: (any link) is fine.
func checkLink(a netip.Addr) error {
	if a.IsUnspecified() {
		return nil
	}
	if a.IsMulticast() || a.IsLoopback() || a.Is4In6() {
		return queryErr(StatusMalformedQuery, "link-address %s cannot be a link's", a)
	}
	return nil
}

// queryAddress returns the address an IAADDR names, or the address of the
// prefix an IAPREFIX names.
func queryAddress(opts dhcpv6.Options) (netip.Addr, bool) {
	for _, o := range opts {
		var ip net.IP
		switch v := o.(type) {
		case *dhcpv6.OptIAAddress:
			ip = v.IPv6Addr
		case *dhcpv6.OptIAPrefix:
			if v.Prefix != nil {
				ip = v.Prefix.IP
			}
		default:
			continue
		}
		a, ok := netip.AddrFromSlice(ip.To16())
		if ok && !a.IsUnspecified() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// Option returns q as the OPTION_LQ_QUERY a requestor sends.
func (q Query) Option() *OptLQQuery {
	o := &OptLQQuery{Type: q.Type, LinkAddress: q.LinkAddress}
	switch q.Type {
	case ByAddress:
		o.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: net.IP(q.Address.AsSlice())})
	case ByClientID:
		o.Options.Add(&OptBytes{OptionCode: dhcpv6.OptionClientID, Data: q.ClientID})
	case ByRelayID:
		o.Options.Add(&OptBytes{OptionCode: dhcpv6.OptionRelayID, Data: q.RelayID})
	case ByRemoteID:
		o.Options.Add(&OptBytes{OptionCode: dhcpv6.OptionRemoteID, Data: q.RemoteID})
	}
	return o
}

// NewQueryMessage builds the LEASEQUERY a requestor sends: transaction id
// xid, the requestor's DUID as Client ID, the query.
func NewQueryMessage(xid dhcpv6.TransactionID, requestor []byte, q Query) *dhcpv6.Message {
	m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeLeaseQuery, TransactionID: xid}
	if len(requestor) > 0 {
		m.AddOption(&OptBytes{OptionCode: dhcpv6.OptionClientID, Data: requestor})
	}
	m.AddOption(q.Option())
	return m
}

// Status returns the status code of m's top-level Status Code option, and
// whether it has one.
func Status(opts dhcpv6.Options) (*dhcpv6.OptStatusCode, bool) {
	sc, ok := opts.GetOne(dhcpv6.OptionStatusCode).(*dhcpv6.OptStatusCode)
	return sc, ok
}

// IsQueryError reports whether err is a *QueryError, and returns it.
func IsQueryError(err error) (*QueryError, bool) {
	var qe *QueryError
	ok := errors.As(err, &qe)
	return qe, ok
}
