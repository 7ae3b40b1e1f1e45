package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/cloudstack-pd/cloudstack-pd/config"
)

// Node is this server's part of the cluster: the etcd client, and the
// embedded member when there is one.
type Node struct {
	Client *clientv3.Client
	// Name is this server's member name (cluster.name).
	Name string
	// Prefix is the key prefix of the table (cluster.etcd.prefix).
	Prefix string
	// Endpoints are the client URLs used.
	Endpoints []string

	cfg    config.Cluster
	member *embed.Etcd
	log    *slog.Logger

	closeOnce sync.Once
	closeErr  error
}

// Start connects to the cluster c names: for an embedded member, it first
// starts the member (its data directory is created when missing) and
// waits for it to join a quorum, at most ctx's deadline or c.Timeout × 2;
// a member without a quorum by then keeps running and joins later.
func Start(ctx context.Context, c config.Cluster, log *slog.Logger) (*Node, error) {
	if !c.Enabled() {
		return nil, errors.New("cluster: the config names no cluster (cluster.etcd.endpoints or cluster.embedded.data-dir)")
	}
	n := &Node{Name: c.Name, Prefix: c.Etcd.Prefix, cfg: c, log: log}
	n.Endpoints = c.Etcd.Endpoints
	if c.IsEmbedded() {
		m, err := startMember(ctx, c, log)
		if err != nil {
			return nil, err
		}
		n.member = m
		n.Endpoints = []string{c.Embedded.ClientListen}
	}
	cli, err := connect(ctx, c, n.Endpoints)
	if err != nil {
		n.Close()
		return nil, err
	}
	n.Client = cli
	return n, nil
}

// Connect only connects a client to c's etcd (the embedded member's client
// URL when members are embedded: a command run beside a serve that holds
// the member). It does not wait for etcd to answer.
func Connect(ctx context.Context, c config.Cluster) (*Node, error) {
	if !c.Enabled() {
		return nil, errors.New("cluster: the config names no cluster (cluster.etcd.endpoints or cluster.embedded.data-dir)")
	}
	n := &Node{Name: c.Name, Prefix: c.Etcd.Prefix, cfg: c, Endpoints: c.Etcd.Endpoints}
	if c.IsEmbedded() {
		n.Endpoints = []string{c.Embedded.ClientListen}
	}
	cli, err := connect(ctx, c, n.Endpoints)
	if err != nil {
		return nil, err
	}
	n.Client = cli
	return n, nil
}

// Where names the cluster for messages: the endpoints and the prefix.
func (n *Node) Where() string {
	return fmt.Sprintf("etcd %s (prefix %s)", strings.Join(n.Endpoints, ","), n.Prefix)
}

// Embedded reports whether this node runs an etcd member.
func (n *Node) Embedded() bool { return n.member != nil }

// Close closes the client, then stops the embedded member. Only the
// first call does anything.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		if n.Client != nil {
			n.closeErr = n.Client.Close()
		}
		if n.member != nil {
			n.member.Close()
		}
	})
	return n.closeErr
}

func tlsConfig(c config.Cluster) (*tls.Config, error) {
	if c.Etcd.CAFile == "" && c.Etcd.CertFile == "" {
		return nil, nil
	}
	info := transport.TLSInfo{CertFile: c.Etcd.CertFile, KeyFile: c.Etcd.KeyFile, TrustedCAFile: c.Etcd.CAFile}
	tc, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("cluster: TLS files (cluster.etcd.ca-file, cert-file, key-file): %w", err)
	}
	return tc, nil
}

func connect(_ context.Context, c config.Cluster, endpoints []string) (*clientv3.Client, error) {
	tc, err := tlsConfig(c)
	if err != nil {
		return nil, err
	}
	usesTLS := false
	for _, e := range endpoints {
		usesTLS = usesTLS || strings.HasPrefix(e, "https") || strings.HasPrefix(e, "unixs")
	}
	if usesTLS && tc == nil {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if !usesTLS {
		tc = nil
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          c.Timeout,
		DialKeepAliveTime:    c.Timeout,
		DialKeepAliveTimeout: c.Timeout,
		TLS:                  tc,
		Username:             c.Etcd.Username,
		Password:             c.Etcd.Password,
		Logger:               zap.NewNop(),
		PermitWithoutStream:  true,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: connect to etcd %s: %w", strings.Join(endpoints, ","), err)
	}
	return cli, nil
}

// startMember starts the embedded etcd member and waits until it serves.
func startMember(ctx context.Context, c config.Cluster, log *slog.Logger) (*embed.Etcd, error) {
	e := c.Embedded
	ec := embed.NewConfig()
	ec.Name = c.Name
	ec.Dir = e.DataDir
	peer, err := url.Parse(e.PeerListen)
	if err != nil {
		return nil, fmt.Errorf("cluster.embedded.peer-listen: %w", err)
	}
	client, err := url.Parse(e.ClientListen)
	if err != nil {
		return nil, fmt.Errorf("cluster.embedded.client-listen: %w", err)
	}
	ec.ListenPeerUrls = []url.URL{*peer}
	ec.AdvertisePeerUrls = []url.URL{*peer}
	ec.ListenClientUrls = []url.URL{*client}
	ec.AdvertiseClientUrls = []url.URL{*client}
	ec.InitialCluster = e.InitialCluster
	ec.ClusterState = e.InitialClusterState
	ec.InitialClusterToken = "cloudstack-pd"
	if c.MaxTxnOps > 0 {
		ec.MaxTxnOps = uint(c.MaxTxnOps)
	}
	// The table is small and rewritten slowly: keep an hour of history
	// for watchers that fell behind, then compact.
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "1h"
	if c.Etcd.CertFile != "" {
		tls := transport.TLSInfo{CertFile: c.Etcd.CertFile, KeyFile: c.Etcd.KeyFile, TrustedCAFile: c.Etcd.CAFile, ClientCertAuth: c.Etcd.CAFile != ""}
		ec.ClientTLSInfo = tls
		ec.PeerTLSInfo = tls
	}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(memberLogger(log))
	m, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("cluster: start the embedded etcd member %q (data %s, peers %s): %w", c.Name, e.DataDir, e.PeerListen, err)
	}
	wait := 2 * c.Timeout
	if d, ok := ctx.Deadline(); ok {
		wait = time.Until(d)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-m.Server.ReadyNotify():
		return m, nil
	case err := <-m.Err():
		m.Close()
		return nil, fmt.Errorf("cluster: embedded etcd member %q: %w", c.Name, err)
	case <-t.C:
		// No quorum yet (the other members down or out of reach): keep the
		// member running, it joins when they come; serve answers from its
		// local snapshot meanwhile.
		log.Warn("the embedded etcd member has not joined a quorum yet; continuing: are the other members of cluster.embedded.initial-cluster started and reachable?",
			"member", c.Name, "waited", wait, "initial-cluster", e.InitialCluster)
		return m, nil
	case <-ctx.Done():
		m.Close()
		return nil, ctx.Err()
	}
}

// memberLogger sends the member's errors to log, and drops the rest (etcd
// is chatty at info, and warns of what is normal in a cluster starting).
func memberLogger(log *slog.Logger) *zap.Logger {
	if log == nil {
		return zap.NewNop()
	}
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(slogWriter{log}), zapcore.ErrorLevel)
	return zap.New(core)
}

// slogWriter writes each line zap encodes as one slog warning.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Warn("etcd member", "msg", strings.TrimSpace(string(p)))
	return len(p), nil
}
