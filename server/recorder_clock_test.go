package server

import (
	"context"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
)

// batchStore hands each batch it is given to the test.
type batchStore chan []allocator.Binding

func (b batchStore) PutBindings(put []allocator.Binding, _ []allocator.BindingRelease) error {
	b <- append([]allocator.Binding(nil), put...)
	return nil
}

// TestRecorderRunFlushesOnItsTicker: Run writes nothing before the flush
// interval has passed on its clock, writes the pending record when it
// has, and flushes once more when its context ends.
func TestRecorderRunFlushesOnItsTicker(t *testing.T) {
	fc := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := make(batchStore, 10)
	rec := NewRecorder(st, 5*time.Second, nil)
	rec.SetClock(fc)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); rec.Run(ctx) }()
	fc.BlockUntil(1) // Run's ticker is armed

	rec.Record(allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 1}, MAC: macA, IAID: 1, Prefix: prefixA})
	fc.Advance(5*time.Second - time.Nanosecond)
	select {
	case b := <-st:
		t.Fatalf("written before the interval: %v", b)
	default:
	}
	fc.Advance(time.Nanosecond)
	if b := <-st; len(b) != 1 || b[0].Prefix != prefixA {
		t.Fatalf("flush at the interval wrote %v", b)
	}

	rec.Record(allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 2}, MAC: macB, IAID: 1, Prefix: prefixB})
	cancel()
	<-done
	select {
	case b := <-st:
		if len(b) != 1 || b[0].Prefix != prefixB {
			t.Fatalf("last flush wrote %v", b)
		}
	default:
		t.Fatal("no flush on the way out")
	}
}

// TestRecorderRunFlushesAtHalfTheCap: when half the cap of pending IAs is
// reached, Run writes them at once, before its interval, so that a storm
// of new bindings does not overflow the cap.
func TestRecorderRunFlushesAtHalfTheCap(t *testing.T) {
	fc := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := make(batchStore, 10)
	rec := NewRecorder(st, time.Hour, nil)
	rec.max = 10
	rec.SetClock(fc)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); rec.Run(ctx) }()
	defer func() { cancel(); <-done }()
	fc.BlockUntil(1)

	mac := func(i int) []byte { return []byte{2, 0, 0, 0, 0, byte(i)} }
	for i := range 4 {
		rec.Record(allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, byte(i)}, MAC: mac(i), IAID: 1, Prefix: prefixA})
	}
	select {
	case b := <-st:
		t.Fatalf("written below half the cap, before the interval: %v", b)
	case <-time.After(50 * time.Millisecond):
	}
	rec.Record(allocator.Binding{ClientDUID: []byte{0, 3, 0, 1, 9}, MAC: mac(9), IAID: 1, Prefix: prefixA})
	select {
	case b := <-st:
		if len(b) != 5 {
			t.Errorf("flush at half the cap wrote %d bindings, want 5", len(b))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing written at half the cap")
	}
}
