package allocator_test

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
)

// These tests sync from the fake CloudStack through the real client.

const (
	csKey    = "Pl4in-API_key"
	csSecret = "s3cr3t-Secret_key"
	// fixturePod is the pod of testdata/cloudstack/listVirtualMachines-pod.json.
	fixturePod = "77828509-4043-40bc-8756-7745c8ec7a99"
)

var csT0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// csPools: the fixture pod, its NICs on VLAN 2701, and a synthetic pod.
func csPools() []allocator.Pool {
	return []allocator.Pool{
		{Name: fixturePod, Prefix: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60, InterfaceID: "VLAN2701",
			IP6CIDR: netip.MustParsePrefix("2001:db8:100::/64")},
		{Name: cloudstacktest.SyntheticPodID(1), Prefix: netip.MustParsePrefix("2001:db8:300::/40"), PrefixLen: 60, InterfaceID: "VLAN2701-synthetic", VLAN: 2701},
	}
}

// newCloud starts a fake serving the fixture pod and 1000 synthetic VMs,
// and a client for it with small pages.
func newCloud(t testing.TB) (*cloudstacktest.Server, *cloudstack.Client) {
	return newCloudTimeout(t, 2*time.Second)
}

func newCloudTimeout(t testing.TB, timeout time.Duration) (*cloudstacktest.Server, *cloudstack.Client) {
	t.Helper()
	fake := cloudstacktest.NewServer(csKey, csSecret)
	t.Cleanup(fake.Close)
	vms, err := cloudstacktest.LoadVMs(filepath.Join("..", "testdata", "cloudstack", "listVirtualMachines-pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	fake.SetPod(fixturePod, vms)
	fake.SetPod(cloudstacktest.SyntheticPodID(1), cloudstacktest.Synthetic{Index: 1, N: 1000})
	c := cloudstack.New(fake.URL, csKey, csSecret, cloudstack.Options{PageSize: 200, Timeout: timeout, Logger: slog.New(slog.DiscardHandler)})
	return fake, c
}

func openStore(t testing.TB) *allocator.Store {
	t.Helper()
	st, err := allocator.OpenStore(boltstore.Open(filepath.Join(t.TempDir(), "state.db"), boltstore.Options{Create: true, NoSync: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func syncAt(at time.Time) allocator.SyncOptions {
	return allocator.SyncOptions{Now: func() time.Time { return at }}
}

// The fixture's VMs, whose JSON cloudstack-go cannot decode as it comes
// (extradhcpoption and vnfnics objects), are allocated; Destroyed,
// Expunging and Error VMs are not; a synthetic pod on VLAN 2701 gets every
// NIC on that VLAN.
func TestSyncFromCloudStack(t *testing.T) {
	_, c := newCloud(t)
	st := openStore(t)
	rep, err := st.Sync(t.Context(), csPools(), c, syncAt(csT0))
	if err != nil {
		t.Fatal(err)
	}
	fix, syn := rep.Pools[0], rep.Pools[1]
	if fix.Pool != fixturePod {
		fix, syn = syn, fix
	}
	var names []string
	for _, a := range fix.Added {
		names = append(names, a.VMName+" "+a.Prefix.String())
	}
	want := []string{
		"web-01 2001:db8:200::/60", "db-01 2001:db8:200:10::/60", "build-07 2001:db8:200:20::/60",
		"vnf-fw-01 2001:db8:200:30::/60", "pxe-03 2001:db8:200:40::/60",
	}
	if !slices.Equal(names, want) {
		t.Errorf("added %q\nwant %q", names, want)
	}
	if fix.Listed != 7 || fix.NotEligible != 2 { // old-02 Destroyed, gone-05 Expunging; failed-09 has no NIC
		t.Errorf("fixture pod: listed %d, not eligible %d", fix.Listed, fix.NotEligible)
	}
	// 1000 VMs: 999 Running or Stopped on VLAN 2701 (VM 999 is
	// Destroyed); their second NICs are on VLAN 3001.
	if len(syn.Added) != 999 || syn.NotEligible != 1 {
		t.Errorf("synthetic pod: added %d, not eligible %d", len(syn.Added), syn.NotEligible)
	}
	vnf := fix.Added[3]
	if vnf.VMID != "b8c9d0e1-f2a3-4b4c-8d5e-6f7a8b9c0d1e" || vnf.NICID != "c9d0e1f2-a3b4-4c5d-9e6f-7a8b9c0d1e2f" ||
		vnf.IP6 != netip.MustParseAddr("2001:db8:100:0:1c00:faff:fe00:1") || vnf.Source != allocator.SyncSource {
		t.Errorf("VNF allocation = %+v", vnf)
	}
	lines, err := st.Check(csPools())
	if err != nil || len(lines) > 0 {
		t.Fatalf("check: %v %v", lines, err)
	}
	// The same listing again: nothing to do.
	rep, err = st.Sync(t.Context(), csPools(), c, syncAt(csT0.Add(time.Minute)))
	if err != nil || rep.Written || rep.Changed() || rep.Totals().Kept != 1004 {
		t.Errorf("second sync: %v, written %v, totals %+v", err, rep.Written, rep.Totals())
	}
}

// A CloudStack outage or a partial answer never changes the store, let
// alone releases a prefix: every fault of the fake, on any page of either
// pod, fails the sync and leaves the file byte-identical.
func TestSyncOutageChangesNothing(t *testing.T) {
	faults := []cloudstacktest.Fault{
		{Kind: cloudstacktest.FaultHTTP500},
		{Kind: cloudstacktest.FaultSignature},
		{Kind: cloudstacktest.FaultParam},
		{Kind: cloudstacktest.FaultInternal},
		{Kind: cloudstacktest.FaultThrottle},
		{Kind: cloudstacktest.FaultSlow, Delay: 10 * time.Second},
		{Kind: cloudstacktest.FaultTruncated},
		{Kind: cloudstacktest.FaultNotJSON},
		{Kind: cloudstacktest.FaultShortCount},
		{Kind: cloudstacktest.FaultExpunge},
	}
	for _, f := range faults {
		for _, where := range []struct {
			name string
			pod  string
			page int
		}{
			{"fixture pod page 1", fixturePod, 1},
			{"synthetic pod page 5", cloudstacktest.SyntheticPodID(1), 5},
		} {
			t.Run(f.Kind.String()+" "+where.name, func(t *testing.T) {
				fake, c := newCloudTimeout(t, 300*time.Millisecond)
				st := openStore(t)
				if _, err := st.Sync(t.Context(), csPools(), c, syncAt(csT0)); err != nil {
					t.Fatal(err)
				}
				before, err := os.ReadFile(st.Path())
				if err != nil {
					t.Fatal(err)
				}
				f.Pod, f.Page = where.pod, where.page
				fake.Inject(f)
				fake.ResetCalls()
				rep, err := st.Sync(t.Context(), csPools(), c, syncAt(csT0.Add(48*time.Hour)))
				switch {
				case err == nil:
					t.Fatalf("sync succeeded: %+v", rep)
				case errors.Is(err, allocator.ErrTooManyGone):
					// A VM expunged from a one-page listing: the listing
					// is consistent, and the safety valve refuses it.
					if f.Kind != cloudstacktest.FaultExpunge || rep.Written {
						t.Errorf("err = %v", err)
					}
				case rep != nil || !strings.Contains(err.Error(), "sync aborted, nothing changed: cloudstack: pod "+where.pod+": listVirtualMachines page "):
					t.Errorf("err = %v, report %v", err, rep)
				}
				after, _ := os.ReadFile(st.Path())
				if !bytes.Equal(before, after) {
					t.Error("the store changed")
				}
			})
		}
	}

	t.Run("unreachable", func(t *testing.T) {
		fake, c := newCloud(t)
		st := openStore(t)
		if _, err := st.Sync(t.Context(), csPools(), c, syncAt(csT0)); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(st.Path())
		fake.Close()
		if _, err := st.Sync(t.Context(), csPools(), c, syncAt(csT0.Add(48*time.Hour))); err == nil || !strings.Contains(err.Error(), "GET ") {
			t.Errorf("err = %v", err)
		}
		if after, _ := os.ReadFile(st.Path()); !bytes.Equal(before, after) {
			t.Error("the store changed")
		}
	})

	// An empty answer is a complete listing, but not a believable one: the
	// safety valve refuses it.
	t.Run("empty listing", func(t *testing.T) {
		fake, c := newCloud(t)
		st := openStore(t)
		if _, err := st.Sync(t.Context(), csPools(), c, syncAt(csT0)); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(st.Path())
		fake.SetPod(cloudstacktest.SyntheticPodID(1), cloudstacktest.VMs{})
		_, err := st.Sync(t.Context(), csPools(), c, syncAt(csT0.Add(48*time.Hour)))
		var re *allocator.RefusedError
		if !errors.As(err, &re) || re.Pools[0].Gone != 999 || re.Pools[0].Active != 999 {
			t.Errorf("err = %v", err)
		}
		if after, _ := os.ReadFile(st.Path()); !bytes.Equal(before, after) {
			t.Error("the store changed")
		}
	})
}
