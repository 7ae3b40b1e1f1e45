package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/leasequery"
)

// BulkHandler answers Bulk Leasequeries: *Handler is one.
type BulkHandler interface {
	// LeasequeryAllowed reports whether a may connect.
	LeasequeryAllowed(a netip.Addr) bool
	// AnswerBulk answers one query, handing each message to emit.
	AnswerBulk(src netip.AddrPort, pkt []byte, emit func([]byte) error) error
}

// Defaults of BulkConfig.
const (
	DefaultBulkConnections = 8
	DefaultBulkIdleTimeout = 60 * time.Second
	DefaultBulkIOTimeout   = 10 * time.Second
	// MaxBulkQuery is the longest frame a requestor may send: a LEASEQUERY
	// is a header, a Client ID and one query of a few dozen bytes.
	MaxBulkQuery = 2048
)

// BulkConfig configures a BulkListener.
type BulkConfig struct {
	// Addrs are the TCP endpoints: the UDP listener's (RFC 5460: the
	// DHCPv6 port).
	Addrs []netip.AddrPort
	// MaxConnections is the most connections open at once (0:
	// DefaultBulkConnections); one more is closed at once.
	MaxConnections int
	// IdleTimeout closes a connection that sends no query for that long
	// (0: DefaultBulkIdleTimeout).
	IdleTimeout time.Duration
	// IOTimeout bounds the arrival of a frame once its length has arrived,
	// and the taking of each answer message by the requestor (0:
	// DefaultBulkIOTimeout): slow frames and slow readers are closed.
	IOTimeout time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// Metrics; nil: uncounted.
	Metrics *Metrics
}

// BulkListener owns the Bulk Leasequery TCP connections (RFC 5460): it
// accepts them from allowed requestors only, reads each length-framed
// query, has the handler answer it, and writes the answer's messages
// framed, one query after the other per connection, never interleaved.
// A connection that sends a truncated, oversized, slow or malformed frame,
// or reads its answer too slowly, is closed; the others go on.
type BulkListener struct {
	cfg  BulkConfig
	h    BulkHandler
	log  *slog.Logger
	m    *LeasequeryMetrics
	lns  []*net.TCPListener
	slot chan struct{}

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// ListenBulk opens every endpoint. Nothing is accepted until Serve.
func ListenBulk(cfg BulkConfig, h BulkHandler) (*BulkListener, error) {
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultBulkConnections
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultBulkIdleTimeout
	}
	if cfg.IOTimeout <= 0 {
		cfg.IOTimeout = DefaultBulkIOTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := newLeasequeryMetrics()
	if cfg.Metrics != nil {
		m = cfg.Metrics.Leasequery
	}
	l := &BulkListener{cfg: cfg, h: h, log: cfg.Logger, m: m, slot: make(chan struct{}, cfg.MaxConnections),
		conns: map[net.Conn]struct{}{}}
	for _, a := range cfg.Addrs {
		ln, err := net.ListenTCP("tcp6", net.TCPAddrFromAddrPort(a))
		if err != nil {
			l.Close()
			if errors.Is(err, syscall.EACCES) && a.Port() < 1024 {
				return nil, fmt.Errorf("listen tcp %s (bulk leasequery): %w (port %d needs root or CAP_NET_BIND_SERVICE)", a, err, a.Port())
			}
			return nil, fmt.Errorf("listen tcp %s (bulk leasequery): %w", a, err)
		}
		l.lns = append(l.lns, ln)
	}
	return l, nil
}

// Addrs returns the bound addresses.
func (l *BulkListener) Addrs() []netip.AddrPort {
	out := make([]netip.AddrPort, len(l.lns))
	for i, ln := range l.lns {
		out[i] = ln.Addr().(*net.TCPAddr).AddrPort()
	}
	return out
}

// Close closes the listening sockets of a BulkListener that will not Serve.
func (l *BulkListener) Close() {
	for _, ln := range l.lns {
		ln.Close()
	}
}

// Serve accepts connections until ctx is done, then closes the listeners
// and every open connection (an answer in progress ends) and returns.
func (l *BulkListener) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(l.lns))
	for _, ln := range l.lns {
		wg.Go(func() {
			if err := l.accept(ctx, ln, &wg); err != nil {
				errs <- err
			}
		})
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	l.Close()
	l.mu.Lock()
	for c := range l.conns {
		_ = c.SetDeadline(time.Now()) // the connection's goroutine closes it
	}
	l.mu.Unlock()
	wg.Wait()
	return err
}

func (l *BulkListener) accept(ctx context.Context, ln *net.TCPListener, wg *sync.WaitGroup) error {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				time.Sleep(10 * time.Millisecond) // out of file descriptors: let some close
				continue
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		src := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		if !l.h.LeasequeryAllowed(src.Addr()) {
			l.closed(c, CloseNotAllowed, src, nil)
			continue
		}
		select {
		case l.slot <- struct{}{}:
		default:
			l.closed(c, CloseFull, src, nil)
			continue
		}
		l.mu.Lock()
		if ctx.Err() != nil {
			l.mu.Unlock()
			<-l.slot
			l.closed(c, CloseShutdown, src, nil)
			return nil
		}
		l.conns[c] = struct{}{}
		l.mu.Unlock()
		l.m.Connections.Inc()
		wg.Go(func() {
			reason, err := l.serveConn(ctx, c, src)
			l.mu.Lock()
			delete(l.conns, c)
			l.mu.Unlock()
			l.m.Connections.Dec()
			<-l.slot
			l.closed(c, reason, src, err)
		})
	}
}

// closed closes c and counts why.
func (l *BulkListener) closed(c net.Conn, reason string, src netip.AddrPort, err error) {
	c.Close()
	l.m.ConnectionsClosed.WithLabelValues(reason).Inc()
	if reason != CloseDone {
		l.log.Debug("bulk leasequery connection closed", "requestor", src, "reason", reason, "err", err)
	}
}

// serveConn answers the queries of one connection in order, and returns
// why it ends.
func (l *BulkListener) serveConn(ctx context.Context, c *net.TCPConn, src netip.AddrPort) (string, error) {
	r := bufio.NewReaderSize(c, 512)
	w := bufio.NewWriterSize(c, 32<<10)
	buf := make([]byte, MaxBulkQuery)
	var frame []byte
	emit := func(msg []byte) error {
		var err error
		if frame, err = leasequery.AppendFrame(frame[:0], msg); err != nil {
			return err
		}
		_ = c.SetWriteDeadline(time.Now().Add(l.cfg.IOTimeout))
		_, err = w.Write(frame)
		return err
	}
	for {
		var hdr [2]byte
		_ = c.SetReadDeadline(time.Now().Add(l.cfg.IdleTimeout))
		if n, err := io.ReadFull(r, hdr[:]); err != nil {
			switch {
			case ctx.Err() != nil:
				return CloseShutdown, nil
			case n == 0 && errors.Is(err, io.EOF):
				return CloseDone, nil
			case errors.Is(err, os.ErrDeadlineExceeded):
				return CloseIdle, nil
			case errors.Is(err, io.ErrUnexpectedEOF):
				return CloseTruncated, err
			}
			return CloseError, err
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if n == 0 || n > MaxBulkQuery {
			return CloseOversized, fmt.Errorf("frame of %d bytes, 1 to %d accepted", n, MaxBulkQuery)
		}
		_ = c.SetReadDeadline(time.Now().Add(l.cfg.IOTimeout))
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			switch {
			case ctx.Err() != nil:
				return CloseShutdown, nil
			case errors.Is(err, os.ErrDeadlineExceeded):
				return CloseSlow, err
			case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
				return CloseTruncated, err
			}
			return CloseError, err
		}
		err := l.h.AnswerBulk(src, buf[:n], emit)
		if err == nil {
			_ = c.SetWriteDeadline(time.Now().Add(l.cfg.IOTimeout))
			err = w.Flush()
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return CloseShutdown, nil
		case errors.Is(err, ErrBulkMessage):
			_ = w.Flush()
			return CloseMalformed, err
		case errors.Is(err, os.ErrDeadlineExceeded):
			return CloseSlow, err
		default:
			return CloseError, err
		}
	}
}
