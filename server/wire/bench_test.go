package wire

import (
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// BenchmarkDecode measures the decode of a Renew naming its prefix into
// reused memory.
func BenchmarkDecode(b *testing.B) {
	m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeRenew}
	m.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionClientID, OptionData: []byte{0, 3, 0, 1, 6, 0x32, 0xb2, 0, 4, 0x79}})
	m.AddOption(&dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, 1}, Options: dhcpv6.PDOptions{Options: dhcpv6.Options{
		&dhcpv6.OptIAPrefix{PreferredLifetime: time.Hour, ValidLifetime: 2 * time.Hour,
			Prefix: &net.IPNet{IP: net.ParseIP("2001:db8:200::"), Mask: net.CIDRMask(60, 128)}}}}})
	pkt := m.ToBytes()
	d := NewDecoder()
	var out dhcpv6.Message
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Decode(&out, pkt); err != nil {
			b.Fatal(err)
		}
		d.Reset()
	}
}
