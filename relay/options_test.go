package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

// opt encodes one option.
func opt(code uint16, data ...byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, code)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

type walked struct {
	code uint16
	data []byte
}

func walkAll(b []byte) ([]walked, error) {
	var got []walked
	w := WalkOptions(b)
	for w.Next() {
		got = append(got, walked{w.Code(), w.Data()})
	}
	return got, w.Err()
}

func TestWalkOptions(t *testing.T) {
	two := slices.Concat(opt(18, 'a', 'b'), opt(9))
	tests := []struct {
		name    string
		in      []byte
		want    []walked
		wantErr string // "" for none; else the error's text, which wraps ErrTruncated
	}{
		{name: "empty", in: nil},
		{name: "two options, one empty", in: two, want: []walked{{18, []byte("ab")}, {9, []byte{}}}},
		{name: "header cut", in: append(bytes.Clone(two), 0, 37, 0),
			want: []walked{{18, []byte("ab")}, {9, []byte{}}}, wantErr: "option header needs 4 bytes, have 3: truncated"},
		{name: "data cut", in: slices.Concat(opt(1, 7), []byte{0, 37, 0, 5, 1, 2}),
			want: []walked{{1, []byte{7}}}, wantErr: "option 37: length 5, have 2: truncated"},
		{name: "first option cut", in: []byte{0xff, 0xff, 0xff, 0xff}, wantErr: "option 65535: length 65535, have 0: truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := walkAll(tt.in)
			if len(got) != len(tt.want) {
				t.Fatalf("walked %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i].code != tt.want[i].code || !bytes.Equal(got[i].data, tt.want[i].data) || got[i].data == nil {
					t.Errorf("option %d: %d %x, want %d %x", i, got[i].code, got[i].data, tt.want[i].code, tt.want[i].data)
				}
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("error %v", err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr || !errors.Is(err, ErrTruncated) {
				t.Fatalf("error %v, want %q wrapping ErrTruncated", err, tt.wantErr)
			}
		})
	}
}

func TestOptionWalkerOptionAndRest(t *testing.T) {
	a, b := opt(18, 'x'), opt(135, 2, 35)
	w := WalkOptions(slices.Concat(a, b))
	if !w.Next() || !bytes.Equal(w.Option(), a) || !bytes.Equal(w.Rest(), b) {
		t.Fatalf("first option %x rest %x, want %x and %x", w.Option(), w.Rest(), a, b)
	}
	// Data cannot be grown over the next option.
	if d := w.Data(); cap(d) != len(d) {
		t.Errorf("data has capacity %d past its length %d", cap(d), len(d))
	}
	if !w.Next() || !bytes.Equal(w.Option(), b) || len(w.Rest()) != 0 || w.Next() || w.Err() != nil {
		t.Fatalf("second option %x rest %x err %v", w.Option(), w.Rest(), w.Err())
	}
}

func TestFindOption(t *testing.T) {
	area := slices.Concat(opt(18, 'a'), opt(37, 1, 2, 3, 4, 5), opt(37, 9))
	if d, ok := FindOption(area, 37); !ok || !bytes.Equal(d, []byte{1, 2, 3, 4, 5}) {
		t.Errorf("FindOption 37 = %x %v, want the first remote-id", d, ok)
	}
	if _, ok := FindOption(area, 9); ok {
		t.Error("FindOption found an option that is not there")
	}
	if _, ok := FindOption(append(opt(18, 'a'), 0, 9, 0, 9), 9); ok {
		t.Error("FindOption returned a truncated option")
	}
}

func TestWalkOptionsDoesNotAllocate(t *testing.T) {
	area := Encapsulate(solicit, juniper("VLAN2701"))[HeaderLen:]
	n := 0
	allocs := testing.AllocsPerRun(100, func() {
		w := WalkOptions(area)
		for w.Next() {
			n += int(w.Code()) + len(w.Data())
		}
		if w.Err() != nil {
			t.Fatal(w.Err())
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per walk, want 0", allocs)
	}
}

func TestDecodeReply(t *testing.T) {
	answer := []byte{7, 0xaa, 0xbb, 0xcc, 0, 13, 0, 2, 0, 0}
	c, err := Decode(Encapsulate(solicit,
		Forward{HopCount: 1, LinkAddr: netip.IPv6Unspecified(), PeerAddr: linkAddr, InterfaceID: []byte("ldra"), HasSourcePort: true, SourcePort: 8547},
		juniper("VLAN2701")))
	if err != nil {
		t.Fatal(err)
	}
	reply := c.AppendReply(nil, answer)
	got, err := DecodeReply(reply)
	if err != nil {
		t.Fatal(err)
	}
	checkReplyLevels(t, c, got, answer)
	// The remote-id is not echoed.
	if got.Innermost().RemoteID != nil {
		t.Errorf("remote-id %x decoded from a reply that does not carry one", got.Innermost().RemoteID)
	}
	// Options is the level's option area, for a caller reading the rest.
	if o := got.Outermost().Options; len(o) != len(reply)-HeaderLen {
		t.Errorf("outermost options: %d bytes, want %d", len(o), len(reply)-HeaderLen)
	}

	// A level without interface-id or source port.
	bare := &Chain{Levels: []Level{{HopCount: 3, LinkAddr: linkAddr, PeerAddr: peerAddr}}}
	got, err = DecodeReply(bare.AppendReply(nil, answer))
	if err != nil {
		t.Fatal(err)
	}
	checkReplyLevels(t, bare, got, answer)

	if got, err := DecodeReply(deepReply(MaxLevels, answer)); err != nil || len(got.Levels) != MaxLevels {
		t.Fatalf("%d levels: %v", MaxLevels, err)
	}

	tests := []struct {
		name    string
		in      []byte
		wantErr error
		levels  int // levels held after the error
	}{
		{name: "empty", in: nil, wantErr: ErrTruncated},
		{name: "a Relay-Forward", in: Encapsulate(solicit, juniper("x")), wantErr: ErrNotRelayReply},
		{name: "header cut", in: reply[:HeaderLen-1], wantErr: ErrTruncated},
		{name: "option cut", in: reply[:HeaderLen+3], wantErr: ErrTruncated, levels: 1},
		{name: "no relay message", in: bare.AppendReply(nil, answer)[:HeaderLen], wantErr: ErrNoRelayMessage, levels: 1},
		{name: "empty message", in: bare.AppendReply(nil, nil), wantErr: ErrEmptyMessage, levels: 1},
		{name: "Relay-Forward inside", in: bare.AppendReply(nil, Encapsulate(solicit, juniper("x"))), wantErr: ErrRelayForwardInside, levels: 1},
		{name: "too deep", in: deepReply(MaxLevels+1, answer), wantErr: ErrTooDeep, levels: MaxLevels},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Chain
			err := DecodeReplyInto(&c, tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if len(c.Levels) != tt.levels {
				t.Errorf("%d levels held after the error, want %d", len(c.Levels), tt.levels)
			}
		})
	}
}

// deepReply wraps answer in n Relay-Reply levels.
func deepReply(n int, answer []byte) []byte {
	one := &Chain{Levels: []Level{{LinkAddr: linkAddr, PeerAddr: peerAddr}}}
	for range n {
		answer = one.AppendReply(nil, answer)
	}
	return answer
}

// checkReplyLevels checks that reply, decoded from want.AppendReply(nil,
// answer), gives back what AppendReply wrote.
func checkReplyLevels(t *testing.T, want, reply *Chain, answer []byte) {
	t.Helper()
	if len(reply.Levels) != len(want.Levels) {
		t.Fatalf("%d levels, want %d", len(reply.Levels), len(want.Levels))
	}
	for i := range want.Levels {
		w, g := &want.Levels[i], &reply.Levels[i]
		if g.HopCount != w.HopCount || g.LinkAddr.As16() != w.LinkAddr.As16() || g.PeerAddr.As16() != w.PeerAddr.As16() ||
			!bytes.Equal(g.InterfaceID, w.InterfaceID) || (g.InterfaceID == nil) != (w.InterfaceID == nil) ||
			g.HasSourcePort != w.HasSourcePort || g.SourcePort != w.SourcePort {
			t.Errorf("level %d: %+v, want %+v", i, g, w)
		}
	}
	if !bytes.Equal(reply.Message, answer) {
		t.Errorf("message %x, want %x", reply.Message, answer)
	}
}

func TestDecodeReplyIntoDoesNotAllocate(t *testing.T) {
	c, err := Decode(Encapsulate(solicit, Forward{HopCount: 1, LinkAddr: linkAddr, HasSourcePort: true, SourcePort: 547}, juniper("VLAN2702")))
	if err != nil {
		t.Fatal(err)
	}
	reply := c.Reply(&dhcpv6.Message{MessageType: dhcpv6.MessageTypeReply})
	var out Chain
	allocs := testing.AllocsPerRun(100, func() {
		if err := DecodeReplyInto(&out, reply); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per decode into a reused chain, want 0", allocs)
	}
}
