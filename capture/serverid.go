package capture

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// optServerID is the Server Identifier option (RFC 8415 section 21.3).
const optServerID = 2

// ReplaceServerID returns a copy of pkt, a client message or a chain of
// Relay-Forwards around one (not a Relay-Reply), in which every Server Identifier option of the
// client message carries duid. Everything else is copied byte for byte;
// only the lengths of the Relay Message options around the client message
// change when duid is longer or shorter than the DUID it replaces. It
// returns how many options it replaced: 0 when the message names no
// server, and then the copy equals pkt.
//
// A capture's Request, Renew, Release or Decline names the server that
// answered it at the time; a replay must name the target server instead or
// be dropped by it (RFC 8415 section 16). Relay options are not touched.
func ReplaceServerID(pkt, duid []byte) ([]byte, int, error) {
	if len(duid) == 0 || len(duid) > 0xffff {
		return nil, 0, fmt.Errorf("capture: server id of %d bytes", len(duid))
	}
	return replaceServerID(pkt, duid, 0)
}

var errShort = errors.New("message too short")

func replaceServerID(b, duid []byte, depth int) ([]byte, int, error) {
	if len(b) == 0 {
		return nil, 0, fmt.Errorf("capture: empty message: %w", ErrTruncated)
	}
	if b[0] == relay.MsgRelayReply {
		return nil, 0, errors.New("capture: a Relay-Reply is not a request")
	}
	if b[0] != relay.MsgRelayForward {
		// A client message: type and transaction id, then options.
		if len(b) < 4 {
			return nil, 0, fmt.Errorf("capture: %w: %w", errShort, ErrTruncated)
		}
		out := append(make([]byte, 0, len(b)+len(duid)), b[:4]...)
		n := 0
		w := relay.WalkOptions(b[4:])
		for w.Next() {
			if w.Code() != optServerID {
				out = append(out, w.Option()...)
				continue
			}
			out = binary.BigEndian.AppendUint16(out, optServerID)
			out = binary.BigEndian.AppendUint16(out, uint16(len(duid)))
			out = append(out, duid...)
			n++
		}
		if err := w.Err(); err != nil {
			return nil, 0, walkErr(err)
		}
		return out, n, nil
	}
	if depth == relay.MaxLevels {
		return nil, 0, fmt.Errorf("capture: more than %d relay levels", relay.MaxLevels)
	}
	if len(b) < relay.HeaderLen {
		return nil, 0, fmt.Errorf("capture: relay level %d: %w: %w", depth, errShort, ErrTruncated)
	}
	out := append(make([]byte, 0, len(b)+len(duid)), b[:relay.HeaderLen]...)
	n := 0
	w := relay.WalkOptions(b[relay.HeaderLen:])
	for w.Next() {
		if w.Code() != relay.OptRelayMsg {
			out = append(out, w.Option()...)
			continue
		}
		inner, k, err := replaceServerID(w.Data(), duid, depth+1)
		if err != nil {
			return nil, 0, err
		}
		if len(inner) > 0xffff {
			return nil, 0, fmt.Errorf("capture: relay level %d: relay message of %d bytes", depth, len(inner))
		}
		out = binary.BigEndian.AppendUint16(out, relay.OptRelayMsg)
		out = binary.BigEndian.AppendUint16(out, uint16(len(inner)))
		out = append(out, inner...)
		n += k
	}
	if err := w.Err(); err != nil {
		return nil, 0, walkErr(err)
	}
	return out, n, nil
}

// walkErr is an option walk's error (which wraps relay.ErrTruncated) as
// the package reports it: wrapping its own ErrTruncated too.
func walkErr(err error) error { return walkError{err} }

type walkError struct{ err error }

func (e walkError) Error() string   { return "capture: " + e.err.Error() }
func (e walkError) Unwrap() []error { return []error{e.err, ErrTruncated} }
