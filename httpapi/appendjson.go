package httpapi

import (
	"net/netip"
	"time"
	"unicode/utf8"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
)

// appendAllocation appends the JSON of AllocationOf(a, p), laid out as
// json.MarshalIndent(v, "    ", "  ") lays it out, without allocating:
// a full listing of /v1/allocations encodes a million of them, and the
// garbage of encoding/json (a few hundred bytes per allocation) would
// grow serve's heap by hundreds of megabytes before the collector ran.
// TestAppendAllocationIsMarshalIndent holds it to encoding/json's bytes.
func appendAllocation(b []byte, a *allocator.Allocation, p *allocator.Pool) []byte {
	iid := ""
	if p != nil {
		iid = p.InterfaceID
	}
	b = append(b, "{\n      \"mac\": \""...)
	b = appendMAC(b, a.MAC)
	b = append(b, "\",\n      \"prefix\": "...)
	b = appendPrefix(b, a.Prefix)
	b = append(b, ",\n      \"pool\": "...)
	b = appendJSONString(b, a.Pool)
	b = append(b, ",\n      \"interface-id\": "...)
	b = appendJSONString(b, iid)
	b = append(b, ",\n      \"vm-id\": "...)
	b = appendJSONString(b, a.VMID)
	b = append(b, ",\n      \"vm-name\": "...)
	b = appendJSONString(b, a.VMName)
	b = append(b, ",\n      \"nic-id\": "...)
	b = appendJSONString(b, a.NICID)
	b = append(b, ",\n      \"state\": "...)
	b = appendJSONString(b, string(a.State))
	b = append(b, ",\n      \"since\": "...)
	b = appendTime(b, a.Since)
	b = append(b, ",\n      \"gone-at\": "...)
	b = appendTime(b, a.GoneAt)
	b = append(b, ",\n      \"quarantined-at\": "...)
	b = appendTime(b, a.QuarantinedAt)
	b = append(b, ",\n      \"ip6\": \""...)
	if a.IP6.IsValid() {
		b = a.IP6.AppendTo(b)
	}
	b = append(b, "\",\n      \"ip6-cidr\": \""...)
	if a.IP6CIDR.IsValid() {
		b = a.IP6CIDR.AppendTo(b)
	}
	b = append(b, "\",\n      \"source\": "...)
	b = appendJSONString(b, a.Source)
	return append(b, "\n    }"...)
}

// appendMAC appends mac as net.HardwareAddr.String writes it.
func appendMAC(b []byte, mac []byte) []byte {
	const hex = "0123456789abcdef"
	for i, c := range mac {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hex[c>>4], hex[c&0xf])
	}
	return b
}

// appendPrefix appends p as netip.Prefix's MarshalText does, quoted.
func appendPrefix(b []byte, p netip.Prefix) []byte {
	b = append(b, '"')
	if p.IsValid() {
		b = p.AppendTo(b)
	}
	return append(b, '"')
}

// appendTime appends what timePtr(t) marshals to: null for the zero
// time, else t in UTC as time.Time's MarshalJSON writes it.
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendJSONString appends s quoted as encoding/json's Marshal quotes it:
// HTML characters and U+2028/U+2029 escaped, invalid UTF-8 as U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
