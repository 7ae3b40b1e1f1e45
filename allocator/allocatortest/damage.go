// Package allocatortest damages store files the ways disks and operators do
// (truncation, zeroed pages, random bytes), so that tests can show a damaged
// store gives an error, never a crash. It is imported by tests only.
package allocatortest

import (
	"fmt"
	"math/rand/v2"
	"os"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
)

// Damages are the ways Damage spoils a store file, as disks and operators
// do.
var Damages = []string{"truncated", "zeroed-page", "zeroed-history-page", "random", "empty"}

// Damage spoils the store file at path: "truncated" cuts it to 8 KiB (two
// meta pages that still point past the end); "zeroed-page" zeroes the
// middle one of the leaf pages in use (the file's size and meta pages stay
// valid); "zeroed-history-page" zeroes the middle one of the pages of the
// history, which serve does not load (it finds it with its check of the
// rest of the store, after it has started); "random" overwrites the whole file with random bytes (the same
// ones every time); "empty" truncates it to 0 bytes. The store must be
// closed and hold a few pages of allocations (Fill a thousand).
func Damage(path, how string) error {
	switch how {
	case "truncated":
		return os.Truncate(path, 8<<10)
	case "empty":
		return os.Truncate(path, 0)
	case "random":
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		b := make([]byte, fi.Size())
		r := rand.New(rand.NewPCG(1, 2))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return os.WriteFile(path, b, 0o600)
	case "zeroed-page":
		leaves, err := LeafPages(path)
		if err != nil {
			return err
		}
		if len(leaves) < 3 {
			return fmt.Errorf("%s: %d leaf pages, too few to damage one in the middle", path, len(leaves))
		}
		return ZeroPage(path, leaves[len(leaves)/2])
	case "zeroed-history-page":
		pages, err := boltstore.BucketPages(path, "history")
		if err != nil {
			return err
		}
		if len(pages) == 0 {
			return fmt.Errorf("%s: no page of the history to damage", path)
		}
		return ZeroPage(path, pages[len(pages)/2])
	}
	return fmt.Errorf("damage %q: want one of %v", how, Damages)
}

// LeafPages returns the ids of the leaf pages in use in the bbolt file at
// path, in file order.
func LeafPages(path string) ([]int, error) { return boltstore.LeafPages(path) }

// ZeroPage zeroes page id of the bbolt file at path (of the OS's page
// size, which bbolt uses).
func ZeroPage(path string, id int) error {
	size := os.Getpagesize()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(make([]byte, size), int64(id)*int64(size)); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
