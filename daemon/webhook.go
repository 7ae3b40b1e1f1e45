package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/webhook"
)

// MaxPendingVMs bounds the VMs waiting for a targeted sync: beyond it
// (a burst of events on many VMs) one full sync does the work of them all,
// in a bounded number of API calls (pods × VMs / 500), instead of pods ×
// VMs / 100 targeted ones.
const MaxPendingVMs = 1000

// VMSyncDelay is how long the first event of a burst waits for the
// others before its targeted sync: well within the second a new VM may
// wait, and a burst of events, delivered one by one, is one sync.
const VMSyncDelay = 100 * time.Millisecond

// vmQueue is what CloudStack's events ask of the syncer: the VMs to sync,
// each with the time of the first delivery that asked (for
// cloudstack_pd_webhook_event_to_served_seconds), and whether a full sync
// was asked for. A burst of events on the same VMs is one set.
type vmQueue struct {
	pending map[string]time.Time
	// fullFirst and fullLast are the first and the last request of a full
	// sync since the last full sync began; zero: none.
	fullFirst, fullLast time.Time
}

// askFull notes a request of a full sync at t.
func (q *vmQueue) askFull(t time.Time) {
	if q.fullFirst.IsZero() || t.Before(q.fullFirst) {
		q.fullFirst = t
	}
	if t.After(q.fullLast) {
		q.fullLast = t
	}
}

// TriggerVMs asks for a targeted sync of the VMs (allocator.SyncVMs) as
// soon as the sync running, if any, is done. It never blocks: the ids join
// the set of pending VMs, which one worker drains; past MaxPendingVMs
// they turn into a full sync. This is what the webhook listener's sink
// calls in a standalone server; in a cluster the syncer's side calls it
// with the ids handed over.
func (s *syncer) TriggerVMs(ids ...string) { s.triggerVMsAt(s.d.clock.Now(), ids...) }

func (s *syncer) triggerVMsAt(received time.Time, ids ...string) {
	s.vmMu.Lock()
	for _, id := range ids {
		if id == "" {
			continue
		}
		if len(s.vms.pending) >= MaxPendingVMs {
			s.vms.askFull(received)
			break
		}
		if _, ok := s.vms.pending[id]; !ok {
			s.vms.pending[id] = received
		}
	}
	s.vmMu.Unlock()
	select {
	case s.vmTrigger <- struct{}{}:
	default: // the worker will see the set
	}
}

// triggerFullAt asks for a full sync on behalf of an event received at
// received.
func (s *syncer) triggerFullAt(received time.Time) {
	s.vmMu.Lock()
	s.vms.askFull(received)
	s.vmMu.Unlock()
	s.Trigger()
}

// Sink returns the webhook sink of a standalone server: an event naming a
// VM triggers its targeted sync, any other a full sync.
func (s *syncer) Sink() webhook.Sink {
	return webhook.SinkFunc(func(_ context.Context, e webhook.Event) {
		switch e.Action {
		case webhook.SyncVM:
			s.triggerVMsAt(e.Received, e.VMID)
		case webhook.SyncAll:
			s.triggerFullAt(e.Received)
		}
	})
}

// takeVMs empties the queue: the VMs to sync, and whether a full sync is
// wanted instead (then the VMs stay, for the full sync to serve).
func (s *syncer) takeVMs() (map[string]time.Time, bool) {
	s.vmMu.Lock()
	defer s.vmMu.Unlock()
	if !s.vms.fullLast.IsZero() {
		return nil, true
	}
	vms := s.vms.pending
	s.vms.pending = map[string]time.Time{}
	return vms, false
}

// fullDone records the end of a full sync whose listing started at start:
// the requests of a full sync made before start (strictly: one at the same
// instant may have missed the listing) are answered, whatever
// the outcome (a failing or refused sync must not turn every later event
// into another full sync); when ok, every event received before start is
// served by it. VMs still pending after a failure get their targeted sync.
func (s *syncer) fullDone(start, now time.Time, ok bool) {
	s.vmMu.Lock()
	if !s.vms.fullLast.IsZero() && s.vms.fullLast.Before(start) {
		if ok {
			s.hookMetrics.ObserveServed(s.vms.fullFirst, now)
		}
		s.vms.fullFirst, s.vms.fullLast = time.Time{}, time.Time{}
	}
	if ok {
		for id, at := range s.vms.pending {
			if at.Before(start) {
				s.hookMetrics.ObserveServed(at, now)
				delete(s.vms.pending, id)
			}
		}
	}
	left := len(s.vms.pending) > 0
	s.vmMu.Unlock()
	if left {
		select {
		case s.vmTrigger <- struct{}{}:
		default:
		}
	}
}

// onceVMs runs the targeted sync of the VMs pending, or asks for a full
// sync when the queue wants one. It reports whether a full sync is due.
func (s *syncer) onceVMs(ctx context.Context) (full bool) {
	vms, full := s.takeVMs()
	if full || len(vms) == 0 {
		return full
	}
	cfg := s.cfg.Load()
	if cfg.API.WhyNoSync() != "" {
		return false
	}
	s.ensureClient(cfg)
	inv, ok := s.client.(allocator.VMInventory)
	if !ok {
		return true // a client that cannot list VMs by id: sync all
	}
	ids := slices.Sorted(maps.Keys(vms))
	start := s.d.clock.Now()
	rep, err := s.d.st.SyncVMs(ctx, cfg.Pools(), inv, ids, SyncOptions(cfg))
	took := s.d.clock.Now().Sub(start)
	switch {
	case ctx.Err() != nil:
		return false
	case err != nil:
		s.log.Error("VM sync failed; the table stays as it is until the next sync", "vms", len(ids), "err", err, "took", took.Round(time.Millisecond))
		return false
	}
	if rep.Written {
		if err := s.swap(); err != nil {
			s.log.Error("VM sync written, but the table does not load; the old one stays in force", "err", err)
			return false
		}
	}
	now := s.d.clock.Now()
	for _, at := range vms {
		s.hookMetrics.ObserveServed(at, now)
	}
	t := rep.Totals()
	level := slog.LevelInfo
	if t.Conflicts > 0 {
		level = slog.LevelWarn
	}
	s.log.Log(ctx, level, "synced VMs", "took", took.Round(time.Millisecond), "vms", len(ids), "listed", t.Listed,
		"added", t.Added, "kept", t.Kept, "refreshed", t.Refreshed, "back", t.Back, "not-eligible", t.NotEligible,
		"conflicts", t.Conflicts, "missing", len(rep.Missing), "written", rep.Written)
	if len(rep.Missing) > 0 {
		s.log.Debug("VM sync: not listed (left to the full sync)", "vms", rep.Missing)
	}
	s.logDetails(ctx, &rep.SyncReport)
	return false
}

// webhookListener is the bound webhook listener of a config.
type webhookListener struct {
	ln  net.Listener
	tls *tls.Config
}

// listenWebhook binds webhook.listen (nil without it) and loads its TLS
// certificate.
func listenWebhook(cfg *config.Config) (*webhookListener, error) {
	w := cfg.Webhook
	if w.Listen == "" {
		return nil, nil
	}
	if w.Secret == "" { // config.Load refuses it; never serve unsigned
		return nil, errors.New("webhook.listen without webhook.secret")
	}
	tc, err := webhook.LoadTLS(w.CertFile, w.KeyFile)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", w.Listen)
	if err != nil {
		return nil, fmt.Errorf("webhook.listen %s: %w", w.Listen, err)
	}
	return &webhookListener{ln: ln, tls: tc}, nil
}

// startWebhook serves the webhook listener until ctx ends: deliveries go
// to sink (nil: the syncer's own, standalone). It returns the handler
// (for a reload's new secret; nil without a listener) and a channel closed
// when it has stopped. Call it before the sync loop starts.
func (d *daemon) startWebhook(ctx context.Context, wl *webhookListener, cfg *config.Config, reg prometheus.Registerer, sy *syncer, sink webhook.Sink) (*webhook.Handler, <-chan struct{}) {
	done := make(chan struct{})
	if wl == nil {
		close(done)
		return nil, done
	}
	m := webhook.NewMetrics(reg)
	sy.hookMetrics = m
	if sink == nil {
		sink = sy.Sink()
	}
	h, err := webhook.NewHandler(webhook.Config{Secret: []byte(cfg.Webhook.Secret), Sink: sink, Metrics: m, Logger: d.log, Now: d.clock.Now})
	if err != nil { // listenWebhook checked the secret; the sink is set
		d.log.Error("webhook listener not started", "err", err)
		wl.ln.Close()
		close(done)
		return nil, done
	}
	go func() {
		defer close(done)
		if err := webhook.Serve(ctx, wl.ln, h, wl.tls, d.log); err != nil && !errors.Is(err, net.ErrClosed) {
			d.log.Error("webhook listener stopped", "err", err)
		}
	}()
	d.log.Info("webhook listener", "listen", wl.ln.Addr().String(), "tls", wl.tls != nil)
	return h, done
}
