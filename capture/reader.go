package capture

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Format is a capture file format.
type Format string

// The formats Reader reads.
const (
	FormatPcap   Format = "pcap"
	FormatPcapNG Format = "pcapng"
)

// Magic numbers, as the first four bytes of the file.
var (
	magicPcapNG = []byte{0x0a, 0x0d, 0x0d, 0x0a}
	magicGzip   = []byte{0x1f, 0x8b}
	magicsPcap  = [][]byte{
		{0xa1, 0xb2, 0xc3, 0xd4}, {0xd4, 0xc3, 0xb2, 0xa1}, // microseconds, big and little endian
		{0xa1, 0xb2, 0x3c, 0x4d}, {0x4d, 0x3c, 0xb2, 0xa1}, // nanoseconds
	}
)

// Reader reads DHCPv6 messages from a capture, one at a time; see the
// package documentation for what it decodes. It is not safe for
// concurrent use.
type Reader struct {
	format Format
	pcap   *pcapgo.Reader
	ng     *pcapgo.NgReader
	frame  int
	stats  Stats
	dec    decoder
	err    error // io.EOF or the error that ended the reading
}

// NewReader reads the capture's file header. It fails with ErrNotCapture
// when r holds neither pcap nor pcapng (gzipped or not), and with
// ErrLinkType when a pcap file's link type is not one this package decodes.
func NewReader(r io.Reader) (*Reader, error) {
	br := bufio.NewReader(r)
	if m, _ := br.Peek(2); bytes.Equal(m, magicGzip) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("capture: gzip: %w", err)
		}
		br = bufio.NewReader(zr)
	}
	magic, err := br.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("capture: %w: %d bytes", ErrNotCapture, len(magic))
	}
	rd := &Reader{}
	switch {
	case bytes.Equal(magic, magicPcapNG):
		rd.format = FormatPcapNG
		rd.ng, err = pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true, SkipUnknownVersion: true})
		if err != nil {
			return nil, fmt.Errorf("capture: pcapng: %w", err)
		}
	case isPcapMagic(magic):
		rd.format = FormatPcap
		rd.pcap, err = pcapgo.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("capture: pcap: %w", err)
		}
		if _, ok := firstLayer(rd.pcap.LinkType()); !ok {
			return nil, fmt.Errorf("capture: %w", linkTypeError(rd.pcap.LinkType()))
		}
	default:
		return nil, fmt.Errorf("capture: %w: magic %x", ErrNotCapture, magic)
	}
	return rd, nil
}

func isPcapMagic(m []byte) bool {
	for _, p := range magicsPcap {
		if bytes.Equal(m, p) {
			return true
		}
	}
	return false
}

func linkTypeError(lt layers.LinkType) error {
	return fmt.Errorf("%w %s (%d); want Ethernet, Linux SLL or SLL2, raw IP or loopback", ErrLinkType, lt, uint32(lt))
}

// Format returns the capture's file format.
func (r *Reader) Format() Format { return r.format }

// Stats returns the counts so far.
func (r *Reader) Stats() Stats {
	s := r.stats
	s.Errors = append([]FrameError(nil), s.Errors...)
	return s
}

// Next returns the next DHCPv6 message, skipping (and counting) the frames
// that hold none. It returns io.EOF at the end of the capture. A frame
// that the file ends inside is counted as malformed and ends the capture.
// Any other error is the file's: the reading cannot go on, and Next
// returns the same error from then on.
func (r *Reader) Next() (Packet, error) {
	if r.err != nil {
		return Packet{}, r.err
	}
	p, err := r.next()
	if err != nil {
		r.err = err
	}
	return p, err
}

func (r *Reader) next() (Packet, error) {
	for {
		data, ci, err := r.read()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return Packet{}, io.EOF
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				r.frame++
				r.stats.Frames++
				r.malformed(fmt.Errorf("the capture file ends inside this frame: %w", ErrTruncated))
				return Packet{}, io.EOF
			}
			return Packet{}, fmt.Errorf("capture: after frame %d: %w", r.frame, err)
		}
		r.frame++
		lt := r.linkType(ci)
		first, ok := firstLayer(lt)
		if !ok {
			// Not counted in Stats: the reading stops here.
			return Packet{}, fmt.Errorf("capture: frame %d: %w", r.frame, linkTypeError(lt))
		}
		r.stats.Frames++
		p, v, err := r.dec.decode(lt, first, data)
		switch v {
		case skip:
			r.stats.Skipped++
			continue
		case bad:
			if ci.CaptureLength < ci.Length {
				err = fmt.Errorf("%w (snap length: captured %d of %d bytes)", err, ci.CaptureLength, ci.Length)
			}
			r.malformed(err)
			continue
		}
		p.Index = r.frame
		p.Time = ci.Timestamp
		r.stats.Packets++
		return p, nil
	}
}

func (r *Reader) malformed(err error) {
	r.stats.Malformed++
	if len(r.stats.Errors) < MaxFrameErrors {
		r.stats.Errors = append(r.stats.Errors, FrameError{Index: r.frame, Err: err})
	}
}

func (r *Reader) read() ([]byte, gopacket.CaptureInfo, error) {
	if r.ng != nil {
		return r.ng.ReadPacketData()
	}
	return r.pcap.ReadPacketData()
}

func (r *Reader) linkType(ci gopacket.CaptureInfo) layers.LinkType {
	if r.ng == nil {
		return r.pcap.LinkType()
	}
	if len(ci.AncillaryData) > 0 {
		if lt, ok := ci.AncillaryData[0].(layers.LinkType); ok {
			return lt
		}
	}
	return r.ng.LinkType()
}

// firstLayer is the layer a frame of link type lt starts with. Raw IP
// frames start with IPv4 or IPv6; decode looks at the version.
func firstLayer(lt layers.LinkType) (gopacket.LayerType, bool) {
	switch lt {
	case layers.LinkTypeEthernet:
		return layers.LayerTypeEthernet, true
	case layers.LinkTypeLinuxSLL:
		return layers.LayerTypeLinuxSLL, true
	case layers.LinkTypeLinuxSLL2:
		return layers.LayerTypeLinuxSLL2, true
	case layers.LinkTypeRaw, layers.LinkTypeIPv6:
		return layers.LayerTypeIPv6, true
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		return layers.LayerTypeLoopback, true
	}
	return 0, false
}

type verdict int

const (
	keep verdict = iota
	skip
	bad
)

// decoder decodes frames with gopacket's DecodingLayerParser, one parser
// per first layer, sharing the layer values (they are refilled per frame).
type decoder struct {
	eth     layers.Ethernet
	dot1q   layers.Dot1Q
	sll     layers.LinuxSLL
	sll2    layers.LinuxSLL2
	loop    layers.Loopback
	ip6     layers.IPv6
	ext     extHeader
	frag    layers.IPv6Fragment
	udp     layers.UDP
	parsers map[gopacket.LayerType]*gopacket.DecodingLayerParser
	decoded []gopacket.LayerType
}

func (d *decoder) parser(first gopacket.LayerType) *gopacket.DecodingLayerParser {
	if p, ok := d.parsers[first]; ok {
		return p
	}
	if d.parsers == nil {
		d.parsers = map[gopacket.LayerType]*gopacket.DecodingLayerParser{}
	}
	// IPv4, ICMPv6, TCP and the rest have no decoder here: the parser
	// stops at them with UnsupportedLayerType, which means "not DHCPv6".
	p := gopacket.NewDecodingLayerParser(first, &d.eth, &d.dot1q, &d.sll, &d.sll2, &d.loop, &d.ip6, &d.ext, &d.frag, &d.udp)
	d.parsers[first] = p
	return p
}

// decode finds the DHCPv6 message in one frame.
func (d *decoder) decode(lt layers.LinkType, first gopacket.LayerType, data []byte) (Packet, verdict, error) {
	if lt == layers.LinkTypeRaw || lt == layers.LinkTypeIPv6 {
		switch {
		case len(data) == 0:
			return Packet{}, bad, fmt.Errorf("empty frame: %w", ErrTruncated)
		case data[0]>>4 == 4 && lt == layers.LinkTypeRaw:
			return Packet{}, skip, nil
		case data[0]>>4 != 6:
			return Packet{}, bad, fmt.Errorf("raw frame of IP version %d", data[0]>>4)
		}
	}
	p := d.parser(first)
	err := p.DecodeLayers(data, &d.decoded)
	var unsupported gopacket.UnsupportedLayerType
	if errors.As(err, &unsupported) {
		err = nil
	}

	var pkt Packet
	nIP6, haveUDP := 0, false
	for _, t := range d.decoded {
		switch t {
		case layers.LayerTypeEthernet:
			pkt.SrcMAC = d.eth.SrcMAC
		case layers.LayerTypeLinuxSLL:
			if d.sll.AddrType == uint16(layers.ARPHardwareTypeEthernet) && d.sll.AddrLen == 6 {
				pkt.SrcMAC = d.sll.Addr
			}
		case layers.LayerTypeLinuxSLL2:
			if d.sll2.ARPHardwareType == layers.ARPHardwareTypeEthernet && d.sll2.AddrLength == 6 {
				pkt.SrcMAC = d.sll2.Addr
			}
		case layers.LayerTypeIPv6:
			nIP6++
		case layers.LayerTypeUDP:
			haveUDP = true
		}
	}
	switch {
	case err != nil:
		// A layer failed to decode: the link header, the IPv6 header, an
		// extension header or the UDP header is short or inconsistent.
		if p.Truncated {
			err = fmt.Errorf("%w: %v", ErrTruncated, err)
		}
		return Packet{}, bad, fmt.Errorf("undecodable frame: %w", err)
	case nIP6 == 0:
		return Packet{}, skip, nil // ARP, IPv4, LLDP ...
	case nIP6 > 1:
		return Packet{}, skip, nil // a tunnel: IPv6 in IPv6
	case !haveUDP:
		return d.noUDP()
	}
	src, dst := uint16(d.udp.SrcPort), uint16(d.udp.DstPort)
	if !isDHCPv6Port(src) && !isDHCPv6Port(dst) {
		return Packet{}, skip, nil
	}
	if p.Truncated {
		return Packet{}, bad, fmt.Errorf("DHCPv6 message %s cut short: IPv6 payload length %d, UDP length %d, %d bytes of UDP present: %w",
			flow(d), d.ip6.Length, d.udp.Length, len(d.udp.Contents)+len(d.udp.Payload), ErrTruncated)
	}
	if len(d.udp.Payload) == 0 {
		return Packet{}, bad, fmt.Errorf("empty DHCPv6 message %s", flow(d))
	}
	pkt.SrcMAC = clone(pkt.SrcMAC)
	pkt.Src = netip.AddrPortFrom(addr(d.ip6.SrcIP), src)
	pkt.Dst = netip.AddrPortFrom(addr(d.ip6.DstIP), dst)
	pkt.Payload = clone(d.udp.Payload)
	return pkt, keep, nil
}

// noUDP judges an IPv6 frame in which no UDP header was decoded.
func (d *decoder) noUDP() (Packet, verdict, error) {
	last := d.decoded[len(d.decoded)-1]
	if last == layers.LayerTypeIPv6Fragment && d.frag.NextHeader == layers.IPProtocolUDP && d.frag.FragmentOffset == 0 {
		// The first fragment: its UDP header says whether it is DHCPv6.
		if b := d.frag.Payload; len(b) >= 4 &&
			(isDHCPv6Port(binary.BigEndian.Uint16(b)) || isDHCPv6Port(binary.BigEndian.Uint16(b[2:]))) {
			return Packet{}, bad, errors.New("fragmented DHCPv6 message (fragments are not reassembled)")
		}
		return Packet{}, skip, nil
	}
	next := d.ip6.NextLayerType()
	switch last {
	case layers.LayerTypeIPv6Fragment:
		next = d.frag.NextLayerType()
	case layers.LayerTypeIPv6HopByHop, layers.LayerTypeIPv6Routing, layers.LayerTypeIPv6Destination:
		next = d.ext.NextLayerType()
	}
	if next == layers.LayerTypeUDP {
		return Packet{}, bad, fmt.Errorf("IPv6 packet ends before its UDP header: %w", ErrTruncated)
	}
	return Packet{}, skip, nil // ICMPv6, TCP, later fragments ...
}

func flow(d *decoder) string {
	return fmt.Sprintf("[%s]:%d > [%s]:%d", d.ip6.SrcIP, d.udp.SrcPort, d.ip6.DstIP, d.udp.DstPort)
}

func isDHCPv6Port(p uint16) bool { return p == ClientPort || p == ServerPort }

func addr(ip []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a
}

func clone[T ~[]byte](b T) T {
	if b == nil {
		return nil
	}
	return append(T{}, b...)
}

// extHeader decodes the IPv6 extension headers that share the generic
// layout of RFC 8200 section 4 (next header, length in 8-octet units not
// counting the first 8): Hop-by-Hop Options (when not right after the IPv6
// header, where layers.IPv6 takes it), Routing and Destination Options.
// gopacket's own IPv6Routing and IPv6HopByHop are not DecodingLayers, and
// only where the header ends matters here, not its options.
type extHeader struct {
	layers.BaseLayer
	NextHeader layers.IPProtocol
}

func (e *extHeader) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) < 8 {
		df.SetTruncated()
		return fmt.Errorf("IPv6 extension header of %d bytes", len(data))
	}
	n := 8 + int(data[1])*8
	if n > len(data) {
		df.SetTruncated()
		return fmt.Errorf("IPv6 extension header of %d bytes, %d captured", n, len(data))
	}
	e.NextHeader = layers.IPProtocol(data[0])
	e.BaseLayer = layers.BaseLayer{Contents: data[:n], Payload: data[n:]}
	return nil
}

func (e *extHeader) CanDecode() gopacket.LayerClass {
	return gopacket.NewLayerClass([]gopacket.LayerType{
		layers.LayerTypeIPv6HopByHop, layers.LayerTypeIPv6Routing, layers.LayerTypeIPv6Destination})
}

func (e *extHeader) NextLayerType() gopacket.LayerType { return e.NextHeader.LayerType() }
