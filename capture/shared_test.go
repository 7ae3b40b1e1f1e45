package capture

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// sharedFacts are what tshark 4.0 reports for the shared captures
// (tshark -r FILE -T fields -e frame.number -e dhcpv6.msgtype -e ipv6.src
// -e udp.srcport -e ipv6.dst -e udp.dstport -e eth.src -e udp.length):
// one line per DHCPv6 message, "frame type src dst source-MAC payload-length".
var sharedFacts = []struct {
	file    string
	skipped int
	first   string // time of the first DHCPv6 frame, as tshark's frame.time_epoch
	packets []string
}{
	{file: "dhcpv6-ia-pd.pcap", first: "1353944374.395063", packets: []string{
		"1 1 [fe80::201:2ff:fe03:405]:546 [ff02::1:2]:547 00:01:02:03:04:05 48",
		"2 2 [fe80::211:22ff:fe33:4455]:547 [fe80::201:2ff:fe03:405]:546 00:11:22:33:44:55 81",
		"3 3 [fe80::201:2ff:fe03:405]:546 [ff02::1:2]:547 00:01:02:03:04:05 95",
		"4 7 [fe80::211:22ff:fe33:4455]:547 [fe80::201:2ff:fe03:405]:546 00:11:22:33:44:55 81",
	}},
	{file: "dhcpv6-ia-na.pcap", first: "1353944094.978692", packets: []string{
		"1 1 [fe80::201:2ff:fe03:405]:546 [ff02::1:2]:547 00:01:02:03:04:05 48",
		"2 2 [fe80::211:22ff:fe33:4455]:547 [fe80::201:2ff:fe03:405]:546 00:11:22:33:44:55 80",
		"3 3 [fe80::201:2ff:fe03:405]:546 [ff02::1:2]:547 00:01:02:03:04:05 94",
		"4 7 [fe80::211:22ff:fe33:4455]:547 [fe80::201:2ff:fe03:405]:546 00:11:22:33:44:55 80",
	}},
	{file: "dhcpv6-AFTR-Name-RFC6334.pcap", first: "1353487286.351299", packets: []string{
		"1 1 [fe80::201:2ff:fe03:405]:546 [ff02::1:2]:547 00:01:02:03:04:05 48",
		"2 2 [fe80::211:22ff:fe33:4455]:547 [fe80::201:2ff:fe03:405]:546 00:11:22:33:44:55 134",
		"3 3 [fe80::201:2ff:fe03:405]:546 [ff02::1:2]:547 00:01:02:03:04:05 95",
		"4 7 [fe80::211:22ff:fe33:4455]:547 [fe80::201:2ff:fe03:405]:546 00:11:22:33:44:55 134",
	}},
	{file: "dhcpv6-rfc6355-duid-uuid.pcap", first: "1540552748.826971", packets: []string{
		"1 5 [fe80::7e39:bc67:f367:8def]:546 [ff02::1:2]:547 48:5b:39:e7:14:84 104",
		"2 7 [fe80::a221:b7ff:fee0:d871]:547 [fe80::7e39:bc67:f367:8def]:546 a0:21:b7:e0:d8:71 132",
	}},
	{file: "dhcpv6-rfc8415-duid-type2.pcap", first: "1667840347.188393", packets: []string{
		"1 3 [fe80::200:1ff:fe01:0]:546 [ff02::1:2]:547 00:00:01:01:00:00 147",
	}},
	{file: "dhcpv6-vendor-specific-information.pcap", first: "1301700355.136477", packets: []string{
		// A relay sending from port 546: unusual, but it is what was captured.
		"1 12 [fc00:502:411:1::1]:546 [fc00:502:400:0:10:32:0:69]:547 00:17:10:00:62:28 587",
	}},
	{file: "dhcpv6-mud.pcap", first: "1481200019.2271", packets: []string{
		"1 12 [2001:8a8:1006:4:223:ebff:fe10:2c29]:547 [2001:8a8:1006:4:223:54ff:fec2:5702]:547 00:23:eb:10:2c:29 244",
		"2 12 [2001:8a8:1006:4:223:ebff:fe10:2c29]:547 [2001:8a8:1006:4:223:54ff:fec2:5702]:547 00:23:eb:10:2c:29 244",
		"3 12 [2001:8a8:1006:4:223:ebff:fe10:2c29]:547 [2001:8a8:1006:4:223:54ff:fec2:5702]:547 00:23:eb:10:2c:29 244",
		"4 12 [2001:8a8:1006:4:223:ebff:fe10:2c29]:547 [2001:8a8:1006:4:223:54ff:fec2:5702]:547 00:23:eb:10:2c:29 244",
		"5 12 [2001:8a8:1006:4:223:ebff:fe10:2c29]:547 [2001:8a8:1006:4:223:54ff:fec2:5702]:547 00:23:eb:10:2c:29 244",
	}},
	{file: "dhcpv6-domain-list.pcap", first: "1365673899.66042", packets: []string{
		"1 7 [fe80::20c:29ff:fe9b:a15d]:547 [fe80::20c:29ff:fe38:f368]:546 00:0c:29:9b:a1:5d 93",
	}},
	// A Relay-reply from port 547 to 546, but over IPv4 (and cut: the UDP
	// length says 13312, 42 bytes were captured). DHCPv6 never runs over
	// IPv4, so the frame is skipped, not handed to a server.
	{file: "dhcp6_reconf_asan.pcap", skipped: 1},
}

func TestReadSharedCaptures(t *testing.T) {
	dir := testenv.SharedCaptures(t)
	for _, tt := range sharedFacts {
		t.Run(tt.file, func(t *testing.T) {
			pkts, st, err := ReadFile(filepath.Join(dir, tt.file))
			if err != nil {
				t.Fatalf("ReadFile: %v", err)
			}
			want := Stats{Frames: len(tt.packets) + tt.skipped, Packets: len(tt.packets), Skipped: tt.skipped}
			if !sameCounts(st, want) {
				t.Errorf("stats %+v, want %+v", st, want)
			}
			var got []string
			for _, p := range pkts {
				got = append(got, fmt.Sprintf("%d %d %s %s %s %d", p.Index, p.Payload[0], p.Src, p.Dst, p.SrcMAC, len(p.Payload)))
			}
			if strings.Join(got, "\n") != strings.Join(tt.packets, "\n") {
				t.Errorf("packets:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.packets, "\n"))
			}
			if len(pkts) > 0 {
				sec, err := strconv.ParseFloat(tt.first, 64)
				if err != nil {
					t.Fatal(err)
				}
				want := time.Unix(0, int64(sec*1e6+0.5)*1000)
				if !pkts[0].Time.Equal(want) {
					t.Errorf("first frame's time %s, want %s", pkts[0].Time, want.UTC())
				}
			}
		})
	}
}
