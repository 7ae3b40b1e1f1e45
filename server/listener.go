package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
)

// maxPacket is the largest UDP payload read; DHCPv6 relays stay far below.
const maxPacket = 65535

// PacketHandler answers one packet. *Handler is one.
type PacketHandler interface {
	Handle(src netip.AddrPort, pkt []byte) (Reply, error)
}

// ListenerConfig configures a Listener.
type ListenerConfig struct {
	// Addrs are the unicast endpoints to listen on.
	Addrs []netip.AddrPort
	// Workers handling packets; 0 means one per CPU.
	Workers int
	// QueueLength bounds the packets waiting for a worker; 0 means 1024.
	// A packet arriving at a full queue is dropped and counted.
	QueueLength int
	// Logger; nil discards.
	Logger *slog.Logger
	// Metrics counts the listener's own drops (queue-full, panic); nil: none.
	Metrics *Metrics
}

// Listener owns the sockets: it reads packets, hands them to a fixed pool of
// workers through a bounded queue, and writes the replies. The handler
// never touches a socket.
type Listener struct {
	cfg     ListenerConfig
	conns   []*net.UDPConn
	handler PacketHandler
	log     *slog.Logger
	queue   chan packet
	free    chan *[maxPacket]byte
}

type packet struct {
	conn *net.UDPConn
	buf  *[maxPacket]byte
	n    int
	src  netip.AddrPort
}

// Listen opens every endpoint. Nothing is read until Serve.
func Listen(cfg ListenerConfig, h PacketHandler) (*Listener, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.QueueLength <= 0 {
		cfg.QueueLength = 1024
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Listener{cfg: cfg, handler: h, log: cfg.Logger}
	for _, a := range cfg.Addrs {
		c, err := net.ListenUDP("udp6", net.UDPAddrFromAddrPort(a))
		if err != nil {
			l.closeConns()
			if errors.Is(err, syscall.EACCES) && a.Port() < 1024 {
				return nil, fmt.Errorf("listen %s: %w (port %d needs root or CAP_NET_BIND_SERVICE)", a, err, a.Port())
			}
			if errors.Is(err, syscall.EADDRNOTAVAIL) {
				return nil, fmt.Errorf("listen %s: %w (is the address configured on an interface of this host?)", a, err)
			}
			return nil, fmt.Errorf("listen %s: %w", a, err)
		}
		l.conns = append(l.conns, c)
	}
	// Buffers are allocated once: one per queued packet and per worker,
	// plus one being read into per socket.
	n := cfg.QueueLength + cfg.Workers + len(l.conns)
	l.queue = make(chan packet, cfg.QueueLength)
	l.free = make(chan *[maxPacket]byte, n)
	for range n {
		l.free <- new([maxPacket]byte)
	}
	return l, nil
}

// Addrs returns the bound addresses (useful with port 0 in tests).
func (l *Listener) Addrs() []netip.AddrPort {
	out := make([]netip.AddrPort, len(l.conns))
	for i, c := range l.conns {
		out[i] = c.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	return out
}

// Serve reads and answers until ctx is done, then stops reading, lets the
// workers finish the packets already queued, and returns.
func (l *Listener) Serve(ctx context.Context) error {
	var workers sync.WaitGroup
	for range l.cfg.Workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for p := range l.queue {
				l.serveOne(p)
			}
		}()
	}
	var readers sync.WaitGroup
	errs := make(chan error, len(l.conns))
	for _, c := range l.conns {
		readers.Add(1)
		go func() {
			defer readers.Done()
			if err := l.read(ctx, c); err != nil {
				errs <- err
			}
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	l.closeConns() // unblocks the readers
	readers.Wait()
	close(l.queue)
	workers.Wait()
	return err
}

func (l *Listener) read(ctx context.Context, c *net.UDPConn) error {
	for {
		buf := <-l.free
		n, src, err := c.ReadFromUDPAddrPort(buf[:])
		if err != nil {
			l.free <- buf
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read %s: %w", c.LocalAddr(), err)
		}
		select {
		case l.queue <- packet{conn: c, buf: buf, n: n, src: src}:
		default:
			l.free <- buf
			l.countDrop(ReasonQueueFull)
			l.log.Debug("queue full: packet dropped", "relay", src)
		}
	}
}

// serveOne answers one packet; a panic costs that packet only.
func (l *Listener) serveOne(p packet) {
	defer func() { l.free <- p.buf }()
	defer func() {
		if r := recover(); r != nil {
			l.countDrop(ReasonPanic)
			l.log.Error("panic while handling a packet: packet dropped", "relay", p.src,
				"panic", fmt.Sprint(r), "packet", fmt.Sprintf("%x", p.buf[:p.n]), "stack", string(debug.Stack()))
		}
	}()
	r, err := l.handler.Handle(p.src, p.buf[:p.n])
	if err != nil {
		l.log.Debug("no answer", "relay", p.src, "err", err)
		return
	}
	if _, err := p.conn.WriteToUDPAddrPort(r.Data, r.Dst); err != nil {
		l.log.Warn("cannot send reply", "relay", r.Dst, "err", err)
	}
}

func (l *Listener) countDrop(r Reason) {
	if l.cfg.Metrics != nil {
		l.cfg.Metrics.Drops.WithLabelValues(string(r)).Inc()
	}
}

func (l *Listener) closeConns() {
	for _, c := range l.conns {
		c.Close()
	}
}
