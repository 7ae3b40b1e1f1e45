// Package clock is the time source the daemon and its loops are given: Now,
// timers and tickers behind one interface, so that a test drives them with
// Fake instead of sleeping.
//
// Real is the time package; Fake moves only when told (Advance) and fires
// what falls due in order, and lets a test wait until the code under test
// has armed its timers (BlockUntil).
package clock

import "time"

// Clock tells the time and makes timers and tickers.
type Clock interface {
	// Now is the current time.
	Now() time.Time
	// NewTimer is time.NewTimer.
	NewTimer(d time.Duration) Timer
	// NewTicker is time.NewTicker; d must be positive.
	NewTicker(d time.Duration) Ticker
	// AfterFunc is time.AfterFunc.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a *time.Timer behind an interface. A Timer from AfterFunc has
// a nil C.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// Ticker is a *time.Ticker behind an interface.
type Ticker interface {
	C() <-chan time.Time
	Stop()
	Reset(d time.Duration)
}

// Real is the system clock: the time package.
type Real struct{}

var _ Clock = Real{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// NewTimer returns time.NewTimer(d).
func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

// NewTicker returns time.NewTicker(d).
func (Real) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

// AfterFunc returns time.AfterFunc(d, f).
func (Real) AfterFunc(d time.Duration, f func()) Timer { return realTimer{time.AfterFunc(d, f)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time   { return r.t.C }
func (r realTicker) Stop()                 { r.t.Stop() }
func (r realTicker) Reset(d time.Duration) { r.t.Reset(d) }

// OrReal returns c, or Real when c is nil: for the zero value of a
// struct that holds an optional Clock.
func OrReal(c Clock) Clock {
	if c == nil {
		return Real{}
	}
	return c
}
