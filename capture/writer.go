package capture

import (
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// HopLimit is the IPv6 hop limit of the packets Writer writes: a unicast
// datagram between a relay and a server, as a host's default sends it.
const HopLimit = 64

// snaplen is the snap length the file header declares: the largest UDP
// datagram in an IPv6 packet without a jumbogram option.
const snaplen = 40 + 65535

// Writer writes DHCPv6 messages as a pcap capture with LINKTYPE_RAW (101):
// each frame an IPv6 packet with a UDP header, lengths and UDP checksum
// correct. Timestamps have microsecond resolution. It is not safe for
// concurrent use; it does not buffer, so wrap w in a bufio.Writer (and
// flush it) for speed.
type Writer struct {
	w   *pcapgo.Writer
	buf gopacket.SerializeBuffer
}

// NewWriter writes the pcap file header to w.
func NewWriter(w io.Writer) (*Writer, error) {
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(snaplen, layers.LinkTypeRaw); err != nil {
		return nil, fmt.Errorf("capture: writing the file header: %w", err)
	}
	return &Writer{w: pw, buf: gopacket.NewSerializeBuffer()}, nil
}

// WritePacket writes payload as a UDP datagram from src to dst, captured
// at t. Both addresses must be IPv6 (an IPv4-mapped address is not); a
// zone is dropped, since a packet has none.
func (w *Writer) WritePacket(t time.Time, src, dst netip.AddrPort, payload []byte) error {
	for _, a := range []netip.Addr{src.Addr(), dst.Addr()} {
		if !a.Is6() || a.Is4In6() {
			return fmt.Errorf("capture: %s: %w", a, ErrAddress)
		}
	}
	if len(payload) > 65535-8 {
		return fmt.Errorf("capture: %d bytes: %w", len(payload), ErrTooLong)
	}
	s, d := src.Addr().As16(), dst.Addr().As16()
	ip := &layers.IPv6{
		Version:    6,
		NextHeader: layers.IPProtocolUDP,
		HopLimit:   HopLimit,
		SrcIP:      s[:],
		DstIP:      d[:],
	}
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(w.buf, opts, ip, udp, gopacket.Payload(payload)); err != nil {
		return fmt.Errorf("capture: building the packet: %w", err)
	}
	data := w.buf.Bytes()
	ci := gopacket.CaptureInfo{Timestamp: t, CaptureLength: len(data), Length: len(data)}
	if err := w.w.WritePacket(ci, data); err != nil {
		return fmt.Errorf("capture: writing a packet: %w", err)
	}
	return nil
}
