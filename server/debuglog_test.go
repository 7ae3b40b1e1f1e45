package server

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
)

// At debug level every answer names the transaction id, the client DUID
// and the prefix handed out; a Release and a Decline say what they did.
func TestDebugLines(t *testing.T) {
	var logs bytes.Buffer
	h, err := NewHandler(HandlerConfig{
		Table: allocator.NewLive(testTable(t)), ServerID: serverDUID, Options: testOptions,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	m := msg(dhcpv6.MessageTypeSolicit, clientID(macA), iapd(1))
	duid := (&dhcpv6.DUIDLL{HWType: 1, LinkLayerAddr: macA}).ToBytes()
	for _, tt := range []struct {
		pkt  []byte
		want []string
	}{
		{juniper("VLAN2701", macA, m), []string{"msg=answered", fmt.Sprintf("xid=%x", m[1:4]),
			fmt.Sprintf("client-duid=%x", duid), "prefix=" + prefixA.String()}},
		{juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeRelease, clientID(macA), serverID(serverDUID), iapd(1, prefixA))),
			[]string{"msg=release", "prefix=" + prefixA.String(), "result=released"}},
		{juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeRelease, clientID(macA), serverID(serverDUID), iapd(1, prefixStale))),
			[]string{"msg=release", "result=no-binding"}},
		{juniper("VLAN2701", macA, msg(dhcpv6.MessageTypeDecline, clientID(macA), serverID(serverDUID), iapd(1, prefixA))),
			[]string{"msg=\"client declined\"", "prefix=" + prefixA.String(), "result=\"reservation kept\""}},
	} {
		logs.Reset()
		if _, err := h.Handle(relayAddr, tt.pkt); err != nil {
			t.Fatal(err)
		}
		for _, w := range tt.want {
			if !strings.Contains(logs.String(), w) {
				t.Errorf("log lacks %s:\n%s", w, logs.String())
			}
		}
	}
}
