package allocator

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"time"
)

// The server records bindings at the rate it answers (tens of thousands a
// second under load), so their stored form is written without reflection.
// appendBindingJSON gives the very bytes json.Marshal(b) gives
// (TestAppendBindingJSON and FuzzAppendBindingJSON check it); for a value
// it does not know how to write that way (a string needing escapes, a
// time json refuses) it falls back to json.Marshal.

// appendBindingJSON appends b's stored form (see Binding) to dst.
func appendBindingJSON(dst []byte, b *Binding) ([]byte, error) {
	if out, ok := appendBindingFast(dst, b); ok {
		return out, nil
	}
	v, err := json.Marshal(b)
	if err != nil {
		return dst, err
	}
	return append(dst, v...), nil
}

func appendBindingFast(dst []byte, b *Binding) ([]byte, bool) {
	if !plainJSON(b.Pool) || !plainJSON(b.LastMessage) || !jsonTime(b.Expires) || !jsonTime(b.LastExchange) ||
		b.RelaySource.Addr().Zone() != "" || b.LinkAddress.Zone() != "" || b.PeerAddress.Zone() != "" {
		return dst, false
	}
	dst = append(dst, `{"client-duid":"`...)
	dst = appendHexString(dst, b.ClientDUID)
	dst = append(dst, '"')
	if len(b.MAC) > 0 {
		dst = append(dst, `,"mac":"`...)
		dst = appendHexString(dst, b.MAC) // MAC.String() is the same form
		dst = append(dst, '"')
	}
	dst = append(dst, `,"iaid":`...)
	dst = strconv.AppendUint(dst, uint64(b.IAID), 10)
	if b.Pool != "" {
		dst = append(dst, `,"pool":"`...)
		dst = append(dst, b.Pool...)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"prefix":"`...)
	dst, _ = b.Prefix.AppendText(dst)
	dst = append(dst, `","preferred-lifetime":`...)
	dst = strconv.AppendUint(dst, uint64(b.PreferredLifetime), 10)
	dst = append(dst, `,"valid-lifetime":`...)
	dst = strconv.AppendUint(dst, uint64(b.ValidLifetime), 10)
	dst = appendTimeField(dst, `,"expires":"`, b.Expires)
	dst = appendTimeField(dst, `,"last-exchange":"`, b.LastExchange)
	if b.LastMessage != "" {
		dst = append(dst, `,"last-message":"`...)
		dst = append(dst, b.LastMessage...)
		dst = append(dst, '"')
	}
	if b.RelaySource != (netip.AddrPort{}) {
		dst = append(dst, `,"relay-source":"`...)
		dst, _ = b.RelaySource.AppendText(dst)
		dst = append(dst, '"')
	}
	dst = appendAddrField(dst, `,"link-address":"`, b.LinkAddress)
	dst = appendAddrField(dst, `,"peer-address":"`, b.PeerAddress)
	for _, f := range [...]struct {
		name string
		v    []byte
	}{{`,"interface-id":"`, b.InterfaceID}, {`,"remote-id":"`, b.RemoteID}, {`,"relay-id":"`, b.RelayID}} {
		if len(f.v) > 0 {
			dst = append(dst, f.name...)
			dst = appendHexString(dst, f.v)
			dst = append(dst, '"')
		}
	}
	return append(dst, '}'), true
}

// plainJSON reports whether json.Marshal writes s as it is between quotes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// jsonTime reports whether t.MarshalJSON succeeds (year 0 to 9999, zone
// offset within a day) and gives what AppendFormat(RFC3339Nano) gives.
func jsonTime(t time.Time) bool {
	if t.IsZero() {
		return true
	}
	if y := t.Year(); y < 0 || y > 9999 {
		return false
	}
	_, off := t.Zone()
	return off > -24*3600 && off < 24*3600
}

func appendTimeField(dst []byte, name string, t time.Time) []byte {
	if t.IsZero() { // omitzero
		return dst
	}
	dst = append(dst, name...)
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

func appendAddrField(dst []byte, name string, a netip.Addr) []byte {
	if a == (netip.Addr{}) { // omitzero
		return dst
	}
	dst = append(dst, name...)
	dst, _ = a.AppendText(dst)
	return append(dst, '"')
}

// appendHexString appends b as hexString writes it.
func appendHexString(dst, b []byte) []byte {
	const digits = "0123456789abcdef"
	for i, c := range b {
		if i > 0 {
			dst = append(dst, ':')
		}
		dst = append(dst, digits[c>>4], digits[c&0xf])
	}
	return dst
}
