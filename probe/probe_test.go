package probe

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/daemon"
	"github.com/cloudstack-pd/cloudstack-pd/server"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

// serve answers on a UDP socket on [::1] with the server's handler for a
// table holding mac's prefix, until the test ends.
func serve(t *testing.T, mac net.HardwareAddr, prefix netip.Prefix) netip.AddrPort {
	t.Helper()
	cfg, err := config.Parse("c.yaml", []byte("mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: VLAN2701\n"))
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := allocator.NewTable(cfg.Pools(), []allocator.Allocation{{Pool: "pod-a", MAC: mac, Prefix: prefix, State: allocator.StateActive}})
	if err != nil {
		t.Fatal(err)
	}
	h, err := server.NewHandler(server.HandlerConfig{Table: allocator.NewLive(tbl), ServerID: []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1}, Options: daemon.HandlerOptions(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		testenv.IPv6Loopback(t)
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, src, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if r, err := h.Handle(src, buf[:n]); err == nil {
				_, _ = c.WriteToUDPAddrPort(r.Data, r.Dst)
			}
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestRun(t *testing.T) {
	mac, _ := net.ParseMAC("06:32:b2:00:04:79")
	srv := serve(t, mac, netip.MustParsePrefix("2001:db8:200:30::/60"))
	tests := []struct {
		name       string
		o          Options
		want, lack []string
	}{
		{"delegated", Options{MAC: mac, InterfaceID: "VLAN2701"},
			[]string{"SOLICIT  -> ADVERTISE", "REQUEST  -> REPLY", "prefix 2001:db8:200:30::/60 preferred"}, nil},
		{"solicit only", Options{MAC: mac, InterfaceID: "VLAN2701", SolicitOnly: true},
			[]string{"SOLICIT  -> ADVERTISE", "prefix 2001:db8:200:30::/60"}, []string{"REQUEST"}},
		{"unknown VLAN", Options{MAC: mac, InterfaceID: "VLAN9999"},
			[]string{"SOLICIT  -> ADVERTISE", "NoPrefixAvail"}, []string{"REQUEST"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			o.Server, o.LinkAddr, o.Timeout = srv, netip.IPv6Unspecified(), 5*time.Second
			var out strings.Builder
			if err := Run(&out, o); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("lacks %q:\n%s", w, out.String())
				}
			}
			for _, l := range tt.lack {
				if strings.Contains(out.String(), l) {
					t.Errorf("has %q:\n%s", l, out.String())
				}
			}
		})
	}
}

// Nothing answers: the error says so and names the server.
func TestRunNoAnswer(t *testing.T) {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		testenv.IPv6Loopback(t)
		t.Fatal(err)
	}
	defer c.Close()
	srv := c.LocalAddr().(*net.UDPAddr).AddrPort()
	mac, _ := net.ParseMAC("06:32:b2:00:04:79")
	err = Run(&strings.Builder{}, Options{Server: srv, MAC: mac, InterfaceID: "VLAN2701", LinkAddr: netip.IPv6Unspecified(), Timeout: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "no answer to SOLICIT from "+srv.String()+" within 50ms") {
		t.Errorf("err = %v", err)
	}
}
