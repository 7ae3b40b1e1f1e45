package server

import "fmt"

// Reason names why a packet got no answer. Each is a label value of the
// cloudstack_pd_drops_total counter.
type Reason string

// The drop reasons.
const (
	// ReasonMalformed: the packet or the client message inside does not decode.
	ReasonMalformed Reason = "malformed"
	// ReasonMalformedRelay: a Relay-Forward level is truncated or lacks its relay message.
	ReasonMalformedRelay Reason = "malformed-relay"
	// ReasonTooDeep: relays nested deeper than 32 levels.
	ReasonTooDeep Reason = "too-deep"
	// ReasonUnrelayed: a client message reached the server without a relay;
	// its MAC cannot be trusted, so it is never served.
	ReasonUnrelayed Reason = "unrelayed"
	// ReasonUntrustedRelay: the Relay-Forward came from outside trusted-relays.
	ReasonUntrustedRelay Reason = "untrusted-relay"
	// ReasonUntrustedRelayLevel: the Relay-Forward nests more relay levels
	// than server.relay-depth; the levels below the trusted ones may have
	// been written by the client itself (a VM's own Relay-Forward, wrapped
	// by the operator's relay), so nothing in them can identify it.
	ReasonUntrustedRelayLevel Reason = "untrusted-relay-level"
	// ReasonTooManyIAs: the client message carries more than 16 IAs
	// (IA_NA, IA_TA and IA_PD together): no client needs that many, and
	// answering them would amplify a spoofed request.
	ReasonTooManyIAs Reason = "too-many-ias"
	// ReasonUnexpectedType: a message type a server never receives
	// (Advertise, Reply, Reconfigure, Relay-Reply) or does not serve.
	ReasonUnexpectedType Reason = "unexpected-type"
	// ReasonClientID: the Client Identifier is missing or repeated.
	ReasonClientID Reason = "client-id"
	// ReasonServerIDPresent: Solicit, Rebind or Confirm carries a Server Identifier.
	ReasonServerIDPresent Reason = "server-id-present"
	// ReasonServerIDMismatch: Request, Renew, Release or Decline names no
	// server or another server.
	ReasonServerIDMismatch Reason = "server-id-mismatch"
	// ReasonInfoRequestIA: an Information-request carries an IA (RFC 8415 16.12).
	ReasonInfoRequestIA Reason = "info-request-with-ia"
	// ReasonConfirm: a Confirm; this server assigns no addresses, so it
	// cannot tell whether they are on-link (RFC 8415 18.3.3 lets it stay silent).
	ReasonConfirm Reason = "confirm"
	// ReasonQueueFull: the listener's queue was full. No longer counted:
	// a full queue makes the reader answer, and what it cannot read yet
	// waits in the socket (Listener.SocketDrops counts what overflows it).
	// The series stays, at 0, for the dashboards that read it.
	ReasonQueueFull Reason = "queue-full"
	// ReasonPanic: handling the packet panicked (counted by the listener).
	ReasonPanic Reason = "panic"
	// ReasonSendFailed: the answer was built (and counted as answered) but
	// the socket refused to send it (counted by the listener).
	ReasonSendFailed Reason = "send-failed"
)

// Reasons lists every drop reason, for documentation and metric set-up.
var Reasons = []Reason{
	ReasonMalformed, ReasonMalformedRelay, ReasonTooDeep, ReasonUnrelayed,
	ReasonUntrustedRelay, ReasonUntrustedRelayLevel, ReasonTooManyIAs,
	ReasonUnexpectedType, ReasonClientID,
	ReasonServerIDPresent, ReasonServerIDMismatch, ReasonInfoRequestIA,
	ReasonConfirm, ReasonQueueFull, ReasonPanic, ReasonSendFailed,
}

// Drop is the error of a packet that gets no answer.
type Drop struct {
	Reason Reason
	Err    error
}

func (d *Drop) Error() string { return fmt.Sprintf("dropped (%s): %v", d.Reason, d.Err) }
func (d *Drop) Unwrap() error { return d.Err }

func drop(r Reason, err error) error { return &Drop{Reason: r, Err: err} }

// Result says what an answered IA_PD got. Each is a label value of the
// cloudstack_pd_answers_total counter.
type Result string

// The answer results.
const (
	// ResultPrefix: the MAC's reserved prefix was given.
	ResultPrefix Result = "prefix"
	// ResultNoPool: no pool has the relay's interface-id.
	ResultNoPool Result = "no-pool"
	// ResultNoMAC: no configured MAC source yielded a MAC.
	ResultNoMAC Result = "no-mac"
	// ResultUnknownMAC: the MAC has no allocation.
	ResultUnknownMAC Result = "unknown-mac"
	// ResultOtherPool: the MAC's allocation is in another pool than the relay's VLAN.
	ResultOtherPool Result = "other-pool"
	// ResultQuarantined: the MAC's prefix is released and in quarantine.
	ResultQuarantined Result = "quarantined"
	// ResultNoBinding: Renew or Rebind for an IA the server cannot serve.
	ResultNoBinding Result = "no-binding"
	// ResultReleased: a Release was acknowledged.
	ResultReleased Result = "released"
	// ResultDeclined: a Decline was acknowledged.
	ResultDeclined Result = "declined"
	// ResultNoAddrs: an IA_NA or IA_TA, which this server never serves.
	ResultNoAddrs Result = "no-addrs"
	// ResultOtherIA: an IA_PD that gets NoPrefixAvail because the MAC's
	// prefix goes to another IA_PD of the same message (a prefix is
	// delegated in one IA only), or because its IAID repeats an earlier one.
	ResultOtherIA Result = "other-ia"
)
