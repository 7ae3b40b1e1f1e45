package replay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/clock"
)

// Target is a server that requests are sent to.
type Target interface {
	// Name names the target in output: its address, or "offline".
	Name() string
	// Send sends one request. A synchronous target (Func) answers in Send;
	// the others answer on Answers.
	Send(r *Request, pkt []byte) (Sent, error)
	// Answers delivers what the target sends back; nil for a synchronous target.
	Answers() <-chan Received
	// Close releases the target's socket.
	Close() error
}

// Sent is what Target.Send did.
type Sent struct {
	// At is when the request left.
	At time.Time
	// Src and Dst are the request's addresses, as a capture would show them.
	Src, Dst netip.AddrPort
	// Sync says the target answered in Send: Answer is its answer, or
	// nil with Dropped saying why there is none.
	Sync    bool
	Answer  *Received
	Dropped error
}

// Received is one datagram from a target.
type Received struct {
	Data     []byte
	At       time.Time
	Src, Dst netip.AddrPort
}

// UDP is a server reached over UDP. Its socket is bound to the address
// the host sends from towards the server, on a port of its own; the
// requests carry a relay source port option so that the server answers
// there (RFC 8357).
type UDP struct {
	server  netip.AddrPort
	conn    *net.UDPConn
	local   netip.AddrPort
	answers chan Received
	done    chan struct{}
	once    sync.Once
}

// DialUDP opens a socket for talking to server.
func DialUDP(server netip.AddrPort) (*UDP, error) {
	if !server.IsValid() || server.Port() == 0 {
		return nil, fmt.Errorf("server address %s: want [addr]:port", server)
	}
	// Which source address does the host use towards the server? A
	// connected socket says, without sending anything.
	probe, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server))
	if err != nil {
		return nil, fmt.Errorf("no route to %s: %w", server, err)
	}
	src := probe.LocalAddr().(*net.UDPAddr).AddrPort().Addr()
	probe.Close()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
	if err != nil {
		return nil, fmt.Errorf("open a UDP socket on %s: %w", src, err)
	}
	_ = conn.SetReadBuffer(4 << 20)
	u := &UDP{
		server:  server,
		conn:    conn,
		local:   conn.LocalAddr().(*net.UDPAddr).AddrPort(),
		answers: make(chan Received, 4096),
		done:    make(chan struct{}),
	}
	go u.read()
	return u, nil
}

func (u *UDP) read() {
	defer close(u.answers)
	buf := make([]byte, 65535)
	for {
		n, from, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-u.done:
				return
			default:
				continue // ICMP port unreachable and the like
			}
		}
		r := Received{Data: append([]byte(nil), buf[:n]...), At: time.Now(), Src: from, Dst: u.local}
		select {
		case u.answers <- r:
		case <-u.done:
			return
		}
	}
}

// Name returns the server's address.
func (u *UDP) Name() string { return u.server.String() }

// Local returns the socket's address: where the answers must come.
func (u *UDP) Local() netip.AddrPort { return u.local }

// Send sends pkt to the server.
func (u *UDP) Send(_ *Request, pkt []byte) (Sent, error) {
	at := time.Now()
	if _, err := u.conn.WriteToUDPAddrPort(pkt, u.server); err != nil {
		return Sent{}, fmt.Errorf("send to %s: %w", u.server, err)
	}
	return Sent{At: at, Src: u.local, Dst: u.server}, nil
}

// Answers delivers the datagrams the socket receives.
func (u *UDP) Answers() <-chan Received { return u.answers }

// Close closes the socket.
func (u *UDP) Close() error {
	var err error
	u.once.Do(func() {
		close(u.done)
		err = u.conn.Close()
	})
	return err
}

// HandlerFunc answers one packet from src, as server.Handler.Handle does:
// the reply's bytes and where they go, or an error saying why there is no
// reply.
type HandlerFunc func(src netip.AddrPort, pkt []byte) (reply []byte, dst netip.AddrPort, err error)

// Func is a server handler called in-process: no socket, no waiting.
type Func struct {
	name string
	h    HandlerFunc
}

// OfflineServer is the address Func's answers come from in output and in
// written captures: no socket has it.
var OfflineServer = netip.MustParseAddrPort("[::1]:547")

// OfflineRelay is the relay address a wrapped request comes from when
// handed to a Func: in a replay, replay itself is the relay, as it is on
// loopback when it sends. A captured Relay-Forward comes from its captured
// source, so that the server's trusted-relays applies as in production.
var OfflineRelay = netip.MustParseAddrPort("[::1]:547")

// NewFunc returns a synchronous target that calls h.
func NewFunc(name string, h HandlerFunc) *Func { return &Func{name: name, h: h} }

// Name returns the name given to NewFunc.
func (f *Func) Name() string { return f.name }

// clocked is a target that stamps Sent.At and Received.At with the clock
// Run is given rather than with real time.
type clocked interface {
	sendOn(c clock.Clock, r *Request, pkt []byte) (Sent, error)
}

var _ clocked = (*Func)(nil)

// Send calls the handler; Sent.At and the answer's At are real time (in
// Run, Options.Clock's).
func (f *Func) Send(r *Request, pkt []byte) (Sent, error) { return f.sendOn(clock.Real{}, r, pkt) }

func (f *Func) sendOn(c clock.Clock, r *Request, pkt []byte) (Sent, error) {
	src := r.Src
	if r.Wrapped || !src.IsValid() {
		src = OfflineRelay
	}
	at := c.Now()
	reply, dst, err := f.h(src, pkt)
	s := Sent{At: at, Src: src, Dst: OfflineServer, Sync: true}
	if err != nil {
		s.Dropped = err
		return s, nil
	}
	if !dst.IsValid() {
		dst = src
	}
	s.Answer = &Received{Data: reply, At: c.Now(), Src: OfflineServer, Dst: dst}
	return s, nil
}

// Answers returns nil: Func answers in Send.
func (f *Func) Answers() <-chan Received { return nil }

// Close does nothing.
func (f *Func) Close() error { return nil }
