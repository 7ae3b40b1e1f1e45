package leasequery

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Bulk Leasequery (RFC 5460) runs over TCP: each message is preceded by
// its length, two bytes in network order.

// MaxMessage is the longest message a frame can carry.
const MaxMessage = 0xffff

// Errors of the framing.
var (
	// ErrFrameTooLarge is returned when a frame announces more bytes than
	// the reader accepts, or a message is too long for a frame.
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrFrameTruncated is returned when the stream ends inside a frame.
	ErrFrameTruncated = errors.New("frame truncated")
	// ErrEmptyFrame is returned for a frame of length 0: no message is
	// that short.
	ErrEmptyFrame = errors.New("empty frame")
)

// AppendFrame appends msg, framed, to dst.
func AppendFrame(dst, msg []byte) ([]byte, error) {
	if len(msg) > MaxMessage {
		return dst, fmt.Errorf("message of %d bytes: %w", len(msg), ErrFrameTooLarge)
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(msg)))
	return append(dst, msg...), nil
}

// SplitFrame splits the first frame off b: its message, and the bytes
// after it. A b too short for its frame gives ErrFrameTruncated (more
// bytes may complete it); a frame longer than max, ErrFrameTooLarge.
func SplitFrame(b []byte, max int) (msg, rest []byte, err error) {
	if len(b) < 2 {
		return nil, b, ErrFrameTruncated
	}
	n := int(binary.BigEndian.Uint16(b))
	switch {
	case n == 0:
		return nil, b, ErrEmptyFrame
	case n > max:
		return nil, b, fmt.Errorf("frame of %d bytes, at most %d accepted: %w", n, max, ErrFrameTooLarge)
	case len(b)-2 < n:
		return nil, b, ErrFrameTruncated
	}
	return b[2 : 2+n : 2+n], b[2+n:], nil
}

// FrameReader reads framed messages from a stream.
type FrameReader struct {
	r   io.Reader
	max int
	buf []byte
}

// NewFrameReader returns a reader of messages of at most max bytes
// (0 or more than MaxMessage: MaxMessage) from r.
func NewFrameReader(r io.Reader, max int) *FrameReader {
	if max <= 0 || max > MaxMessage {
		max = MaxMessage
	}
	return &FrameReader{r: r, max: max, buf: make([]byte, 0, 512)}
}

// Next returns the next message, valid until the next call. At the end
// of the stream between two frames it returns io.EOF; inside a frame,
// ErrFrameTruncated; a frame over the maximum gives ErrFrameTooLarge
// without reading it. Any other error is the stream's.
func (f *FrameReader) Next() ([]byte, error) {
	var hdr [2]byte
	if n, err := io.ReadFull(f.r, hdr[:]); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("length: %w", ErrFrameTruncated)
		}
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	switch {
	case n == 0:
		return nil, ErrEmptyFrame
	case n > f.max:
		return nil, fmt.Errorf("frame of %d bytes, at most %d accepted: %w", n, f.max, ErrFrameTooLarge)
	}
	if cap(f.buf) < n {
		f.buf = make([]byte, n)
	}
	f.buf = f.buf[:n]
	if _, err := io.ReadFull(f.r, f.buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("message of %d bytes: %w", n, ErrFrameTruncated)
		}
		return nil, err
	}
	return f.buf, nil
}
