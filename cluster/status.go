package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// ServersPrefix is where each server publishes what it serves.
func ServersPrefix(prefix string) string { return prefix + "cluster/servers/" }

// ServerInfo is what a server publishes about itself every few seconds
// (Publish), for `cluster status`.
type ServerInfo struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	// Revision is the etcd revision of the table this server answers from.
	Revision int64 `json:"revision"`
	// Allocations is the size of that table.
	Allocations int  `json:"allocations"`
	Syncer      bool `json:"syncer"`
	// Watching reports whether the server follows etcd now.
	Watching bool `json:"watching"`
	// LastSync is when this server last finished a sync, when it did.
	LastSync  time.Time `json:"last_sync,omitzero"`
	Published time.Time `json:"published"`
}

// Publish writes info() under ServersPrefix every interval, on a lease of
// ttl, until ctx ends; a server that dies disappears from the list when
// its lease expires. Errors are logged once until it succeeds again.
func Publish(ctx context.Context, cli *clientv3.Client, prefix, name string, ttl, interval time.Duration, info func() ServerInfo, log *slog.Logger) {
	key := ServersPrefix(prefix) + name
	failing := false
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(ttlSeconds(ttl)), concurrency.WithContext(ctx))
		if err == nil {
			err = publishLoop(ctx, sess, key, interval, info)
			sess.Close()
		}
		if err != nil && ctx.Err() == nil {
			if !failing {
				log.Warn("cannot publish this server's status in etcd", "key", key, "err", err)
			}
			failing = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
	}
}

func publishLoop(ctx context.Context, sess *concurrency.Session, key string, interval time.Duration, info func() ServerInfo) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		si := info()
		si.Published = time.Now().UTC()
		b, _ := json.Marshal(si)
		pctx, cancel := context.WithTimeout(ctx, interval)
		_, err := sess.Client().Put(pctx, key, string(b), clientv3.WithLease(sess.Lease()))
		cancel()
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-sess.Done():
			return fmt.Errorf("lease of %s lost", key)
		case <-t.C:
		}
	}
}

// Member is an etcd member, as the cluster reports it.
type Member struct {
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peer_urls"`
	ClientURLs []string `json:"client_urls"`
	// RaftLeader is true for the member that leads raft.
	RaftLeader bool `json:"raft_leader"`
	// Reachable is false when the member did not answer a status request.
	Reachable bool   `json:"reachable"`
	DBSize    int64  `json:"db_size,omitempty"`
	Version   string `json:"version,omitempty"`
	Err       string `json:"error,omitempty"`
}

// Status is the whole cluster as `cluster status` shows it.
type Status struct {
	Prefix   string `json:"prefix"`
	Revision int64  `json:"revision"`
	// Syncer is the elected server's name, "" when there is none.
	Syncer      string      `json:"syncer"`
	SyncerSince int64       `json:"syncer_since_revision,omitempty"`
	Holds       []string    `json:"holds,omitempty"`
	Members     []Member    `json:"members"`
	Servers     []ServerLag `json:"servers"`
	TableKeys   int64       `json:"table_keys"`
}

// ServerLag is a server's published info and how far behind it is.
type ServerLag struct {
	ServerInfo
	// Lag is the revisions between the cluster and the server's table.
	Lag int64 `json:"lag"`
	// Age is how long ago the server published.
	Age time.Duration `json:"age_ns"`
}

// ReadStatus asks the cluster for its members, syncer and servers.
func ReadStatus(ctx context.Context, cli *clientv3.Client, prefix string) (*Status, error) {
	st := &Status{Prefix: prefix}
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the etcd members: %w", err)
	}
	for _, m := range ml.Members {
		mem := Member{Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs}
		if len(m.ClientURLs) > 0 {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			sr, err := cli.Status(sctx, m.ClientURLs[0])
			cancel()
			if err != nil {
				mem.Err = err.Error()
			} else {
				mem.Reachable = true
				mem.RaftLeader = sr.Leader == m.ID
				mem.DBSize = sr.DbSize
				mem.Version = sr.Version
			}
		}
		st.Members = append(st.Members, mem)
	}
	slices.SortFunc(st.Members, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	cnt, err := cli.Get(ctx, TablePrefix(prefix), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", TablePrefix(prefix), err)
	}
	st.Revision = cnt.Header.Revision
	st.TableKeys = cnt.Count
	st.Syncer, st.SyncerSince, err = LeaderName(ctx, cli, prefix)
	if err != nil {
		return nil, fmt.Errorf("read the syncer: %w", err)
	}
	hr, err := cli.Get(ctx, HoldPrefix(prefix), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read the holds: %w", err)
	}
	for _, kv := range hr.Kvs {
		st.Holds = append(st.Holds, string(kv.Value))
	}
	sr, err := cli.Get(ctx, ServersPrefix(prefix), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read the servers: %w", err)
	}
	now := time.Now()
	for _, kv := range sr.Kvs {
		var si ServerInfo
		if json.Unmarshal(kv.Value, &si) != nil {
			continue
		}
		st.Servers = append(st.Servers, ServerLag{ServerInfo: si, Lag: max(0, st.Revision-si.Revision), Age: now.Sub(si.Published)})
	}
	return st, nil
}
