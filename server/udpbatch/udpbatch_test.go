package udpbatch

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

func listen(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		testenv.IPv6Loopback(t)
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRoundTrip writes a batch from one socket to another and reads it
// back in batches, with the sources; then answers on a connected socket.
func TestRoundTrip(t *testing.T) {
	a, b := listen(t), listen(t)
	ab, err := New(a, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := New(b, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	dst := b.LocalAddr().(*net.UDPAddr).AddrPort()
	var datas [][]byte
	var dsts []netip.AddrPort
	for i := range 10 { // more than a batch
		datas = append(datas, fmt.Appendf(nil, "datagram %d", i))
		dsts = append(dsts, dst)
	}
	if err := ab.Write(datas, dsts); err != nil {
		t.Fatal(err)
	}
	bufs := [][]byte{make([]byte, 100), make([]byte, 100), make([]byte, 100), make([]byte, 100)}
	lens := make([]int, 4)
	srcs := make([]netip.AddrPort, 4)
	from := a.LocalAddr().(*net.UDPAddr).AddrPort()
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	for got := 0; got < len(datas); {
		n, err := bb.Read(bufs, lens, srcs)
		if err != nil {
			t.Fatal(err)
		}
		if n < 1 || n > 4 {
			t.Fatalf("read %d datagrams", n)
		}
		for i := range n {
			if !bytes.Equal(bufs[i][:lens[i]], datas[got]) || srcs[i] != from {
				t.Errorf("datagram %d: %q from %s, want %q from %s", got, bufs[i][:lens[i]], srcs[i], datas[got], from)
			}
			got++
		}
	}

	// A connected socket: no destinations, no sources.
	c, err := net.DialUDP("udp6", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cb, err := New(c, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cb.Write([][]byte{[]byte("x"), []byte("yz")}, nil); err != nil {
		t.Fatal(err)
	}
	for got := 0; got < 2; {
		n, err := bb.Read(bufs, lens, nil)
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
}

func TestReadDeadline(t *testing.T) {
	a := listen(t)
	ab, err := New(a, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = ab.Read([][]byte{make([]byte, 10)}, make([]int, 1), nil)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("err = %v, want a timeout", err)
	}
	a.Close()
	if _, err := ab.Read([][]byte{make([]byte, 10)}, make([]int, 1), nil); err == nil {
		t.Error("read on a closed socket succeeded")
	}
}

func TestZones(t *testing.T) {
	var z Zones
	ifs, err := net.Interfaces()
	if err != nil || len(ifs) == 0 {
		t.Skip("no interfaces")
	}
	if got := z.Name(ifs[0].Index); got != ifs[0].Name {
		t.Errorf("Name(%d) = %q, want %q", ifs[0].Index, got, ifs[0].Name)
	}
	if got := z.Index(ifs[0].Name); got != ifs[0].Index {
		t.Errorf("Index(%q) = %d, want %d", ifs[0].Name, got, ifs[0].Index)
	}
	if got := z.Index("7"); got != 7 {
		t.Errorf("Index(7) = %d", got)
	}
}

// TestWriteCountsFailures: a datagram the kernel refuses (port 0) does not
// keep the others from going, and the error says how many were not sent.
func TestWriteCountsFailures(t *testing.T) {
	a, b := listen(t), listen(t)
	ab, err := New(a, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	dst := b.LocalAddr().(*net.UDPAddr).AddrPort()
	bad := netip.AddrPortFrom(dst.Addr(), 0)
	err = ab.Write([][]byte{[]byte("one"), []byte("lost"), []byte("two"), []byte("lost"), []byte("three")},
		[]netip.AddrPort{dst, bad, dst, bad, dst})
	var se *SendError
	if !errors.As(err, &se) || se.Failed != 2 {
		t.Fatalf("Write = %v, want a SendError with 2 failed", err)
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	for _, want := range []string{"one", "two", "three"} {
		n, err := b.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("read %q, %v; want %q", buf[:n], err, want)
		}
	}
}

// TestReadBufferAndDrops: the receive buffer is what was asked (or what
// the kernel allows without CAP_NET_ADMIN), and datagrams that do not fit
// in it while nothing reads are counted as drops.
func TestReadBufferAndDrops(t *testing.T) {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		testenv.IPv6Loopback(t)
		t.Fatal(err)
	}
	defer c.Close()
	got, err := SetReadBuffer(c, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got < 1<<16 {
		t.Errorf("receive buffer %d bytes, asked for 1 MiB", got)
	}
	if d, err := Drops(c); err != nil || d != 0 {
		t.Fatalf("drops %d, %v before anything was sent", d, err)
	}
	// A small buffer, filled with nobody reading.
	if _, err := SetReadBuffer(c, 4096); err != nil {
		t.Fatal(err)
	}
	s, err := net.DialUDP("udp6", nil, c.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 200 {
		s.Write(make([]byte, 200))
	}
	if d, err := Drops(c); err != nil || d == 0 {
		t.Errorf("drops %d, %v after 200 datagrams into a 4 KiB buffer", d, err)
	}
}

// TestReadNow: ReadNow returns what is waiting, and 0 without waiting
// when nothing is.
func TestReadNow(t *testing.T) {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		testenv.IPv6Loopback(t)
		t.Fatal(err)
	}
	defer c.Close()
	b, err := New(c, 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	bufs, lens := [][]byte{make([]byte, 64), make([]byte, 64), make([]byte, 64)}, make([]int, 3)
	if n, err := b.ReadNow(bufs, lens, nil); n != 0 || err != nil {
		t.Fatalf("ReadNow on an empty socket: %d, %v", n, err)
	}
	s, err := net.DialUDP("udp6", nil, c.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Write([]byte("one"))
	s.Write([]byte("two"))
	deadline := time.Now().Add(2 * time.Second)
	var got []string
	for len(got) < 2 && time.Now().Before(deadline) {
		n, err := b.ReadNow(bufs, lens, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			got = append(got, string(bufs[i][:lens[i]]))
		}
	}
	if fmt.Sprint(got) != "[one two]" {
		t.Errorf("read %q", got)
	}
}
