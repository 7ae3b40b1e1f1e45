package clock

import (
	"slices"
	"sync"
	"time"
)

// Fake is a Clock that moves only when Advance or Set is called. Timers
// and tickers fall due in the order of their deadlines (then of their
// creation); a due timer or ticker sends on its channel without blocking
// (a ticker whose last tick was not received drops the next one, as
// time.Ticker does), and an AfterFunc's function runs in the goroutine
// that called Advance, after the clock has moved to its deadline.
//
// The zero value is not usable: NewFake.
type Fake struct {
	mu      sync.Mutex
	changed *sync.Cond // signalled when waiters changes
	now     time.Time
	seq     uint64
	waiters []*fakeTimer
}

var _ Clock = (*Fake)(nil)

// NewFake returns a Fake clock reading start.
func NewFake(start time.Time) *Fake {
	f := &Fake{now: start}
	f.changed = sync.NewCond(&f.mu)
	return f
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer returns a timer that fires when the clock has advanced by d.
func (f *Fake) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{f: f, c: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

// NewTicker returns a ticker that fires every d of fake time.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	t := &fakeTimer{f: f, c: make(chan time.Time, 1), period: d}
	t.Reset(d)
	return fakeTicker{t}
}

// AfterFunc returns a timer that calls fn when the clock has advanced by d.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	t := &fakeTimer{f: f, fn: fn}
	t.Reset(d)
	return t
}

// Advance moves the clock forward by d, firing every timer and ticker
// that falls due on the way, in order.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	f.advanceTo(f.now.Add(d))
}

// Set moves the clock to t (never back), firing what falls due.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	if t.Before(f.now) {
		t = f.now
	}
	f.advanceTo(t)
}

// advanceTo fires what is due up to end, and unlocks f.mu.
func (f *Fake) advanceTo(end time.Time) {
	for {
		i := f.next()
		if i < 0 || f.waiters[i].when.After(end) {
			break
		}
		t := f.waiters[i]
		f.now = t.when
		fn, c := t.fn, t.c
		if t.period > 0 {
			t.when = t.when.Add(t.period)
		} else {
			f.remove(t)
		}
		if fn != nil {
			f.mu.Unlock()
			fn()
			f.mu.Lock()
			continue
		}
		select {
		case c <- f.now:
		default:
		}
	}
	f.now = end
	f.mu.Unlock()
}

// next returns the index of the waiter due first, or -1.
func (f *Fake) next() int {
	best := -1
	for i, t := range f.waiters {
		if best < 0 || t.when.Before(f.waiters[best].when) ||
			(t.when.Equal(f.waiters[best].when) && t.seq < f.waiters[best].seq) {
			best = i
		}
	}
	return best
}

func (f *Fake) remove(t *fakeTimer) bool {
	i := slices.Index(f.waiters, t)
	if i < 0 {
		return false
	}
	f.waiters = slices.Delete(f.waiters, i, i+1)
	f.changed.Broadcast()
	return true
}

// Waiters returns how many timers and tickers are armed.
func (f *Fake) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters)
}

// Next returns when the first armed timer or ticker falls due, and
// whether there is one: a test that steps the clock from one event to the
// next calls Set(Next()) once the code under test is idle.
func (f *Fake) Next() (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.next()
	if i < 0 {
		return time.Time{}, false
	}
	return f.waiters[i].when, true
}

// BlockUntil waits until at least n timers and tickers are armed: the
// code under test has reached the point where it waits for the clock, so
// that an Advance is not lost.
func (f *Fake) BlockUntil(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.waiters) < n {
		f.changed.Wait()
	}
}

// fakeTimer is a timer, a ticker (period > 0) or an AfterFunc (fn set).
type fakeTimer struct {
	f      *Fake
	c      chan time.Time
	fn     func()
	period time.Duration
	when   time.Time
	seq    uint64
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	return t.f.remove(t)
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	f := t.f
	f.mu.Lock()
	active := f.remove(t)
	// As time.Timer since Go 1.23: no stale value is received after Reset.
	if t.c != nil {
		select {
		case <-t.c:
		default:
		}
	}
	f.seq++
	t.seq = f.seq
	t.when = f.now.Add(d)
	f.waiters = append(f.waiters, t)
	f.changed.Broadcast()
	due := d <= 0
	if due {
		f.advanceTo(f.now) // fires it now, and unlocks
	} else {
		f.mu.Unlock()
	}
	return active
}

type fakeTicker struct{ t *fakeTimer }

func (k fakeTicker) C() <-chan time.Time { return k.t.c }
func (k fakeTicker) Stop()               { k.t.Stop() }
func (k fakeTicker) Reset(d time.Duration) {
	if d <= 0 {
		panic("clock: non-positive interval for Ticker.Reset")
	}
	k.t.f.mu.Lock()
	k.t.period = d
	k.t.f.mu.Unlock()
	k.t.Reset(d)
}
