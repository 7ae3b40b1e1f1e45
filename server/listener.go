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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cloudstack-pd/cloudstack-pd/server/udpbatch"
)

// maxPacket is the largest UDP payload read; DHCPv6 relays stay far below.
const maxPacket = 65535

// DefaultBatch is how many datagrams a read or a write moves at most, by
// default (see ListenerConfig.Batch).
const DefaultBatch = 16

// DefaultReadBuffer is the receive buffer asked for each socket by
// default: 64 MiB holds some 60,000 relayed requests on loopback (the
// kernel counts about 1 KiB per small datagram), a second of a storm's
// excess over what two cores answer. It is memory only while a backlog
// fills it.
const DefaultReadBuffer = 64 << 20

// PacketHandler answers one packet, appending the reply to dst (Reply.Data
// is the appended part). *Handler is one.
type PacketHandler interface {
	HandleAppend(dst []byte, src netip.AddrPort, pkt []byte) (Reply, error)
}

// ListenerConfig configures a Listener.
type ListenerConfig struct {
	// Addrs are the unicast endpoints to listen on.
	Addrs []netip.AddrPort
	// Workers handling packets; 0 means one per CPU.
	Workers int
	// QueueLength bounds the packets waiting for a worker; 0 means 1024.
	// When the queue is full, the reader answers the packets of its batch
	// that do not fit itself, and what arrives meanwhile waits in the
	// socket's receive buffer (ReadBuffer).
	QueueLength int
	// ReadBuffer is the receive buffer asked for each socket, in bytes; 0
	// means DefaultReadBuffer, a negative value the kernel's default. It
	// is what holds a burst the server cannot answer at once (a storm of
	// Solicits): a datagram that does not fit is dropped by the kernel
	// and counted in socket_drops_total. Without CAP_NET_ADMIN the
	// kernel caps it at net.core.rmem_max, and Listen logs a warning.
	ReadBuffer int
	// SocketsPerAddr is how many sockets listen on each address, each
	// read by its own goroutine; 0 or 1 means one. With more, they are
	// bound with SO_REUSEPORT (Linux) and the kernel spreads the
	// datagrams over them by source address and port: this helps when
	// many relays send at once, not when one relay sends everything.
	SocketsPerAddr int
	// Batch is the most datagrams one system call reads, and the most
	// answers a worker sends in one (Linux: recvmmsg and sendmmsg); 0
	// means DefaultBatch, 1 one at a time. A worker handles the packets
	// already queued, up to Batch, before it sends their answers. A read
	// that returns fewer than Batch datagrams (nothing more was waiting)
	// is answered by the reader itself, which sends the answers together
	// and reads again: no worker is woken for it. A full batch goes to
	// the workers, so that under a backlog they answer in parallel while
	// the reader reads on. With Batch 1, every packet goes to a worker.
	Batch int
	// Logger; nil discards.
	Logger *slog.Logger
	// Metrics counts the listener's own drops (panic, send-failed) and its
	// batches; nil: none.
	Metrics *Metrics
}

// Listener owns the sockets: it reads packets in batches; answers a batch
// that did not fill itself, and hands a full one to a fixed pool of workers
// through a bounded queue; and writes the replies. The handler never
// touches a socket.
//
// Why a batch that did not fill is answered by the reader: on a machine
// where a system call and a wake-up cost more than handling a packet, the
// price of a packet is set by how many share a wake-up. A few packets read
// together and handed to a worker cost two wake-ups (the reader's and the
// worker's) and two goroutine switches; answered by the reader they cost
// one. When many relays each have a few exchanges in flight, or the load is
// light, batches are small and this halves the wake-ups; under a backlog
// batches fill and the workers share them (docs/BENCHMARKS.md, "Load
// shapes").
type Listener struct {
	cfg     ListenerConfig
	conns   []*net.UDPConn
	handler PacketHandler
	log     *slog.Logger
	queue   chan packet
	free    chan *[maxPacket]byte
	zones   udpbatch.Zones
}

type packet struct {
	conn int // index in Listener.conns
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
	if cfg.SocketsPerAddr <= 0 {
		cfg.SocketsPerAddr = 1
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = DefaultReadBuffer
	}
	l := &Listener{cfg: cfg, handler: h, log: cfg.Logger}
	for _, a := range cfg.Addrs {
		if err := l.listen(a); err != nil {
			l.closeConns()
			if errors.Is(err, syscall.EACCES) && a.Port() < 1024 {
				return nil, fmt.Errorf("listen %s: %w (port %d needs root or CAP_NET_BIND_SERVICE)", a, err, a.Port())
			}
			if errors.Is(err, syscall.EADDRNOTAVAIL) {
				return nil, fmt.Errorf("listen %s: %w (is the address configured on an interface of this host?)", a, err)
			}
			return nil, fmt.Errorf("listen %s: %w", a, err)
		}
	}
	if cfg.ReadBuffer > 0 {
		for _, c := range l.conns {
			got, err := udpbatch.SetReadBuffer(c, cfg.ReadBuffer)
			if err != nil {
				l.closeConns()
				return nil, fmt.Errorf("listen %s: %w", c.LocalAddr(), err)
			}
			if got < cfg.ReadBuffer {
				l.log.Warn("socket receive buffer smaller than asked: a burst of requests beyond it is dropped (socket_drops_total); raise the sysctl net.core.rmem_max",
					"socket", c.LocalAddr().String(), "bytes", got, "asked", cfg.ReadBuffer)
				break
			}
		}
	}
	// Buffers are allocated once: one per queued packet and per packet a
	// worker holds, plus a batch being read into per socket.
	n := cfg.QueueLength + cfg.Workers*cfg.Batch + len(l.conns)*cfg.Batch
	l.queue = make(chan packet, cfg.QueueLength)
	l.free = make(chan *[maxPacket]byte, n)
	for range n {
		l.free <- new([maxPacket]byte)
	}
	return l, nil
}

// listen opens the sockets of address a.
func (l *Listener) listen(a netip.AddrPort) error {
	if l.cfg.SocketsPerAddr == 1 {
		c, err := net.ListenUDP("udp6", net.UDPAddrFromAddrPort(a))
		if err != nil {
			return err
		}
		l.conns = append(l.conns, c)
		return nil
	}
	lc := net.ListenConfig{Control: udpbatch.ReusePort}
	for range l.cfg.SocketsPerAddr {
		pc, err := lc.ListenPacket(context.Background(), "udp6", a.String())
		if err != nil {
			return err
		}
		c := pc.(*net.UDPConn)
		l.conns = append(l.conns, c)
		// Port 0: the others take the port the first one got.
		a = c.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	return nil
}

// Addrs returns the bound addresses (useful with port 0 in tests), one
// per address, not per socket.
func (l *Listener) Addrs() []netip.AddrPort {
	var out []netip.AddrPort
	for i, c := range l.conns {
		if i%l.cfg.SocketsPerAddr == 0 {
			out = append(out, c.LocalAddr().(*net.UDPAddr).AddrPort())
		}
	}
	return out
}

// Serve reads and answers until ctx is done, then stops reading, lets the
// workers finish the packets already queued, and returns.
func (l *Listener) Serve(ctx context.Context) error {
	ws := make([]*worker, l.cfg.Workers)
	for i := range ws {
		w, err := l.newWorker()
		if err != nil {
			l.closeConns()
			return err
		}
		ws[i] = w
	}
	var workers sync.WaitGroup
	for _, w := range ws {
		workers.Go(w.run)
	}
	var readers sync.WaitGroup
	errs := make(chan error, len(l.conns))
	for i := range l.conns {
		readers.Go(func() {
			if err := l.read(ctx, i); err != nil {
				errs <- err
			}
		})
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

// read reads socket i in batches and queues the packets.
func (l *Listener) read(ctx context.Context, i int) error {
	c := l.conns[i]
	bio, err := udpbatch.New(c, l.cfg.Batch, &l.zones)
	if err != nil {
		return fmt.Errorf("read %s: %w", c.LocalAddr(), err)
	}
	size := bio.Size()
	bufs := make([]*[maxPacket]byte, 0, size)
	views := make([][]byte, size)
	lens := make([]int, size)
	srcs := make([]netip.AddrPort, size)
	in := l.newInline(bio, size)
	for {
		// At least one buffer, waiting for it; then what is free.
		bufs = append(bufs[:0], <-l.free)
	more:
		for len(bufs) < size {
			select {
			case b := <-l.free:
				bufs = append(bufs, b)
			default:
				break more
			}
		}
		for j, b := range bufs {
			views[j] = b[:]
		}
		n, err := bio.Read(views[:len(bufs)], lens, srcs)
		clear(views)
		if err != nil {
			for _, b := range bufs {
				l.free <- b
			}
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read %s: %w", c.LocalAddr(), err)
		}
		if n < size {
			// Nothing more was waiting: answer here.
			l.countBatch(byReader)
			for j := range n {
				in.serve(packet{conn: i, buf: bufs[j], n: lens[j], src: srcs[j]}, j)
			}
			in.flush()
			for _, b := range bufs[n:] {
				l.free <- b
			}
			clear(bufs)
			continue
		}
		l.countBatch(byWorkers)
		for j := range n {
			p := packet{conn: i, buf: bufs[j], n: lens[j], src: srcs[j]}
			select {
			case l.queue <- p:
			default:
				// The workers are behind: answer it here, and let what
				// arrives meanwhile wait in the socket's buffer.
				in.serve(p, j)
			}
		}
		in.flush()
		for _, b := range bufs[n:] {
			l.free <- b
		}
		clear(bufs)
	}
}

// worker handles queued packets: the one it waited for and those queued
// behind it, up to a batch, then sends their answers together.
type worker struct {
	l     *Listener
	batch []packet
	outs  [][]byte         // the answers' buffers, by place in the batch
	bios  []*udpbatch.Conn // by socket
	datas [][][]byte       // answers by socket
	dsts  [][]netip.AddrPort
}

func (l *Listener) newWorker() (*worker, error) {
	w := &worker{
		l:     l,
		batch: make([]packet, 0, l.cfg.Batch),
		outs:  make([][]byte, l.cfg.Batch),
		bios:  make([]*udpbatch.Conn, len(l.conns)),
		datas: make([][][]byte, len(l.conns)),
		dsts:  make([][]netip.AddrPort, len(l.conns)),
	}
	for i, c := range l.conns {
		b, err := udpbatch.New(c, l.cfg.Batch, &l.zones)
		if err != nil {
			return nil, err
		}
		w.bios[i] = b
	}
	return w, nil
}

func (w *worker) run() {
	for p := range w.l.queue {
		w.batch = append(w.batch[:0], p)
	more:
		for len(w.batch) < cap(w.batch) {
			select {
			case q, ok := <-w.l.queue:
				if !ok {
					break more
				}
				w.batch = append(w.batch, q)
			default:
				break more
			}
		}
		for k, p := range w.batch {
			if r, ok := w.l.serveOne(w.outs[k][:0], p); ok {
				w.outs[k] = r.Data
				w.datas[p.conn] = append(w.datas[p.conn], r.Data)
				w.dsts[p.conn] = append(w.dsts[p.conn], r.Dst)
			}
		}
		for i := range w.datas {
			if len(w.datas[i]) == 0 {
				continue
			}
			w.l.send(w.bios[i], w.datas[i], w.dsts[i])
			clear(w.datas[i])
			w.datas[i], w.dsts[i] = w.datas[i][:0], w.dsts[i][:0]
		}
	}
}

// send writes answers to their destinations, counting those not sent.
func (l *Listener) send(bio *udpbatch.Conn, datas [][]byte, dsts []netip.AddrPort) {
	if err := bio.Write(datas, dsts); err != nil {
		failed := len(datas)
		if se := (*udpbatch.SendError)(nil); errors.As(err, &se) {
			failed = se.Failed
		}
		for range failed {
			l.countDrop(ReasonSendFailed)
		}
		l.log.Debug("cannot send replies", "failed", failed, "err", err)
	}
}

// inline is a reader's own answering: the batch it read, answered into
// buffers it keeps, sent on its socket in one call.
type inline struct {
	l     *Listener
	bio   *udpbatch.Conn
	outs  [][]byte // the answers' buffers, by place in the batch
	datas [][]byte
	dsts  []netip.AddrPort
}

func (l *Listener) newInline(bio *udpbatch.Conn, size int) *inline {
	return &inline{l: l, bio: bio, outs: make([][]byte, size), datas: make([][]byte, 0, size), dsts: make([]netip.AddrPort, 0, size)}
}

// serve answers p, the k-th packet of the batch, and frees its buffer.
func (in *inline) serve(p packet, k int) {
	if r, ok := in.l.serveOne(in.outs[k][:0], p); ok {
		in.outs[k] = r.Data
		in.datas = append(in.datas, r.Data)
		in.dsts = append(in.dsts, r.Dst)
	}
}

// flush sends the answers of the batch.
func (in *inline) flush() {
	if len(in.datas) > 0 {
		in.l.send(in.bio, in.datas, in.dsts)
	}
	clear(in.datas)
	in.datas, in.dsts = in.datas[:0], in.dsts[:0]
}

// serveOne answers one packet into out and frees its buffer; a panic costs
// that packet only. ok is false when the packet gets no answer.
func (l *Listener) serveOne(out []byte, p packet) (r Reply, ok bool) {
	defer func() { l.free <- p.buf }()
	defer func() {
		if rec := recover(); rec != nil {
			l.countDrop(ReasonPanic)
			l.log.Error("panic while handling a packet: packet dropped", "relay", p.src,
				"panic", fmt.Sprint(rec), "packet", fmt.Sprintf("%x", p.buf[:p.n]), "stack", string(debug.Stack()))
			ok = false
		}
	}()
	r, err := l.handler.HandleAppend(out, p.src, p.buf[:p.n])
	if err != nil {
		l.log.Debug("no answer", "relay", p.src, "err", err)
		return Reply{}, false
	}
	return r, true
}

// Who answered a batch (listener_batches_total).
const (
	byReader  = 0
	byWorkers = 1
)

func (l *Listener) countBatch(by int) {
	if l.cfg.Metrics != nil {
		l.cfg.Metrics.countBatch(by)
	}
}

func (l *Listener) countDrop(r Reason) {
	if l.cfg.Metrics != nil {
		l.cfg.Metrics.countDrop(r)
	}
}

func (l *Listener) closeConns() {
	for _, c := range l.conns {
		c.Close()
	}
}

// SocketDrops returns the datagrams the kernel dropped at the listener's
// sockets, their receive buffers full (0 where it cannot tell).
func (l *Listener) SocketDrops() uint64 {
	var n uint64
	for _, c := range l.conns {
		d, _ := udpbatch.Drops(c)
		n += d
	}
	return n
}

// Collectors returns the listener's metrics read at scrape time:
// socket_drops_total.
func (l *Listener) Collectors() []prometheus.Collector {
	return []prometheus.Collector{prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: Namespace, Name: "socket_drops_total",
		Help: "Datagrams the kernel dropped at the DHCPv6 sockets because their receive buffer was full (a burst beyond server.receive-buffer, or the server starved of CPU).",
	}, func() float64 { return float64(l.SocketDrops()) })}
}

// Close closes the sockets of a Listener that will not Serve (a start-up
// that failed after Listen).
func (l *Listener) Close() { l.closeConns() }
