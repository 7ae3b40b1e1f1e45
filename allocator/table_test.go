package allocator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// tableAllocations are allocations with every kind of field value a
// table keeps: times in UTC, local and fixed zones or zero, IPv6 and IPv4
// addresses, zoned or absent, strings repeated or not, ip6-cidrs repeated,
// distinct (IPv6, IPv4, not masked) or absent.
func tableAllocations() []Allocation {
	plus2 := time.FixedZone("", 2*3600)
	named := time.FixedZone("CEST", 2*3600)
	local := time.Date(2026, 3, 4, 5, 6, 7, 8, time.Local)
	return []Allocation{
		{Pool: "pod-a", MAC: mac("06:32:b2:00:04:79"), Prefix: netip.MustParsePrefix("2001:db8:200::/60"), State: StateActive,
			Since: t0, VMID: "9f1c", VMName: "web-1", NICID: "n1", IP6: netip.MustParseAddr("2001:db8:100::1"), IP6CIDR: poolA.IP6CIDR, Source: "sync"},
		{Pool: "pod-a", MAC: mac("06:32:b2:00:04:80"), Prefix: netip.MustParsePrefix("2001:db8:200:10::/60"), State: StateGone,
			Since: local, GoneAt: t0.In(plus2), IP6CIDR: poolA.IP6CIDR, Source: "import-kea"},
		{Pool: "pod-a", MAC: mac("06:32:b2:00:04:81"), Prefix: netip.MustParsePrefix("2001:db8:200:20::/60"), State: StateQuarantined,
			Since: t0.In(named), GoneAt: t0, QuarantinedAt: t0.Add(time.Hour).In(plus2), IP6: netip.MustParseAddr("fe80::1%eth0"),
			IP6CIDR: netip.MustParsePrefix("2001:db8:1ff::/64")},
		{Pool: "pod-b", MAC: net.HardwareAddr{1, 2, 3}, Prefix: netip.MustParsePrefix("2001:db8:300::/60"), State: "odd",
			IP6: netip.MustParseAddr("192.0.2.7"), VMName: `with "quotes" <and> é`, IP6CIDR: netip.MustParsePrefix("192.0.2.1/24")},
		{Pool: "pod-b", MAC: mac("06:00:00:00:00:02"), Prefix: netip.MustParsePrefix("2001:db8:3ff:fff0::/60"), State: StateActive, Since: t0},
	}
}

func TestTableKeepsEveryField(t *testing.T) {
	want := tableAllocations()
	tbl, err := NewTable([]Pool{poolA, poolB}, want)
	if err != nil {
		t.Fatal(err)
	}
	if tbl.Len() != len(want) {
		t.Fatalf("Len = %d", tbl.Len())
	}
	if got := tbl.Allocations(); !reflect.DeepEqual(got, want) {
		t.Errorf("Allocations:\n got %+v\nwant %+v", got, want)
	}
	for i, a := range want {
		if got := tbl.At(i); !reflect.DeepEqual(got, a) {
			t.Errorf("At(%d) = %+v, want %+v", i, got, a)
		}
		got, ok := tbl.Lookup(a.MAC)
		if !ok || !reflect.DeepEqual(*got, a) {
			t.Errorf("Lookup(%s) = %+v, %v", a.MAC, got, ok)
		}
		e, ok := tbl.Find(a.MAC)
		if !ok || e.Pool.Name != a.Pool || e.Prefix != a.Prefix || e.State != a.State || e.Served() != a.Served() {
			t.Errorf("Find(%s) = %+v, %v", a.MAC, e, ok)
		}
	}
	if _, ok := tbl.Find(mac("06:00:00:00:00:99")); ok {
		t.Error("Find found an absent MAC")
	}
	want2 := map[string]map[State]int{"pod-a": {StateActive: 1, StateGone: 1, StateQuarantined: 1}, "pod-b": {"odd": 1, StateActive: 1}}
	if got := tbl.StateCounts(); !reflect.DeepEqual(got, want2) {
		t.Errorf("StateCounts = %v", got)
	}
	// Each distinct ip6-cidr is kept once.
	if len(tbl.cidrs) != 3 {
		t.Errorf("%d ip6-cidrs kept, want 3: %v", len(tbl.cidrs), tbl.cidrs)
	}
}

// TestLoadTableKeepsIP6CIDR stores allocations with and without the
// pool's ip6-cidr, and a record written before ip6-cidr was kept (no
// key): LoadTable's table gives each back as stored, the old one with
// none.
func TestLoadTableKeepsIP6CIDR(t *testing.T) {
	s := openTest(t)
	a := alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60")
	a.IP6CIDR = poolA.IP6CIDR
	b := alloc("pod-a", "06:00:00:00:00:02", "2001:db8:200:10::/60")
	b.IP6CIDR = netip.MustParsePrefix("2001:db8:1ff::/64")
	c := alloc("pod-b", "06:00:00:00:00:03", "2001:db8:300::/60") // pod-b has no ip6-cidr
	mustPut(t, s, a, b, c)
	old := alloc("pod-a", "06:00:00:00:00:04", "2001:db8:200:20::/60")
	rec := []byte(`{"mac":"06:00:00:00:00:04","pool":"pod-a","prefix":"2001:db8:200:20::/60","state":"active","since":"2026-01-02T03:04:05Z","source":"sync"}`)
	var v allocView
	if !decodeRecord(rec, &v) || v.ip6CIDR.IsValid() {
		t.Fatalf("old record: fast path refused it or read an ip6-cidr %v", v.ip6CIDR)
	}
	rawPut(t, s, []string{"pools", "pod-a", "alloc"}, old.MAC, rec)
	rawPut(t, s, []string{"pools", "pod-a", "prefix"}, PrefixKey(old.Prefix), old.MAC)
	rawPut(t, s, []string{"macs"}, old.MAC, []byte("pod-a"))
	mustCheckPools(t, s, testPools)

	tbl, _, err := s.LoadTable(testPools)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []Allocation{a, b, c, old} {
		got, ok := tbl.Lookup(want.MAC)
		if !ok || got.IP6CIDR != want.IP6CIDR || !equalAlloc(*got, want) {
			t.Errorf("%s: got %+v, want ip6-cidr %v", want.MAC, got, want.IP6CIDR)
		}
	}
	seen := map[string]netip.Prefix{}
	for i := range tbl.Len() {
		seen[tbl.At(i).MAC.String()] = tbl.At(i).IP6CIDR
	}
	if seen["06:00:00:00:00:01"] != poolA.IP6CIDR || seen["06:00:00:00:00:04"].IsValid() {
		t.Errorf("At: ip6-cidrs %v", seen)
	}
	if v, _ := EncodeAllocation(old); bytes.Contains(v, []byte("ip6-cidr")) {
		t.Errorf("a record without ip6-cidr writes the key: %s", v)
	}
}

func TestTableInvariants(t *testing.T) {
	// huge holds 2^64 prefixes: too many for a bitmap, checked by hash.
	huge := Pool{Name: "huge", Prefix: netip.MustParsePrefix("2001:db8:8000::/33"), PrefixLen: 97, InterfaceID: "VLAN9"}
	// overlapping pools are checked by hash too.
	over := Pool{Name: "over", Prefix: netip.MustParsePrefix("2001:db8:200::/44"), PrefixLen: 60, InterfaceID: "VLAN8"}
	a1 := alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60")
	for _, tc := range []struct {
		name   string
		pools  []Pool
		allocs []Allocation
		want   error
		msg    string
	}{
		{"duplicate MAC, one pool", []Pool{poolA}, []Allocation{a1, alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200:10::/60")}, ErrDuplicateMAC,
			`MAC 06:00:00:00:00:01 in pools "pod-a" and "pod-a"`},
		{"duplicate MAC, two pools", []Pool{poolA, poolB}, []Allocation{a1, alloc("pod-b", "06:00:00:00:00:01", "2001:db8:300::/60")}, ErrDuplicateMAC,
			`in pools "pod-a" and "pod-b"`},
		{"duplicate prefix", []Pool{poolA}, []Allocation{a1, alloc("pod-a", "06:00:00:00:00:02", "2001:db8:200::/60")}, ErrDuplicatePrefix,
			"prefix 2001:db8:200::/60 owned by 06:00:00:00:00:01 and 06:00:00:00:00:02"},
		{"duplicate prefix, huge pool", []Pool{huge}, []Allocation{alloc("huge", "06:00:00:00:00:01", "2001:db8:8000::/97"),
			alloc("huge", "06:00:00:00:00:02", "2001:db8:8000::/97")}, ErrDuplicatePrefix, "owned by"},
		{"duplicate prefix, overlapping pools", []Pool{poolA, over}, []Allocation{a1, alloc("over", "06:00:00:00:00:02", "2001:db8:200::/60")},
			ErrDuplicatePrefix, "owned by"},
		{"unknown pool", []Pool{poolA}, []Allocation{alloc("pod-x", "06:00:00:00:00:01", "2001:db8:200::/60")}, ErrUnknownPool, `pool "pod-x"`},
		{"outside pool", []Pool{poolA}, []Allocation{alloc("pod-a", "06:00:00:00:00:01", "2001:db8:300::/60")}, ErrOutsidePool, "06:00:00:00:00:01"},
		{"wrong length", []Pool{poolA}, []Allocation{alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200::/56")}, ErrPrefixLength, ""},
		{"duplicate pool", []Pool{poolA, poolA}, nil, ErrDuplicatePool, ""},
		{"duplicate interface-id", []Pool{poolA, {Name: "x", Prefix: poolB.Prefix, PrefixLen: 60, InterfaceID: poolA.InterfaceID}}, nil,
			ErrDuplicateInterfaceID, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewTable(tc.pools, tc.allocs)
			if !errors.Is(err, tc.want) || !strings.Contains(fmt.Sprint(err), tc.msg) {
				t.Errorf("err = %v, want %v with %q", err, tc.want, tc.msg)
			}
		})
	}
	// Both prefix checks accept what is distinct.
	for _, pools := range [][]Pool{{poolA}, {poolA, over}} {
		var allocs []Allocation
		for i := range 300 {
			allocs = append(allocs, Allocation{Pool: "pod-a", MAC: net.HardwareAddr{6, 0, 0, 0, byte(i >> 8), byte(i)},
				Prefix: netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 1, 0xd, 0xb8, 2, byte(i >> 4), byte(i << 4)}), 60), State: StateActive})
		}
		tbl, err := NewTable(pools, allocs)
		if err != nil || tbl.Len() != 300 {
			t.Fatalf("%d pools: %v", len(pools), err)
		}
		for _, a := range allocs {
			if e, ok := tbl.Find(a.MAC); !ok || e.Prefix != a.Prefix {
				t.Fatalf("Find(%s) = %+v, %v", a.MAC, e, ok)
			}
		}
	}
}

// TestLoadTableAsJSON checks LoadTable's reading of records against
// encoding/json's: records of every shape load into the same table,
// whether they take the fast path or not.
func TestLoadTableAsJSON(t *testing.T) {
	s := openTest(t)
	want := tableAllocations()
	for _, a := range want {
		v, err := EncodeAllocation(a)
		if err != nil {
			t.Fatal(err)
		}
		rawPut(t, s, []string{"pools", a.Pool, "alloc"}, a.MAC, v)
		rawPut(t, s, []string{"pools", a.Pool, "prefix"}, PrefixKey(a.Prefix), a.MAC)
		rawPut(t, s, []string{"macs"}, a.MAC, []byte(a.Pool))
	}
	tbl, _, err := s.LoadTable([]Pool{poolA, poolB})
	if err != nil {
		t.Fatal(err)
	}
	for i := range tbl.Len() {
		got := tbl.At(i)
		var v []byte
		err := s.View(nil, func(tx *Tx) error {
			v = bytes.Clone(tx.kt.Get(allocSpace(got.Pool), got.MAC))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		exp, err := DecodeAllocation(got.Pool, got.MAC, v)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, exp) {
			t.Errorf("record %s:\nLoadTable %+v\njson      %+v", v, got, exp)
		}
	}
	if tbl.Len() != len(want) {
		t.Errorf("%d allocations loaded, want %d", tbl.Len(), len(want))
	}
}

// TestLoadTableReportsTheFirstProblem stores a MAC in two pools (which
// Put refuses) and, after it, a prefix that left its pool: LoadTable
// names the duplicate MAC, the first problem in reading order, although
// it checks MACs only once every record is read.
func TestLoadTableReportsTheFirstProblem(t *testing.T) {
	s := openTest(t)
	put := func(a Allocation) {
		v, _ := EncodeAllocation(a)
		rawPut(t, s, []string{"pools", a.Pool, "alloc"}, a.MAC, v)
	}
	put(alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60"))
	put(alloc("pod-b", "06:00:00:00:00:01", "2001:db8:300::/60"))
	put(alloc("pod-b", "06:00:00:00:00:02", "2001:db8:999::/60"))
	if _, _, err := s.LoadTable([]Pool{poolA, poolB}); !errors.Is(err, ErrDuplicateMAC) {
		t.Errorf("err = %v, want the duplicate MAC", err)
	}
	put(alloc("pod-a", "06:00:00:00:00:00", "2001:db8:999::/60")) // now first in order
	if _, _, err := s.LoadTable([]Pool{poolA, poolB}); !errors.Is(err, ErrOutsidePool) {
		t.Errorf("err = %v, want the prefix outside its pool", err)
	}
	rawPut(t, s, []string{"pools", "pod-a", "alloc"}, mac("00:00:00:00:00:00"), []byte(`{"prefix": 7}`))
	if _, _, err := s.LoadTable([]Pool{poolA, poolB}); err == nil || errors.Is(err, ErrOutsidePool) {
		t.Errorf("err = %v, want the record that does not decode", err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, a := range tableAllocations() {
		v, _ := EncodeAllocation(a)
		f.Add(v)
	}
	f.Add([]byte(`{"prefix":"2001:db8::/60","state":"active"} `))
	f.Add([]byte(`{"Prefix":"2001:db8::/60"}`))
	f.Add([]byte(`{"prefix":"2001:db8::/60","prefix":"2001:db8::/60"}`))
	f.Add([]byte(`{"since":"2026-01-02T03:04:05.5+01:00","ip6":"::1%x"}`))
	f.Add([]byte(`{"vm-name":"\u00e9"}`))
	f.Add([]byte(`{"ip6-cidr":"2001:db8:100::1/64","ip6":"2001:db8:100::1"}`))
	f.Add([]byte(`{"ip6-cidr":""}`))
	f.Add([]byte(`{"ip6-cidr":"2001:db8::/129"}`))
	f.Fuzz(func(t *testing.T, val []byte) {
		var v allocView
		if !decodeRecord(val, &v) {
			return // encoding/json decides
		}
		var r allocRecord
		if err := json.Unmarshal(val, &r); err != nil {
			t.Fatalf("decodeRecord accepted %q, json.Unmarshal: %v", val, err)
		}
		a := r.Allocation
		got := Allocation{Prefix: v.prefix, State: State(v.state), Since: v.since, GoneAt: v.goneAt, QuarantinedAt: v.quarantinedAt,
			VMID: string(v.vmID), VMName: string(v.vmName), NICID: string(v.nicID), IP6: v.ip6, IP6CIDR: v.ip6CIDR, Source: string(v.source)}
		a.Pool = ""
		if !reflect.DeepEqual(got, a) {
			t.Fatalf("%q:\ndecodeRecord %+v\njson         %+v", val, got, a)
		}
	})
}

// TestDecodeRecordReusesIP6CIDR decodes records one after the other into
// the same view, as LoadTable does: each gets its own ip6-cidr, whether
// the one before had the same, another, a bad one or none.
func TestDecodeRecordReusesIP6CIDR(t *testing.T) {
	var v allocView
	for _, tc := range []struct {
		rec  string
		ok   bool
		want string
	}{
		{`{"ip6-cidr":""}`, true, ""},
		{`{"ip6-cidr":"2001:db8:100::/64"}`, true, "2001:db8:100::/64"},
		{`{"ip6-cidr":"2001:db8:100::/64"}`, true, "2001:db8:100::/64"},
		{`{"state":"active"}`, true, ""},
		{`{"ip6-cidr":"2001:db8:100::/64"}`, true, "2001:db8:100::/64"},
		{`{"ip6-cidr":"2001:db8:100::/129"}`, false, ""},
		{`{"ip6-cidr":"2001:db8:1ff::/64"}`, true, "2001:db8:1ff::/64"},
		{`{"ip6-cidr":""}`, true, ""},
		{`{"ip6-cidr":"2001:db8:1ff::/64"}`, true, "2001:db8:1ff::/64"},
	} {
		var want netip.Prefix
		if tc.want != "" {
			want = netip.MustParsePrefix(tc.want)
		}
		if ok := decodeRecord([]byte(tc.rec), &v); ok != tc.ok || ok && v.ip6CIDR != want {
			t.Errorf("%s: ok %v, ip6-cidr %v; want %v, %q", tc.rec, ok, v.ip6CIDR, tc.ok, tc.want)
		}
	}
	rec := []byte(`{"state":"active","ip6-cidr":"2001:db8:100::/64"}`)
	if n := testing.AllocsPerRun(100, func() { decodeRecord(rec, &v) }); n != 0 {
		t.Errorf("decodeRecord of a repeated ip6-cidr: %v allocations, want 0", n)
	}
}

func TestFindDoesNotAllocate(t *testing.T) {
	allocs := tableAllocations()
	tbl, err := NewTable([]Pool{poolA, poolB}, allocs)
	if err != nil {
		t.Fatal(err)
	}
	absent := mac("06:00:00:00:00:99")
	if n := testing.AllocsPerRun(100, func() {
		for _, a := range allocs {
			_, _ = tbl.Find(a.MAC)
		}
		_, _ = tbl.Find(absent)
	}); n != 0 {
		t.Errorf("Find: %v allocations per run, want 0", n)
	}
}

// TestLoadTableInBatches loads more records than the load's batches hold
// at once (loadPipe), of both shapes (the fast path and encoding/json's),
// and one larger than a batch: the table is the one NewTable builds from
// the same allocations in the same order. With a duplicate prefix early
// and a record that does not decode late, the load reports the record
// that does not decode, as if the table were built after reading.
func TestLoadTableInBatches(t *testing.T) {
	s := openTest(t)
	n := 3*loadBatches*loadBatchItems + 17
	var want []Allocation
	for i := range n {
		a := alloc("pod-a", fmt.Sprintf("06:00:00:%02x:%02x:%02x", i>>16, i>>8&0xff, i&0xff), "2001:db8:200::/60")
		a.Prefix = netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x02, byte(i >> 12), byte(i >> 4), byte(i << 4)}), 60)
		switch i % 7 {
		case 3:
			a.VMName = "vm \"quoted\"" // escaped: encoding/json reads it
		case 5:
			a.State, a.GoneAt = StateGone, t0.Add(time.Duration(i)*time.Second)
		}
		if i == 1000 {
			a.VMName = strings.Repeat("v", loadBatchBytes+1) // larger than a batch
		}
		want = append(want, a)
	}
	put := func(recs map[int][]byte) {
		err := s.b.Update(func(tx kv.Tx) error {
			for i, a := range want {
				v, err := EncodeAllocation(a)
				if err != nil {
					return err
				}
				if r, ok := recs[i]; ok {
					v = r
				}
				if err := tx.Put(allocSpace(a.Pool), a.MAC, v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	put(nil)
	exp, err := NewTable([]Pool{poolA, poolB}, want)
	if err != nil {
		t.Fatal(err)
	}
	tbl, _, err := s.LoadTable([]Pool{poolA, poolB})
	if err != nil {
		t.Fatal(err)
	}
	if tbl.Len() != n {
		t.Fatalf("%d allocations loaded, want %d", tbl.Len(), n)
	}
	for i := range n {
		if got, w := tbl.At(i), exp.At(i); !reflect.DeepEqual(got, w) {
			t.Fatalf("allocation %d:\nloaded %+v\nwant   %+v", i, got, w)
		}
	}

	dup, _ := EncodeAllocation(Allocation{Pool: "pod-a", MAC: want[100].MAC, Prefix: want[50].Prefix, State: StateActive, Since: t0})
	put(map[int][]byte{100: dup})
	if _, _, err := s.LoadTable([]Pool{poolA, poolB}); !errors.Is(err, ErrDuplicatePrefix) {
		t.Fatalf("err = %v, want the duplicate prefix", err)
	}
	put(map[int][]byte{100: dup, n - 5: []byte(`{"prefix": 7}`)})
	if _, _, err := s.LoadTable([]Pool{poolA, poolB}); err == nil || errors.Is(err, ErrDuplicatePrefix) || !strings.Contains(err.Error(), want[n-5].MAC.String()) {
		t.Errorf("err = %v, want the record of %s that does not decode", err, want[n-5].MAC)
	}
}
