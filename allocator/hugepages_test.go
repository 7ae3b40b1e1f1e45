package allocator

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

func TestGrowBuf(t *testing.T) {
	var b []byte
	var want []byte
	for i := range 5000 {
		s := []byte(strconv.Itoa(i))
		b = append(growBuf(b, len(s)), s...)
		want = append(want, s...)
	}
	if !bytes.Equal(b, want) {
		t.Fatal("growBuf lost or changed bytes")
	}
	if c := cap(growBuf(b[:len(b):len(b)], 1)); c < 2*len(b) {
		t.Errorf("growBuf grew %d bytes to %d: want doubling", len(b), c)
	}
	if s := makeHuge[rec](3); len(s) != 0 || cap(s) != 3 {
		t.Errorf("makeHuge(3): len %d cap %d", len(s), cap(s))
	}
}

// TestMakeHugeGetsHugePages: where the kernel gives transparent huge
// pages on request (Linux, "madvise" or "always"), a large array from
// makeHuge is backed by them once written, which spares the table's load
// a page fault per 4 KiB.
func TestMakeHugeGetsHugePages(t *testing.T) {
	mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || !(strings.Contains(string(mode), "[madvise]") || strings.Contains(string(mode), "[always]")) {
		t.Skipf("no transparent huge pages on request here (%q, %v)", mode, err)
	}
	s := makeHuge[uint64](4 << 20)[:4<<20] // 32 MiB
	for i := range s {
		s[i] = uint64(i)
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	huge, err := anonHugeKB(start, start+uintptr(len(s))*8)
	if err != nil {
		t.Fatal(err)
	}
	if huge == 0 {
		t.Errorf("no huge pages back the 32 MiB array")
	}
}

// anonHugeKB sums AnonHugePages of the mappings of /proc/self/smaps that
// overlap [start, end).
func anonHugeKB(start, end uintptr) (int, error) {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	total, in := 0, false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(f[0], "-"); ok && len(f) >= 5 {
			a, err1 := strconv.ParseUint(lo, 16, 64)
			z, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 != nil || err2 != nil {
				return 0, fmt.Errorf("smaps line %q", line)
			}
			in = uintptr(a) < end && uintptr(z) > start
			continue
		}
		if in && f[0] == "AnonHugePages:" {
			n, _ := strconv.Atoi(f[1])
			total += n
		}
	}
	return total, nil
}
