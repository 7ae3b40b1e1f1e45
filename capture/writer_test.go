package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
)

// What Writer writes, Read reads back the same; the IPv6 and UDP headers
// are right, checked by hand, not with the gopacket code that wrote them.
func TestWriterRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{12, 0xab}, 700) // more than an Ethernet MTU
	tests := []struct {
		name     string
		src, dst netip.AddrPort
		payload  []byte
		t        time.Time
	}{
		{"relay-forward to the server", relayAP, serverAP, relayed(), when},
		{"relay-reply to the relay's source port", serverAP, netip.MustParseAddrPort("[2001:db8:ffff::1]:40123"), []byte{13, 0, 1, 2}, when.Add(time.Millisecond)},
		{"link-local to multicast", netip.MustParseAddrPort("[fe80::201:2ff:fe03:405]:546"), netip.MustParseAddrPort("[ff02::1:2]:547"), []byte{1, 2, 3, 4}, when.Add(time.Second)},
		{"zone dropped", netip.MustParseAddrPort("[fe80::1%eth0]:546"), serverAP, []byte{1, 0, 0, 1}, when},
		{"odd length", relayAP, serverAP, []byte{12, 1, 2}, when},
		{"larger than an MTU", relayAP, serverAP, big, when},
		{"before 1970 truncated to microseconds", relayAP, serverAP, []byte{1, 0, 0, 2}, time.Date(2026, 1, 2, 3, 4, 5, 6789, time.UTC)},
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		if err := w.WritePacket(tt.t, tt.src, tt.dst, tt.payload); err != nil {
			t.Fatalf("%s: WritePacket: %v", tt.name, err)
		}
	}
	if got := binary.LittleEndian.Uint32(buf.Bytes()[20:]); got != uint32(layers.LinkTypeRaw) {
		t.Fatalf("link type %d, want LINKTYPE_RAW (101)", got)
	}
	frames := rawFrames(t, buf.Bytes())
	pkts, st, err := Read(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if !sameCounts(st, Stats{Frames: len(tests), Packets: len(tests)}) || len(pkts) != len(tests) {
		t.Fatalf("read back %d packets, stats %+v; want %d", len(pkts), st, len(tests))
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pkts[i]
			src := netip.AddrPortFrom(tt.src.Addr().WithZone(""), tt.src.Port())
			if p.Index != i+1 || p.Src != src || p.Dst != tt.dst || !bytes.Equal(p.Payload, tt.payload) || p.SrcMAC != nil {
				t.Errorf("read back %d %s > %s %x mac %v; want %d %s > %s %x", p.Index, p.Src, p.Dst, p.Payload, p.SrcMAC, i+1, src, tt.dst, tt.payload)
			}
			if want := tt.t.Truncate(time.Microsecond); !p.Time.Equal(want) {
				t.Errorf("time %s, want %s", p.Time, want)
			}
			ip := frames[i]
			udp := ip[40:]
			checks := []struct {
				what      string
				got, want int
			}{
				{"IP version", int(ip[0] >> 4), 6},
				{"IPv6 payload length", int(binary.BigEndian.Uint16(ip[4:])), 8 + len(tt.payload)},
				{"next header", int(ip[6]), int(layers.IPProtocolUDP)},
				{"hop limit", int(ip[7]), HopLimit},
				{"frame length", len(ip), 48 + len(tt.payload)},
				{"UDP length", int(binary.BigEndian.Uint16(udp[4:])), 8 + len(tt.payload)},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s = %d, want %d", c.what, c.got, c.want)
				}
			}
			sum := binary.BigEndian.Uint16(udp[6:])
			zeroed := bytes.Clone(udp)
			zeroed[6], zeroed[7] = 0, 0
			if want := udpChecksum(src.Addr(), tt.dst.Addr(), zeroed); sum != want {
				t.Errorf("UDP checksum %#04x, want %#04x", sum, want)
			}
		})
	}
}

// rawFrames splits a little-endian pcap file into its frames.
func rawFrames(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for b = b[24:]; len(b) > 0; {
		n := int(binary.LittleEndian.Uint32(b[8:]))
		out = append(out, b[16:16+n])
		b = b[16+n:]
	}
	return out
}

func TestWriterRejects(t *testing.T) {
	w, err := NewWriter(&bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	v4 := netip.MustParseAddrPort("192.0.2.1:547")
	mapped := netip.MustParseAddrPort("[::ffff:192.0.2.1]:547")
	tests := []struct {
		name     string
		src, dst netip.AddrPort
		payload  []byte
		is       error
	}{
		{"IPv4 source", v4, serverAP, []byte{1}, ErrAddress},
		{"IPv4 destination", relayAP, v4, []byte{1}, ErrAddress},
		{"IPv4-mapped source", mapped, serverAP, []byte{1}, ErrAddress},
		{"no address", netip.AddrPort{}, serverAP, []byte{1}, ErrAddress},
		{"payload beyond a UDP datagram", relayAP, serverAP, make([]byte, 65535-7), ErrTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := w.WritePacket(when, tt.src, tt.dst, tt.payload); !errors.Is(err, tt.is) {
				t.Errorf("WritePacket = %v, want %v", err, tt.is)
			}
		})
	}
	// The largest payload that fits is written.
	if err := w.WritePacket(when, relayAP, serverAP, make([]byte, 65535-8)); err != nil {
		t.Errorf("largest payload: %v", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestNewWriterError(t *testing.T) {
	if _, err := NewWriter(failWriter{}); err == nil {
		t.Error("NewWriter on a failing writer succeeded")
	}
}
