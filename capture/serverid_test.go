package capture

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

func TestReplaceServerID(t *testing.T) {
	oldID := []byte{0, 1, 0, 1, 0x18, 0x46, 0x49, 0x99, 0, 0x11, 0x22, 0x33, 0x44, 0x55} // a DUID-LLT, 14 bytes
	newID := []byte{0, 3, 0, 1, 2, 0, 0x5e, 0, 0x53, 0x02}                               // a DUID-LL, 10 bytes
	request := func(ids ...[]byte) []byte {
		m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeRequest, TransactionID: dhcpv6.TransactionID{9, 8, 7}}
		m.AddOption(dhcpv6.OptClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: vmMAC}))
		for _, id := range ids {
			m.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionServerID, OptionData: id})
		}
		m.AddOption(&dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, 1}})
		return m.ToBytes()
	}
	wrap := func(m []byte, levels int) []byte {
		var fs []relay.Forward
		for i := range levels {
			fs = append(fs, relay.Forward{HopCount: uint8(levels - 1 - i), LinkAddr: netip.MustParseAddr("2001:db8::1"),
				InterfaceID: []byte("VLAN2701"), RemoteID: relay.JuniperRemoteID(vmMAC), HasSourcePort: i == 0, SourcePort: 547})
		}
		return relay.Encapsulate(m, fs...)
	}
	tests := []struct {
		name string
		in   []byte
		want []byte
		n    int
	}{
		{"client message", request(oldID), request(newID), 1},
		{"client message naming no server", request(), request(), 0},
		{"client message naming two servers", request(oldID, oldID), request(newID, newID), 2},
		{"one relay level", wrap(request(oldID), 1), wrap(request(newID), 1), 1},
		{"three relay levels", wrap(request(oldID), 3), wrap(request(newID), 3), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := bytes.Clone(tt.in)
			got, n, err := ReplaceServerID(in, newID)
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.n || !bytes.Equal(got, tt.want) {
				t.Errorf("ReplaceServerID = %x, %d\nwant %x, %d", got, n, tt.want, tt.n)
			}
			if !bytes.Equal(in, tt.in) {
				t.Error("the input was modified")
			}
			if n > 0 {
				if c, err := relay.Decode(got); err == nil && len(c.Levels) == 0 {
					t.Error("relay chain lost")
				}
			}
		})
	}
}

func TestReplaceServerIDRejects(t *testing.T) {
	id := []byte{0, 3, 0, 1, 1, 2, 3, 4, 5, 6}
	deep := []byte{1, 0, 0, 1}
	for range relay.MaxLevels + 1 {
		deep = relay.Encapsulate(deep, relay.Forward{})
	}
	tests := []struct {
		name      string
		pkt, duid []byte
		truncated bool
	}{
		{"empty", nil, id, true},
		{"short client message", []byte{3, 0}, id, true},
		{"option cut", []byte{3, 0, 0, 1, 0, 2, 0, 14, 0}, id, true},
		{"option header cut", []byte{3, 0, 0, 1, 0, 2}, id, true},
		{"relay header cut", []byte{12, 0, 0, 0}, id, true},
		{"relay message option cut", relay.Encapsulate([]byte{3, 0, 0, 1}, relay.Forward{})[:40], id, true},
		{"relay-reply", []byte{13, 0, 0, 2, 0, 0}, id, false},
		{"inner message cut", relay.Encapsulate([]byte{3, 0}, relay.Forward{}), id, true},
		{"too deep", deep, id, false},
		{"empty DUID", []byte{3, 0, 0, 1}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := ReplaceServerID(tt.pkt, tt.duid)
			if err == nil {
				t.Fatalf("accepted: %x", got)
			}
			if errors.Is(err, ErrTruncated) != tt.truncated {
				t.Errorf("%v: wraps ErrTruncated = %v, want %v", err, !tt.truncated, tt.truncated)
			}
			if got != nil {
				t.Errorf("returned %x with the error", got)
			}
		})
	}
}
