package capture

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// The synthetic traffic: a relay sends a Juniper-shaped Relay-Forward to
// the server.
var (
	relayAP   = netip.MustParseAddrPort("[2001:db8:ffff::1]:547")
	serverAP  = netip.MustParseAddrPort("[2001:db8::547]:547")
	relayMAC  = mustMAC("02:00:5e:00:53:01")
	serverMAC = mustMAC("02:00:5e:00:53:02")
	vmMAC     = mustMAC("06:32:b2:00:04:79")
	when      = time.Date(2026, 11, 22, 12, 0, 0, 123456000, time.UTC)
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// relayed is a Relay-Forward around a Solicit, as a Junos relay sends it.
func relayed() []byte {
	sol := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeSolicit, TransactionID: dhcpv6.TransactionID{1, 2, 3}}
	sol.AddOption(dhcpv6.OptClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: vmMAC}))
	sol.AddOption(&dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, 1}})
	return relay.Encapsulate(sol.ToBytes(), relay.Forward{
		LinkAddr: netip.MustParseAddr("2001:db8:100::1"), PeerAddr: netip.MustParseAddr("fe80::432:b2ff:fe00:479"),
		InterfaceID: []byte("VLAN2701"), RemoteID: relay.JuniperRemoteID(vmMAC),
	})
}

// ext is an IPv6 extension header: its protocol number and its body after
// the next-header and length bytes (6, 14, 22 ... bytes).
type ext struct {
	proto layers.IPProtocol
	body  []byte
}

// ipv6UDP builds an IPv6 packet carrying a UDP datagram, after the given
// extension headers, by hand (not with gopacket, which the reader uses).
func ipv6UDP(src, dst netip.AddrPort, payload []byte, exts ...ext) []byte {
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp = append(udp, payload...)
	binary.BigEndian.PutUint16(udp[6:], udpChecksum(src.Addr(), dst.Addr(), udp))

	var hdrs []byte
	next := byte(layers.IPProtocolUDP)
	for i := len(exts) - 1; i >= 0; i-- {
		e := exts[i]
		h := append([]byte{next, byte((2 + len(e.body) - 8) / 8)}, e.body...)
		hdrs = append(h, hdrs...)
		next = byte(e.proto)
	}
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(hdrs)+len(udp)))
	ip[6] = next
	ip[7] = 64
	s, d := src.Addr().As16(), dst.Addr().As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	return append(append(ip, hdrs...), udp...)
}

// udpChecksum computes the UDP checksum over the IPv6 pseudo-header (RFC
// 8200 section 8.1) of a datagram whose checksum field is zero.
func udpChecksum(src, dst netip.Addr, udp []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	var l [8]byte
	binary.BigEndian.PutUint32(l[:4], uint32(len(udp)))
	l[7] = byte(layers.IPProtocolUDP)
	add(l[:])
	add(udp)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	if c == 0 {
		c = 0xffff
	}
	return c
}

// Link-layer framings.

func ethernet(src, dst net.HardwareAddr, ethertype uint16, tags []uint16, payload []byte) []byte {
	b := append(append([]byte{}, dst...), src...)
	for i, tpid := range tags {
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, uint16(100+i)) // VLAN 100, 101 ...
	}
	b = binary.BigEndian.AppendUint16(b, ethertype)
	return append(b, payload...)
}

func eth6(payload []byte, tags ...uint16) []byte {
	return ethernet(relayMAC, serverMAC, uint16(layers.EthernetTypeIPv6), tags, payload)
}

// sll is a Linux cooked capture (v1) header: packet type, ARPHRD type,
// address length, 8 address bytes, protocol.
func sll(arphrd uint16, addr net.HardwareAddr, payload []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, 0) // to us
	b = binary.BigEndian.AppendUint16(b, arphrd)
	b = binary.BigEndian.AppendUint16(b, uint16(len(addr)))
	var a [8]byte
	copy(a[:], addr)
	b = append(b, a[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(layers.EthernetTypeIPv6))
	return append(b, payload...)
}

// sll2 is a Linux cooked capture v2 header: protocol, reserved, interface
// index, ARPHRD type, packet type, address length, 8 address bytes.
func sll2(arphrd uint16, addr net.HardwareAddr, payload []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(layers.EthernetTypeIPv6))
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint32(b, 7)
	b = binary.BigEndian.AppendUint16(b, arphrd)
	b = append(b, 0, byte(len(addr)))
	var a [8]byte
	copy(a[:], addr)
	b = append(b, a[:]...)
	return append(b, payload...)
}

// null is a BSD loopback header: the address family in the capturing
// host's byte order (LINKTYPE_NULL) or in network order (LINKTYPE_LOOP).
func null(order binary.AppendByteOrder, family uint32, payload []byte) []byte {
	return append(order.AppendUint32(nil, family), payload...)
}

// frame is one frame to write into a synthetic capture.
type frame struct {
	data   []byte
	length int // original length when the frame was cut by the snap length; 0: len(data)
	iface  int // pcapng interface
	t      time.Time
}

func (f frame) ci() gopacket.CaptureInfo {
	t := f.t
	if t.IsZero() {
		t = when
	}
	n := f.length
	if n == 0 {
		n = len(f.data)
	}
	return gopacket.CaptureInfo{Timestamp: t, CaptureLength: len(f.data), Length: n, InterfaceIndex: f.iface}
}

func pcapFile(t testing.TB, lt layers.LinkType, frames ...frame) []byte {
	t.Helper()
	var b bytes.Buffer
	w := pcapgo.NewWriter(&b)
	if err := w.WriteFileHeader(65535, lt); err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if err := w.WritePacket(f.ci(), f.data); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func pcapNanoFile(t testing.TB, lt layers.LinkType, frames ...frame) []byte {
	t.Helper()
	var b bytes.Buffer
	w := pcapgo.NewWriterNanos(&b)
	if err := w.WriteFileHeader(65535, lt); err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if err := w.WritePacket(f.ci(), f.data); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// pcapBigEndian writes a pcap file in big-endian byte order (as SPARC and
// POWER hosts write them), which pcapgo's writer does not produce.
func pcapBigEndian(lt layers.LinkType, frames ...frame) []byte {
	be := binary.BigEndian
	b := be.AppendUint32(nil, 0xa1b2c3d4)
	b = be.AppendUint16(b, 2)
	b = be.AppendUint16(b, 4)
	b = be.AppendUint32(b, 0)
	b = be.AppendUint32(b, 0)
	b = be.AppendUint32(b, 65535)
	b = be.AppendUint32(b, uint32(lt))
	for _, f := range frames {
		ci := f.ci()
		b = be.AppendUint32(b, uint32(ci.Timestamp.Unix()))
		b = be.AppendUint32(b, uint32(ci.Timestamp.Nanosecond()/1000))
		b = be.AppendUint32(b, uint32(ci.CaptureLength))
		b = be.AppendUint32(b, uint32(ci.Length))
		b = append(b, f.data...)
	}
	return b
}

// pcapngFile writes a pcapng file with one interface per link type.
func pcapngFile(t testing.TB, lts []layers.LinkType, frames ...frame) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := pcapgo.NewNgWriterInterface(&b, pcapgo.NgInterface{Name: "eth0", LinkType: lts[0], SnapLength: 65535}, pcapgo.DefaultNgWriterOptions)
	if err != nil {
		t.Fatal(err)
	}
	for i, lt := range lts[1:] {
		if _, err := w.AddInterface(pcapgo.NgInterface{Name: "if" + string(rune('1'+i)), LinkType: lt, SnapLength: 65535}); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range frames {
		if err := w.WritePacket(f.ci(), f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
