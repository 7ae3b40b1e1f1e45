package relay

import (
	"encoding/binary"
	"fmt"
)

// HeaderLen is the length of a relay message's fixed header (RFC 8415
// section 9): msg-type (1), hop-count (1), link-address (16) and
// peer-address (16). Its options follow.
const HeaderLen = 34

// optionHeaderLen is an option's code (2) and length (2).
const optionHeaderLen = 4

// OptionWalker walks a DHCPv6 option area (a message's options after its
// header, or the options inside an option such as IA_PD): a sequence of
// code (2 bytes), length (2 bytes), data. It is the one walk of the option
// format in the project; it does not allocate.
//
//	w := relay.WalkOptions(b)
//	for w.Next() {
//		use(w.Code(), w.Data())
//	}
//	if err := w.Err(); err != nil { ... }
//
// The walk stops at the first option that runs past the end of b; Err then
// says which, wrapping ErrTruncated. The options before it have been seen.
// The slices it returns point into b.
type OptionWalker struct {
	rest []byte // the options not walked yet
	opt  []byte // the current option, header included
	bad  bool   // rest starts with an option that runs past the end
}

// WalkOptions returns a walker over the options in b.
func WalkOptions(b []byte) OptionWalker { return OptionWalker{rest: b} }

// Next moves to the next option. It returns false at the end of the area
// or at an option that runs past it (see Err).
func (w *OptionWalker) Next() bool {
	if len(w.rest) == 0 || w.bad {
		w.opt = nil
		return false
	}
	if len(w.rest) < optionHeaderLen || len(w.rest)-optionHeaderLen < int(binary.BigEndian.Uint16(w.rest[2:])) {
		w.opt, w.bad = nil, true
		return false
	}
	n := optionHeaderLen + int(binary.BigEndian.Uint16(w.rest[2:]))
	w.opt, w.rest = w.rest[:n:n], w.rest[n:]
	return true
}

// Code is the current option's code.
func (w *OptionWalker) Code() uint16 { return binary.BigEndian.Uint16(w.opt) }

// Data is the current option's data (nil-free: an empty option gives an
// empty, non-nil slice).
func (w *OptionWalker) Data() []byte { return w.opt[optionHeaderLen:] }

// Option is the current option's whole encoding: header and data.
func (w *OptionWalker) Option() []byte { return w.opt }

// Rest is what is left after the current option: the options not walked
// yet, or, after Next returned false, the truncated tail (empty when the
// walk ended cleanly).
func (w *OptionWalker) Rest() []byte { return w.rest }

// Err is nil when the walk reached the end of the area, else an error
// naming the option that runs past it, wrapping ErrTruncated.
func (w *OptionWalker) Err() error {
	if !w.bad {
		return nil
	}
	return w.truncated()
}

func (w *OptionWalker) truncated() error {
	if len(w.rest) < optionHeaderLen {
		return fmt.Errorf("option header needs %d bytes, have %d: %w", optionHeaderLen, len(w.rest), ErrTruncated)
	}
	return fmt.Errorf("option %d: length %d, have %d: %w",
		binary.BigEndian.Uint16(w.rest), binary.BigEndian.Uint16(w.rest[2:]), len(w.rest)-optionHeaderLen, ErrTruncated)
}

// FindOption returns the data of the first option with code in the option
// area b, and whether there is one. An option that runs past the end ends
// the search.
func FindOption(b []byte, code uint16) ([]byte, bool) {
	w := WalkOptions(b)
	for w.Next() {
		if w.Code() == code {
			return w.Data(), true
		}
	}
	return nil, false
}
