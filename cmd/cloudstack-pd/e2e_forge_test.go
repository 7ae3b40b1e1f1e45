//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// The forged Relay-Forward of issue 10, through a real dhcrelay: the VM
// sends a Relay-Forward of its own naming the victim (the victim's VLAN in
// interface-id, the victim's MAC in remote-id and in a DUID-LL Client
// Identifier, link-address ::), holding a Solicit for a prefix. dhcrelay
// wraps it in its level (interface-id VL27, the VM's VLAN) and forwards it.
// With server.relay-depth 1 the server must drop it as untrusted-relay-level
// and the VM must get nothing back; a server that reads the innermost level
// (as Kea does) answers with the victim's prefix.
//
// The packet is sent, and the answers listened for, from inside the VM's
// namespace by this test binary itself (TestE2ENetnsHelper), started with
// `ip netns exec`; the server's counters are read from inside its
// namespace the same way. The listener stops once the server has counted
// the packet as dropped: every packet is counted once, answered or dropped,
// so no answer can follow.
func (n *e2eNet) forgedRelayForward(t *testing.T) {
	t.Helper()
	victim, err := net.ParseMAC(e2eVictimMAC)
	if err != nil {
		t.Fatal(err)
	}
	sol := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeSolicit, TransactionID: dhcpv6.TransactionID{0xf0, 0x12, 0xed}}
	sol.AddOption(dhcpv6.OptClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: victim}))
	sol.AddOption(&dhcpv6.OptIAPD{IaId: [4]byte{0, 0, 0, 1}})
	pkt := relay.Encapsulate(sol.ToBytes(), relay.Forward{
		LinkAddr: netip.IPv6Unspecified(), PeerAddr: relay.EUI64LinkLocal(victim),
		InterfaceID: []byte(e2eVictimIID), RemoteID: relay.JuniperRemoteID(victim),
	})

	before := n.serverMetrics(t)
	dropsBefore := before[`cloudstack_pd_drops_total{reason="untrusted-relay-level"}`]
	answeredBefore := sumMetric(before, "cloudstack_pd_packets_answered_total")

	helper := exec.Command("ip", "netns", "exec", n.vm, os.Args[0], "-test.run=^TestE2ENetnsHelper$", "-test.v")
	helper.Env = append(os.Environ(), "E2E_HELPER=forge", "E2E_PACKET="+hex.EncodeToString(pkt), "E2E_IF="+e2eVMIf)
	stdin, err := helper.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	helper.Stdout, helper.Stderr = &out, &out
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = helper.Wait()
	}()

	deadline := time.Now().Add(15 * time.Second)
	for {
		m := n.serverMetrics(t)
		if m[`cloudstack_pd_drops_total{reason="untrusted-relay-level"}`] > dropsBefore {
			if a := sumMetric(m, "cloudstack_pd_packets_answered_total"); a != answeredBefore {
				t.Errorf("the server answered %v packets while handling the forged one", a-answeredBefore)
			}
			break
		}
		if a := sumMetric(m, "cloudstack_pd_packets_answered_total"); a != answeredBefore {
			t.Errorf("the server answered the forged Relay-Forward (answered %v -> %v)", answeredBefore, a)
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the server never counted the forged Relay-Forward as untrusted-relay-level (dhcrelay log:\n%s)", e2eTail(n.relayLog, 20))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stdin.Close()
	if err := helper.Wait(); err != nil {
		t.Fatalf("helper in %s: %v\n%s", n.vm, err, out.String())
	}
	if !strings.Contains(out.String(), "sent ") {
		t.Fatalf("helper sent nothing:\n%s", out.String())
	}
	victimPrefix := netip.MustParsePrefix(e2eVictimPrefix).Addr().As16()
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		got, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "got ")
		if !ok {
			continue
		}
		b, _ := hex.DecodeString(got)
		if bytes.Contains(b, victimPrefix[:]) {
			t.Errorf("the VM received the victim's prefix %s: %x", e2eVictimPrefix, b)
		} else {
			t.Errorf("the VM received an answer to its forged Relay-Forward: %x", b)
		}
	}
}

var e2eMetricLine = regexp.MustCompile(`^(cloudstack_pd_[a-z_]+(?:\{[^}]*\})?) (\S+)$`)

// serverMetrics reads the server's /metrics (http.listen's default,
// 127.0.0.1:9547, in the server's namespace) through the helper.
func (n *e2eNet) serverMetrics(t *testing.T) map[string]float64 {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", n.server, os.Args[0], "-test.run=^TestE2ENetnsHelper$")
	cmd.Env = append(os.Environ(), "E2E_HELPER=get", "E2E_URL=http://127.0.0.1:9547/metrics")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("metrics: %v\n%s", err, out)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(out), "\n") {
		if g := e2eMetricLine.FindStringSubmatch(line); g != nil {
			v, _ := strconv.ParseFloat(g[2], 64)
			m[g[1]] = v
		}
	}
	return m
}

func sumMetric(m map[string]float64, name string) float64 {
	s := 0.0
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// TestE2ENetnsHelper is not a test: TestE2ENetns runs this binary with
// E2E_HELPER set, inside a network namespace, to send a packet from there
// (forge) or to read a URL there (get).
func TestE2ENetnsHelper(t *testing.T) {
	switch os.Getenv("E2E_HELPER") {
	case "":
		t.Skip("helper of TestE2ENetns")
	case "get":
		resp, err := http.Get(os.Getenv("E2E_URL"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
			t.Fatal(err)
		}
	case "forge":
		pkt, err := hex.DecodeString(os.Getenv("E2E_PACKET"))
		if err != nil {
			t.Fatal(err)
		}
		// A relay's port: dhcrelay sends a relay message back to 547.
		c, err := net.ListenUDP("udp6", &net.UDPAddr{Port: 547})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		dst := &net.UDPAddr{IP: net.ParseIP("ff02::1:2"), Port: 547, Zone: os.Getenv("E2E_IF")}
		if _, err := c.WriteToUDP(pkt, dst); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("sent %d bytes to %s\n", len(pkt), dst)
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 65536)
			for {
				n, from, err := c.ReadFromUDP(buf)
				if err != nil {
					return
				}
				fmt.Printf("got %x\n", buf[:n])
				fmt.Printf("from %s\n", from)
			}
		}()
		// Until the parent has seen the server's verdict.
		_, _ = io.Copy(io.Discard, os.Stdin)
		c.Close()
		<-done
	}
}
