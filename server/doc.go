// Package server is the DHCPv6 side of cloudstack-pd: the message rules of
// RFC 8415 for a server that delegates prefixes (Handler, pure: bytes in,
// bytes out) and the socket loop that feeds it (Listener), plus the
// Recorder that writes the bindings it makes to the store in batches.
//
// The listener moves datagrams in batches (package udpbatch: recvmmsg and
// sendmmsg on Linux) and the handler recycles its per-packet state, so that
// what it allocates per packet is, but for the binding it records, the
// DHCPv6 library's decoding and encoding (docs/BENCHMARKS.md).
//
// A packet is either answered or dropped with a named Reason; both are
// counted in Metrics. Malformed input never panics the handler, and a
// panic in one packet's handling costs only that packet.
package server
