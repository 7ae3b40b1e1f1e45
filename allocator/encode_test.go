package allocator

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"testing"
	"time"
)

// recordCase is one allocation and one event built from the same fields.
func recordCase(mac []byte, pool, vmName, note string, at time.Time, ip6 netip.Addr, prefix netip.Prefix) (Allocation, HistoryEvent) {
	a := Allocation{Pool: pool, MAC: net.HardwareAddr(mac), Prefix: prefix, State: StateActive, Since: at,
		VMID: "6c1f0a2e-3d4b-4c5d-9e8f-001122334455", VMName: vmName, NICID: "nic-1", IP6: ip6,
		IP6CIDR: netip.MustParsePrefix("2001:db8:100::/64"), Source: SyncSource}
	e := HistoryEvent{At: at, Event: EventAllocated, Pool: pool, MAC: net.HardwareAddr(mac), Prefix: prefix, State: StateActive,
		Since: at, VMID: a.VMID, VMName: vmName, NICID: a.NICID, IP6: ip6, By: "sync", Note: note}
	return a, e
}

// checkRecordEncoding holds the direct encoders to encoding/json's bytes.
// fast says whether the direct path must have been taken.
func checkRecordEncoding(t *testing.T, a Allocation, e HistoryEvent, fast bool) {
	t.Helper()
	want, wantErr := json.Marshal(allocRecord{MAC: a.MAC.String(), Allocation: a})
	got, err := marshalAllocRecord(&a)
	if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
		t.Errorf("allocation %+v:\n got %s (%v)\nwant %s (%v)", a, got, err, want, wantErr)
	}
	if _, ok := appendAllocRecord(nil, &a); fast && !ok {
		t.Errorf("allocation %+v: encoded by encoding/json, not directly", a)
	}
	want, wantErr = json.Marshal(historyRecord{e.MAC.String(), plainEvent(e)})
	got, err = marshalHistoryRecord(&e)
	if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
		t.Errorf("event %+v:\n got %s (%v)\nwant %s (%v)", e, got, err, want, wantErr)
	}
	if _, ok := appendHistoryRecord(nil, &e); fast && !ok {
		t.Errorf("event %+v: encoded by encoding/json, not directly", e)
	}
}

// The stored records are the bytes encoding/json writes, whichever
// encoder wrote them: a store written by this version reads as before,
// and an earlier version reads what this one writes.
func TestRecordEncoding(t *testing.T) {
	at := time.Date(2026, 12, 6, 11, 0, 0, 0, time.UTC)
	mac := []byte{6, 0x32, 0xb2, 0, 4, 0x79}
	ip6 := netip.MustParseAddr("2001:db8:100::5")
	p60 := netip.MustParsePrefix("2001:db8:200:30::/60")
	for _, tc := range []struct {
		name               string
		mac                []byte
		pool, vmName, note string
		at                 time.Time
		ip6                netip.Addr
		prefix             netip.Prefix
		fast               bool
	}{
		{name: "sync", mac: mac, pool: "pod-a", vmName: "web-1", at: at, ip6: ip6, prefix: p60, fast: true},
		{name: "no ip6, no name, zero time", mac: mac, pool: "pod-a", prefix: p60, fast: true},
		{name: "nanoseconds", mac: mac, pool: "p", vmName: "x", at: at.Add(123456789), ip6: ip6, prefix: p60, fast: true},
		{name: "long and empty MACs", mac: make([]byte, 20), pool: "p", at: at, prefix: p60, fast: true},
		{name: "empty MAC", pool: "p", at: at, prefix: p60, fast: true},
		{name: "IPv4-mapped and zoned", mac: mac, pool: "p", at: at, ip6: netip.MustParseAddr("::ffff:192.0.2.1"), prefix: p60, fast: true},
		{name: "zero prefix", mac: mac, pool: "p", at: at, fast: true},
		{name: "quote and backslash", mac: mac, pool: "p", vmName: `a"b\c`, at: at, prefix: p60},
		{name: "HTML characters", mac: mac, pool: "p<a>", vmName: "x&y", at: at, prefix: p60},
		{name: "control characters", mac: mac, pool: "p", vmName: "tab\there\n", note: "\x00\x7f", at: at, prefix: p60},
		{name: "UTF-8 and invalid UTF-8", mac: mac, pool: "pöd", vmName: "\xff\xfe web\u2028", at: at, prefix: p60},
		{name: "an offset", mac: mac, pool: "p", at: at.In(time.FixedZone("x", 3600)), prefix: p60},
		{name: "an offset of 24 hours", mac: mac, pool: "p", at: at.In(time.FixedZone("x", 24*3600)), prefix: p60},
		{name: "year 10000", mac: mac, pool: "p", at: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), prefix: p60},
		{name: "year -1", mac: mac, pool: "p", at: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), prefix: p60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, e := recordCase(tc.mac, tc.pool, tc.vmName, tc.note, tc.at, tc.ip6, tc.prefix)
			checkRecordEncoding(t, a, e, tc.fast)
			// Every optional member set, and none.
			a.GoneAt, a.QuarantinedAt, a.State, a.Source = tc.at, tc.at.Add(time.Hour), StateQuarantined, ""
			e.PrevState, e.FromPool, e.FromPrefix, e.By = StateGone, tc.pool, tc.prefix, ""
			checkRecordEncoding(t, a, e, tc.fast)
			checkRecordEncoding(t, Allocation{Pool: tc.pool, MAC: tc.mac}, HistoryEvent{Pool: tc.pool, MAC: tc.mac}, tc.fast)
		})
	}
}

func FuzzRecordEncoding(f *testing.F) {
	f.Add([]byte{6, 0x32, 0xb2, 0, 4, 0x79}, "pod-a", "web-1", "", int64(1796554800), int64(0), []byte(netip.MustParseAddr("2001:db8::5").AsSlice()), uint8(60))
	f.Add([]byte{}, "p\"", "<x>", "\u2028", int64(-62135596801), int64(5), []byte{}, uint8(200))
	f.Fuzz(func(t *testing.T, mac []byte, pool, name, note string, sec, nsec int64, ip []byte, bits uint8) {
		at := time.Unix(sec, nsec).UTC()
		ip6, _ := netip.AddrFromSlice(ip)
		var prefix netip.Prefix
		if ip6.IsValid() {
			prefix = netip.PrefixFrom(ip6, int(bits)) // an invalid length gives the invalid prefix
		}
		a, e := recordCase(mac, pool, name, note, at, ip6, prefix)
		checkRecordEncoding(t, a, e, false)
		a.GoneAt, e.FromPrefix, e.FromPool = at, prefix, note
		checkRecordEncoding(t, a, e, false)
	})
}
