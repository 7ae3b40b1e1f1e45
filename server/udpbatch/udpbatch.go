// Package udpbatch reads and writes UDP datagrams in batches: on Linux
// with recvmmsg(2) and sendmmsg(2), one system call for as many datagrams
// as are waiting (reading) or ready (writing), elsewhere one at a time.
// On loopback and in virtual machines, a system call and the wake-up of
// the peer it causes cost more than a DHCPv6 server's handling of the
// packet: the server's listener and the load generator of
// `cloudstack-pd bench` both move their packets this way.
//
// A Conn works on a *net.UDPConn through its syscall.RawConn, so reads
// and writes still wait in Go's network poller. It keeps the message
// headers of a batch between calls: it is not safe for concurrent use,
// and each goroutine reading or writing a socket has its own.
package udpbatch

import (
	"fmt"
	"net"
	"strconv"
	"sync"
)

// SendError is the error of a Write that could not send every datagram:
// how many were not sent, and why the first of them was not.
type SendError struct {
	Failed int
	Err    error
}

func (e *SendError) Error() string {
	return fmt.Sprintf("%d datagram(s) not sent: %v", e.Failed, e.Err)
}

func (e *SendError) Unwrap() error { return e.Err }

// Zones maps interface indexes (an IPv6 address's scope id) to names and
// back, as the net package does for the addresses it returns. The zero
// value is ready; it is safe for concurrent use.
type Zones struct {
	mu      sync.Mutex
	names   map[int]string
	indexes map[string]int
}

// Name returns the name of interface i (its number when unknown).
func (z *Zones) Name(i int) string {
	z.mu.Lock()
	defer z.mu.Unlock()
	if s, ok := z.names[i]; ok {
		return s
	}
	s := strconv.Itoa(i)
	if ifi, err := net.InterfaceByIndex(i); err == nil {
		s = ifi.Name
	}
	if z.names == nil {
		z.names = map[int]string{}
	}
	z.names[i] = s
	return s
}

// Index returns the index of interface s (a name or a number; 0 when unknown).
func (z *Zones) Index(s string) int {
	if i, err := strconv.Atoi(s); err == nil {
		return i
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if i, ok := z.indexes[s]; ok {
		return i
	}
	i := 0
	if ifi, err := net.InterfaceByName(s); err == nil {
		i = ifi.Index
	}
	if z.indexes == nil {
		z.indexes = map[string]int{}
	}
	z.indexes[s] = i
	return i
}
