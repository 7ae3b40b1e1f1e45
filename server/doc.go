// Package server is the DHCPv6 side of cloudstack-pd: the message rules of
// RFC 8415 for a server that delegates prefixes (Handler, pure: bytes in,
// bytes out) and the socket loop that feeds it (Listener), plus the
// Recorder that writes the bindings it makes to the store in batches (and
// only those that changed: exchanges.go).
//
// It also answers routers' leasequeries (leasequery.go): over UDP in the
// Handler, and over TCP through BulkListener, which owns the Bulk
// Leasequery connections and hands each query to Handler.AnswerBulk.
// Answers are read from the binding store, so that any server sharing a
// store answers for every binding.
//
// The listener moves datagrams in batches (package udpbatch: recvmmsg and
// sendmmsg on Linux) and the handler recycles its per-packet state, so that
// what it allocates per packet is, but for the binding it records, the
// DHCPv6 library's decoding and encoding (docs/BENCHMARKS.md).
//
// A packet goes through four steps (see handler.go): decode (the relay
// chain, its trusted level and the client message: a request), accept (the
// message rules on the message alone), identify (pool, MAC and allocation,
// once, before any answer is built: an identity), then the rules build the
// answer from the request and the identity, and it is encoded. The rules
// get what they need of the Handler in a small env, not the Handler.
//
// A packet is either answered or dropped with a named Reason; both are
// counted in Metrics. Malformed input never panics the handler, and a
// panic in one packet's handling costs only that packet.
package server
