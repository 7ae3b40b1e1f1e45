package server

import (
	"context"
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

// slow blocks every packet until released.
type slow struct{ release chan struct{} }

func (s *slow) HandleAppend([]byte, netip.AddrPort, []byte) (Reply, error) {
	<-s.release
	return Reply{}, drop(ReasonMalformed, nil)
}

func TestListenerQueueFullDropsAndCounts(t *testing.T) {
	m := NewMetrics(nil)
	s := &slow{release: make(chan struct{})}
	srv := startListener(t, s, m)
	c, err := net.DialUDP("udp6", nil, net.UDPAddrFromAddrPort(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// 2 workers block, 8 wait in the queue; the rest must be dropped, not queued without bound.
	for range 40 {
		c.Write([]byte{12})
	}
	deadline := time.Now().Add(3 * time.Second)
	for testutil.ToFloat64(m.Drops.WithLabelValues(string(ReasonQueueFull))) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(s.release)
	if got := testutil.ToFloat64(m.Drops.WithLabelValues(string(ReasonQueueFull))); got == 0 {
		t.Error("no queue-full drop counted")
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
