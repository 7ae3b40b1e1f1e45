// Package capture reads DHCPv6 messages out of packet captures and writes
// DHCPv6 messages into them: the ground under `cloudstack-pd replay`.
//
// Reader (and Read, ReadFile) takes pcap or pcapng, plain or gzipped, told
// apart by their magic numbers, with these link types: Ethernet (with
// 802.1Q and 802.1ad/QinQ tags), Linux cooked capture v1 and v2 (what
// `tcpdump -i any` writes), raw IP (LINKTYPE_RAW and LINKTYPE_IPV6) and
// BSD loopback (LINKTYPE_NULL and LINKTYPE_LOOP). From each frame it keeps
// UDP over IPv6 to or from port 546 or 547, after any Hop-by-Hop, Routing,
// Destination Options or atomic Fragment header, and returns the DHCPv6
// message with its addresses, ports, time and source MAC.
//
// A frame that is something else (ARP, IPv4, TCP, ICMPv6, DNS ...) is
// skipped and counted in Stats.Skipped. A frame that is cut short or does
// not decode is skipped and counted in Stats.Malformed, with the reason in
// Stats.Errors; it never stops the reading and never panics. DHCPv6 over
// IPv4 does not exist: such frames are skipped, not served.
//
// Writer writes pcap with LINKTYPE_RAW: each message as an IPv6 packet with
// a UDP header whose lengths and checksum are correct. Wireshark, tshark
// and tcpdump dissect it.
//
// ReplaceServerID rewrites the Server Identifier of a captured request,
// inside any Relay-Forward levels, leaving every other byte as captured.
//
// # Caveats
//
//   - The payload is the DHCPv6 message as captured; Read does not check it.
//     A server must decode it as it decodes anything from the network.
//   - Fragmented IPv6 packets are not reassembled: the first fragment of a
//     DHCPv6 message counts as malformed, the others as skipped.
//   - Checksums are not verified: a capture taken on the sender often has
//     wrong ones because the network card computes them later.
package capture

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"
)

// DHCPv6 UDP ports (RFC 8415 section 7.2).
const (
	ClientPort = 546
	ServerPort = 547
)

// Packet is one DHCPv6 message found in a capture.
type Packet struct {
	// Index is the frame's number in the capture, from 1, counting every
	// frame (as Wireshark and tshark number them), not only DHCPv6 ones.
	Index int
	// Time is when the frame was captured.
	Time time.Time
	// SrcMAC is the frame's source hardware address; nil when the link
	// has none (raw IP, loopback, a Linux cooked capture of a non-Ethernet
	// interface).
	SrcMAC net.HardwareAddr
	// Src and Dst are the IPv6 addresses and UDP ports.
	Src, Dst netip.AddrPort
	// Payload is the DHCPv6 message: the UDP payload, trimmed to the UDP
	// length. It is the Packet's own copy.
	Payload []byte
}

// ToServer reports whether the message was sent to a server's port: a
// client's message, or a relay's Relay-Forward.
func (p *Packet) ToServer() bool { return p.Dst.Port() == ServerPort }

// MaxFrameErrors is how many malformed frames Stats.Errors describes; the
// rest are only counted, so that a damaged capture cannot fill the memory.
const MaxFrameErrors = 100

// Stats counts what a Reader did with the frames it read. Every frame is
// counted exactly once: Frames = Packets + Skipped + Malformed. A frame on
// an interface of an unsupported link type ends the reading with an error
// and is not counted.
type Stats struct {
	// Frames is the number of frames read.
	Frames int
	// Packets is the number of DHCPv6 messages returned.
	Packets int
	// Skipped counts frames that are not DHCPv6 over UDP over IPv6.
	Skipped int
	// Malformed counts frames that are truncated or do not decode.
	Malformed int
	// Errors describes the first MaxFrameErrors malformed frames.
	Errors []FrameError
}

// FrameError says why a frame was counted as malformed.
type FrameError struct {
	// Index is the frame's number, from 1.
	Index int
	// Err says what is wrong; it wraps ErrTruncated when the frame is cut short.
	Err error
}

func (e FrameError) Error() string { return fmt.Sprintf("frame %d: %v", e.Index, e.Err) }
func (e FrameError) Unwrap() error { return e.Err }

// Errors returned by NewReader, Next and Writer.
var (
	// ErrNotCapture is returned when the data is neither pcap nor pcapng.
	ErrNotCapture = errors.New("not a pcap or pcapng capture")
	// ErrLinkType is returned when a capture's link type is not one this
	// package decodes; the wrapping error names the link type.
	ErrLinkType = errors.New("unsupported link type")
	// ErrTruncated is wrapped by FrameError when a frame is cut short,
	// by the capture's snap length or by the end of the file.
	ErrTruncated = errors.New("truncated")
	// ErrAddress is returned by Writer when an address is not IPv6.
	ErrAddress = errors.New("not an IPv6 address")
	// ErrTooLong is returned by Writer when a payload does not fit in a UDP datagram.
	ErrTooLong = errors.New("payload too long for UDP")
)

// Read reads every DHCPv6 message of a pcap or pcapng capture, in capture
// order. On an error after the file header (a damaged block, a frame on an
// interface with an unsupported link type) it returns the messages read so
// far, the counts, and the error. A file that ends inside a frame is not an
// error: that frame is counted as malformed.
func Read(r io.Reader) ([]Packet, Stats, error) {
	rd, err := NewReader(r)
	if err != nil {
		return nil, Stats{}, err
	}
	var pkts []Packet
	for {
		p, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return pkts, rd.Stats(), nil
		}
		if err != nil {
			return pkts, rd.Stats(), err
		}
		pkts = append(pkts, p)
	}
}

// ReadFile is Read on the named file. Its errors name the file.
func ReadFile(path string) ([]Packet, Stats, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Stats{}, err
	}
	defer f.Close()
	pkts, st, err := Read(f)
	if err != nil {
		err = fmt.Errorf("%s: %w", path, err)
	}
	return pkts, st, err
}
