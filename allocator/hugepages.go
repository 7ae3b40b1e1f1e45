package allocator

import "unsafe"

// The table of a million allocations is some 100 MB of records and
// indexes, written once at start-up. Touching that much new memory page
// by page costs a page fault per 4 KiB (on a virtual machine, several
// microseconds each: about half of a load's time), so the big arrays a
// load makes ask for transparent huge pages (adviseHuge: 2 MiB at a time)
// where the system offers them on request (Linux's "madvise" mode).

// hugeFrom is the size from which an array is worth the advice.
const hugeFrom = 1 << 20

// makeHuge returns a slice of length 0 and capacity n whose memory, if
// it is large, is advised into huge pages before its first use.
func makeHuge[T any](n int) []T {
	s := make([]T, 0, n)
	var zero T
	if size := uintptr(n) * unsafe.Sizeof(zero); size >= hugeFrom {
		adviseHuge(unsafe.Pointer(unsafe.SliceData(s)), size)
	}
	return s
}

// growBuf returns b with room for more bytes at its end, grown by
// doubling as append does, and advised as makeHuge.
func growBuf(b []byte, more int) []byte {
	if len(b)+more <= cap(b) {
		return b
	}
	c := max(2*cap(b), len(b)+more, 512)
	nb := makeHuge[byte](c)
	return append(nb, b...)
}
