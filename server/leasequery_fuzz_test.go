package server

import (
	"bytes"
	"errors"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/leasequery"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// FuzzLeasequery feeds arbitrary packets to the leasequery paths, UDP and
// bulk. Neither may panic. Over UDP a packet is answered with a
// LEASEQUERY-REPLY that decodes and carries the query's transaction id, or
// dropped with a named reason; in bulk, either the message is refused
// (ErrBulkMessage) with nothing sent, or the answer is a REPLY followed by
// DATA and a DONE, or a single REPLY, all decoding, all with the query's
// transaction id.
func FuzzLeasequery(f *testing.F) {
	// Seeds: a query of each type, refused ones, a malformed one.
	f.Add(lqQuery(leasequery.Query{Type: leasequery.ByAddress, Address: prefixA.Addr()}))
	f.Add(lqQuery(leasequery.Query{Type: leasequery.ByClientID, ClientID: lqDUIDC}))
	f.Add(lqQuery(leasequery.Query{Type: leasequery.ByRelayID, RelayID: lqRelayID}))
	f.Add(lqQuery(leasequery.Query{Type: leasequery.ByLinkAddress, LinkAddress: linkAddr}))
	f.Add(lqQuery(leasequery.Query{Type: leasequery.ByRemoteID, RemoteID: relay.JuniperRemoteID(macB)}))
	f.Add(lqRaw(&leasequery.OptLQQuery{Type: 9, LinkAddress: anyLink}))
	f.Add(lqRaw())
	f.Add([]byte{14, 0, 0, 1, 0, 44, 0, 40, 1})
	h, _, _ := newLQHandler(f)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) == 0 || pkt[0] != byte(dhcpv6.MessageTypeLeaseQuery) {
			return // the client path: FuzzHandle's
		}
		r, err := h.Handle(lqRouter, pkt)
		if err != nil {
			var d *Drop
			if !errors.As(err, &d) || d.Reason == "" {
				t.Fatalf("error without a drop reason: %v", err)
			}
		} else {
			m, err := leasequery.DecodeMessage(r.Data)
			if err != nil || m.MessageType != dhcpv6.MessageTypeLeaseQueryReply || !bytes.Equal(m.TransactionID[:], pkt[1:4]) {
				t.Fatalf("UDP answer %x: %v", r.Data, err)
			}
		}
		var msgs [][]byte
		err = h.AnswerBulk(lqRouter, pkt, func(b []byte) error { msgs = append(msgs, bytes.Clone(b)); return nil })
		if err != nil {
			if !errors.Is(err, ErrBulkMessage) || len(msgs) > 0 {
				t.Fatalf("bulk: %v after %d messages", err, len(msgs))
			}
			return
		}
		for i, b := range msgs {
			m, err := leasequery.DecodeMessage(b)
			if err != nil || !bytes.Equal(m.TransactionID[:], pkt[1:4]) {
				t.Fatalf("bulk message %d %x: %v", i, b, err)
			}
			want := dhcpv6.MessageTypeLeaseQueryData
			switch {
			case i == 0:
				want = dhcpv6.MessageTypeLeaseQueryReply
			case i == len(msgs)-1:
				want = dhcpv6.MessageTypeLeaseQueryDone
			}
			if m.MessageType != want {
				t.Fatalf("bulk message %d is %s, want %s", i, m.MessageType, want)
			}
		}
	})
}
