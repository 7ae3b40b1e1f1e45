package allocator

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"
)

// TestAppendBindingJSON checks that the stored form written without
// reflection is byte for byte what json.Marshal writes.
func TestAppendBindingJSON(t *testing.T) {
	base := testBinding("00:01:00:01:1e:aa:37:f5:06:32:b2:00:04:79", 7, "2001:db8:200::/60")
	berlin := time.FixedZone("", 3600)
	cases := map[string]func(b *Binding){
		"as recorded":           func(*Binding) {},
		"relay-id":              func(b *Binding) { b.RelayID = []byte{0, 2, 0, 0, 9, 0xab} },
		"no MAC, pool, message": func(b *Binding) { b.MAC, b.Pool, b.LastMessage = nil, "", "" },
		"zero times":            func(b *Binding) { b.Expires, b.LastExchange = time.Time{}, time.Time{} },
		"nanoseconds, offset":   func(b *Binding) { b.LastExchange = time.Date(2026, 5, 6, 7, 8, 9, 123456000, berlin) },
		"local time":            func(b *Binding) { b.LastExchange = time.Now() },
		"no relay addresses": func(b *Binding) {
			b.RelaySource, b.LinkAddress, b.PeerAddress = netip.AddrPort{}, netip.Addr{}, netip.Addr{}
		},
		"IPv4 relay":           func(b *Binding) { b.RelaySource = netip.MustParseAddrPort("192.0.2.1:547") },
		"zone":                 func(b *Binding) { b.PeerAddress = netip.MustParseAddr("fe80::1%eth0") },
		"pool needing escapes": func(b *Binding) { b.Pool = `a"b<c>&\é` },
		"year beyond 9999":     func(b *Binding) { b.Expires = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
		"empty byte strings":   func(b *Binding) { b.InterfaceID, b.RemoteID = []byte{}, nil },
		"long DUID":            func(b *Binding) { b.ClientDUID = bytes.Repeat([]byte{0xfe}, 130) },
		"max lifetimes":        func(b *Binding) { b.PreferredLifetime, b.ValidLifetime, b.IAID = 1<<32-1, 1<<32-1, 1<<32-1 },
		"prefix of 128":        func(b *Binding) { b.Prefix = netip.MustParsePrefix("2001:db8::1/128") },
	}
	for name, change := range cases {
		t.Run(name, func(t *testing.T) {
			b := base
			change(&b)
			want, werr := json.Marshal(&b)
			got, gerr := appendBindingJSON([]byte("prefix:"), &b)
			if (werr != nil) != (gerr != nil) {
				t.Fatalf("errors differ: json.Marshal %v, appendBindingJSON %v", werr, gerr)
			}
			if werr == nil && string(got) != "prefix:"+string(want) {
				t.Errorf("appendBindingJSON\n got %s\nwant prefix:%s", got, want)
			}
		})
	}
}

func FuzzAppendBindingJSON(f *testing.F) {
	f.Add([]byte{0, 3, 0, 1, 6, 0x32}, uint32(1), "pod-a", "2001:db8:200::/60", int64(1700000000), "REQUEST", "[2001:db8::1]:547", []byte("VLAN2701"))
	f.Add([]byte{}, uint32(0), "", "", int64(0), "", "", []byte(nil))
	f.Add([]byte{1}, uint32(9), "<&>", "::/0", int64(-62135596800), "\u2028", "1.2.3.4:5", []byte{0})
	f.Fuzz(func(t *testing.T, duid []byte, iaid uint32, pool, prefix string, sec int64, msg, relay string, iid []byte) {
		p, _ := netip.ParsePrefix(prefix)
		rs, _ := netip.ParseAddrPort(relay)
		b := Binding{ClientDUID: duid, IAID: iaid, Pool: pool, Prefix: p, LastMessage: msg, RelaySource: rs,
			InterfaceID: iid, Expires: time.Unix(sec, 0).UTC(), LastExchange: time.Unix(sec/3, sec%1e9)}
		want, werr := json.Marshal(&b)
		got, gerr := appendBindingJSON(nil, &b)
		if (werr != nil) != (gerr != nil) || werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("appendBindingJSON %s (%v)\njson.Marshal       %s (%v)", got, gerr, want, werr)
		}
	})
}
