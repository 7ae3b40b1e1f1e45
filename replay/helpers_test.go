package replay

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/capture"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
	"github.com/cloudstack-pd/cloudstack-pd/relay"
	"github.com/cloudstack-pd/cloudstack-pd/server"
)

// The world of these tests: one pool on VLAN2701, one VM with a prefix.
var (
	vmMAC     = mustMAC("06:32:b2:00:04:79")
	otherMAC  = mustMAC("06:ff:ff:00:00:01")
	vmPrefix  = netip.MustParsePrefix("2001:db8:200::/60")
	linkAddr  = netip.MustParseAddr("2001:db8:100::1")
	routerAP  = netip.MustParseAddrPort("[2001:db8:ffff::1]:547")
	serverAP  = netip.MustParseAddrPort("[2001:db8::100:69]:547")
	testDUID  = []byte{0, 1, 0, 1, 0x2b, 0, 0, 1, 0x02, 0, 0, 0, 0, 0x01}
	oldDUID   = []byte{0, 1, 0, 1, 0x1a, 0, 0, 1, 0x02, 0, 0, 0, 0, 0x99}
	frameTime = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// mustTable is the tests' allocation table: the pool and the VM's prefix.
func mustTable(t testing.TB) *allocator.Table {
	t.Helper()
	tbl, err := allocator.NewTable([]allocator.Pool{
		{Name: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60, InterfaceID: "VLAN2701"},
	}, []allocator.Allocation{{Pool: "pod-a", MAC: vmMAC, Prefix: vmPrefix, State: allocator.StateActive}})
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

func testHandler(t testing.TB) *server.Handler {
	t.Helper()
	h, err := server.NewHandler(server.HandlerConfig{Table: allocator.NewLive(mustTable(t)), ServerID: testDUID, Options: server.Options{
		MACSources: []relay.MACSource{relay.SourceRemoteID}, PreferredLifetime: 86400, ValidLifetime: 172800, RenewTimer: 1000, RebindTimer: 2000,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func handlerFunc(h *server.Handler) HandlerFunc {
	return func(src netip.AddrPort, pkt []byte) ([]byte, netip.AddrPort, error) {
		r, err := h.Handle(src, pkt)
		return r.Data, r.Dst, err
	}
}

// clientMsg is a client message of vm (DUID-LL client id) with opts.
func clientMsg(typ dhcpv6.MessageType, xid byte, mac net.HardwareAddr, opts ...dhcpv6.Option) []byte {
	m := &dhcpv6.Message{MessageType: typ, TransactionID: dhcpv6.TransactionID{0x10, 0, xid}}
	m.AddOption(dhcpv6.OptClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: mac}))
	for _, o := range opts {
		m.AddOption(o)
	}
	return m.ToBytes()
}

func iaPD(prefixes ...netip.Prefix) *dhcpv6.OptIAPD {
	ia := &dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, 1}}
	for _, p := range prefixes {
		ia.Options.Add(&dhcpv6.OptIAPrefix{PreferredLifetime: time.Hour, ValidLifetime: 2 * time.Hour,
			Prefix: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 128)}})
	}
	return ia
}

func sid(d []byte) dhcpv6.Option {
	return &dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionServerID, OptionData: d}
}

// junos wraps msg as a Junos relay on VLAN2701 does, without relay source port.
func junos(msg []byte, mac net.HardwareAddr) []byte {
	return relay.Encapsulate(msg, relay.Forward{LinkAddr: linkAddr, PeerAddr: netip.MustParseAddr("fe80::432:b2ff:fe00:479"),
		InterfaceID: []byte("VLAN2701"), RemoteID: relay.JuniperRemoteID(mac)})
}

// relayed is a captured Relay-Forward from the router to the server.
func relayed(frame int, pkt []byte) capture.Packet {
	return capture.Packet{Index: frame, Time: frameTime.Add(time.Duration(frame) * time.Millisecond),
		SrcMAC: mustMAC("02:00:5e:00:53:01"), Src: routerAP, Dst: serverAP, Payload: pkt}
}

// runClock is the fake clock a replay test runs Run on. It watches the
// run loop's timer (the only one made with NewTimer; chanTarget's answers
// use AfterFunc): the loop arms it only when it is about to wait and stops
// it as soon as it wakes, so an armed timer whose deadline is still ahead
// means the loop is idle, waiting for the clock.
type runClock struct {
	*clock.Fake
	mu       sync.Mutex
	changed  *sync.Cond
	armed    bool
	arms     int // how many times the loop armed its timer
	deadline time.Time
	done     bool // Run returned
}

var runEpoch = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

func newRunClock() *runClock {
	c := &runClock{Fake: clock.NewFake(runEpoch)}
	c.changed = sync.NewCond(&c.mu)
	return c
}

func (c *runClock) NewTimer(d time.Duration) clock.Timer {
	t := &runTimer{Timer: c.Fake.NewTimer(d), c: c}
	c.arm(d)
	return t
}

func (c *runClock) arm(d time.Duration) {
	c.mu.Lock()
	c.armed, c.deadline = true, c.Fake.Now().Add(d)
	c.arms++
	c.changed.Broadcast()
	c.mu.Unlock()
}

type runTimer struct {
	clock.Timer
	c *runClock
}

func (t *runTimer) Reset(d time.Duration) bool {
	active := t.Timer.Reset(d)
	t.c.arm(d)
	return active
}

func (t *runTimer) Stop() bool {
	active := t.Timer.Stop()
	t.c.mu.Lock()
	t.c.armed = false
	t.c.changed.Broadcast()
	t.c.mu.Unlock()
	return active
}

// idle reports whether the loop waits for the clock: its timer is armed
// and has not fired. c.mu is held.
func (c *runClock) idle() bool { return c.armed && c.deadline.After(c.Fake.Now()) }

// deliver puts an answer on ch, from a function the clock runs, and waits
// until the loop has taken it and is idle again (or Run returned), so that
// the clock does not move while an answer is on its way.
func (c *runClock) deliver(ch chan<- Received, r Received) {
	c.mu.Lock()
	want := c.arms + 1 // the loop re-arms once it has handled r
	if !c.armed {
		want++ // it is busy: it arms, then takes r, then arms again
	}
	c.mu.Unlock()
	ch <- r
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.done && !(c.armed && c.arms >= want) {
		c.changed.Wait()
	}
}

// run calls Run with the clock in opts, and moves the clock from one
// deadline to the next, each time the loop is idle, until Run returns.
func (c *runClock) run(t *testing.T, ctx context.Context, reqs []Request, targets []Target, opts Options) (*Result, error) {
	t.Helper()
	opts.Clock = c
	var res *Result
	var err error
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		res, err = Run(ctx, reqs, targets, opts)
		c.mu.Lock()
		c.done = true
		c.changed.Broadcast()
		c.mu.Unlock()
	}()
	for step := 0; ; step++ {
		if step > 100000 {
			t.Fatalf("at %s Run has not ended", c.Now().Sub(runEpoch))
		}
		c.mu.Lock()
		arms := c.arms
		for !c.done && !c.idle() && c.arms-arms < 10000 {
			c.changed.Wait()
		}
		done, spins := c.done, c.arms-arms >= 10000
		c.mu.Unlock()
		if spins {
			// A timer armed for now fires at once, and the clock does
			// not move: a loop that waits for what is due spins.
			t.Fatalf("at %s the run loop keeps arming its timer for a time already due", c.Now().Sub(runEpoch))
		}
		if done {
			break
		}
		at, _ := c.Next() // the loop's timer at least
		c.Set(at)
	}
	<-returned
	return res, err
}

// chanTarget is an asynchronous target in memory: it answers through a
// handler on a channel, like a UDP server, after a delay on the fake
// clock (1ms unless told), and can be told to lose, delay or duplicate
// answers.
type chanTarget struct {
	name    string
	h       HandlerFunc
	clk     *runClock
	ch      chan Received
	mu      sync.Mutex
	n       int
	delay   func(n int) time.Duration
	lose    func(n int) bool
	dup     func(n int) bool
	sent    [][]byte
	closeMu sync.Once
}

func newChanTarget(name string, h HandlerFunc, clk *runClock) *chanTarget {
	return &chanTarget{name: name, h: h, clk: clk, ch: make(chan Received, 1024)}
}

func (c *chanTarget) Name() string             { return c.name }
func (c *chanTarget) Answers() <-chan Received { return c.ch }
func (c *chanTarget) Close() error {
	c.closeMu.Do(func() { close(c.ch) })
	return nil
}

func (c *chanTarget) Send(_ *Request, pkt []byte) (Sent, error) {
	c.mu.Lock()
	n := c.n
	c.n++
	c.sent = append(c.sent, append([]byte(nil), pkt...))
	c.mu.Unlock()
	local := netip.MustParseAddrPort("[::1]:40000")
	s := Sent{At: c.clk.Now(), Src: local, Dst: netip.MustParseAddrPort("[::1]:10547")}
	reply, _, err := c.h(local, pkt)
	if err != nil || (c.lose != nil && c.lose(n)) {
		return s, nil
	}
	d := time.Millisecond
	if c.delay != nil {
		d = c.delay(n)
	}
	if d <= 0 {
		panic("chanTarget: an answer's delay must be positive") // deliver would wait for itself
	}
	copies := 1
	if c.dup != nil && c.dup(n) {
		copies = 2
	}
	// Not c.clk.AfterFunc: the run loop's own timer is the only one
	// runClock watches.
	c.clk.Fake.AfterFunc(d, func() {
		for range copies {
			c.clk.deliver(c.ch, Received{Data: reply, At: c.clk.Now(), Src: s.Dst, Dst: local})
		}
	})
	return s, nil
}
