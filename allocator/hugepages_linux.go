//go:build linux

package allocator

import (
	"syscall"
	"unsafe"
)

// adviseHuge asks the kernel to back the memory from p to p+size with
// transparent huge pages (MADV_HUGEPAGE). The advice covers the 2 MiB
// pages the range touches, neighbours in the Go heap included: it only
// changes how their pages are backed, never what they hold. Where huge
// pages are off, or the call fails, nothing changes.
func adviseHuge(p unsafe.Pointer, size uintptr) {
	const huge = 2 << 20
	start := uintptr(p) &^ (huge - 1)
	end := (uintptr(p) + size + huge - 1) &^ (huge - 1)
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, start, end-start, syscall.MADV_HUGEPAGE)
}
