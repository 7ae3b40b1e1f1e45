package server

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cloudstack-pd/cloudstack-pd/relay"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// startListener serves h on [::1]:0 and returns its address.
func startListener(t *testing.T, h PacketHandler, m *Metrics) netip.AddrPort {
	t.Helper()
	l, err := Listen(ListenerConfig{Addrs: []netip.AddrPort{netip.MustParseAddrPort("[::1]:0")}, Workers: 2, QueueLength: 8, Metrics: m}, h)
	if err != nil {
		testenv.IPv6Loopback(t)
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return l.Addrs()[0]
}

// exchange sends a relayed packet with a relay source port option from a
// fresh socket and waits for the answer there.
func exchangeUDP(t *testing.T, srv netip.AddrPort, client []byte) ([]byte, error) {
	t.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pkt := relay.Encapsulate(client, relay.Forward{LinkAddr: linkAddr, PeerAddr: vmPeer, InterfaceID: []byte("VLAN2701"),
		RemoteID: relay.JuniperRemoteID(macA), HasSourcePort: true})
	if _, err := c.WriteToUDPAddrPort(pkt, srv); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := c.ReadFromUDPAddrPort(buf)
	return buf[:n], err
}

func TestListenerAnswersOverUDP(t *testing.T) {
	h, _ := newTestHandler(t, testOptions)
	srv := startListener(t, h, h.Metrics())
	reply, err := exchangeUDP(t, srv, msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1)))
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	ans := innerAnswer(t, reply)
	if p, _ := prefixOf(ans.Options.OneIAPD().Options.Prefixes()[0]); p != prefixA {
		t.Errorf("prefix %s, want %s", p, prefixA)
	}
}

// panicky panics on every other packet.
type panicky struct {
	h *Handler
	n atomic.Int32
}

func (p *panicky) HandleAppend(dst []byte, src netip.AddrPort, pkt []byte) (Reply, error) {
	if p.n.Add(1)%2 == 1 {
		panic("boom")
	}
	return p.h.HandleAppend(dst, src, pkt)
}

func TestListenerSurvivesPanic(t *testing.T) {
	h, _ := newTestHandler(t, testOptions)
	p := &panicky{h: h}
	srv := startListener(t, p, h.Metrics())
	sol := msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1))
	if _, err := exchangeUDP(t, srv, sol); err == nil {
		t.Fatal("the panicking packet was answered")
	}
	if _, err := exchangeUDP(t, srv, sol); err != nil {
		t.Fatalf("listener died after a panic: %v", err)
	}
	if got := testutil.ToFloat64(h.Metrics().Drops.WithLabelValues(string(ReasonPanic))); got != 1 {
		t.Errorf("drops{reason=panic} = %v, want 1", got)
	}
}

// TestListenerFullQueueReaderAnswers: when the workers' queue is full,
// the reader answers the packets of its batch itself instead of dropping
// them, and what arrives meanwhile waits in the socket.
func TestListenerFullQueueReaderAnswers(t *testing.T) {
	h, _ := newTestHandler(t, testOptions)
	m := h.Metrics()
	l, err := Listen(ListenerConfig{Addrs: []netip.AddrPort{netip.MustParseAddrPort("[::1]:0")}, Workers: 1, QueueLength: 1, Batch: 4, Metrics: m}, h)
	if err != nil {
		testenv.IPv6Loopback(t)
		t.Fatal(err)
	}
	defer l.Close()
	// The queue is full and no worker runs: only the reader can answer.
	l.queue <- packet{buf: <-l.free}
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pkt := relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1)), relay.Forward{LinkAddr: linkAddr,
		PeerAddr: vmPeer, InterfaceID: []byte("VLAN2701"), RemoteID: relay.JuniperRemoteID(macA), HasSourcePort: true})
	for range 8 { // two full batches, waiting before the reader starts
		if _, err := c.WriteToUDPAddrPort(pkt, l.Addrs()[0]); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- l.read(context.Background(), 0) }()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 2048)
	for i := range 8 {
		if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
			t.Fatalf("answer %d: %v", i+1, err)
		}
	}
	l.Close()
	if err := <-done; err != nil {
		t.Errorf("read: %v", err)
	}
	if got := testutil.ToFloat64(m.Drops.WithLabelValues(string(ReasonQueueFull))); got != 0 {
		t.Errorf("%v queue-full drops", got)
	}
	if got := testutil.ToFloat64(m.Batches.WithLabelValues("workers")); got != 2 {
		t.Errorf("%v full batches, want 2", got)
	}
}

// TestListenerSocketDrops: datagrams beyond the socket's receive buffer are
// counted in socket_drops_total, and the buffer asked for is set.
func TestListenerSocketDrops(t *testing.T) {
	h, _ := newTestHandler(t, testOptions)
	l, err := Listen(ListenerConfig{Addrs: []netip.AddrPort{netip.MustParseAddrPort("[::1]:0")}, ReadBuffer: 4096}, h)
	if err != nil {
		testenv.IPv6Loopback(t)
		t.Fatal(err)
	}
	defer l.Close()
	col := l.Collectors()[0]
	if got := testutil.ToFloat64(col); got != 0 {
		t.Fatalf("socket_drops_total %v before anything was sent", got)
	}
	c, err := net.DialUDP("udp6", nil, net.UDPAddrFromAddrPort(l.Addrs()[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 200 { // nothing reads: a 4 KiB buffer holds a few
		c.Write(make([]byte, 300))
	}
	if got := testutil.ToFloat64(col); got == 0 || uint64(got) != l.SocketDrops() {
		t.Errorf("socket_drops_total %v, SocketDrops %d: want the drops counted", got, l.SocketDrops())
	}
}

// serve runs l until the test ends.
func serve(t *testing.T, l *Listener) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
}

// TestListenerBatches: a read that did not fill a batch is answered by the
// reader, a full one by the workers (Batch 1: every packet by a worker);
// every packet is answered either way.
func TestListenerBatches(t *testing.T) {
	for _, tc := range []struct {
		batch           int
		reader, workers int // batches; -1: at least one
	}{
		{batch: 16, reader: -1, workers: 2}, // 40 waiting: 16 and 16 to the workers, the 8 left in the reader
		{batch: 1, reader: 0, workers: 40},
	} {
		t.Run(fmt.Sprintf("batch=%d", tc.batch), func(t *testing.T) {
			h, _ := newTestHandler(t, testOptions)
			m := h.Metrics()
			l, err := Listen(ListenerConfig{Addrs: []netip.AddrPort{netip.MustParseAddrPort("[::1]:0")}, Workers: 2, QueueLength: 64,
				Batch: tc.batch, Metrics: m}, h)
			if err != nil {
				testenv.IPv6Loopback(t)
				t.Fatal(err)
			}
			c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			pkt := relay.Encapsulate(msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1)), relay.Forward{LinkAddr: linkAddr,
				PeerAddr: vmPeer, InterfaceID: []byte("VLAN2701"), RemoteID: relay.JuniperRemoteID(macA), HasSourcePort: true})
			for range 40 {
				if _, err := c.WriteToUDPAddrPort(pkt, l.Addrs()[0]); err != nil {
					t.Fatal(err)
				}
			}
			serve(t, l)
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			buf := make([]byte, 2048)
			for i := range 40 {
				if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
					t.Fatalf("answer %d: %v", i+1, err)
				}
			}
			reader := testutil.ToFloat64(m.Batches.WithLabelValues("reader"))
			workers := testutil.ToFloat64(m.Batches.WithLabelValues("workers"))
			if tc.reader < 0 && reader < 1 || tc.reader >= 0 && reader != float64(tc.reader) || workers != float64(tc.workers) {
				t.Errorf("batches answered by the reader %v, by the workers %v; want %d and %d", reader, workers, tc.reader, tc.workers)
			}
		})
	}
}

// TestListenerAnswersOneInReader: a lone packet wakes no worker.
func TestListenerAnswersOneInReader(t *testing.T) {
	h, _ := newTestHandler(t, testOptions)
	srv := startListener(t, h, h.Metrics())
	if _, err := exchangeUDP(t, srv, msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1))); err != nil {
		t.Fatalf("no answer: %v", err)
	}
	if r, w := testutil.ToFloat64(h.Metrics().Batches.WithLabelValues("reader")), testutil.ToFloat64(h.Metrics().Batches.WithLabelValues("workers")); r != 1 || w != 0 {
		t.Errorf("batches answered by the reader %v, by the workers %v; want 1 and 0", r, w)
	}
}

func TestListenErrorsNameTheAddress(t *testing.T) {
	_, err := Listen(ListenerConfig{Addrs: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::dead]:10547")}}, nil)
	if err == nil || !strings.Contains(err.Error(), "2001:db8::dead") || !strings.Contains(err.Error(), "configured on an interface") {
		t.Errorf("err = %v", err)
	}
}

// TestListenerSocketsPerAddr listens with several SO_REUSEPORT sockets on
// one address: it names the address once, and answers relays that the
// kernel spreads over the sockets.
func TestListenerSocketsPerAddr(t *testing.T) {
	h, _ := newTestHandler(t, testOptions)
	l, err := Listen(ListenerConfig{Addrs: []netip.AddrPort{netip.MustParseAddrPort("[::1]:0")}, SocketsPerAddr: 3, Batch: 4, Metrics: h.Metrics()}, h)
	if err != nil {
		testenv.IPv6Loopback(t)
		t.Skipf("no SO_REUSEPORT: %v", err)
	}
	if n := len(l.conns); n != 3 {
		t.Fatalf("%d sockets, want 3", n)
	}
	addrs := l.Addrs()
	if len(addrs) != 1 || addrs[0].Port() == 0 {
		t.Fatalf("Addrs = %v", addrs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	for i := range 12 { // from 12 source ports
		if _, err := exchangeUDP(t, addrs[0], msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1))); err != nil {
			t.Fatalf("exchange %d: %v", i, err)
		}
	}
}
