//go:build linux

package bench

import (
	"errors"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// relayGroups returns how many goroutines play the relays of a run with
// sockets sockets: 0 (one per socket) up to 4 sockets per CPU, else one
// per CPU, each reading its sockets through one epoll set (runGroup). A
// goroutine per socket pays, for every answer, the network poller's
// wake-up of the goroutine sleeping on that socket and a read that finds
// the socket empty: with 128 relays that made the generator cost three
// times its 4-relay cost per exchange, CPU the server it measures then
// lacked. With few sockets, each busy, a goroutine each is cheaper
// (docs/BENCHMARKS.md, "Load shapes").
func relayGroups(sockets int) int {
	if p := runtime.GOMAXPROCS(0); sockets > 4*p {
		return p
	}
	return 0
}

// runGroup plays the relays of shards in one goroutine: it waits for any
// of their sockets to be readable (epoll, level-triggered), reads each
// readable one without waiting, and sends what the answers call for.
func runGroup(shards []*benchShard) error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(ep)
	byFD := make(map[int32]*benchShard, len(shards))
	for _, s := range shards {
		rc, err := s.conn.SyscallConn()
		if err != nil {
			return err
		}
		var cerr error
		if err := rc.Control(func(fd uintptr) {
			cerr = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, int(fd), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)})
			byFD[int32(fd)] = s
		}); err != nil {
			return err
		}
		if cerr != nil {
			return cerr
		}
	}
	r := shards[0].r
	now := r.now()
	for _, s := range shards {
		for i := range s.slots {
			s.startExchange(i, now)
		}
		s.flush()
	}
	const tick = 5 * time.Millisecond
	events := make([]unix.EpollEvent, len(shards))
	var nextScan int64
	for {
		now = r.now()
		if now >= nextScan {
			busy := false
			for _, s := range shards {
				busy = s.scan(now) || busy
				s.flush()
			}
			if !busy {
				return nil
			}
			nextScan = now + int64(tick)
		}
		n, err := unix.EpollWait(ep, events, int(tick/time.Millisecond))
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		now = r.now()
		for _, ev := range events[:n] {
			s := byFD[ev.Fd]
			k, err := s.bio.ReadNow(s.bufs, s.lens, nil)
			switch {
			case err == nil:
			case errors.Is(err, syscall.ECONNREFUSED):
				// ICMP port unreachable for an earlier send: that
				// message is lost and will time out.
			default:
				s.malformed++
			}
			for j := range k {
				s.answer(s.bufs[j][:s.lens[j]], now)
			}
			s.flush()
		}
	}
}
