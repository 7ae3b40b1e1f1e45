package capture

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// FuzzRead feeds arbitrary bytes to Read. Nothing may panic; every frame
// is counted once; what comes out is a non-empty DHCPv6 message over IPv6
// with a DHCPv6 port on one side, numbered within the frames read.
func FuzzRead(f *testing.F) {
	// The shared real captures, when they are there.
	if dir := testenv.FindSharedCaptures(); dir != "" {
		files, _ := filepath.Glob(filepath.Join(dir, "*.pcap"))
		for _, name := range files {
			if b, err := os.ReadFile(name); err == nil {
				f.Add(b)
			}
		}
	}
	ip := ipv6UDP(relayAP, serverAP, relayed())
	// One frame per link type, and pcapng with two interfaces.
	f.Add(pcapFile(f, layers.LinkTypeEthernet, frame{data: eth6(ip, 0x88a8, 0x8100)}))
	f.Add(pcapFile(f, layers.LinkTypeLinuxSLL, frame{data: sll(1, relayMAC, ip)}))
	f.Add(pcapFile(f, layers.LinkTypeLinuxSLL2, frame{data: sll2(1, relayMAC, ip)}))
	f.Add(pcapFile(f, layers.LinkTypeRaw, frame{data: ip}))
	f.Add(pcapFile(f, layers.LinkTypeNull, frame{data: null(binary.LittleEndian, 24, ip)}))
	f.Add(pcapBigEndian(layers.LinkTypeLoop, frame{data: null(binary.BigEndian, 24, ip)}))
	f.Add(pcapngFile(f, []layers.LinkType{layers.LinkTypeEthernet, layers.LinkTypeRaw}, frame{data: eth6(ip)}, frame{data: ip, iface: 1}))
	// Extension headers, a first fragment, a frame cut by the snap length.
	f.Add(pcapFile(f, layers.LinkTypeRaw, frame{data: ipv6UDP(relayAP, serverAP, relayed(),
		ext{layers.IPProtocolIPv6Destination, make([]byte, 6)}, ext{layers.IPProtocolIPv6Routing, make([]byte, 14)})}))
	f.Add(pcapFile(f, layers.LinkTypeEthernet, frame{data: eth6(ip)[:70], length: len(ip) + 14}))
	// A gzipped capture.
	f.Add(gzipped(f, pcapFile(f, layers.LinkTypeEthernet, frame{data: eth6(ip)})))

	f.Fuzz(func(t *testing.T, b []byte) {
		pkts, st, _ := Read(bytes.NewReader(b))
		if st.Frames != st.Packets+st.Skipped+st.Malformed || st.Packets != len(pkts) {
			t.Fatalf("stats do not add up: %+v, %d packets", st, len(pkts))
		}
		if len(st.Errors) > MaxFrameErrors || len(st.Errors) > st.Malformed {
			t.Fatalf("%d errors kept for %d malformed frames", len(st.Errors), st.Malformed)
		}
		last := 0
		for _, p := range pkts {
			switch {
			case p.Index <= last || p.Index > st.Frames:
				t.Fatalf("frame number %d after %d, of %d frames", p.Index, last, st.Frames)
			case len(p.Payload) == 0:
				t.Fatalf("frame %d: empty payload", p.Index)
			case !p.Src.Addr().Is6() || !p.Dst.Addr().Is6():
				t.Fatalf("frame %d: %s > %s", p.Index, p.Src, p.Dst)
			case !isDHCPv6Port(p.Src.Port()) && !isDHCPv6Port(p.Dst.Port()):
				t.Fatalf("frame %d: ports %d > %d", p.Index, p.Src.Port(), p.Dst.Port())
			}
			last = p.Index
		}
	})
}

// FuzzReplaceServerID: nothing may panic, and a rewrite keeps the message
// type and leaves a message naming no server as it was.
func FuzzReplaceServerID(f *testing.F) {
	f.Add(relayed(), []byte{0, 3, 0, 1, 1, 2, 3, 4, 5, 6})
	f.Add([]byte{3, 1, 2, 3, 0, 2, 0, 2, 0, 1}, []byte{0, 1})
	f.Add([]byte{12, 0}, []byte{0, 1})
	f.Fuzz(func(t *testing.T, pkt, duid []byte) {
		out, n, err := ReplaceServerID(pkt, duid)
		if err != nil {
			return
		}
		if out[0] != pkt[0] {
			t.Fatalf("message type %d became %d", pkt[0], out[0])
		}
		if n == 0 && !bytes.Equal(out, pkt) {
			t.Fatalf("nothing replaced, but %x became %x", pkt, out)
		}
	})
}
