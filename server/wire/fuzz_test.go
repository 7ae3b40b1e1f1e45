package wire

import (
	"bytes"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// FuzzDecode checks Decode against the library on arbitrary client
// messages: both fail, or both give the same message (sameAsLibrary).
func FuzzDecode(f *testing.F) {
	for _, c := range decodeCases {
		f.Add(c.b)
	}
	d := NewDecoder()
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 0 && (b[0] == byte(dhcpv6.MessageTypeRelayForward) || b[0] == byte(dhcpv6.MessageTypeRelayReply)) {
			// Relay messages are the relay package's; Decode gets what is inside.
			b[0] = byte(dhcpv6.MessageTypeSolicit)
		}
		sameAsLibrary(t, d, b)
	})
}

// FuzzAppend checks AppendMessage against the library's encoder on every
// message the library decodes, whatever its options.
func FuzzAppend(f *testing.F) {
	for _, c := range decodeCases {
		f.Add(c.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := dhcpv6.MessageFromBytes(b)
		if err != nil {
			return
		}
		if got, want := AppendMessage(nil, m), m.ToBytes(); !bytes.Equal(got, want) {
			t.Fatalf("AppendMessage\n%x\nlibrary\n%x", got, want)
		}
	})
}
