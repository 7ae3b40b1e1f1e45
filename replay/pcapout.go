package replay

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/capture"
)

// WriteCapture writes every request as sent and every answer as received,
// for every target, as a pcap file (capture.Writer: LINKTYPE_RAW, IPv6
// and UDP headers with correct lengths and checksums) in the order they
// happened. The server's port is written as 547 whatever it was, so that
// Wireshark and tshark dissect the DHCPv6 messages without "Decode As";
// the addresses and the sender's port are the real ones.
func WriteCapture(w io.Writer, exs []*Exchange) error {
	type record struct {
		at       time.Time
		src, dst netip.AddrPort
		data     []byte
		frame    int
	}
	var recs []record
	for _, ex := range exs {
		for i := range ex.Outcomes {
			o := &ex.Outcomes[i]
			if o.Err != nil {
				continue
			}
			recs = append(recs, record{o.Sent.At, o.Sent.Src, port547(o.Sent.Dst), o.Payload, ex.Request.Frame})
			if a := o.Answer; a != nil {
				recs = append(recs, record{a.At, port547(a.Src), a.Dst, a.Data, ex.Request.Frame})
			}
		}
	}
	// Stable: a synchronous target's answer may carry its request's time.
	slices.SortStableFunc(recs, func(a, b record) int { return a.at.Compare(b.at) })
	bw := bufio.NewWriter(w)
	cw, err := capture.NewWriter(bw)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if err := cw.WritePacket(r.at, r.src, r.dst, r.data); err != nil {
			return fmt.Errorf("frame %d: %w", r.frame, err)
		}
	}
	return bw.Flush()
}

func port547(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr(), capture.ServerPort)
}
