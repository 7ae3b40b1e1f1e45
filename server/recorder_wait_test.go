package server

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
)

// Back-pressure: a record of a new IA that finds the pending set full waits
// for the next flush while the store keeps up, and is dropped at once when
// it does not.

// iaOp is what the packet path hands the Recorder for an IA: a binding,
// or a release.
type iaOp struct {
	name string
	of   func(rec *Recorder, mac net.HardwareAddr, iaid uint32)
}

// do hands over IA 1 of VM i.
func (op iaOp) do(rec *Recorder, i int) { op.of(rec, waitMAC(i), 1) }

func waitMAC(i int) net.HardwareAddr {
	return binary.BigEndian.AppendUint32([]byte{2, 0}, uint32(i))
}

var iaOps = []iaOp{
	{"record", func(rec *Recorder, mac net.HardwareAddr, iaid uint32) {
		rec.Record(allocator.Binding{ClientDUID: append([]byte{0, 3, 0, 1}, mac...), MAC: mac, IAID: iaid, Prefix: prefixA})
	}},
	{"release", func(rec *Recorder, mac net.HardwareAddr, iaid uint32) {
		rec.Release(allocator.BindingRelease{ClientDUID: append([]byte{0, 3, 0, 1}, mac...), MAC: mac, IAID: iaid})
	}},
}

// gateStore holds each write until the test answers it.
type gateStore struct {
	calls chan *gateCall
}

// gateCall is one PutBindings: what it was given, by MAC, and where the
// test sends the error it returns.
type gateCall struct {
	macs   map[string]bool
	result chan error
}

func newGateStore() *gateStore { return &gateStore{calls: make(chan *gateCall)} }

func (g *gateStore) PutBindings(put []allocator.Binding, del []allocator.BindingRelease) error {
	c := &gateCall{macs: map[string]bool{}, result: make(chan error)}
	for _, b := range put {
		c.macs[string(b.MAC)] = true
	}
	for _, d := range del {
		c.macs[string(d.MAC)] = true
	}
	g.calls <- c
	return <-c.result
}

// next returns the write the Recorder has started.
func (g *gateStore) next(t *testing.T) *gateCall {
	t.Helper()
	select {
	case c := <-g.calls:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no write to the store")
		return nil
	}
}

func (c *gateCall) has(i int) bool { return c.macs[string(waitMAC(i))] }

// returns fails the test if f does not return: it waited for a clock that
// does not move.
func returns(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
	}
}

// recorderCounter reads one of the Recorder's unlabelled counters.
func recorderCounter(t *testing.T, rec *Recorder, name string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(rec.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}

// waitRun is a Recorder running on a fake clock that only the test moves,
// with a cap of max IAs: its flushes happen when half the cap is pending
// or a record waits, never on its ticker.
type waitRun struct {
	rec    *Recorder
	fc     *clock.Fake
	cancel context.CancelFunc
	done   chan struct{}
}

func startWaitRun(t *testing.T, st BindingStore, max int) *waitRun {
	t.Helper()
	w := &waitRun{fc: clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), done: make(chan struct{})}
	w.rec = NewRecorder(st, time.Hour, nil)
	w.rec.max = max
	w.rec.SetClock(w.fc)
	var ctx context.Context
	ctx, w.cancel = context.WithCancel(t.Context())
	go func() { defer close(w.done); w.rec.Run(ctx) }()
	w.fc.BlockUntil(2) // Run's tickers are armed: it runs
	return w
}

// stop ends Run, answering the writes of its last flushes with success.
func (w *waitRun) stop(t *testing.T, st *gateStore) {
	t.Helper()
	w.cancel()
	for {
		select {
		case <-w.done:
			return
		case c := <-st.calls:
			c.result <- nil
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return")
		}
	}
}

// waiting waits until one record waits for room: its timer is armed
// beside Run's two tickers.
func (w *waitRun) waiting() { w.fc.BlockUntil(3) }

// TestRecorderWaitsForRoom: a burst of several times the cap of new IAs,
// from several goroutines as from the listener's workers, against a store
// that is slow but writes: every binding and release is written, none is
// dropped, the records waited for room, and the pending set never held
// more than the cap. The clock does not move: no wait runs out.
func TestRecorderWaitsForRoom(t *testing.T) {
	const max, goroutines, perGoroutine = 100, 4, 125 // 5 times the cap
	for _, op := range iaOps {
		t.Run(op.name, func(t *testing.T) {
			st := &slowStore{}
			w := startWaitRun(t, st, max)
			st.rec = w.rec
			var over atomic.Int64
			var g sync.WaitGroup
			for k := range goroutines {
				g.Go(func() {
					for j := range perGoroutine {
						op.do(w.rec, k*perGoroutine+j)
						if n := w.rec.Pending(); n > max {
							over.Store(int64(n))
						}
					}
				})
			}
			returns(t, "the burst", g.Wait)
			w.cancel()
			<-w.done // the last flush writes the rest

			if n := over.Load(); n > 0 || st.over > 0 {
				t.Errorf("pending reached %d (recording) and %d (writing), above the cap %d", n, st.over, max)
			}
			if n := droppedCount(t, w.rec, DropPendingFull); n != 0 {
				t.Errorf("dropped{pending-full} = %v, want 0", n)
			}
			if got := len(st.written); got != goroutines*perGoroutine {
				t.Errorf("%d IAs written, want every one of %d", got, goroutines*perGoroutine)
			}
			if n := recorderCounter(t, w.rec, "cloudstack_pd_binding_waits_total"); n == 0 {
				t.Error("binding_waits_total = 0: five times the cap went through without waiting?")
			}
		})
	}
}

// slowStore takes a millisecond per write, and notes what it wrote and
// whether the Recorder held more than its cap meanwhile.
type slowStore struct {
	rec     *Recorder
	mu      sync.Mutex
	written map[string]bool
	over    int
}

func (s *slowStore) PutBindings(put []allocator.Binding, del []allocator.BindingRelease) error {
	time.Sleep(time.Millisecond) // a slow disk; not an assertion
	n := s.rec.Pending()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written == nil {
		s.written = map[string]bool{}
	}
	if n > s.rec.max {
		s.over = n
	}
	for _, b := range put {
		s.written[string(b.MAC)] = true
	}
	for _, d := range del {
		s.written[string(d.MAC)] = true
	}
	return nil
}

// TestRecorderNoWaitWhenStoreFails: after a flush failed (the store is
// down), a record beyond the cap is dropped and counted at once, without
// waiting; the failed batch is retried by the next flush, and is written
// when the store is back.
func TestRecorderNoWaitWhenStoreFails(t *testing.T) {
	for _, op := range iaOps {
		t.Run(op.name, func(t *testing.T) {
			st := newGateStore()
			w := startWaitRun(t, st, 10)
			defer w.stop(t, st)
			for i := range 5 { // half the cap: Run flushes
				op.do(w.rec, i)
			}
			st.next(t).result <- errors.New("disk full")
			w.rec.flushMu.Lock() // the failed flush has ended
			w.rec.flushMu.Unlock()

			op.do(w.rec, 5) // half the cap again, with the batch put back
			retry := st.next(t)
			for i := range 5 {
				if !retry.has(i) {
					t.Errorf("IA %d of the failed batch not retried", i)
				}
			}
			for i := 6; w.rec.Pending() < 10; i++ { // the retry still writes
				op.do(w.rec, i)
			}
			returns(t, "a record beyond the cap after a failed flush", func() { op.do(w.rec, 100) })
			if n := droppedCount(t, w.rec, DropPendingFull); n != 1 {
				t.Errorf("dropped{pending-full} = %v, want 1", n)
			}
			if n := recorderCounter(t, w.rec, "cloudstack_pd_binding_waits_total"); n != 0 {
				t.Errorf("binding_waits_total = %v, want 0 while the store fails", n)
			}
			retry.result <- nil
		})
	}
}

// TestRecorderWaitRunsOut: with a store whose write does not return, one
// record beyond the cap waits the bound and is dropped; the next ones are
// dropped without waiting; once the write returns, records wait again, and
// get their room from the next flush.
func TestRecorderWaitRunsOut(t *testing.T) {
	for _, op := range iaOps {
		t.Run(op.name, func(t *testing.T) {
			st := newGateStore()
			w := startWaitRun(t, st, 10)
			w.rec.SetMaxRecordWait(5 * time.Second)
			defer w.stop(t, st)
			for i := range 5 {
				op.do(w.rec, i)
			}
			stuck := st.next(t) // a write that hangs
			for i := 5; i < 15; i++ {
				op.do(w.rec, i)
			}

			done := make(chan struct{})
			go func() { defer close(done); op.do(w.rec, 15) }()
			w.waiting()
			w.fc.Advance(5*time.Second - time.Nanosecond)
			select {
			case <-done:
				t.Fatal("the wait ended before its bound")
			default:
			}
			w.fc.Advance(time.Nanosecond)
			returns(t, "the wait at its bound", func() { <-done })
			returns(t, "the record after a wait ran out", func() { op.do(w.rec, 16) })
			if n := droppedCount(t, w.rec, DropPendingFull); n != 2 {
				t.Errorf("dropped{pending-full} = %v, want 2 (the one that waited, the one after)", n)
			}
			if n := recorderCounter(t, w.rec, "cloudstack_pd_binding_waits_total"); n != 1 {
				t.Errorf("binding_waits_total = %v, want 1", n)
			}
			if s := recorderCounter(t, w.rec, "cloudstack_pd_binding_wait_seconds_total"); s != 5 {
				t.Errorf("binding_wait_seconds_total = %v, want 5", s)
			}

			stuck.result <- nil // the store writes again
			second := st.next(t)
			for i := 17; i < 27; i++ {
				op.do(w.rec, i)
			}
			done = make(chan struct{})
			go func() { defer close(done); op.do(w.rec, 27) }()
			w.waiting()
			second.result <- nil
			returns(t, "a wait, the next flush taking the pending set", func() { <-done })
			third := st.next(t)
			for i := 17; i < 27; i++ {
				if !third.has(i) {
					t.Errorf("IA %d not in the flush after the waits", i)
				}
			}
			third.result <- nil
			if n := droppedCount(t, w.rec, DropPendingFull); n != 2 {
				t.Errorf("dropped{pending-full} = %v after the store came back, want 2 still", n)
			}
			if n := recorderCounter(t, w.rec, "cloudstack_pd_binding_waits_total"); n != 2 {
				t.Errorf("binding_waits_total = %v, want 2", n)
			}
		})
	}
}

// TestRecorderShutdownEndsWaits: a record waiting for room when Run is
// told to stop does not wait for a clock that no longer matters: it is
// written or dropped and counted, and Run returns.
func TestRecorderShutdownEndsWaits(t *testing.T) {
	for _, op := range iaOps {
		t.Run(op.name, func(t *testing.T) {
			st := newGateStore()
			w := startWaitRun(t, st, 10)
			for i := range 5 {
				op.do(w.rec, i)
			}
			stuck := st.next(t)
			for i := 5; i < 15; i++ {
				op.do(w.rec, i)
			}
			done := make(chan struct{})
			go func() { defer close(done); op.do(w.rec, 15) }()
			w.waiting()
			w.cancel()
			var last bool
			stuck.result <- nil
			returns(t, "Run", func() {
				for {
					select {
					case <-w.done:
						return
					case c := <-st.calls:
						last = last || c.has(15)
						c.result <- nil
					}
				}
			})
			returns(t, "the waiting record", func() { <-done })
			dropped := droppedCount(t, w.rec, DropPendingFull)
			if last == (dropped == 1) || dropped > 1 {
				t.Errorf("the waiting record: written %v, dropped %v: want one of the two", last, dropped)
			}
		})
	}
}

// TestRecorderIAIDFloodDoesNotWait: a VM that sends a new IAID with every
// message (each a new IA) fills the cap, then its records are dropped at
// once, without waiting: it cannot slow the packet path down to the
// store's pace. Another VM's first IA still waits for room, and gets it.
func TestRecorderIAIDFloodDoesNotWait(t *testing.T) {
	for _, op := range iaOps {
		t.Run(op.name, func(t *testing.T) {
			st := newGateStore()
			w := startWaitRun(t, st, 10)
			defer w.stop(t, st)
			flooder := waitMAC(7)
			for iaid := range uint32(5) {
				op.of(w.rec, flooder, iaid)
			}
			first := st.next(t) // a flush writing, slowly
			for iaid := uint32(5); iaid < 15; iaid++ {
				op.of(w.rec, flooder, iaid)
			}
			returns(t, "a new IAID of a VM with an IA pending", func() { op.of(w.rec, flooder, 15) })
			if n := droppedCount(t, w.rec, DropPendingFull); n != 1 {
				t.Errorf("dropped{pending-full} = %v, want 1", n)
			}
			if n := recorderCounter(t, w.rec, "cloudstack_pd_binding_waits_total"); n != 0 {
				t.Errorf("binding_waits_total = %v after the flooding VM's record, want 0", n)
			}

			done := make(chan struct{})
			go func() { defer close(done); op.do(w.rec, 8) }()
			w.waiting()
			first.result <- nil
			returns(t, "another VM's wait", func() { <-done })
			second := st.next(t)
			second.result <- nil
			if n := droppedCount(t, w.rec, DropPendingFull); n != 1 {
				t.Errorf("dropped{pending-full} = %v after another VM's wait, want 1 still", n)
			}
		})
	}
}
