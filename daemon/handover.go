package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/cloudstack-pd/cloudstack-pd/cluster"
	"github.com/cloudstack-pd/cloudstack-pd/webhook"
)

// In a cluster any server may receive a webhook delivery, and only the
// syncer acts on it: a server that is not the syncer hands each event over
// through etcd (a key under cluster.EventsPrefix, on a lease of
// handoverTTL, so that an event no syncer took disappears: the next full
// sync covers it); the syncer takes the keys, triggers its syncs and
// deletes them. The syncer's own deliveries go straight to its sync loop.

// handoverTTL is how long a handed-over event waits for a syncer.
const handoverTTL = time.Minute

// handoverQueue bounds the events waiting to be written to etcd; when it is
// full, a full sync is handed over instead of the events that do not fit.
const handoverQueue = 4096

// handedEvent is what a handed-over event holds.
type handedEvent struct {
	Action   webhook.Action `json:"action"`
	VMID     string         `json:"vm,omitempty"`
	Received time.Time      `json:"received"`
	From     string         `json:"from"`
}

// webhookSink is the cluster's webhook sink; the handing over runs in
// run's goroutines.
func (c *clusterRun) webhookSink() webhook.Sink {
	c.handover = make(chan handedEvent, handoverQueue)
	local := c.syncer.Sink()
	return webhook.SinkFunc(func(ctx context.Context, e webhook.Event) {
		if e.Action == webhook.Ignore {
			return
		}
		if c.elector.Leader() {
			local.VMEvent(ctx, e)
			return
		}
		select {
		case c.handover <- handedEvent{Action: e.Action, VMID: e.VMID, Received: e.Received, From: c.node.Name}:
		default:
			c.handoverFull.Store(true)
		}
	})
}

// handOver writes the queued events to etcd until ctx ends.
func (c *clusterRun) handOver(ctx context.Context) {
	if c.handover == nil {
		return
	}
	prefix := cluster.EventsPrefix(c.node.Prefix)
	var sess *concurrency.Session
	defer func() {
		if sess != nil {
			sess.Close()
		}
	}()
	seq := 0
	put := func(ev handedEvent) {
		for ctx.Err() == nil {
			if sess == nil {
				s, err := concurrency.NewSession(c.node.Client, concurrency.WithTTL(int(handoverTTL/time.Second)), concurrency.WithContext(ctx))
				if err != nil {
					c.d.log.Warn("webhook event not handed over to the syncer yet: etcd out of reach", "err", err)
					time.Sleep(time.Second)
					continue
				}
				sess = s
			}
			seq++
			b, _ := json.Marshal(ev)
			key := fmt.Sprintf("%s%s/%x/%d", prefix, c.node.Name, sess.Lease(), seq)
			pctx, cancel := context.WithTimeout(ctx, c.cfg.Load().Cluster.Timeout)
			_, err := c.node.Client.Put(pctx, key, string(b), clientv3.WithLease(sess.Lease()))
			cancel()
			if err == nil {
				return
			}
			c.d.log.Warn("webhook event not handed over to the syncer yet", "err", err)
			sess.Close()
			sess = nil
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-c.handover:
			if c.handoverFull.CompareAndSwap(true, false) {
				put(handedEvent{Action: webhook.SyncAll, Received: ev.Received, From: c.node.Name})
			}
			put(ev)
		}
	}
}

// takeHandedOver runs on the syncer while it leads: it triggers the syncs
// the events under cluster.EventsPrefix ask for, those there already and
// those to come, and deletes each key it took.
func (c *clusterRun) takeHandedOver(ctx context.Context) {
	prefix := cluster.EventsPrefix(c.node.Prefix)
	cli := c.node.Client
	take := func(key, val []byte) {
		var ev handedEvent
		if json.Unmarshal(val, &ev) == nil {
			switch ev.Action {
			case webhook.SyncVM:
				c.syncer.triggerVMsAt(ev.Received, ev.VMID)
			case webhook.SyncAll:
				c.syncer.triggerFullAt(ev.Received)
			}
		}
		dctx, cancel := context.WithTimeout(ctx, c.cfg.Load().Cluster.Timeout)
		_, _ = cli.Delete(dctx, string(key))
		cancel()
	}
	for ctx.Err() == nil {
		r, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		for _, kv := range r.Kvs {
			take(kv.Key, kv.Value)
		}
		wc := cli.Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(r.Header.Revision+1), clientv3.WithFilterDelete())
		for resp := range wc {
			if resp.Err() != nil {
				break
			}
			for _, ev := range resp.Events {
				take(ev.Kv.Key, ev.Kv.Value)
			}
		}
	}
}
