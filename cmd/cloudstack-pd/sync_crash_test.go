package main

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// thinned is a synthetic pod without the VMs i with i%every == phase
// (every 0: all of them).
type thinned struct {
	cloudstacktest.Synthetic
	every, phase int
}

func (p thinned) Len() int {
	if p.every == 0 {
		return p.N
	}
	n := p.N / p.every * (p.every - 1)
	if r := p.N % p.every; r > p.phase {
		n += r - 1
	} else {
		n += r
	}
	return n
}

func (p thinned) AppendVM(dst []byte, j int) []byte {
	i := j
	if p.every != 0 {
		i = j / (p.every - 1) * p.every
		if r := j % (p.every - 1); r >= p.phase {
			i += r + 1
		} else {
			i += r
		}
	}
	return p.Synthetic.AppendVM(dst, i)
}

func TestThinned(t *testing.T) {
	p := thinned{cloudstacktest.Synthetic{N: 47}, 10, 3}
	var got []int
	for j := range p.Len() {
		var i int
		fmt.Sscanf(strings.SplitN(string(p.AppendVM(nil, j)), `"name":"vm-0-`, 2)[1], "%d", &i)
		got = append(got, i)
	}
	if len(got) != 42 || got[0] != 0 || got[3] != 4 || got[9] != 10 || got[41] != 46 {
		t.Errorf("thinned VMs %v", got)
	}
}

// killAt says when TestSyncKilled kills a sync.
type killAt int

const (
	// duringListing: at a random moment before the last page is served.
	duringListing killAt = iota
	// afterListing: within 300 ms of the last page: decoding it, planning
	// or writing.
	afterListing
	// duringCommit: within 3 ms of the first write to the store file after
	// the listing, that is while bbolt commits the transaction.
	duringCommit
)

func (k killAt) String() string {
	return [...]string{"during the listing", "after the listing", "during the commit"}[k]
}

// TestSyncKilled runs 'cloudstack-pd sync' against a large inventory and
// kills it with SIGKILL while it lists, while it plans and while bbolt
// commits: each time 'cloudstack-pd check' passes, and the store holds
// either the table before that sync or the one after it, never a mix.
//
// The inventory is 16,000 to 18,000 VMs: cloudstack-go decodes about
// 8,000 VMs a second on two busy cores, and each round lists it twice (the
// killed sync, then one to the end that gives the table after).
func TestSyncKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("syncs a large inventory several times")
	}
	const pods, perPod, pageSize = 2, 8_000, 500
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))

	bin := testenv.BuildBinary(t, ".")
	fake := cloudstacktest.NewServer(cloudstacktest.SiteKey, cloudstacktest.SiteSecret)
	defer fake.Close()
	dir := t.TempDir()
	state := filepath.Join(dir, "state.db")
	cfgPath := filepath.Join(dir, "cloudstack-pd.yaml")
	var cfgText strings.Builder
	fmt.Fprintf(&cfgText, "api:\n  url: %s\n  apikey: %s\n  secretkey: %s\n  page-size: %d\n  timeout: 30s\nstate: %s\nlog:\n  level: warn\nmapping:\n",
		fake.URL, cloudstacktest.SiteKey, cloudstacktest.SiteSecret, pageSize, state)
	for k := range pods {
		fmt.Fprintf(&cfgText, "  %s:\n    pool: 2001:db8:%x00::/40\n    interface-id: VLAN%d\n", cloudstacktest.SyntheticPodID(k), 0x10+k, 2700+k)
	}
	testenv.WriteFile(t, cfgPath, cfgText.String())
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}

	// table reads the store as "pool mac" → "prefix state".
	table := func() map[string]string {
		t.Helper()
		out := map[string]string{}
		if _, err := os.Stat(state); errors.Is(err, fs.ErrNotExist) {
			return out
		}
		st, err := allocator.OpenStore(boltstore.Open(state, boltstore.Options{ReadOnly: true}))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		allocs, err := readAllocations(st, cfg.Pools())
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range allocs {
			out[a.Pool+" "+a.MAC.String()] = a.Prefix.String() + " " + string(a.State)
		}
		return out
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append(args, "--config", cfgPath)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", args[0], err, out)
		}
		return string(out)
	}
	stamp := func() string {
		fi, err := os.Stat(state)
		if err != nil {
			return ""
		}
		return fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
	}

	old := table()
	for round, inv := range []struct {
		n, every, phase int
		kill            killAt
	}{
		{n: perPod, kill: duringCommit},                             // into an empty store: every NIC added
		{n: perPod + 500, every: 20, phase: 3, kill: duringListing}, // 500 new VMs a pod, 5% gone
		{n: perPod + 1000, every: 20, phase: 7, kill: duringCommit}, // 5% gone, 5% back, 500 new
		{n: perPod + 1000, every: 10, phase: 1, kill: afterListing}, // 10% gone, 5% back
	} {
		pages := 0
		for k := range pods {
			p := thinned{cloudstacktest.Synthetic{Index: k, N: inv.n}, inv.every, inv.phase}
			fake.SetPod(cloudstacktest.SyntheticPodID(k), p)
			pages += (p.Len() + pageSize - 1) / pageSize
		}
		fake.ResetCalls()
		cmd := exec.Command(bin, "sync", "--config", cfgPath, "--force", "-q", "--init")
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		served := func() bool { return len(fake.Calls()) >= pages }
		var wait func() bool // reports when to kill
		switch inv.kill {
		case duringListing:
			at := rng.IntN(pages)
			wait = func() bool { return len(fake.Calls()) > at }
		case afterListing:
			var deadline time.Time
			wait = func() bool {
				if deadline.IsZero() && served() {
					deadline = time.Now().Add(time.Duration(rng.Int64N(int64(300 * time.Millisecond))))
				}
				return !deadline.IsZero() && time.Now().After(deadline)
			}
		case duringCommit:
			var (
				before   string
				deadline time.Time
			)
			wait = func() bool {
				switch {
				case before == "" && served():
					before = stamp()
				case before != "" && deadline.IsZero() && stamp() != before:
					deadline = time.Now().Add(time.Duration(rng.Int64N(int64(3 * time.Millisecond))))
				}
				return !deadline.IsZero() && !time.Now().Before(deadline)
			}
		}
		killed := false
	poll:
		for {
			select {
			case err := <-exited:
				if err != nil {
					t.Fatalf("round %d: sync failed before the kill: %v", round, err)
				}
				break poll
			default:
			}
			if wait() {
				cmd.Process.Signal(syscall.SIGKILL)
				<-exited
				killed = true
				break
			}
			if time.Since(start) > time.Minute {
				t.Fatalf("round %d: the sync takes more than a minute", round)
			}
			time.Sleep(200 * time.Microsecond)
		}
		took := time.Since(start).Round(time.Millisecond)
		if _, err := os.Stat(state); err == nil {
			run("check")
		}
		cur := table()

		run("sync", "--force", "-q", "--init")
		final := table()
		run("check")
		what := "killed " + inv.kill.String()
		if !killed {
			what = "done before the kill " + inv.kill.String()
		}
		switch {
		case maps.Equal(cur, old) && !maps.Equal(old, final):
			t.Logf("round %d: %s, after %v: the store holds the table before the sync (%d allocations, %d after)", round, what, took, len(cur), len(final))
		case maps.Equal(cur, final):
			t.Logf("round %d: %s, after %v: the store holds the table after the sync (%d allocations)", round, what, took, len(cur))
		default:
			t.Fatalf("round %d: %s, after %v: the store holds %d allocations, neither the %d before nor the %d after the sync",
				round, what, took, len(cur), len(old), len(final))
		}
		old = final
	}
	if len(old) == 0 {
		t.Fatal("no allocation made")
	}
}
