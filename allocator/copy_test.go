package allocator

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

func TestCopyStore(t *testing.T) {
	src := openTest(t)
	mustPut(t, src,
		alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60"),
		alloc("pod-a", "06:00:00:00:00:02", "2001:db8:200:10::/60"),
		alloc("pod-b", "06:00:00:00:00:03", "2001:db8:300::/60"))
	duid, err := src.ServerDUID(func() ([]byte, error) { return []byte{0, 3, 0, 1, 1, 2, 3, 4, 5, 6}, nil })
	if err != nil {
		t.Fatal(err)
	}
	b := Binding{ClientDUID: []byte{0, 3, 0, 1, 6, 0, 0, 0, 0, 1}, IAID: 1, MAC: mac("06:00:00:00:00:01"), Pool: "pod-a",
		Prefix: alloc("pod-a", "06:00:00:00:00:01", "2001:db8:200::/60").Prefix, ValidLifetime: 7200, PreferredLifetime: 3600, LastExchange: t0}
	if err := src.PutBindings([]Binding{b}, nil); err != nil {
		t.Fatal(err)
	}

	dst := openTest(t)
	var progress []int
	rep, err := CopyStore(dst, src, func(n int) { progress = append(progress, n) })
	if err != nil {
		t.Fatal(err)
	}
	// 3 allocations × 3 keys and their history events, the DUID, a
	// binding and its prefix entry.
	if rep.Copied != 15 || rep.Present != 1 || len(progress) != 1 {
		// Present: the schema marker both stores have.
		t.Fatalf("report %+v, progress %v", rep, progress)
	}
	if got, want := describeTable(t, dst), describeTable(t, src); !slices.Equal(got, want) {
		t.Fatalf("copied table\n%v\nwant\n%v", got, want)
	}
	if d, _ := dst.ServerDUID(nil); string(d) != string(duid) {
		t.Fatalf("server DUID %x, want %x", d, duid)
	}
	if lines, err := dst.Check(testPools); err != nil || len(lines) != 0 {
		t.Fatalf("check of the copy: %v %v", lines, err)
	}
	if _, inc, _ := dst.Incomplete(); inc {
		t.Fatal("a finished copy is marked incomplete")
	}

	// Again: everything is present, nothing written.
	rep, err = CopyStore(dst, src, nil)
	if err != nil || rep.Copied != 0 || rep.Present != 16 {
		t.Fatalf("second copy: %+v %v", rep, err)
	}

	// A destination with another prefix for a MAC: refused, nothing written.
	other := openTest(t)
	mustPut(t, other, alloc("pod-a", "06:00:00:00:00:02", "2001:db8:200:20::/60"))
	before := describeTable(t, other)
	rep, err = CopyStore(other, src, nil)
	if !errors.Is(err, ErrCopyConflict) || len(rep.Conflicts) == 0 {
		t.Fatalf("conflicting copy: %+v %v", rep, err)
	}
	if !strings.Contains(strings.Join(rep.Conflicts, "\n"), "alloc/pod-a") {
		t.Errorf("conflicts do not name the allocation: %v", rep.Conflicts)
	}
	if got := describeTable(t, other); !slices.Equal(got, before) {
		t.Fatalf("a refused copy wrote: %v", got)
	}
}

func TestIncompleteCopyIsReported(t *testing.T) {
	s := openTest(t)
	if err := s.b.Update(func(tx kv.Tx) error { return tx.Put(spaceMeta, keyIncomplete, []byte("copy from x.db")) }); err != nil {
		t.Fatal(err)
	}
	from, inc, err := s.Incomplete()
	if err != nil || !inc || from != "copy from x.db" {
		t.Fatalf("Incomplete = %q %v %v", from, inc, err)
	}
	lines, err := s.Check(testPools)
	if err != nil || len(lines) != 1 || !strings.Contains(lines[0], "meta/incomplete: a copy from x.db did not finish") {
		t.Fatalf("check: %v %v", lines, err)
	}
}

func TestCopyInto(t *testing.T) {
	src := openTest(t)
	var allocs []Allocation
	for i := range 300 {
		allocs = append(allocs, alloc("pod-a", fmt.Sprintf("06:00:00:00:%02x:%02x", i>>8, i&0xff), fmt.Sprintf("2001:db8:200:%x::/60", i<<4)))
	}
	mustPut(t, src, allocs...)
	if _, err := src.ServerDUID(func() ([]byte, error) { return []byte{0, 3, 0, 1, 1, 2, 3, 4, 5, 6}, nil }); err != nil {
		t.Fatal(err)
	}
	dst := openTest(t)
	n, err := CopyInto(dst, src)
	if err != nil || n != 1201 { // 300 allocations × 3 keys and an event, the DUID
		t.Fatalf("CopyInto = %d, %v; want 1201 keys", n, err)
	}
	if got, want := describeTable(t, dst), describeTable(t, src); !slices.Equal(got, want) {
		t.Fatalf("copy differs")
	}
	if lines, err := dst.Check(testPools); err != nil || len(lines) != 0 {
		t.Fatalf("check: %v %v", lines, err)
	}
}

// TestCopyTableInto: the allocations come from the table (not from the
// source's Alloc spaces, which a cluster server does not hold), with
// their indexes; the other spaces from the source.
func TestCopyTableInto(t *testing.T) {
	src := openTest(t)
	var allocs []Allocation
	for i := range 300 {
		allocs = append(allocs, alloc("pod-a", fmt.Sprintf("06:00:00:00:%02x:%02x", i>>8, i&0xff), fmt.Sprintf("2001:db8:200:%x::/60", i<<4)))
	}
	mustPut(t, src, allocs...)
	duid := []byte{0, 3, 0, 1, 1, 2, 3, 4, 5, 6}
	if _, err := src.ServerDUID(func() ([]byte, error) { return duid, nil }); err != nil {
		t.Fatal(err)
	}
	tbl, _, err := src.LoadTable(testPools)
	if err != nil {
		t.Fatal(err)
	}
	want := describeTable(t, src)
	// Gone from the source's spaces after the table was read: the copy
	// is the table's.
	if err := src.Update(testPools, func(tx *Tx) error { return tx.Delete("pod-a", allocs[0].MAC) }); err != nil {
		t.Fatal(err)
	}
	dst := openTest(t)
	n, err := CopyTableInto(dst, src, tbl)
	if err != nil || n != 301 {
		t.Fatalf("CopyTableInto = %d, %v; want 301 (the server DUID and 300 allocations: no history, copied or made)", n, err)
	}
	if got, _ := dst.CountHistory(); got != 0 {
		t.Errorf("the copy holds %d history events, want none", got)
	}
	if got := describeTable(t, dst); !slices.Equal(got, want) {
		t.Fatalf("copy differs from the table:\n%q\n%q", got, want)
	}
	if lines, err := dst.Check(testPools); err != nil || len(lines) != 0 {
		t.Fatalf("check: %v %v", lines, err)
	}
	got, err := dst.ServerDUID(func() ([]byte, error) { return nil, fmt.Errorf("no DUID copied") })
	if err != nil || !slices.Equal(got, duid) {
		t.Fatalf("server DUID of the copy: %x %v", got, err)
	}
	if _, inc, err := dst.Incomplete(); inc || err != nil {
		t.Fatalf("copy marked incomplete: %v", err)
	}
}
