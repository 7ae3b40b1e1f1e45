package boltstore

import (
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// dropPages tells the kernel that this process no longer needs the pages
// of the store it has read: they leave its resident set and stay in the
// page cache, shared and reclaimable, from which a later read maps them
// again. bbolt maps the file shared and read-only (it writes with
// pwrite), so no data is lost, and a reader of the dropped pages just
// faults them back in. Long scans (LoadTable's), Verify and every Update
// call it, so that loading a store of a million allocations does not leave
// hundreds of megabytes of file pages counted as the server's memory. It
// must be called inside a transaction (which keeps bbolt from remapping
// the file meanwhile).
func (s *Store) dropPages(tx *bolt.Tx) {
	info := s.db.Info()
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, info.Data, uintptr(tx.Size()), syscall.MADV_DONTNEED)
}
