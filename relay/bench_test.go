package relay

import "testing"

// BenchmarkDecodeInto measures the decode of a Juniper relay level into a
// reused chain: the relay part of the server's packet path.
func BenchmarkDecodeInto(b *testing.B) {
	pkt := Encapsulate(solicit, juniper("VLAN2701"))
	var c Chain
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		if err := DecodeInto(&c, pkt); err != nil {
			b.Fatal(err)
		}
	}
}
