package allocator

import (
	"encoding/json"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// An event survives its stored form, MACs of any length included.
func TestHistoryEventRoundTrip(t *testing.T) {
	at := time.Date(2026, 3, 3, 14, 5, 0, 0, time.UTC)
	for _, e := range []HistoryEvent{
		{At: at, Event: EventAllocated, Pool: "pod-a", MAC: net.HardwareAddr{6, 0x32, 0xb2, 0, 4, 0x79}, Prefix: netip.MustParsePrefix("2001:db8:200:30::/60"),
			State: StateActive, Since: at, VMID: "vm", VMName: "web-1", NICID: "nic", IP6: netip.MustParseAddr("2001:db8:100::1"), By: "sync"},
		{At: at, Event: EventMoved, Pool: "pod-b", MAC: net.HardwareAddr{1}, Prefix: netip.MustParsePrefix("2001:db8:300::/60"), State: StateActive,
			FromPool: "pod-a", FromPrefix: netip.MustParsePrefix("2001:db8:200::/60"), By: "admin root (sudo alice)", Note: "allocation move"},
		{At: at, Event: EventReleased, Pool: "p", MAC: make(net.HardwareAddr, 20), Prefix: netip.MustParsePrefix("2001:db8::/64"), PrevState: StateQuarantined},
	} {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeHistoryEvent(nil, b)
		if err != nil || !reflect.DeepEqual(got, e) {
			t.Errorf("round trip of %s:\n%+v, %v\nwant %+v", b, got, err, e)
		}
	}
}

// FuzzDecodeHistoryEvent: any stored value decodes or fails, never
// crashes; what decodes encodes and decodes again to the same event.
func FuzzDecodeHistoryEvent(f *testing.F) {
	f.Add([]byte(`{"mac":"06:32:b2:00:04:79","at":"2026-03-03T14:05:00Z","event":"allocated","pool":"pod-a","prefix":"2001:db8:200:30::/60","state":"active"}`)) // an event
	f.Add([]byte(`{"mac":"0","event":"x"}`))                                                                                                                     // a bad MAC
	f.Add([]byte(`{"mac":"` + "01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10:11:12:13:14:15" + `"}`))                                                          // 21 bytes
	f.Add([]byte(`{`))                                                                                                                                           // truncated
	f.Add([]byte(`{"prefix":"2001:db8::/129"}`))                                                                                                                 // a bad prefix
	f.Fuzz(func(t *testing.T, v []byte) {
		e, err := DecodeHistoryEvent(nil, v)
		if err != nil {
			return
		}
		b, err := json.Marshal(e)
		if err != nil {
			return // a time JSON cannot write
		}
		again, err := DecodeHistoryEvent(nil, b)
		if err != nil {
			t.Fatalf("%s re-encoded as %s, which does not decode: %v", v, b, err)
		}
		if !reflect.DeepEqual(again.MAC, e.MAC) || again.Prefix != e.Prefix || again.Event != e.Event || !again.At.Equal(e.At) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", e, again)
		}
	})
}

// FuzzDecodeHeld: a held record decodes or fails, never crashes.
func FuzzDecodeHeld(f *testing.F) {
	f.Add([]byte(`{"mac":"06:32:b2:00:04:79","pool":"pod-a","prefix":"2001:db8:200::/60","state":"quarantined"}`)) // a held prefix
	f.Add([]byte(`{"mac":""}`))                                                                                    // no MAC
	f.Add([]byte(`[]`))                                                                                            // not an object
	f.Fuzz(func(t *testing.T, v []byte) {
		a, err := decodeHeld(nil, v)
		if err == nil && (len(a.MAC) == 0 || len(a.MAC) > maxMACLen) {
			t.Fatalf("decoded a MAC of %d bytes from %s", len(a.MAC), v)
		}
	})
}
