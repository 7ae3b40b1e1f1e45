// Package server is the DHCPv6 side of cloudstack-pd: the message rules of
// RFC 8415 for a server that delegates prefixes (Handler, pure: bytes in,
// bytes out) and the socket loop that feeds it (Listener), plus the
// Recorder that writes the bindings it makes to the store in batches.
//
// A packet is either answered or dropped with a named Reason; both are
// counted in Metrics. Malformed input never panics the handler, and a
// panic in one packet's handling costs only that packet.
package server
