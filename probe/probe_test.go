package probe

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"slices"
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
		noPrefix   bool
	}{
		{"delegated", Options{MAC: mac, InterfaceID: "VLAN2701"},
			[]string{"SOLICIT  -> ADVERTISE", "REQUEST  -> REPLY", "prefix 2001:db8:200:30::/60 preferred"}, nil, false},
		{"solicit only", Options{MAC: mac, InterfaceID: "VLAN2701", SolicitOnly: true},
			[]string{"SOLICIT  -> ADVERTISE", "prefix 2001:db8:200:30::/60"}, []string{"REQUEST"}, false},
		{"unknown VLAN", Options{MAC: mac, InterfaceID: "VLAN9999"},
			[]string{"SOLICIT  -> ADVERTISE", "NoPrefixAvail"}, []string{"REQUEST"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			o.Server, o.LinkAddr, o.Timeout = srv, netip.IPv6Unspecified(), 5*time.Second
			var out strings.Builder
			err := Run(&out, o)
			if tt.noPrefix != errors.Is(err, ErrNoPrefix) || (!tt.noPrefix && err != nil) {
				t.Fatalf("Run = %v, want ErrNoPrefix: %v", err, tt.noPrefix)
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

// --json: one object with the exchanges and the prefix delegated, or the
// error; the same exit errors as the text.
func TestRunJSON(t *testing.T) {
	mac, _ := net.ParseMAC("06:32:b2:00:04:79")
	srv := serve(t, mac, netip.MustParsePrefix("2001:db8:200:30::/60"))
	for _, tt := range []struct {
		iid       string
		delegated string
		answers   []string
		err       error
	}{
		{"VLAN2701", "2001:db8:200:30::/60", []string{"ADVERTISE", "REPLY"}, nil},
		{"VLAN9999", "", []string{"ADVERTISE"}, ErrNoPrefix},
	} {
		var out strings.Builder
		err := Run(&out, Options{Server: srv, MAC: mac, InterfaceID: tt.iid, LinkAddr: netip.IPv6Unspecified(), Timeout: 5 * time.Second, JSON: true})
		if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
			t.Fatalf("%s: Run = %v, want %v", tt.iid, err, tt.err)
		}
		var res Result
		if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
			t.Fatalf("%s: not one JSON object: %v\n%s", tt.iid, err, out.String())
		}
		var answers []string
		for _, x := range res.Exchanges {
			answers = append(answers, x.Answer)
		}
		if res.Delegated != tt.delegated || !slices.Equal(answers, tt.answers) || res.MAC != mac.String() || res.InterfaceID != tt.iid {
			t.Errorf("%s: %+v", tt.iid, res)
		}
		if tt.err != nil && res.Error != tt.err.Error() {
			t.Errorf("%s: error %q, want %q", tt.iid, res.Error, tt.err)
		}
		if tt.err == nil && (len(res.Exchanges[1].IAPDs) != 1 || res.Exchanges[1].IAPDs[0].Prefixes[0].Valid == 0) {
			t.Errorf("%s: reply IA_PD %+v", tt.iid, res.Exchanges[1].IAPDs)
		}
	}
}
