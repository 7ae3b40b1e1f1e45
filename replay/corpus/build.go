package corpus

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// Capture is one generated capture file.
type Capture struct {
	// Name is the file name in testdata/replay.
	Name string
	// About says what the capture stands for.
	About string
	// WrapInterfaceID and WrapLinkAddress are the --wrap settings to replay
	// it with; "" when it holds Relay-Forwards only.
	WrapInterfaceID, WrapLinkAddress string
	// Frames describe the frames, in order (frame n is Frames[n-1]).
	Frames []string
	// Data is the file's content.
	Data []byte
}

// frame is one frame to write.
type frame struct {
	data   []byte
	length int // original length when cut by the snap length; 0: len(data)
	t      time.Time
}

// builder accumulates the frames of one capture.
type builder struct {
	frames []frame
	what   []string
	t      time.Time
	xid    uint32
}

func newBuilder(start time.Time, firstXID uint32) *builder {
	return &builder{t: start, xid: firstXID}
}

// add appends a frame 10ms after the previous one.
func (b *builder) add(what string, data []byte) {
	b.t = b.t.Add(10 * time.Millisecond)
	b.frames = append(b.frames, frame{data: data, t: b.t})
	b.what = append(b.what, what)
}

// nextXID returns a fresh transaction id.
func (b *builder) nextXID() dhcpv6.TransactionID {
	b.xid++
	return dhcpv6.TransactionID{byte(b.xid >> 16), byte(b.xid >> 8), byte(b.xid)}
}

// --- DHCPv6 messages ---------------------------------------------------

// clientID is a VM's Client Identifier: a DUID-LL of its MAC, as
// cloud-init's and systemd-networkd's clients send by default.
func clientID(vm VM) dhcpv6.Option {
	return dhcpv6.OptClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: vm.MAC})
}

func serverID(duid []byte) dhcpv6.Option {
	return &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionServerID, OptionData: duid}
}

// iaPD is an IA_PD with IAID 1 naming the given prefixes (a hint with zero
// lifetimes when prefix is the zero value).
func iaPD(prefixes ...netip.Prefix) *dhcpv6.OptIAPD {
	ia := &dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, 1}}
	for _, p := range prefixes {
		o := &dhcpv6.OptIAPrefix{Prefix: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 128)}}
		if p.Addr().IsUnspecified() {
			o.Prefix.IP = net.IPv6zero
		} else {
			o.PreferredLifetime, o.ValidLifetime = Preferred*time.Second, Valid*time.Second
		}
		ia.Options.Add(o)
	}
	return ia
}

func iaNA(addrs ...netip.Addr) *dhcpv6.OptIANA {
	ia := &dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, 2}}
	for _, a := range addrs {
		ia.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: net.IP(a.AsSlice()), PreferredLifetime: Preferred * time.Second, ValidLifetime: Valid * time.Second})
	}
	return ia
}

// msg encodes a client message with an elapsed time option and an option
// request (DNS servers) after opts, as clients send them.
func msg(t dhcpv6.MessageType, xid dhcpv6.TransactionID, opts ...dhcpv6.Option) []byte {
	m := &dhcpv6.Message{MessageType: t, TransactionID: xid}
	for _, o := range opts {
		m.AddOption(o)
	}
	m.AddOption(dhcpv6.OptElapsedTime(0))
	m.AddOption(dhcpv6.OptRequestedOption(dhcpv6.OptionDNSRecursiveNameServer))
	return m.ToBytes()
}

// --- relays -------------------------------------------------------------

// junos is the Relay-Forward level a Junos relay on pool's VLAN builds for vm.
func junos(p Pool, vm VM) relay.Forward {
	return relay.Forward{LinkAddr: p.Router, PeerAddr: relay.EUI64LinkLocal(vm.MAC), InterfaceID: []byte(p.InterfaceID),
		RemoteID: relay.JuniperRemoteID(vm.MAC)}
}

// oldReply is the old server's (Kea's) answer to a relayed request, as the
// capture on the server shows it: a Relay-Reply per level.
func oldReply(fwd []byte, t dhcpv6.MessageType, vm VM, prefix netip.Prefix) []byte {
	c, err := relay.Decode(fwd)
	if err != nil {
		panic(err)
	}
	req, err := dhcpv6.MessageFromBytes(c.Message)
	if err != nil {
		panic(err)
	}
	ans := &dhcpv6.Message{MessageType: t, TransactionID: req.TransactionID}
	ans.AddOption(serverID(OldServerDUID))
	ans.AddOption(clientID(vm))
	ia := &dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, 1}, T1: T1 * time.Second, T2: T2 * time.Second}
	ia.Options.Add(&dhcpv6.OptIAPrefix{PreferredLifetime: Preferred * time.Second, ValidLifetime: Valid * time.Second,
		Prefix: &net.IPNet{IP: net.IP(prefix.Addr().AsSlice()), Mask: net.CIDRMask(prefix.Bits(), 128)}})
	ans.AddOption(ia)
	return c.Reply(ans)
}

// --- packets and link layers --------------------------------------------

// udp6 is an IPv6 packet holding a UDP datagram, lengths and checksum right.
func udp6(src, dst netip.AddrPort, payload []byte) []byte {
	s, d := src.Addr().As16(), dst.Addr().As16()
	ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolUDP, HopLimit: 64, SrcIP: s[:], DstIP: d[:]}
	if src.Addr().IsLinkLocalUnicast() || dst.Addr().IsMulticast() {
		ip.HopLimit = 1
	}
	u := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	if err := u.SetNetworkLayerForChecksum(ip); err != nil {
		panic(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ip, u, gopacket.Payload(payload)); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// icmp6 is an IPv6 packet with an ICMPv6 echo request: a frame that holds
// no DHCPv6.
func icmp6(src, dst netip.Addr) []byte {
	s, d := src.As16(), dst.As16()
	ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: 64, SrcIP: s[:], DstIP: d[:]}
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
	if err := ic.SetNetworkLayerForChecksum(ip); err != nil {
		panic(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ip, ic, &layers.ICMPv6Echo{Identifier: 1, SeqNumber: 1}); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// vlanTag is one 802.1Q (TPID 0x8100) or 802.1ad (0x88a8) tag.
type vlanTag struct {
	tpid uint16
	id   uint16
}

// ethernet frames an IPv6 packet, with VLAN tags outermost first.
func ethernet(src, dst net.HardwareAddr, tags []vlanTag, packet []byte) []byte {
	b := append(append([]byte{}, dst...), src...)
	for _, t := range tags {
		b = binary.BigEndian.AppendUint16(b, t.tpid)
		b = binary.BigEndian.AppendUint16(b, t.id)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(layers.EthernetTypeIPv6))
	return append(b, packet...)
}

// Linux cooked capture v2 packet types.
const (
	sllHost     = 0
	sllOutgoing = 4
)

// sll2 frames an IPv6 packet as `tcpdump -i any` does (LINKTYPE_LINUX_SLL2):
// protocol, reserved, interface index, ARPHRD_ETHER, packet type, address
// length, the 8-byte address field.
func sll2(pktType byte, ifindex uint32, addr net.HardwareAddr, packet []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(layers.EthernetTypeIPv6))
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint32(b, ifindex)
	b = binary.BigEndian.AppendUint16(b, 1) // ARPHRD_ETHER
	b = append(b, pktType, byte(len(addr)))
	var a [8]byte
	copy(a[:], addr)
	b = append(b, a[:]...)
	return append(b, packet...)
}

// --- files --------------------------------------------------------------

func pcapFile(lt layers.LinkType, frames []frame) ([]byte, error) {
	var b bytes.Buffer
	w := pcapgo.NewWriter(&b)
	if err := w.WriteFileHeader(262144, lt); err != nil {
		return nil, err
	}
	for _, f := range frames {
		if err := w.WritePacket(f.ci(), f.data); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

func pcapngFile(lt layers.LinkType, frames []frame) ([]byte, error) {
	var b bytes.Buffer
	// Fixed section info: the default names the machine's OS and CPU.
	opts := pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{Hardware: "x86_64", OS: "Linux 6.1.0", Application: "tcpdump (replay corpus)"}}
	w, err := pcapgo.NewNgWriterInterface(&b, pcapgo.NgInterface{Name: "any", LinkType: lt, SnapLength: 262144}, opts)
	if err != nil {
		return nil, err
	}
	for _, f := range frames {
		if err := w.WritePacket(f.ci(), f.data); err != nil {
			return nil, err
		}
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func (f frame) ci() gopacket.CaptureInfo {
	n := f.length
	if n == 0 {
		n = len(f.data)
	}
	return gopacket.CaptureInfo{Timestamp: f.t, CaptureLength: len(f.data), Length: n}
}

// Start is the time of the first frame of every capture.
var Start = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// Captures builds every capture of the corpus.
func Captures() ([]Capture, error) {
	var out []Capture
	for _, mk := range []func() (Capture, error){juniperRelay, tcpdumpAny, unrelayedTrunk} {
		c, err := mk()
		if err != nil {
			return nil, fmt.Errorf("corpus: %s: %w", c.Name, err)
		}
		out = append(out, c)
	}
	return out, nil
}
