//go:build !linux

package udpbatch

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
)

// Conn moves one datagram per call where recvmmsg(2) and sendmmsg(2) are
// not available.
type Conn struct{ c *net.UDPConn }

// New returns a Conn on c; size and zones are not used here.
func New(c *net.UDPConn, _ int, _ *Zones) (*Conn, error) { return &Conn{c: c}, nil }

// Size is the most datagrams a call moves: one.
func (b *Conn) Size() int { return 1 }

// Read reads one datagram into bufs[0] (see the Linux Read).
func (b *Conn) Read(bufs [][]byte, lens []int, srcs []netip.AddrPort) (int, error) {
	n, src, err := b.c.ReadFromUDPAddrPort(bufs[0])
	if err != nil {
		return 0, err
	}
	lens[0] = n
	if srcs != nil {
		srcs[0] = src
	}
	return 1, nil
}

// ReadNow would read without waiting: Linux only.
func (b *Conn) ReadNow([][]byte, []int, []netip.AddrPort) (int, error) {
	return 0, errors.New("reading without waiting needs Linux")
}

// Write sends each datagram in turn (see the Linux Write).
func (b *Conn) Write(datas [][]byte, dsts []netip.AddrPort) error {
	var first error
	failed := 0
	for i := range datas {
		var err error
		if dsts != nil {
			_, err = b.c.WriteToUDPAddrPort(datas[i], dsts[i])
		} else {
			_, err = b.c.Write(datas[i])
		}
		if err != nil {
			if first == nil {
				first = err
			}
			failed++
		}
	}
	if failed > 0 {
		return &SendError{Failed: failed, Err: first}
	}
	return nil
}

// ReusePort would set SO_REUSEPORT: this package does so on Linux only.
func ReusePort(string, string, syscall.RawConn) error {
	return errors.New("several sockets per address (SO_REUSEPORT) need Linux")
}

// SetReadBuffer asks for a receive buffer of n bytes on c and returns n
// (the size given is not known here).
func SetReadBuffer(c *net.UDPConn, n int) (int, error) { return n, c.SetReadBuffer(n) }

// Drops would return the datagrams the kernel dropped at c: Linux only.
func Drops(*net.UDPConn) (uint64, error) {
	return 0, errors.New("socket drops (SO_MEMINFO) need Linux")
}
