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

// TestRecorderFlushesWhenHalfFull: a storm of new IAs that fills half the
// pending cap is flushed at once, not at the end of the interval (the
// clock never moves here), so that the rest of the interval does not
// fill the cap and drop records.
func TestRecorderFlushesWhenHalfFull(t *testing.T) {
	fc := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := make(batchStore, 100)
	rec := NewRecorder(st, time.Hour, nil)
	rec.SetClock(fc)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); rec.Run(ctx) }()
	defer func() { cancel(); <-done }()
	fc.BlockUntil(1)
	mk := func(i int) allocator.Binding {
		mac := []byte{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		return allocator.Binding{ClientDUID: append([]byte{0, 3, 0, 1}, mac...), MAC: mac, IAID: 1, Prefix: prefixA}
	}
	for i := range DefaultMaxPending/2 - 1 {
		rec.Record(mk(i))
	}
	select {
	case b := <-st:
		t.Fatalf("%d records written before half the cap was pending", len(b))
	default:
	}
	rec.Record(mk(DefaultMaxPending / 2))
	written := 0
	deadline := time.After(10 * time.Second) // a hung flush fails, a slow machine does not
	for written < DefaultMaxPending/2 {
		select {
		case b := <-st:
			written += len(b)
		case <-deadline:
			t.Fatalf("%d of %d records written with the interval not up", written, DefaultMaxPending/2)
		}
	}
}
