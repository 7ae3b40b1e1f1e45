//go:build linux

package udpbatch

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr: Go lays it out as C does on every Linux
// architecture (the struct is padded to Msghdr's alignment).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// Conn reads and writes batches on one socket.
type Conn struct {
	rc    syscall.RawConn
	msgs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	zones *Zones

	// the call in progress: how many messages, how many done, its error,
	// how many of them failed (writing)
	n, done, failed   int
	errno             syscall.Errno
	readFn, readNowFn func(fd uintptr) bool
	writeFn           func(fd uintptr) bool
}

// New returns a Conn moving up to size datagrams per call on c, an IPv6
// socket (IPv4 peers appear as IPv4-mapped addresses). zones names the
// scope of link-local peers; nil: a private one.
func New(c *net.UDPConn, size int, zones *Zones) (*Conn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	if zones == nil {
		zones = &Zones{}
	}
	size = max(size, 1)
	b := &Conn{
		rc:    rc,
		msgs:  make([]mmsghdr, size),
		iovs:  make([]unix.Iovec, size),
		names: make([]unix.RawSockaddrInet6, size),
		zones: zones,
	}
	for i := range b.msgs {
		b.msgs[i].hdr.Iov = &b.iovs[i]
		b.msgs[i].hdr.SetIovlen(1)
	}
	b.readFn, b.readNowFn, b.writeFn = b.recv, b.recvNow, b.send
	return b, nil
}

// Size is the most datagrams a call moves.
func (b *Conn) Size() int { return len(b.msgs) }

func (b *Conn) recv(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(b.n), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			b.done = int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait until the socket is readable
		}
		b.errno = e
		return true
	}
}

// recvNow is recv that does not wait: nothing waiting is 0 datagrams.
func (b *Conn) recvNow(fd uintptr) bool {
	if !b.recv(fd) {
		b.done = 0
	}
	return true
}

func (b *Conn) send(fd uintptr) bool {
	for b.done < b.n {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[b.done])), uintptr(b.n-b.done), 0, 0, 0)
		switch e {
		case 0:
			b.done += int(n)
			continue
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait until the socket is writable
		}
		// The datagram at b.done failed: note it, go on with the next.
		if b.errno == 0 {
			b.errno = e
		}
		b.failed++
		b.done++
	}
	return true
}

// Read reads up to len(bufs) datagrams (at most Size), waiting for the
// first, into bufs, and returns how many; lens[i] is the length of the
// i-th, srcs[i] its source (srcs may be nil).
func (b *Conn) Read(bufs [][]byte, lens []int, srcs []netip.AddrPort) (int, error) {
	return b.read(b.readFn, bufs, lens, srcs)
}

// ReadNow is Read without the wait: it returns 0 datagrams when none is
// waiting. For a caller that learns readiness itself (epoll over many
// sockets, as bench's relays do).
func (b *Conn) ReadNow(bufs [][]byte, lens []int, srcs []netip.AddrPort) (int, error) {
	return b.read(b.readNowFn, bufs, lens, srcs)
}

func (b *Conn) read(fn func(uintptr) bool, bufs [][]byte, lens []int, srcs []netip.AddrPort) (int, error) {
	b.n = min(len(bufs), len(b.msgs))
	for i := range b.n {
		b.iovs[i].Base = unsafe.SliceData(bufs[i])
		b.iovs[i].SetLen(len(bufs[i]))
		if srcs != nil {
			b.msgs[i].hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
			b.msgs[i].hdr.Namelen = unix.SizeofSockaddrInet6
		} else {
			b.msgs[i].hdr.Name, b.msgs[i].hdr.Namelen = nil, 0
		}
		b.msgs[i].hdr.Flags = 0
	}
	b.done, b.errno = 0, 0
	err := b.rc.Read(fn)
	for i := range b.n {
		b.iovs[i].Base = nil // keep no buffer reachable from here
	}
	if err != nil {
		return 0, err
	}
	if b.errno != 0 {
		return 0, b.errno
	}
	for i := range b.done {
		lens[i] = int(b.msgs[i].len)
		if srcs != nil {
			srcs[i] = b.addr(&b.names[i])
		}
	}
	return b.done, nil
}

// Write sends datas[i] to dsts[i] (dsts nil: a connected socket's peer),
// every one of them: a datagram that cannot be sent does not keep the
// others from being sent. When some were not, the error is a *SendError
// that says how many, with the first one's error.
func (b *Conn) Write(datas [][]byte, dsts []netip.AddrPort) error {
	var first error
	failed := 0
	for len(datas) > 0 {
		b.n = min(len(datas), len(b.msgs))
		for i := range b.n {
			b.iovs[i].Base = unsafe.SliceData(datas[i])
			b.iovs[i].SetLen(len(datas[i]))
			if dsts != nil {
				b.msgs[i].hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
				b.msgs[i].hdr.Namelen = unix.SizeofSockaddrInet6
				b.putAddr(&b.names[i], dsts[i])
			} else {
				b.msgs[i].hdr.Name, b.msgs[i].hdr.Namelen = nil, 0
			}
		}
		b.done, b.errno, b.failed = 0, 0, 0
		err := b.rc.Write(b.writeFn)
		for i := range b.n {
			b.iovs[i].Base = nil
		}
		failed += b.failed
		if err != nil {
			// The socket failed: what this call did not do, and the
			// batches after it, are not sent.
			return &SendError{Failed: failed + len(datas) - b.done, Err: err}
		}
		if b.errno != 0 && first == nil {
			first = b.errno
		}
		datas = datas[b.n:]
		if dsts != nil {
			dsts = dsts[b.n:]
		}
	}
	if failed > 0 {
		return &SendError{Failed: failed, Err: first}
	}
	return nil
}

func (b *Conn) addr(sa *unix.RawSockaddrInet6) netip.AddrPort {
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	a := netip.AddrFrom16(sa.Addr)
	if sa.Scope_id != 0 {
		a = a.WithZone(b.zones.Name(int(sa.Scope_id)))
	}
	return netip.AddrPortFrom(a, uint16(p[0])<<8|uint16(p[1]))
}

func (b *Conn) putAddr(sa *unix.RawSockaddrInet6, ap netip.AddrPort) {
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ap.Addr().As16()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(ap.Port()>>8), byte(ap.Port())
	if z := ap.Addr().Zone(); z != "" {
		sa.Scope_id = uint32(b.zones.Index(z))
	}
}

// ReusePort is a net.ListenConfig.Control that sets SO_REUSEPORT, so that
// several sockets bind one address and the kernel spreads the datagrams
// over them by the peer's address and port.
func ReusePort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("SO_REUSEPORT: %w", err)
	}
	return nil
}

// SetReadBuffer asks for a receive buffer of n bytes on c: with
// SO_RCVBUFFORCE when the process may (CAP_NET_ADMIN), else with SO_RCVBUF,
// which the kernel caps at net.core.rmem_max. It returns the size the
// kernel gave, in the bytes of n (the kernel doubles the value asked for its
// bookkeeping, and reports the double).
func SetReadBuffer(c *net.UDPConn, n int) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var got int
	var serr error
	err = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n); serr != nil {
				return
			}
		}
		got, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return 0, fmt.Errorf("receive buffer: %w", err)
	}
	return got / 2, nil
}

// Drops returns how many datagrams the kernel dropped at c since it was
// opened, its receive buffer full (SO_MEMINFO's SK_MEMINFO_DROPS).
func Drops(c *net.UDPConn) (uint64, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var mem [unix.SK_MEMINFO_VARS]uint32
	var serr error
	err = rc.Control(func(fd uintptr) {
		l := uint32(unsafe.Sizeof(mem))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mem[0])), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			serr = e
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return 0, fmt.Errorf("SO_MEMINFO: %w", err)
	}
	return uint64(mem[unix.SK_MEMINFO_DROPS]), nil
}
