package leasequery

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"reflect"
	"testing"
)

// FuzzDecodeQuery: any bytes decode into a query, an error, or a status,
// without a panic; a query that decodes is encoded back into a LEASEQUERY
// that decodes into the same query.
func FuzzDecodeQuery(f *testing.F) {
	// Seeds: a query of each type, and one missing its option.
	for _, q := range []Query{
		{Type: ByAddress, LinkAddress: netip.IPv6Unspecified(), Address: netip.MustParseAddr("2001:db8::1")},
		{Type: ByClientID, LinkAddress: netip.IPv6Unspecified(), ClientID: []byte{0, 3, 0, 1, 1, 2, 3, 4, 5, 6}},
		{Type: ByRelayID, LinkAddress: netip.IPv6Unspecified(), RelayID: []byte{0, 2, 0, 0, 0x0a, 0x4c}},
		{Type: ByLinkAddress, LinkAddress: link},
		{Type: ByRemoteID, LinkAddress: netip.IPv6Unspecified(), RemoteID: []byte{0, 0, 0x0a, 0x4c, 1, 2}},
		{Type: ByAddress, LinkAddress: netip.IPv6Unspecified()},
	} {
		f.Add(NewQueryMessage(xid, requestor, q).ToBytes())
	}
	f.Add([]byte{14, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			return
		}
		q, err := DecodeQuery(m)
		if err != nil {
			if _, ok := IsQueryError(err); !ok {
				t.Fatalf("DecodeQuery error is not a status: %v", err)
			}
			return
		}
		m2, err := DecodeMessage(NewQueryMessage(m.TransactionID, requestor, q).ToBytes())
		if err != nil {
			t.Fatalf("re-encoded query does not decode: %v", err)
		}
		q2, err := DecodeQuery(m2)
		if err != nil || !reflect.DeepEqual(q, q2) {
			t.Fatalf("round trip: %+v (%v), want %+v", q2, err, q)
		}
	})
}

// FuzzFrames: the reader and SplitFrame agree on any stream, never read
// past a frame's end, and what they read re-frames into the same bytes.
func FuzzFrames(f *testing.F) {
	f.Add([]byte{0, 4, 14, 0, 0, 1, 0, 2, 16, 0})
	f.Add([]byte{0, 0})
	f.Add([]byte{0xff, 0xff, 1})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		const max = 1024
		fr := NewFrameReader(bytes.NewReader(b), max)
		rest := b
		var again []byte
		for {
			got, err := fr.Next()
			msg, r, serr := SplitFrame(rest, max)
			if err != nil {
				if err == io.EOF {
					if len(rest) != 0 {
						t.Fatalf("EOF with %d bytes left", len(rest))
					}
				} else if serr == nil || !errors.Is(err, errors.Unwrap(serr)) && !errors.Is(err, serr) {
					t.Fatalf("reader: %v, SplitFrame: %v", err, serr)
				}
				break
			}
			if serr != nil || !bytes.Equal(got, msg) {
				t.Fatalf("reader %x, SplitFrame %x %v", got, msg, serr)
			}
			rest = r
			again, _ = AppendFrame(again, got)
		}
		if !bytes.HasPrefix(b, again) {
			t.Fatalf("re-framed %x is not a prefix of %x", again, b)
		}
	})
}
