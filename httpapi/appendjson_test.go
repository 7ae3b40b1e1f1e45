package httpapi

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
)

// TestAppendAllocationIsMarshalIndent: the listing's own encoder writes
// byte for byte what encoding/json writes of the Allocation view, for
// allocations with every field set, none set, and strings that JSON
// escapes.
func TestAppendAllocationIsMarshalIndent(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		paris = time.FixedZone("CET", 3600)
	}
	allocs := append(testAllocations(),
		allocator.Allocation{},
		allocator.Allocation{Pool: "pod-\"a\"", MAC: mustMAC("06:32:b2:00:04:79"), Prefix: netip.MustParsePrefix("2001:db8::/60"),
			State: allocator.StateGone, Since: time.Date(2026, 1, 2, 3, 4, 5, 123456789, paris), GoneAt: time.Unix(1, 0),
			VMName: "<web>&\u2028\u2029\x00\x1f\b\f\n\r\t\\é😀\xff\xfe", VMID: "a\u007fb", NICID: "ü\xc3",
			IP6: netip.MustParseAddr("::ffff:10.0.0.1"), IP6CIDR: netip.MustParsePrefix("2001:db8:100::/64"), Source: "import-kea"},
		allocator.Allocation{Pool: "p", MAC: []byte{0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3}, IP6: netip.MustParseAddr("10.1.2.3"),
			QuarantinedAt: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC)},
	)
	for i := range allocs {
		for _, pool := range []*allocator.Pool{nil, &poolA} {
			want, err := json.MarshalIndent(AllocationOf(&allocs[i], pool), "    ", "  ")
			if err != nil {
				t.Fatal(err)
			}
			if got := appendAllocation(nil, &allocs[i], pool); !bytes.Equal(got, want) {
				t.Errorf("allocation %d:\n got %s\nwant %s", i, got, want)
			}
		}
	}
	a := allocs[0]
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf = appendAllocation(buf[:0], &a, &poolA) }); n != 0 {
		t.Errorf("appendAllocation allocates %v times", n)
	}
}

// FuzzAppendJSONString: any string is quoted as encoding/json quotes it.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "web-1", `"\`, "<>&", "\u2028\u2029", "\x00\x1f\x7f", "\xff", "é\xc3", "😀\xf0\x9f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("%q: got %s, want %s", s, got, want)
		}
	})
}
