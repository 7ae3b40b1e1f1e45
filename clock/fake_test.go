package clock

import (
	"slices"
	"testing"
	"time"
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// received returns what c holds now, without waiting.
func received(c <-chan time.Time) (time.Time, bool) {
	select {
	case v := <-c:
		return v, true
	default:
		return time.Time{}, false
	}
}

func TestFakeTimer(t *testing.T) {
	f := NewFake(epoch)
	tm := f.NewTimer(10 * time.Second)
	f.Advance(9 * time.Second)
	if _, ok := received(tm.C()); ok {
		t.Fatal("fired 1s early")
	}
	f.Advance(time.Second)
	if v, ok := received(tm.C()); !ok || !v.Equal(epoch.Add(10*time.Second)) {
		t.Fatalf("at its deadline: %v %v", v, ok)
	}
	f.Advance(time.Hour)
	if _, ok := received(tm.C()); ok {
		t.Fatal("a timer fired twice")
	}
	if tm.Stop() {
		t.Error("Stop of a fired timer says it was active")
	}
	if tm.Reset(time.Second) {
		t.Error("Reset of a fired timer says it was active")
	}
	if !tm.Stop() {
		t.Error("Stop of an armed timer says it was not")
	}
	f.Advance(time.Hour)
	if _, ok := received(tm.C()); ok {
		t.Fatal("a stopped timer fired")
	}
	if got := f.Now(); !got.Equal(epoch.Add(2*time.Hour + 10*time.Second)) {
		t.Errorf("Now = %v", got)
	}
}

func TestFakeTickerDropsUnreceivedTicks(t *testing.T) {
	f := NewFake(epoch)
	tk := f.NewTicker(time.Second)
	f.Advance(3500 * time.Millisecond)
	v, ok := received(tk.C())
	if !ok || !v.Equal(epoch.Add(time.Second)) {
		t.Fatalf("first tick %v %v, want the one at 1s (later ones dropped)", v, ok)
	}
	if _, ok := received(tk.C()); ok {
		t.Fatal("ticks queued beyond one")
	}
	f.Advance(500 * time.Millisecond)
	if v, ok := received(tk.C()); !ok || !v.Equal(epoch.Add(4*time.Second)) {
		t.Fatalf("tick at 4s: %v %v", v, ok)
	}
	tk.Reset(10 * time.Second)
	f.Advance(9 * time.Second)
	if _, ok := received(tk.C()); ok {
		t.Fatal("ticked before the new period")
	}
	f.Advance(time.Second)
	if _, ok := received(tk.C()); !ok {
		t.Fatal("no tick after the new period")
	}
	tk.Stop()
	f.Advance(time.Minute)
	if _, ok := received(tk.C()); ok {
		t.Fatal("a stopped ticker ticked")
	}
}

// Timers fire in the order of their deadlines, whatever the order they
// were made in, and the clock reads each deadline while its function runs.
func TestFakeOrder(t *testing.T) {
	f := NewFake(epoch)
	var got []time.Duration
	for _, d := range []time.Duration{3, 1, 2, 1} {
		d := d * time.Second
		f.AfterFunc(d, func() { got = append(got, f.Now().Sub(epoch)) })
	}
	f.Advance(2 * time.Second)
	if want := []time.Duration{time.Second, time.Second, 2 * time.Second}; !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	f.Advance(time.Second)
	if len(got) != 4 || got[3] != 3*time.Second {
		t.Fatalf("fired %v", got)
	}
}

// BlockUntil returns once the goroutine under test has armed its timer,
// so that the Advance after it is never lost.
func TestFakeBlockUntil(t *testing.T) {
	f := NewFake(epoch)
	done := make(chan time.Time)
	go func() {
		tm := f.NewTimer(time.Minute)
		done <- <-tm.C()
	}()
	f.BlockUntil(1)
	f.Advance(time.Minute)
	if v := <-done; !v.Equal(epoch.Add(time.Minute)) {
		t.Errorf("fired at %v", v)
	}
	if n := f.Waiters(); n != 0 {
		t.Errorf("%d waiters left", n)
	}
}

// Next names the earliest deadline armed, and nothing once all fired.
func TestFakeNext(t *testing.T) {
	f := NewFake(epoch)
	if _, ok := f.Next(); ok {
		t.Fatal("Next with nothing armed")
	}
	f.AfterFunc(3*time.Second, func() {})
	tm := f.NewTimer(2 * time.Second)
	tk := f.NewTicker(5 * time.Second)
	for _, want := range []time.Duration{2, 3, 5, 10} {
		at, ok := f.Next()
		if !ok || !at.Equal(epoch.Add(want*time.Second)) {
			t.Fatalf("Next = %v %v, want %ds", at, ok, want)
		}
		f.Set(at)
	}
	tm.Stop()
	tk.Stop()
	if at, ok := f.Next(); ok {
		t.Fatalf("Next = %v with everything fired or stopped", at)
	}
}

func TestFakeZeroTimerFiresAtOnce(t *testing.T) {
	f := NewFake(epoch)
	if _, ok := received(f.NewTimer(0).C()); !ok {
		t.Error("a timer of 0 did not fire at once")
	}
	f.Set(epoch.Add(-time.Hour))
	if !f.Now().Equal(epoch) {
		t.Error("Set moved the clock back")
	}
}

func TestReal(t *testing.T) {
	c := OrReal(nil)
	if _, ok := c.(Real); !ok {
		t.Fatalf("OrReal(nil) = %T", c)
	}
	tm := c.NewTimer(time.Millisecond)
	<-tm.C()
	fired := make(chan struct{})
	c.AfterFunc(time.Millisecond, func() { close(fired) })
	<-fired
	tk := c.NewTicker(time.Millisecond)
	<-tk.C()
	tk.Stop()
	if d := time.Since(c.Now()); d < 0 || d > time.Minute {
		t.Errorf("Now is %v off", d)
	}
}
