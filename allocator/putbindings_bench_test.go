package allocator

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkPutBindings renews 50,000 bindings of 100,000 in one batch, as
// the server's Recorder does each second under load.
func BenchmarkPutBindings(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "state.db"), StoreOptions{Create: true, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	mk := func(i int, now time.Time) Binding {
		duid := []byte{0, 3, 0, 1, 2, 0xb0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(duid[6:], uint32(i))
		var a [16]byte
		a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
		binary.BigEndian.PutUint32(a[4:], uint32(i)<<4)
		return Binding{ClientDUID: duid, MAC: duid[4:], IAID: 1, Pool: "bench-pod-0",
			Prefix: netip.PrefixFrom(netip.AddrFrom16(a), 60), PreferredLifetime: 86400, ValidLifetime: 172800,
			Expires: now.Add(48 * time.Hour), LastExchange: now, LastMessage: "REQUEST",
			RelaySource: netip.MustParseAddrPort("[::1]:40000"), LinkAddress: netip.MustParseAddr("2001:db8::1"),
			PeerAddress: netip.MustParseAddr("fe80::b0:ff:fe00:1"), InterfaceID: []byte("VLAN2700"),
			RemoteID: []byte{0, 0, 0x0a, 0x4c, 2, 0xb0, 0, 0, 0, 1}}
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	all := make([]Binding, 100_000)
	for i := range all {
		all[i] = mk(i, now)
	}
	if err := s.PutBindings(all, nil); err != nil {
		b.Fatal(err)
	}
	batch := make([]Binding, 50_000)
	b.ReportAllocs()
	for n := 0; b.Loop(); n++ {
		now = now.Add(time.Second)
		for i := range batch {
			batch[i] = mk((i*2+n)%len(all), now)
		}
		// in no particular order, as the Recorder hands them over
		rand.New(rand.NewPCG(uint64(n), 1)).Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		if err := s.PutBindings(batch, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/binding")
}
