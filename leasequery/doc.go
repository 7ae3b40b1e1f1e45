// Package leasequery is the wire side of DHCPv6 Leasequery (RFC 5007, over
// UDP) and Bulk Leasequery (RFC 5460, over TCP): the options the DHCPv6
// library numbers but does not type (options.go: OPTION_LQ_QUERY,
// OPTION_CLIENT_DATA, OPTION_CLT_TIME, OPTION_LQ_RELAY_DATA,
// OPTION_LQ_CLIENT_LINK, and the Client, Relay and Remote IDs as raw
// bytes), the query a LEASEQUERY carries (DecodeQuery), what an answer
// says of one client (Lease, as OPTION_CLIENT_DATA), the TCP framing (a
// 2-byte length before each message: AppendFrame, SplitFrame,
// FrameReader), and the requestor ('cloudstack-pd leasequery': Ask, Run).
//
// It has no I/O but the requestor's socket, and knows nothing of the
// server's bindings: package server answers queries from the store with
// these types.
//
// Messages are decoded with github.com/insomniacslk/dhcp's types
// (DecodeMessage uses the library's option parser for every option but
// the ones above) and encoded with its Message.ToBytes.
package leasequery
