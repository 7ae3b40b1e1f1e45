//go:build !linux

package allocator

import "unsafe"

// adviseHuge does nothing: huge-page advice is Linux's (hugepages_linux.go).
func adviseHuge(p unsafe.Pointer, size uintptr) {}
