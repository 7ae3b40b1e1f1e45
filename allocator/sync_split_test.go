package allocator_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// A sync committed in many parts (a bbolt store whose parts are 4 KiB)
// leaves the same store, byte for byte, as one committed at once: the same
// allocations, indexes and history, the first fill and a sync that finds
// VMs gone alike.
func TestSyncInParts(t *testing.T) {
	pools := []allocator.Pool{
		{Name: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:100::/40"), PrefixLen: 60, InterfaceID: "VLAN2701"},
		{Name: "pod-b", Prefix: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60, InterfaceID: "VLAN2702"},
	}
	const perPool = 1500
	listing := func(skip int) map[string][]allocator.NIC {
		out := map[string][]allocator.NIC{}
		for p, pool := range pools {
			for i := range perPool {
				if skip > 0 && i%skip == 0 {
					continue
				}
				// MACs out of order, as a listing has them.
				n := (i*7919 + p) % (perPool * 2)
				out[pool.Name] = append(out[pool.Name], allocator.NIC{
					VMID: fmt.Sprintf("vm-%d-%d", p, i), VMName: fmt.Sprintf("web-%d", i), VMState: "Running",
					NICID: fmt.Sprintf("nic-%d-%d", p, i), MAC: net.HardwareAddr{6, 0, byte(p), 0, byte(n >> 8), byte(n)},
					IP6: netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 15: byte(i)}), IsDefault: true,
				})
			}
		}
		return out
	}
	t0 := time.Date(2026, 12, 6, 11, 0, 0, 0, time.UTC)
	open := func(splitBytes int) *allocator.Store {
		st, err := allocator.OpenStore(boltstore.Open(filepath.Join(t.TempDir(), "state.db"),
			boltstore.Options{Create: true, NoSync: true, SplitBytes: splitBytes}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	whole, parts := open(1<<30), open(4096)
	for _, step := range []struct {
		at   time.Time
		skip int
	}{{t0, 0}, {t0.Add(time.Hour), 10}} {
		for _, st := range []*allocator.Store{whole, parts} {
			rep, err := st.Reconcile(pools, listing(step.skip), allocator.SyncOptions{Now: func() time.Time { return step.at }})
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Written {
				t.Fatalf("sync at %s wrote nothing", step.at)
			}
		}
	}
	if n, err := parts.CountAllocations(); err != nil || n != 2*perPool {
		t.Fatalf("%d allocations (%v), want %d", n, err, 2*perPool)
	}
	spaces := []kv.Space{{Kind: kv.MACs}, {Kind: kv.History}}
	for _, p := range pools {
		spaces = append(spaces, kv.Space{Kind: kv.Alloc, Pool: p.Name}, kv.Space{Kind: kv.Prefix, Pool: p.Name})
	}
	dump := func(st *allocator.Store) map[kv.Space][][2][]byte {
		out := map[kv.Space][][2][]byte{}
		err := st.Backend().View(func(kt kv.Tx) error {
			for _, sp := range spaces {
				if err := kt.Scan(sp, nil, func(k, v []byte) error {
					out[sp] = append(out[sp], [2][]byte{bytes.Clone(k), bytes.Clone(v)})
					return nil
				}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	a, b := dump(whole), dump(parts)
	for _, sp := range spaces {
		if len(a[sp]) == 0 || len(a[sp]) != len(b[sp]) {
			t.Errorf("%s: %d records committed at once, %d in parts", sp, len(a[sp]), len(b[sp]))
			continue
		}
		for i := range a[sp] {
			if !bytes.Equal(a[sp][i][0], b[sp][i][0]) || !bytes.Equal(a[sp][i][1], b[sp][i][1]) {
				t.Errorf("%s record %d: %q=%q at once, %q=%q in parts", sp, i, a[sp][i][0], a[sp][i][1], b[sp][i][0], b[sp][i][1])
				break
			}
		}
	}
	if problems, err := parts.Check(pools); err != nil || len(problems) > 0 {
		t.Errorf("check: %v %v", problems, err)
	}
}
