package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
)

// BindingStore is where recorded bindings are written, a batch per call.
// *allocator.Store is one.
type BindingStore interface {
	PutBindings(put []allocator.Binding, del [][]byte) error
}

// Recorder collects the bindings the handler makes and writes them to the
// store in batches, so that the packet path never waits for an fsync.
// Several records of the same binding between two flushes collapse into the
// last one, so memory is bounded by the number of distinct bindings.
type Recorder struct {
	store    BindingStore
	interval time.Duration
	log      *slog.Logger

	mu      sync.Mutex
	pending map[string]pendingOp
	flushMu sync.Mutex // one flush at a time
}

type pendingOp struct {
	b       allocator.Binding
	release bool
}

// DefaultFlushInterval is how often recorded bindings reach the store.
const DefaultFlushInterval = time.Second

// NewRecorder returns a Recorder writing to store every interval (0: DefaultFlushInterval).
func NewRecorder(store BindingStore, interval time.Duration, log *slog.Logger) *Recorder {
	if interval <= 0 {
		interval = DefaultFlushInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Recorder{store: store, interval: interval, log: log, pending: map[string]pendingOp{}}
}

// Record implements BindingSink.
func (r *Recorder) Record(b allocator.Binding) {
	var buf [64]byte
	k := string(allocator.AppendBindingKey(buf[:0], b.ClientDUID, b.IAID))
	r.mu.Lock()
	r.pending[k] = pendingOp{b: b}
	r.mu.Unlock()
}

// Release implements BindingSink.
func (r *Recorder) Release(key []byte) {
	r.mu.Lock()
	r.pending[string(key)] = pendingOp{release: true}
	r.mu.Unlock()
}

// Run flushes every interval until ctx is done, then flushes once more.
func (r *Recorder) Run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.Flush()
			return
		case <-t.C:
			r.Flush()
		}
	}
}

// Flush writes what is pending in one store transaction. On failure the
// batch is put back (newer records of the same binding win) and retried at
// the next flush, so a store error loses nothing while the process lives.
func (r *Recorder) Flush() error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	r.mu.Lock()
	batch := r.pending
	r.pending = make(map[string]pendingOp, len(batch))
	r.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	var put []allocator.Binding
	var del [][]byte
	for k, op := range batch {
		if op.release {
			del = append(del, []byte(k))
		} else {
			put = append(put, op.b)
		}
	}
	if err := r.store.PutBindings(put, del); err != nil {
		r.mu.Lock()
		for k, op := range batch {
			if _, newer := r.pending[k]; !newer {
				r.pending[k] = op
			}
		}
		r.mu.Unlock()
		r.log.Error("cannot record bindings; will retry", "bindings", len(batch), "err", err)
		return err
	}
	return nil
}
