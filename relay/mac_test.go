package relay

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

func TestRemoteIDMAC(t *testing.T) {
	ent := []byte{0, 0, 0x0a, 0x4c} // 2636
	tests := []struct {
		name string
		id   string // after the enterprise number
		want string // "" means error
	}{
		{"binary MAC, Kea's reading", "\x06\x32\xb2\x00\x04\x79", "06:32:b2:00:04:79"},
		{"one byte, verbatim", "\x07", "07"},
		{"20 bytes, verbatim", strings.Repeat("\x01", 20), strings.TrimSuffix(strings.Repeat("01:", 20), ":")},
		{"21 bytes, too long", strings.Repeat("\x01", 21), ""},
		{"text with colons", "06:32:b2:00:04:79", "06:32:b2:00:04:79"},
		{"text with colons, upper case", "06:32:B2:00:04:7A", "06:32:b2:00:04:7a"},
		{"text with dashes", "06-32-b2-00-04-79", "06:32:b2:00:04:79"},
		{"text Cisco dots", "0632.b200.0479", "06:32:b2:00:04:79"},
		{"text bare hex", "0632B2000479", "06:32:b2:00:04:79"},
		{"12 bytes not hex: verbatim", "ge-0/0/0.27x", "67:65:2d:30:2f:30:2f:30:2e:32:37:78"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mac, err := RemoteIDMAC(append(ent[:4:4], tt.id...))
			if tt.want == "" {
				if err == nil {
					t.Fatalf("got %s, want error", mac)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if mac.String() != tt.want {
				t.Errorf("MAC = %s, want %s", mac, tt.want)
			}
		})
	}
	if _, err := RemoteIDMAC(ent); err == nil {
		t.Error("enterprise number alone: want error")
	}
}

func TestDUIDMAC(t *testing.T) {
	tests := []struct {
		name string
		duid []byte
		want string
	}{
		{"DUID-LLT", []byte{0, 1, 0, 1, 0x2a, 0x1b, 0x3c, 0x4d, 6, 0x32, 0xb2, 0, 4, 0x79}, "06:32:b2:00:04:79"},
		{"DUID-LL", []byte{0, 3, 0, 1, 6, 0x32, 0xb2, 0, 4, 0x79}, "06:32:b2:00:04:79"},
		{"DUID-EN has no MAC", []byte{0, 2, 0, 0, 0x0a, 0x4c, 1, 2, 3}, ""},
		{"DUID-UUID has no MAC", append([]byte{0, 4}, make([]byte, 16)...), ""},
		{"DUID-LLT without address", []byte{0, 1, 0, 1, 0, 0, 0, 0}, ""},
		{"DUID-LL without address", []byte{0, 3, 0, 1}, ""},
		{"one byte", []byte{0}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mac, err := DUIDMAC(tt.duid)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("got %s, want error", mac)
				}
				return
			}
			if err != nil || mac.String() != tt.want {
				t.Errorf("DUIDMAC = %s, %v; want %s", mac, err, tt.want)
			}
		})
	}
}

func TestEUI64MAC(t *testing.T) {
	tests := []struct {
		addr string
		want string
	}{
		{"fe80::432:b2ff:fe00:479", "06:32:b2:00:04:79"},
		{"fe80::a8bb:ccff:fedd:eeff", "aa:bb:cc:dd:ee:ff"},
		{"fe80::1", ""},                                  // not EUI-64
		{"2001:db8::432:b2ff:fe00:479", ""},              // not link-local
		{"febf::432:b2ff:fe00:479", "06:32:b2:00:04:79"}, // fe80::/10 upper end
	}
	for _, tt := range tests {
		mac, err := EUI64MAC(netip.MustParseAddr(tt.addr).As16())
		if tt.want == "" {
			if err == nil {
				t.Errorf("%s: got %s, want error", tt.addr, mac)
			}
			continue
		}
		if err != nil || mac.String() != tt.want {
			t.Errorf("%s: %s, %v; want %s", tt.addr, mac, err, tt.want)
		}
	}
}

func TestChainMACSourcesInOrder(t *testing.T) {
	other := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	duidLL := append([]byte{0, 3, 0, 1}, other...)
	withRID := Encapsulate(solicit, juniper("VLAN2701"))
	noRID := Encapsulate(solicit, Forward{LinkAddr: linkAddr, PeerAddr: peerAddr, InterfaceID: []byte("VLAN2701"),
		Extra: []dhcpv6.Option{&dhcpv6.OptionGeneric{OptionCode: OptClientLinkLayer, OptionData: append([]byte{0, 1}, 0x02, 0, 0, 0, 0, 0x79)}}})
	tests := []struct {
		name    string
		pkt     []byte
		sources []MACSource
		want    string
		from    MACSource
	}{
		{"remote-id first", withRID, []MACSource{SourceRemoteID, SourceDUID}, vmMAC.String(), SourceRemoteID},
		{"duid first", withRID, []MACSource{SourceDUID, SourceRemoteID}, other.String(), SourceDUID},
		{"falls back to duid", noRID, []MACSource{SourceRemoteID, SourceDUID}, other.String(), SourceDUID},
		{"option 79", noRID, []MACSource{SourceRemoteID, SourceClientLinkAddr}, "02:00:00:00:00:79", SourceClientLinkAddr},
		{"link-local peer", noRID, []MACSource{SourceRemoteID, SourceIPv6LinkLocal}, vmMAC.String(), SourceIPv6LinkLocal},
		{"none", noRID, []MACSource{SourceRemoteID}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Decode(tt.pkt)
			if err != nil {
				t.Fatal(err)
			}
			mac, from, err := c.MAC(tt.sources, duidLL)
			if tt.want == "" {
				if !errors.Is(err, ErrNoMAC) || !strings.Contains(err.Error(), "remote-id") {
					t.Fatalf("err = %v, want ErrNoMAC naming remote-id", err)
				}
				return
			}
			if err != nil || mac.String() != tt.want || from != tt.from {
				t.Errorf("MAC = %s from %s (%v), want %s from %s", mac, from, err, tt.want, tt.from)
			}
		})
	}
}

func TestParseMACSource(t *testing.T) {
	for name, want := range map[string]MACSource{
		"remote-id": SourceRemoteID, "rfc4649": SourceRemoteID, "rfc6939": SourceClientLinkAddr,
		"client-link-addr-option": SourceClientLinkAddr, "duid": SourceDUID, "ipv6-link-local": SourceIPv6LinkLocal,
	} {
		if got, err := ParseMACSource(name); err != nil || got != want {
			t.Errorf("ParseMACSource(%q) = %q, %v", name, got, err)
		}
	}
	for _, bad := range []string{"", "any", "Remote-ID", "docsis-cmts"} {
		if _, err := ParseMACSource(bad); err == nil {
			t.Errorf("ParseMACSource(%q): want error", bad)
		}
	}
}

func TestEUI64LinkLocalRoundTrip(t *testing.T) {
	for _, m := range []string{"06:32:b2:00:04:79", "aa:bb:cc:dd:ee:ff", "00:00:00:00:00:00"} {
		mac, _ := net.ParseMAC(m)
		a := EUI64LinkLocal(mac)
		back, err := EUI64MAC(a.As16())
		if err != nil || back.String() != m {
			t.Errorf("%s -> %s -> %s, %v", m, a, back, err)
		}
	}
	if got := EUI64LinkLocal(net.HardwareAddr{1, 2, 3}); got != netip.MustParseAddr("fe80::") {
		t.Errorf("3-byte MAC: %s, want fe80::", got)
	}
	if got := EUI64LinkLocal(vmMAC); got != peerAddr {
		t.Errorf("%s: %s, want %s", vmMAC, got, peerAddr)
	}
}
