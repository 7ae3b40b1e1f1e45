// Package replay replays the DHCPv6 requests of a packet capture to a
// server and checks its answers: the engine of `cloudstack-pd replay` and
// of the project's regression suite.
//
// The steps, each its own file:
//
//   - Extract (request.go) picks from a capture's messages (capture)
//     those sent towards a server: Relay-Forwards, and with Wrap the
//     client messages that reached the server unrelayed, which it wraps in
//     a Relay-Forward the way a Junos relay does (interface-id,
//     remote-id = enterprise 2636 + the frame's source MAC, relay source
//     port). A captured Relay-Forward without a relay source port option
//     (135, RFC 8357) gets one in its outermost level, so that the server
//     answers at the port replay sends from instead of port 547.
//   - Run (run.go) sends them to a Target (target.go): a UDP server, or a
//     server handler in-process (Func, for --offline). In capture order,
//     one at a time (each as soon as the previous one is answered or timed
//     out) or at a fixed rate. It rewrites the Server Identifier of
//     requests that name a server to the DUID the target uses, learned from
//     its first answer (or asked for with an Information-request when a
//     request needs it first), and matches each answer to its request by
//     the client message's transaction id and the relay chain's shape
//     (hop-count, link-address and peer-address of each level).
//   - Normalize (answer.go) turns an answer into an Answer: message type,
//     status, IAs with prefixes, lifetimes and timers, relay echo, with the
//     values that legitimately differ between runs or servers (the server
//     DUID, latency) replaced by placeholders.
//   - Golden files (golden.go) hold the normalized answers of a capture;
//     Diff says, per exchange and field, what changed. CompareAnswers
//     (compare.go) does the same between two servers, and Expected rules
//     mark the known differences of ISC Kea 2.2.
//   - WriteCapture (pcapout.go) writes the requests as sent and their
//     answers as a pcap file that Wireshark and tshark read.
//
// The package has no knowledge of the server's configuration: a Target is
// whatever answers bytes with bytes.
//
// # Caveats
//
//   - A request that a server rightly leaves unanswered (a Confirm, an
//     Information-request with an IA, a malformed packet, a Release naming
//     another server when rewriting is off) is a "no answer" like a lost
//     one: Run cannot tell them apart. A golden file records which
//     requests go unanswered, so that a replay against it accepts exactly
//     those.
//   - Two unanswered copies of one request (a client's retransmissions)
//     look alike: an answer goes to the oldest copy still waiting. An
//     answer that comes after its request timed out is counted as late
//     and not matched.
//   - Rewriting the Server Identifier changes the request: the bytes sent
//     are not the bytes captured. Every rewrite is reported.
package replay
