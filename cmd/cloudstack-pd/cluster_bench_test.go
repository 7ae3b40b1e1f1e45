package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
	"github.com/cloudstack-pd/cloudstack-pd/cluster"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/internal/etcdtest"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
	"github.com/cloudstack-pd/cloudstack-pd/statestore"
)

// clusterBench is what TestClusterBench measured, for bench report.
type clusterBench struct {
	Servers      int       `json:"servers"`
	LeaseTTL     string    `json:"lease_ttl"`
	ChangeMS     []float64 `json:"change_to_answer_ms"`
	FailoverS    []float64 `json:"failover_s"`
	FailoverSync []float64 `json:"failover_to_sync_s"`
}

// TestClusterBench measures, for `make bench` (CLOUDSTACK_PD_CLUSTER_BENCH
// names the JSON file to write; skipped without it), on three serve
// processes sharing a three-member etcd with the default lease-ttl:
//   - change-to-answer: an allocation written to the table (as a one-off
//     command writes it) until every server delegates it;
//   - failover: the syncer killed with SIGKILL until another is elected,
//     and until that one has finished a sync.
func TestClusterBench(t *testing.T) {
	out := os.Getenv("CLOUDSTACK_PD_CLUSTER_BENCH")
	if out == "" {
		t.Skip("CLOUDSTACK_PD_CLUSTER_BENCH is not set: a measurement for make bench")
	}
	etcd := etcdtest.Start(t, 3)
	bin := os.Getenv("CLOUDSTACK_PD_BIN")
	if bin == "" {
		t.Fatal("CLOUDSTACK_PD_BIN: the binary to run")
	}
	fake := cloudstacktest.NewServer(cloudstacktest.SiteKey, cloudstacktest.SiteSecret)
	t.Cleanup(fake.Close)
	fake.SetPod(cloudstacktest.SyntheticPodID(0), cloudstacktest.Synthetic{Index: 0, N: 1000})
	ttl := config.DefaultClusterLeaseTTL.String()
	servers := startClusterServersWith(t, bin, fake, "1h", ttl, func(int) string {
		return fmt.Sprintf("  etcd:\n    endpoints: [%s]\n", strings.Join(etcd.Endpoints(), ", "))
	})
	res := clusterBench{Servers: len(servers), LeaseTTL: ttl}
	for _, s := range servers {
		waitUntil(t, s.name+" answers", 60*time.Second, func() bool { return strings.HasPrefix(s.ask(t, macOf(998)), "2001:db8:200:") })
	}
	cfg, err := config.Load(servers[0].cfgPath)
	if err != nil {
		t.Fatal(err)
	}

	// Change to answer: 20 new allocations, one at a time.
	st, err := statestore.OpenCluster(cfg, "bench", statestore.Write)
	if err != nil {
		t.Fatal(err)
	}
	pool := cfg.Pools()[0]
	for i := range 20 {
		mac := net.HardwareAddr{0x0a, 0xbe, 0x0c, 0, 0, byte(i)}
		var p string
		err := st.Update(cfg.Pools(), func(tx *allocator.Tx) error {
			free, err := tx.LowestFree(pool)
			p = free.String()
			if err != nil {
				return err
			}
			return tx.Put(allocator.Allocation{Pool: pool.Name, MAC: mac, Prefix: free, State: allocator.StateActive, Source: "bench"})
		})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var wg sync.WaitGroup
		for _, s := range servers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for s.ask(t, mac.String()) != p {
					if time.Since(start) > 10*time.Second {
						t.Errorf("%s does not answer %s with %s", s.name, mac, p)
						return
					}
					time.Sleep(200 * time.Microsecond)
				}
			}()
		}
		wg.Wait()
		res.ChangeMS = append(res.ChangeMS, float64(time.Since(start).Microseconds())/1000)
	}
	st.Close()

	// Failover, three times.
	cli := etcd.Client(t)
	prefix := cfg.Cluster.Etcd.Prefix
	syncer := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		name, _, _ := cluster.LeaderName(ctx, cli, prefix)
		if strings.HasPrefix(name, "command ") {
			return ""
		}
		return name
	}
	for range 3 {
		var old string
		waitUntil(t, "a syncer", 30*time.Second, func() bool { old = syncer(); return old != "" })
		i := slices.IndexFunc(servers, func(s *clusterServer) bool { return s.name == old })
		dead := servers[i]
		var others []*clusterServer
		for _, s := range servers {
			if s != dead {
				others = append(others, s)
			}
		}
		marks := map[*clusterServer]int{}
		for _, s := range others {
			marks[s] = strings.Count(s.log.String(), "msg=synced")
		}
		killed := time.Now()
		dead.cmd.Process.Kill()
		<-dead.exited
		var next string
		waitUntil(t, "another syncer", 30*time.Second, func() bool { next = syncer(); return next != "" && next != old })
		res.FailoverS = append(res.FailoverS, time.Since(killed).Seconds())
		waitUntil(t, "a sync by the new syncer", 30*time.Second, func() bool {
			for _, s := range others {
				if strings.Count(s.log.String(), "msg=synced") > marks[s] {
					return true
				}
			}
			return false
		})
		res.FailoverSync = append(res.FailoverSync, time.Since(killed).Seconds())
		// Start the dead one again for the next round.
		dead.log = &testenv.SyncBuffer{}
		dead.exited = make(chan error, 1)
		dead.cmd = exec.Command(bin, "serve", "--config", dead.cfgPath)
		dead.cmd.Stderr = dead.log
		if err := dead.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { dead.exited <- dead.cmd.Wait() }()
		t.Cleanup(func() { dead.cmd.Process.Kill() })
		waitFor(t, "msg=serving", dead.log, 60*time.Second)
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", b)
}
