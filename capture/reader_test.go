package capture

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
)

// Every link type and file format decodes the same Relay-Forward, with the
// frame's source MAC where the link has one. Each capture starts with a
// DNS-over-IPv6 frame that must be skipped, so the DHCPv6 one is frame 2.
func TestReadLinkTypes(t *testing.T) {
	msg := relayed()
	for _, tt := range linkTypeCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			pkts, st, err := Read(bytes.NewReader(tt.file))
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			want := Stats{Frames: 2, Packets: 1, Skipped: 1}
			if !sameCounts(st, want) {
				t.Fatalf("stats %+v, want %+v", st, want)
			}
			if len(pkts) != 1 {
				t.Fatalf("%d packets, want 1", len(pkts))
			}
			p := pkts[0]
			wantT := tt.t
			if wantT.IsZero() {
				wantT = when
			}
			checks := []struct {
				what      string
				got, want any
			}{
				{"index", p.Index, 2},
				{"time", p.Time.UTC(), wantT},
				{"src", p.Src, relayAP},
				{"dst", p.Dst, serverAP},
				{"src MAC", p.SrcMAC.String(), tt.mac.String()},
				{"payload", fmt.Sprintf("%x", p.Payload), fmt.Sprintf("%x", msg)},
				{"to server", p.ToServer(), true},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
				}
			}
		})
	}
}

// linkTypeCase is a synthetic capture of two frames: DNS over IPv6, then
// relayed() from relayAP to serverAP.
type linkTypeCase struct {
	name string
	file []byte
	mac  net.HardwareAddr // the DHCPv6 frame's source MAC; nil when the link has none
	t    time.Time        // its capture time; zero: when
}

func linkTypeCases(t testing.TB) []linkTypeCase {
	msg := relayed()
	ip := ipv6UDP(relayAP, serverAP, msg)
	dns := ipv6UDP(netip.MustParseAddrPort("[2001:db8::53]:53"), netip.MustParseAddrPort("[2001:db8::1]:40000"), []byte("not dhcp"))
	hopByHop := ext{layers.IPProtocolIPv6HopByHop, []byte{1, 4, 0, 0, 0, 0}} // a PadN option
	// A segment routing header (type 4) whose one segment, the last, is the destination.
	routing := ext{layers.IPProtocolIPv6Routing, append([]byte{4, 0, 0, 0, 0, 0}, serverAP.Addr().AsSlice()...)}
	dstOpts := ext{layers.IPProtocolIPv6Destination, []byte{1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
	atomic := ext{layers.IPProtocolIPv6Fragment, []byte{0, 0, 0x12, 0x34, 0x56, 0x78}} // offset 0, M=0 (RFC 6946)
	nanos := time.Date(2026, 11, 22, 12, 0, 0, 123456789, time.UTC)
	// AF_INET6 as LINKTYPE_NULL documents it (Linux's 10 never appears there).
	const afInet6BSD, afInet6FreeBSD, afInet6Darwin = 24, 28, 30

	return []linkTypeCase{
		{name: "pcap ethernet", mac: relayMAC,
			file: pcapFile(t, layers.LinkTypeEthernet, frame{data: eth6(dns)}, frame{data: eth6(ip)})},
		{name: "pcap ethernet 802.1Q", mac: relayMAC,
			file: pcapFile(t, layers.LinkTypeEthernet, frame{data: eth6(dns, 0x8100)}, frame{data: eth6(ip, 0x8100)})},
		{name: "pcap ethernet 802.1ad QinQ", mac: relayMAC,
			file: pcapFile(t, layers.LinkTypeEthernet, frame{data: eth6(dns, 0x88a8, 0x8100)}, frame{data: eth6(ip, 0x88a8, 0x8100)})},
		{name: "pcap ethernet QinQ with two 802.1Q tags", mac: relayMAC,
			file: pcapFile(t, layers.LinkTypeEthernet, frame{data: eth6(dns, 0x8100, 0x8100)}, frame{data: eth6(ip, 0x8100, 0x8100)})},
		{name: "pcap ethernet padded to 60 bytes is trimmed", mac: relayMAC,
			file: pcapFile(t, layers.LinkTypeEthernet, frame{data: eth6(dns)}, frame{data: append(eth6(ip), make([]byte, 20)...)})},
		{name: "pcap ethernet with IPv6 extension headers", mac: relayMAC,
			file: pcapFile(t, layers.LinkTypeEthernet, frame{data: eth6(dns)},
				frame{data: eth6(ipv6UDP(relayAP, serverAP, msg, hopByHop, dstOpts, routing, atomic, dstOpts))})},
		{name: "pcap linux SLL (tcpdump -i any)", mac: relayMAC,
			file: pcapFile(t, layers.LinkTypeLinuxSLL, frame{data: sll(1, relayMAC, dns)}, frame{data: sll(1, relayMAC, ip)})},
		{name: "pcap linux SLL of a tunnel has no MAC",
			file: pcapFile(t, layers.LinkTypeLinuxSLL, frame{data: sll(65534, nil, dns)}, frame{data: sll(65534, nil, ip)})},
		{name: "pcap linux SLL of loopback has no MAC",
			file: pcapFile(t, layers.LinkTypeLinuxSLL, frame{data: sll(772, make(net.HardwareAddr, 6), dns)}, frame{data: sll(772, make(net.HardwareAddr, 6), ip)})},
		{name: "pcap linux SLL2 (tcpdump -i any, libpcap 1.10)", mac: relayMAC,
			file: pcapFile(t, layers.LinkTypeLinuxSLL2, frame{data: sll2(1, relayMAC, dns)}, frame{data: sll2(1, relayMAC, ip)})},
		{name: "pcap raw IP (LINKTYPE_RAW)",
			file: pcapFile(t, layers.LinkTypeRaw, frame{data: dns}, frame{data: ip})},
		{name: "pcap raw IPv6 (LINKTYPE_IPV6)",
			file: pcapFile(t, layers.LinkTypeIPv6, frame{data: dns}, frame{data: ip})},
		{name: "pcap BSD loopback, OpenBSD/NetBSD AF_INET6",
			file: pcapFile(t, layers.LinkTypeNull, frame{data: null(binary.LittleEndian, afInet6BSD, dns)}, frame{data: null(binary.LittleEndian, afInet6BSD, ip)})},
		{name: "pcap BSD loopback, FreeBSD AF_INET6",
			file: pcapFile(t, layers.LinkTypeNull, frame{data: null(binary.LittleEndian, afInet6FreeBSD, dns)}, frame{data: null(binary.LittleEndian, afInet6FreeBSD, ip)})},
		{name: "pcap BSD loopback, macOS AF_INET6, big-endian host",
			file: pcapFile(t, layers.LinkTypeNull, frame{data: null(binary.BigEndian, afInet6Darwin, dns)}, frame{data: null(binary.BigEndian, afInet6Darwin, ip)})},
		{name: "pcap OpenBSD loop (LINKTYPE_LOOP)",
			file: pcapFile(t, layers.LinkTypeLoop, frame{data: null(binary.BigEndian, afInet6BSD, dns)}, frame{data: null(binary.BigEndian, afInet6BSD, ip)})},
		{name: "pcap nanosecond timestamps", mac: relayMAC, t: nanos,
			file: pcapNanoFile(t, layers.LinkTypeEthernet, frame{data: eth6(dns)}, frame{data: eth6(ip), t: nanos})},
		{name: "pcap big-endian", mac: relayMAC,
			file: pcapBigEndian(layers.LinkTypeEthernet, frame{data: eth6(dns)}, frame{data: eth6(ip)})},
		{name: "pcap gzipped", mac: relayMAC,
			file: gzipped(t, pcapFile(t, layers.LinkTypeEthernet, frame{data: eth6(dns)}, frame{data: eth6(ip)}))},
		{name: "pcapng ethernet", mac: relayMAC, t: nanos,
			file: pcapngFile(t, []layers.LinkType{layers.LinkTypeEthernet}, frame{data: eth6(dns)}, frame{data: eth6(ip), t: nanos})},
		{name: "pcapng linux SLL2", mac: relayMAC,
			file: pcapngFile(t, []layers.LinkType{layers.LinkTypeLinuxSLL2}, frame{data: sll2(1, relayMAC, dns)}, frame{data: sll2(1, relayMAC, ip)})},
		{name: "pcapng two interfaces with different link types",
			file: pcapngFile(t, []layers.LinkType{layers.LinkTypeEthernet, layers.LinkTypeRaw}, frame{data: eth6(dns)}, frame{data: ip, iface: 1})},
		{name: "pcapng gzipped", mac: relayMAC,
			file: gzipped(t, pcapngFile(t, []layers.LinkType{layers.LinkTypeEthernet}, frame{data: eth6(dns)}, frame{data: eth6(ip)}))},
	}
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func sameCounts(a, b Stats) bool {
	return a.Frames == b.Frames && a.Packets == b.Packets && a.Skipped == b.Skipped && a.Malformed == b.Malformed
}

// Frames that hold no DHCPv6 message are skipped; frames that are cut
// short or do not decode are counted as malformed with a reason. Neither
// stops the reading: each capture ends with a good frame that must be read.
func TestReadSkipsAndCounts(t *testing.T) {
	msg := relayed()
	ip := ipv6UDP(relayAP, serverAP, msg)
	good := frame{data: eth6(ip)}
	ipv4UDP547 := func() []byte {
		// IPv4 header (no options, checksum not checked) + UDP to port 547:
		// tcpdump's dhcp6_reconf_asan.pcap is such a frame.
		h := []byte{0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2}
		udp := binary.BigEndian.AppendUint16(nil, 547)
		udp = binary.BigEndian.AppendUint16(udp, 547)
		udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(msg)))
		udp = append(udp, 0, 0)
		b := append(append(h, udp...), msg...)
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		return b
	}()
	withNext := func(b []byte, next byte) []byte {
		b = bytes.Clone(b)
		b[6] = next
		return b
	}
	// A first fragment: the fragment header then the start of the UDP
	// datagram, which says port 547 but is not whole.
	firstFragment := func() []byte {
		full := ipv6UDP(relayAP, serverAP, msg)
		udp := full[40:]
		fh := []byte{byte(layers.IPProtocolUDP), 0, 0, 1, 0, 0, 0, 9} // offset 0, M=1
		b := append(append(bytes.Clone(full[:40]), fh...), udp[:48]...)
		b[6] = byte(layers.IPProtocolIPv6Fragment)
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
		return b
	}()
	laterFragment := func() []byte {
		full := ipv6UDP(relayAP, serverAP, msg)
		fh := []byte{byte(layers.IPProtocolUDP), 0, 0, 6 << 3, 0, 0, 0, 9} // offset 48, M=0
		b := append(append(bytes.Clone(full[:40]), fh...), full[40+48:]...)
		b[6] = byte(layers.IPProtocolIPv6Fragment)
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
		return b
	}()
	lyingLength := func() []byte { // IPv6 payload length beyond the frame
		b := bytes.Clone(ip)
		binary.BigEndian.PutUint16(b[4:], uint16(len(ip)))
		return b
	}()
	shortUDPLength := func() []byte { // UDP length 4: less than its own header
		b := bytes.Clone(ip)
		binary.BigEndian.PutUint16(b[44:], 4)
		return b
	}()
	longUDPLength := func() []byte { // UDP length beyond the IPv6 payload
		b := bytes.Clone(ip)
		binary.BigEndian.PutUint16(b[44:], uint16(len(ip)))
		return b
	}()
	arp := ethernet(relayMAC, mustMAC("ff:ff:ff:ff:ff:ff"), uint16(layers.EthernetTypeARP), nil, make([]byte, 28))

	tests := []struct {
		name      string
		frame     frame
		malformed bool   // else skipped
		truncated bool   // the reason wraps ErrTruncated
		reason    string // part of the reason
	}{
		{name: "ARP", frame: frame{data: arp}},
		{name: "IPv4 UDP to port 547", frame: frame{data: ethernet(relayMAC, serverMAC, uint16(layers.EthernetTypeIPv4), nil, ipv4UDP547)}},
		{name: "IPv4 UDP to port 547 in 802.1Q", frame: frame{data: ethernet(relayMAC, serverMAC, uint16(layers.EthernetTypeIPv4), []uint16{0x8100}, ipv4UDP547)}},
		{name: "LLDP", frame: frame{data: ethernet(relayMAC, serverMAC, 0x88cc, nil, make([]byte, 40))}},
		{name: "ICMPv6", frame: frame{data: eth6(withNext(ip, byte(layers.IPProtocolICMPv6)))}},
		{name: "TCP to port 547", frame: frame{data: eth6(withNext(ip, byte(layers.IPProtocolTCP)))}},
		{name: "no next header", frame: frame{data: eth6(withNext(ip, byte(layers.IPProtocolNoNextHeader)))}},
		{name: "UDP between other ports", frame: frame{data: eth6(ipv6UDP(netip.MustParseAddrPort("[2001:db8::1]:5353"), netip.MustParseAddrPort("[ff02::fb]:5353"), msg))}},
		{name: "IPv6 in IPv6 tunnel", frame: frame{data: eth6(withNext(append(bytes.Clone(ip[:40]), ip...), byte(layers.IPProtocolIPv6)))}},
		{name: "later fragment of a DHCPv6 message", frame: frame{data: eth6(laterFragment)}},

		{name: "cut by the snap length", frame: frame{data: eth6(ip)[:80], length: len(eth6(ip))},
			malformed: true, truncated: true, reason: "captured 80 of 160 bytes"},
		{name: "IPv6 payload length beyond the frame", frame: frame{data: eth6(lyingLength)},
			malformed: true, truncated: true, reason: "UDP length"},
		{name: "UDP length beyond the IPv6 payload", frame: frame{data: eth6(longUDPLength)},
			malformed: true, truncated: true, reason: "UDP length"},
		{name: "UDP length shorter than its header", frame: frame{data: eth6(shortUDPLength)},
			malformed: true, reason: "UDP packet too small"},
		{name: "UDP header cut", frame: frame{data: eth6(ip[:44])},
			malformed: true, truncated: true, reason: "UDP"},
		{name: "IPv6 header cut", frame: frame{data: eth6(ip[:30])},
			malformed: true, truncated: true, reason: "ip6"},
		{name: "empty DHCPv6 message", frame: frame{data: eth6(ipv6UDP(relayAP, serverAP, nil))},
			malformed: true, reason: "empty DHCPv6 message"},
		{name: "first fragment of a DHCPv6 message", frame: frame{data: eth6(firstFragment)},
			malformed: true, reason: "fragmented"},
		{name: "extension header cut", frame: frame{data: eth6(ipv6UDP(relayAP, serverAP, msg, ext{layers.IPProtocolIPv6Destination, make([]byte, 14)})[:48])},
			malformed: true, truncated: true, reason: "extension header"},
		{name: "Ethernet header cut", frame: frame{data: eth6(ip)[:10]},
			malformed: true, reason: "Ethernet"},
		{name: "802.1Q tag cut", frame: frame{data: eth6(ip, 0x8100)[:16]},
			malformed: true, truncated: true, reason: "802.1Q"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := pcapFile(t, layers.LinkTypeEthernet, tt.frame, good)
			pkts, st, err := Read(bytes.NewReader(file))
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			want := Stats{Frames: 2, Packets: 1, Skipped: 1}
			if tt.malformed {
				want = Stats{Frames: 2, Packets: 1, Malformed: 1}
			}
			if !sameCounts(st, want) {
				t.Fatalf("stats %+v, want %+v", st, want)
			}
			if len(pkts) != 1 || pkts[0].Index != 2 || !bytes.Equal(pkts[0].Payload, msg) {
				t.Fatalf("the good frame after it was not read: %+v", pkts)
			}
			if !tt.malformed {
				return
			}
			if len(st.Errors) != 1 || st.Errors[0].Index != 1 {
				t.Fatalf("errors %v, want one for frame 1", st.Errors)
			}
			e := st.Errors[0]
			if errors.Is(e, ErrTruncated) != tt.truncated {
				t.Errorf("%v: wraps ErrTruncated = %v, want %v", e, !tt.truncated, tt.truncated)
			}
			if !strings.Contains(e.Error(), tt.reason) {
				t.Errorf("reason %q does not say %q", e, tt.reason)
			}
		})
	}
}

// Raw IP frames: IPv4 is skipped, anything but IPv4 and IPv6 is malformed.
func TestReadRawFrames(t *testing.T) {
	ip := ipv6UDP(relayAP, serverAP, relayed())
	tests := []struct {
		name      string
		lt        layers.LinkType
		data      []byte
		malformed bool
	}{
		{"IPv4 on LINKTYPE_RAW", layers.LinkTypeRaw, []byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2}, false},
		{"IPv4 on LINKTYPE_IPV6", layers.LinkTypeIPv6, []byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2}, true},
		{"version 0", layers.LinkTypeRaw, make([]byte, 40), true},
		{"empty frame", layers.LinkTypeRaw, nil, true},
		{"empty loopback frame", layers.LinkTypeNull, nil, true},
		{"loopback family out of range", layers.LinkTypeNull, append([]byte{1, 2, 3, 4}, ip...), true},
		{"loopback AF_INET", layers.LinkTypeNull, append([]byte{2, 0, 0, 0}, ip...), false},
		{"SLL cut", layers.LinkTypeLinuxSLL, sll(1, relayMAC, ip)[:12], true},
		{"SLL2 cut", layers.LinkTypeLinuxSLL2, sll2(1, relayMAC, ip)[:12], true},
		{"SLL address length 9", layers.LinkTypeLinuxSLL, func() []byte { b := sll(1, relayMAC, ip); b[5] = 9; return b }(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, st, err := Read(bytes.NewReader(pcapFile(t, tt.lt, frame{data: tt.data})))
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			want := Stats{Frames: 1, Skipped: 1}
			if tt.malformed {
				want = Stats{Frames: 1, Malformed: 1}
			}
			if !sameCounts(st, want) {
				t.Errorf("stats %+v, want %+v", st, want)
			}
		})
	}
}

// A file that ends inside a frame keeps what came before it and counts the
// cut frame; it is not an error (tcpdump still being written, or a copy cut short).
func TestReadFileEndsInsideFrame(t *testing.T) {
	ip := eth6(ipv6UDP(relayAP, serverAP, relayed()))
	full := pcapFile(t, layers.LinkTypeEthernet, frame{data: ip}, frame{data: ip})
	ng := pcapngFile(t, []layers.LinkType{layers.LinkTypeEthernet}, frame{data: ip}, frame{data: ip})
	tests := []struct {
		name string
		file []byte
	}{
		{"pcap, inside the second record's data", full[:len(full)-10]},
		{"pcap, inside the second record's header", full[:24+16+len(ip)+8]},
		{"pcapng, inside the second block", ng[:len(ng)-10]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkts, st, err := Read(bytes.NewReader(tt.file))
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if len(pkts) != 1 || !sameCounts(st, Stats{Frames: 2, Packets: 1, Malformed: 1}) {
				t.Fatalf("%d packets, stats %+v; want 1 packet and the cut frame counted", len(pkts), st)
			}
			if len(st.Errors) != 1 || st.Errors[0].Index != 2 || !errors.Is(st.Errors[0], ErrTruncated) {
				t.Errorf("errors %v, want frame 2 truncated", st.Errors)
			}
		})
	}
}

func TestReadRejects(t *testing.T) {
	ip := ipv6UDP(relayAP, serverAP, relayed())
	tests := []struct {
		name    string
		file    []byte
		is      error
		message string // part of the error
	}{
		{"empty file", nil, ErrNotCapture, "0 bytes"},
		{"text", []byte("hello, world\n"), ErrNotCapture, "magic 68656c6c"},
		{"pcap of PPP frames", pcapFile(t, layers.LinkTypePPP, frame{data: ip}), ErrLinkType, "PPP (9)"},
		{"pcap of 802.11 frames", pcapFile(t, layers.LinkTypeIEEE802_11, frame{data: ip}), ErrLinkType, "(105)"},
		{"pcap of LINKTYPE_IPV4 frames", pcapFile(t, layers.LinkTypeIPv4, frame{data: ip}), ErrLinkType, "(228)"},
		{"pcapng frame on a USB interface", pcapngFile(t, []layers.LinkType{layers.LinkTypeEthernet, layers.LinkTypeLinuxUSB},
			frame{data: eth6(ip)}, frame{data: ip, iface: 1}), ErrLinkType, "frame 2"},
		{"gzip that is not a capture", gzipped(t, []byte("hello, world\n")), ErrNotCapture, ""},
		{"pcap with a record beyond the snap length", func() []byte {
			b := pcapBigEndian(layers.LinkTypeEthernet, frame{data: eth6(ip)})
			binary.BigEndian.PutUint32(b[16:], 64)      // snap length
			binary.BigEndian.PutUint32(b[24+8:], 1<<30) // captured length
			binary.BigEndian.PutUint32(b[24+12:], 1<<30)
			return b
		}(), nil, "after frame 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Read(bytes.NewReader(tt.file))
			if err == nil {
				t.Fatal("Read accepted it")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q does not wrap %q", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("error %q does not say %q", err, tt.message)
			}
		})
	}
}

// Stats.Errors keeps the first MaxFrameErrors reasons; the count goes on.
func TestReadErrorsBounded(t *testing.T) {
	bad := frame{data: eth6(ipv6UDP(relayAP, serverAP, nil))}
	frames := make([]frame, MaxFrameErrors+5)
	for i := range frames {
		frames[i] = bad
	}
	_, st, err := Read(bytes.NewReader(pcapFile(t, layers.LinkTypeEthernet, frames...)))
	if err != nil {
		t.Fatal(err)
	}
	if st.Malformed != len(frames) || len(st.Errors) != MaxFrameErrors {
		t.Errorf("malformed %d, %d reasons kept; want %d and %d", st.Malformed, len(st.Errors), len(frames), MaxFrameErrors)
	}
}

func TestReaderNextAndFormat(t *testing.T) {
	ip := eth6(ipv6UDP(relayAP, serverAP, relayed()))
	for _, tt := range []struct {
		file []byte
		f    Format
	}{
		{pcapFile(t, layers.LinkTypeEthernet, frame{data: ip}), FormatPcap},
		{pcapngFile(t, []layers.LinkType{layers.LinkTypeEthernet}, frame{data: ip}), FormatPcapNG},
	} {
		r, err := NewReader(bytes.NewReader(tt.file))
		if err != nil {
			t.Fatal(err)
		}
		if r.Format() != tt.f {
			t.Errorf("format %s, want %s", r.Format(), tt.f)
		}
		if _, err := r.Next(); err != nil {
			t.Fatalf("%s: first Next: %v", tt.f, err)
		}
		for range 2 { // io.EOF, and again
			if _, err := r.Next(); err == nil || err.Error() != "EOF" {
				t.Fatalf("%s: Next after the last frame: %v, want io.EOF", tt.f, err)
			}
		}
	}
}

// After an error that ends the reading, Next keeps returning it.
func TestReaderNextErrorSticks(t *testing.T) {
	ip := ipv6UDP(relayAP, serverAP, relayed())
	file := pcapngFile(t, []layers.LinkType{layers.LinkTypeEthernet, layers.LinkTypeLinuxUSB},
		frame{data: eth6(ip)}, frame{data: ip, iface: 1}, frame{data: eth6(ip)})
	r, err := NewReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != nil {
		t.Fatalf("frame 1: %v", err)
	}
	_, err1 := r.Next()
	_, err2 := r.Next()
	if !errors.Is(err1, ErrLinkType) || err2 != err1 {
		t.Errorf("Next = %v, then %v; want the link type error twice", err1, err2)
	}
	// Found by FuzzRead (testdata/fuzz/FuzzRead/unsupported-link-type-frame):
	// the frame that stops the reading was counted in Frames and nowhere else.
	if st := r.Stats(); !sameCounts(st, Stats{Frames: 1, Packets: 1}) {
		t.Errorf("stats %+v, want the first frame only", st)
	}
}
