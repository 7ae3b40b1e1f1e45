package etcdstore_test

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/etcdstore"
	"github.com/cloudstack-pd/cloudstack-pd/internal/etcdtest"
)

// BenchmarkPutBindingsNew records new bindings as a server of a cluster
// does when many VMs ask for their prefix at once (the first exchanges
// after a start, a storm): PutBindings of parts of 1000 bindings never
// seen before (the Recorder's chunk), one after the other, through
// allocator.Store, on a one-member embedded cluster in the same process
// (its work is in the time; etcd's default --max-txn-ops, 128).
// bindings/s is the rate at which etcd takes them.
func BenchmarkPutBindingsNew(b *testing.B) {
	c := etcdtest.StartOne(b)
	cli := c.Client(b)
	st := allocator.NewStore(fencedStore(b, c, cli, etcdstore.Options{}))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	bs := make([]allocator.Binding, 1000)
	n := 0
	for b.Loop() {
		for i := range bs {
			bs[i] = benchBinding(n, now)
			n++
		}
		if err := st.PutBindings(bs, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "bindings/s")
}

// benchBinding is the binding of client i, as serve records it.
func benchBinding(i int, now time.Time) allocator.Binding {
	duid := []byte{0, 3, 0, 1, 2, 0xb0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(duid[6:], uint32(i))
	var a [16]byte
	a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
	binary.BigEndian.PutUint32(a[4:], uint32(i)<<4)
	return allocator.Binding{ClientDUID: duid, MAC: duid[4:], IAID: 1, Pool: "bench-pod-0",
		Prefix: netip.PrefixFrom(netip.AddrFrom16(a), 60), PreferredLifetime: 86400, ValidLifetime: 172800,
		Expires: now.Add(48 * time.Hour), LastExchange: now, LastMessage: "REQUEST",
		RelaySource: netip.MustParseAddrPort("[::1]:40000"), LinkAddress: netip.MustParseAddr("2001:db8::1"),
		PeerAddress: netip.MustParseAddr("fe80::b0:ff:fe00:1"), InterfaceID: []byte("VLAN2700"),
		RemoteID: []byte{0, 0, 0x0a, 0x4c, 2, 0xb0, 0, 0, 0, 1}}
}
