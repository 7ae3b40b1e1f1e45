package boltstore

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// An Update that allows splitting commits whole groups in parts once it
// has written SplitBytes; one that does not is all or nothing. A failure
// leaves a prefix of whole groups of the first (and says so), nothing of
// the second.
func TestSplitUpdate(t *testing.T) {
	const groups = 200
	value := []byte(strings.Repeat("v", 200))
	write := func(kt kv.Tx, split bool, failAt int) error {
		if split {
			kt.(kv.Splitter).AllowSplit()
		}
		for i := range groups {
			if i == failAt {
				return errors.New("interrupted")
			}
			// A group of two writes in two spaces, as an allocation and
			// its index.
			k := fmt.Appendf(nil, "key-%04d", i)
			if err := kt.Put(kv.Space{Kind: kv.MACs}, k, value); err != nil {
				return err
			}
			if err := kt.Put(kv.Space{Kind: kv.History}, k, []byte("h")); err != nil {
				return err
			}
			kt.(kv.Grouper).EndGroup()
			// The transaction reads its own writes across parts.
			if kt.Get(kv.Space{Kind: kv.MACs}, []byte("key-0000")) == nil {
				return errors.New("the first group's write is not visible")
			}
		}
		return nil
	}
	// count returns how many groups the store holds, failing on a group
	// that is there in part.
	count := func(t *testing.T, s *Store) int {
		t.Helper()
		n := 0
		err := s.View(func(kt kv.Tx) error {
			for i := range groups {
				k := fmt.Appendf(nil, "key-%04d", i)
				a, b := kt.Get(kv.Space{Kind: kv.MACs}, k) != nil, kt.Get(kv.Space{Kind: kv.History}, k) != nil
				if a != b {
					t.Errorf("group %d is committed in part", i)
				}
				if a {
					if n != i {
						t.Errorf("group %d is committed after a missing one", i)
					}
					n++
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, tc := range []struct {
		name      string
		split     bool
		failAt    int
		wantParts bool // some groups, not all, committed before the failure
		want      int  // otherwise: the groups committed
	}{
		{name: "split, complete", split: true, failAt: -1, want: groups},
		{name: "split, interrupted", split: true, failAt: groups - 1, wantParts: true},
		{name: "whole, complete", failAt: -1, want: groups},
		{name: "whole, interrupted", failAt: groups - 1, want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// 200 groups of about 400 bytes: parts of 4 KiB are some 10
			// groups each.
			s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{Create: true, NoSync: true, SplitBytes: 4096})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			err = s.Update(func(kt kv.Tx) error { return write(kt, tc.split, tc.failAt) })
			switch {
			case tc.failAt < 0 && err != nil:
				t.Fatal(err)
			case tc.failAt >= 0 && (err == nil || !strings.Contains(err.Error(), "interrupted")):
				t.Fatalf("err = %v, want the interruption", err)
			case tc.wantParts && !strings.Contains(fmt.Sprint(err), "parts were committed"):
				t.Errorf("err = %v, does not say that parts were committed", err)
			case !tc.wantParts && strings.Contains(fmt.Sprint(err), "committed"):
				t.Errorf("err = %v, says that parts were committed", err)
			}
			n := count(t, s)
			switch {
			case tc.wantParts && (n == 0 || n == groups):
				t.Errorf("%d groups committed, want some of the %d, not all", n, groups)
			case !tc.wantParts && n != tc.want:
				t.Errorf("%d groups committed, want %d", n, tc.want)
			}
			if problems, err := s.CheckStructure(); err != nil || len(problems) > 0 {
				t.Errorf("check: %v %v", problems, err)
			}
		})
	}
}
