package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloudstack-pd/cloudstack-pd/leasequery"
	"github.com/cloudstack-pd/cloudstack-pd/relay"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// bulk runs AnswerBulk and returns the messages it emitted.
func bulk(t *testing.T, h *Handler, pkt []byte) ([][]byte, error) {
	t.Helper()
	var out [][]byte
	err := h.AnswerBulk(lqRouter, pkt, func(m []byte) error {
		out = append(out, bytes.Clone(m))
		return nil
	})
	return out, err
}

func msgTypes(t *testing.T, msgs [][]byte) []dhcpv6.MessageType {
	var out []dhcpv6.MessageType
	for _, b := range msgs {
		out = append(out, dhcpv6.MessageType(b[0]))
	}
	return out
}

var (
	lqReply = dhcpv6.MessageTypeLeaseQueryReply
	lqData  = dhcpv6.MessageTypeLeaseQueryData
	lqDone  = dhcpv6.MessageTypeLeaseQueryDone
)

// TestBulkAnswers: every query type over TCP, bytes in, messages out
// (golden files): REPLY with the first binding, DATA per further binding,
// DONE, all with the query's transaction id; no match or a refused query
// is a single REPLY with a status and no DONE. Expired bindings are never
// answered.
func TestBulkAnswers(t *testing.T) {
	tests := []struct {
		name     string
		pkt      []byte
		types    []dhcpv6.MessageType
		status   iana.StatusCode
		prefixes []netip.Prefix
		typ      string
		outcome  string
	}{
		{name: "by address", pkt: lqQuery(leasequery.Query{Type: leasequery.ByAddress, Address: prefixB.Addr().Next()}),
			types: []dhcpv6.MessageType{lqReply, lqDone}, prefixes: []netip.Prefix{prefixB}, typ: "address", outcome: LQFound},
		{name: "by client-id on two links", pkt: lqQuery(leasequery.Query{Type: leasequery.ByClientID, ClientID: lqDUIDC}),
			types: []dhcpv6.MessageType{lqReply, lqData, lqDone}, prefixes: []netip.Prefix{lqPrefixC1, lqPrefixC2}, typ: "client-id", outcome: LQFound},
		{name: "by relay-id", pkt: lqQuery(leasequery.Query{Type: leasequery.ByRelayID, RelayID: lqRelayID}),
			types: []dhcpv6.MessageType{lqReply, lqData, lqDone}, prefixes: []netip.Prefix{prefixA, prefixB}, typ: "relay-id", outcome: LQFound},
		{name: "by link-address", pkt: lqQuery(leasequery.Query{Type: leasequery.ByLinkAddress, LinkAddress: linkAddr}),
			types: []dhcpv6.MessageType{lqReply, lqData, lqDone}, prefixes: []netip.Prefix{prefixA, prefixB}, typ: "link-address", outcome: LQFound},
		{name: "by link-address of one binding", pkt: lqQuery(leasequery.Query{Type: leasequery.ByLinkAddress, LinkAddress: lqLinkC2}),
			types: []dhcpv6.MessageType{lqReply, lqDone}, prefixes: []netip.Prefix{lqPrefixC2}, typ: "link-address", outcome: LQFound},
		{name: "by remote-id", pkt: lqQuery(leasequery.Query{Type: leasequery.ByRemoteID, RemoteID: relay.JuniperRemoteID(macB)}),
			types: []dhcpv6.MessageType{lqReply, lqDone}, prefixes: []netip.Prefix{prefixB}, typ: "remote-id", outcome: LQFound},
		{name: "by relay-id no match", pkt: lqQuery(leasequery.Query{Type: leasequery.ByRelayID, RelayID: []byte{0, 2, 0, 0, 0, 9, 1}}),
			types: []dhcpv6.MessageType{lqReply}, typ: "relay-id", outcome: LQNotFound},
		{name: "by remote-id of an expired binding", pkt: lqQuery(leasequery.Query{Type: leasequery.ByRemoteID, RemoteID: relay.JuniperRemoteID(macGone)}),
			types: []dhcpv6.MessageType{lqReply}, typ: "remote-id", outcome: LQNotFound},
		{name: "unknown type", pkt: lqRaw(&leasequery.OptLQQuery{Type: 77, LinkAddress: anyLink}),
			types: []dhcpv6.MessageType{lqReply}, status: leasequery.StatusUnknownQueryType, typ: "unknown", outcome: LQUnknownType},
		{name: "malformed query", pkt: lqRaw(&leasequery.OptLQQuery{Type: leasequery.ByLinkAddress, LinkAddress: anyLink}),
			types: []dhcpv6.MessageType{lqReply}, status: leasequery.StatusMalformedQuery, typ: "link-address", outcome: LQMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _, _ := newLQHandler(t)
			msgs, err := bulk(t, h, tc.pkt)
			if err != nil {
				t.Fatal(err)
			}
			names := []string{"query"}
			for _, m := range msgs {
				names = append(names, dhcpv6.MessageType(m[0]).String())
			}
			golden(t, "leasequery-bulk-"+goldenName(tc.name), lqDump(t, names, append([][]byte{tc.pkt}, msgs...)))
			if got := msgTypes(t, msgs); !slices.Equal(got, tc.types) {
				t.Fatalf("messages %v, want %v", got, tc.types)
			}
			a := answerOf(t, false, msgs...)
			if a.Status != tc.status {
				t.Errorf("status %s (%s), want %s", a.Status, a.StatusMsg, tc.status)
			}
			if len(msgs) == 1 {
				if _, ok := leasequery.Status(mustDecode(t, msgs[0]).Options.Options); !ok {
					t.Errorf("a single REPLY without a status")
				}
			}
			if got := prefixesOf(a); !slices.Equal(got, tc.prefixes) {
				t.Errorf("prefixes %v, want %v", got, tc.prefixes)
			}
			for _, l := range a.Leases {
				if l.Relay == nil {
					t.Errorf("binding %x without LQ_RELAY_DATA in its CLIENT_DATA", l.ClientID)
				}
			}
			if got := testutil.ToFloat64(h.Metrics().Leasequery.Queries.WithLabelValues("tcp", tc.typ, tc.outcome)); got != 1 {
				t.Errorf("leasequeries_total{tcp,%s,%s} = %v, want 1", tc.typ, tc.outcome, got)
			}
		})
	}
}

func mustDecode(t *testing.T, b []byte) *dhcpv6.Message {
	t.Helper()
	m, err := leasequery.DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestBulkRefusesWhatIsNotAQuery: a message that is not a LEASEQUERY ends
// the connection (ErrBulkMessage), with nothing emitted.
func TestBulkRefusesWhatIsNotAQuery(t *testing.T) {
	h, _, _ := newLQHandler(t)
	for name, pkt := range map[string][]byte{
		"solicit":   msg(dhcpv6.MessageTypeSolicit, clientID(macA)),
		"truncated": {14, 0, 0},
		"relayed":   juniper("VLAN2701", macA, lqQuery(leasequery.Query{Type: leasequery.ByAddress, Address: prefixA.Addr()})),
	} {
		msgs, err := bulk(t, h, pkt)
		if !errors.Is(err, ErrBulkMessage) || len(msgs) != 0 {
			t.Errorf("%s: %v, %d messages", name, err, len(msgs))
		}
	}
}

// TestBulkStopsWhenEmitFails: a requestor gone mid-answer stops the
// answer; the error is emit's.
func TestBulkStopsWhenEmitFails(t *testing.T) {
	h, _, _ := newLQHandler(t)
	gone := errors.New("connection reset")
	n := 0
	err := h.AnswerBulk(lqRouter, lqQuery(leasequery.Query{Type: leasequery.ByLinkAddress, LinkAddress: linkAddr}), func([]byte) error {
		n++
		return gone
	})
	if !errors.Is(err, gone) || n != 1 {
		t.Errorf("AnswerBulk = %v after %d messages", err, n)
	}
	if got := testutil.ToFloat64(h.Metrics().Leasequery.Queries.WithLabelValues("tcp", "link-address", LQTerminated)); got != 1 {
		t.Errorf("terminated = %v", got)
	}
}

// startBulk serves h's bulk leasequeries on loopback.
func startBulk(t *testing.T, h *Handler, cfg BulkConfig) netip.AddrPort {
	t.Helper()
	testenv.TCPLoopback(t)
	cfg.Addrs = []netip.AddrPort{netip.MustParseAddrPort("[::1]:0")}
	cfg.Metrics = h.Metrics()
	l, err := ListenBulk(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return l.Addrs()[0]
}

func dial(t *testing.T, a netip.AddrPort) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp6", a.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func frame(t *testing.T, msgs ...[]byte) []byte {
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = leasequery.AppendFrame(b, m); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// readAnswer reads frames until a DONE, or a REPLY that ends the answer.
func readAnswer(t *testing.T, fr *leasequery.FrameReader) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		b, err := fr.Next()
		if err != nil {
			t.Fatalf("after %d messages: %v", len(out), err)
		}
		out = append(out, bytes.Clone(b))
		m := mustDecode(t, b)
		if m.MessageType == lqDone {
			return out
		}
		if m.MessageType == lqReply && m.Options.GetOne(dhcpv6.OptionClientData) == nil {
			return out
		}
	}
}

// withRequestors, with the router's own address (::1 here) allowed.
func loopbackHandler(t *testing.T) *Handler {
	h, _, _ := newLQHandler(t)
	o := *h.opts.Load()
	o.LeasequeryRequestors = []netip.Prefix{netip.MustParsePrefix("::1/128")}
	h.SetOptions(o)
	return h
}

// TestBulkListenerAnswersInOrder: several queries sent at once on one
// connection are answered one after the other, each answer whole.
func TestBulkListenerAnswersInOrder(t *testing.T) {
	h := loopbackHandler(t)
	addr := startBulk(t, h, BulkConfig{})
	c := dial(t, addr)
	q1 := lqQuery(leasequery.Query{Type: leasequery.ByLinkAddress, LinkAddress: linkAddr})
	q2m := leasequery.NewQueryMessage(dhcpv6.TransactionID{0, 0x56, 0x78}, lqRequestor, leasequery.Query{Type: leasequery.ByRemoteID, LinkAddress: anyLink, RemoteID: relay.JuniperRemoteID(macB)})
	q3 := lqQuery(leasequery.Query{Type: leasequery.ByRelayID, RelayID: []byte{9, 9, 9}})
	if _, err := c.Write(frame(t, q1, q2m.ToBytes(), q3)); err != nil {
		t.Fatal(err)
	}
	fr := leasequery.NewFrameReader(c, 0)
	a1 := readAnswer(t, fr)
	a2 := readAnswer(t, fr)
	a3 := readAnswer(t, fr)
	if got := msgTypes(t, a1); !slices.Equal(got, []dhcpv6.MessageType{lqReply, lqData, lqDone}) {
		t.Errorf("first answer %v", got)
	}
	for _, b := range a2 {
		if m := mustDecode(t, b); m.TransactionID != q2m.TransactionID {
			t.Errorf("second answer: %s with xid %x", m.MessageType, m.TransactionID)
		}
	}
	if got := msgTypes(t, a3); !slices.Equal(got, []dhcpv6.MessageType{lqReply}) {
		t.Errorf("third answer %v", got)
	}
}

// TestBulkListenerClosesBadConnections: a requestor not allowed, one
// connection too many, an oversized, truncated or slow frame, an idle
// connection, a message that is not a query: each closes that connection
// only, counted by reason; another connection is answered meanwhile.
func TestBulkListenerClosesBadConnections(t *testing.T) {
	query := lqQuery(leasequery.Query{Type: leasequery.ByAddress, Address: prefixA.Addr()})
	closedBy := func(t *testing.T, h *Handler, c net.Conn, reason string) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		// Closed: the end of the stream, or a reset (the server closed
		// it with our query unread).
		if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("connection not closed: %v", err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for testutil.ToFloat64(h.Metrics().Leasequery.ConnectionsClosed.WithLabelValues(reason)) < 1 {
			if time.Now().After(deadline) {
				t.Fatalf("closed_total{reason=%q} = 0", reason)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	stillAnswers := func(t *testing.T, addr netip.AddrPort) {
		t.Helper()
		good := dial(t, addr)
		if _, err := good.Write(frame(t, query)); err != nil {
			t.Fatal(err)
		}
		if a := readAnswer(t, leasequery.NewFrameReader(good, 0)); len(a) != 2 {
			t.Errorf("good connection: %d messages", len(a))
		}
	}

	t.Run("not allowed", func(t *testing.T) {
		h, _, _ := newLQHandler(t) // requestors: 2001:db8:ffff::/48, not ::1
		c := dial(t, startBulk(t, h, BulkConfig{}))
		c.Write(frame(t, query))
		closedBy(t, h, c, CloseNotAllowed)
	})
	t.Run("max connections", func(t *testing.T) {
		h := loopbackHandler(t)
		addr := startBulk(t, h, BulkConfig{MaxConnections: 1})
		first := dial(t, addr)
		first.Write(frame(t, query))
		readAnswer(t, leasequery.NewFrameReader(first, 0)) // accepted, holds the slot
		second := dial(t, addr)
		closedBy(t, h, second, CloseFull)
		first.Write(frame(t, query))
		if a := readAnswer(t, leasequery.NewFrameReader(first, 0)); len(a) != 2 {
			t.Errorf("first connection after the refusal: %d messages", len(a))
		}
	})
	for _, tc := range []struct {
		name   string
		send   []byte
		hangUp bool
		reason string
	}{
		{"oversized", []byte{0x40, 0}, false, CloseOversized},
		{"empty frame", []byte{0, 0}, false, CloseOversized},
		{"truncated", []byte{0, 50, 14, 0}, true, CloseTruncated},
		{"slow frame", []byte{0, 50, 14, 0}, false, CloseSlow},
		{"idle", nil, false, CloseIdle},
		{"not a query", frame(t, msg(dhcpv6.MessageTypeSolicit, clientID(macA))), false, CloseMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := loopbackHandler(t)
			addr := startBulk(t, h, BulkConfig{IdleTimeout: 300 * time.Millisecond, IOTimeout: 200 * time.Millisecond})
			c := dial(t, addr)
			if tc.send != nil {
				if _, err := c.Write(tc.send); err != nil {
					t.Fatal(err)
				}
			}
			if tc.hangUp {
				c.(*net.TCPConn).CloseWrite()
			}
			closedBy(t, h, c, tc.reason)
			stillAnswers(t, addr)
		})
	}
}
