package allocator

import (
	"encoding/json"
	"net"
	"net/netip"
	"time"
)

// The stored records (an allocation, a history event) are JSON, as
// encoding/json writes them. A first sync writes 100,000 of each, and
// encoding/json's reflection cost a third of its CPU; the appenders below
// write the same bytes directly. Whatever they are not sure to write as
// encoding/json would (a string that needs escaping, a time outside
// years 0–9999) makes them return false, and the caller uses
// encoding/json: TestRecordEncoding and FuzzRecordEncoding hold the two
// to the same bytes.

// appendAllocRecord appends a's stored form (allocRecord) to dst; false
// when encoding/json must write it.
func appendAllocRecord(dst []byte, a *Allocation) ([]byte, bool) {
	w := recordWriter{b: dst, ok: true}
	w.b = append(w.b, '{')
	w.mac("mac", a.MAC)
	w.str(",\"pool\":", a.Pool)
	w.prefix(",\"prefix\":", a.Prefix)
	w.str(",\"state\":", string(a.State))
	w.time(",\"since\":", a.Since)
	if !a.GoneAt.IsZero() {
		w.time(",\"gone-at\":", a.GoneAt)
	}
	if !a.QuarantinedAt.IsZero() {
		w.time(",\"quarantined-at\":", a.QuarantinedAt)
	}
	w.optStr(",\"vm-id\":", a.VMID)
	w.optStr(",\"vm-name\":", a.VMName)
	w.optStr(",\"nic-id\":", a.NICID)
	if a.IP6.IsValid() {
		w.addr(",\"ip6\":", a.IP6)
	}
	if a.IP6CIDR != (netip.Prefix{}) {
		w.prefix(",\"ip6-cidr\":", a.IP6CIDR)
	}
	w.optStr(",\"source\":", a.Source)
	w.b = append(w.b, '}')
	return w.b, w.ok
}

// appendHistoryRecord appends e's stored form (historyRecord) to dst;
// false when encoding/json must write it.
func appendHistoryRecord(dst []byte, e *HistoryEvent) ([]byte, bool) {
	w := recordWriter{b: dst, ok: true}
	w.b = append(w.b, '{')
	w.mac("mac", e.MAC)
	w.time(",\"at\":", e.At)
	w.str(",\"event\":", e.Event)
	w.str(",\"pool\":", e.Pool)
	w.prefix(",\"prefix\":", e.Prefix)
	w.optStr(",\"state\":", string(e.State))
	w.optStr(",\"prev-state\":", string(e.PrevState))
	if !e.Since.IsZero() {
		w.time(",\"since\":", e.Since)
	}
	w.optStr(",\"vm-id\":", e.VMID)
	w.optStr(",\"vm-name\":", e.VMName)
	w.optStr(",\"nic-id\":", e.NICID)
	if e.IP6.IsValid() {
		w.addr(",\"ip6\":", e.IP6)
	}
	w.optStr(",\"from-pool\":", e.FromPool)
	if e.FromPrefix != (netip.Prefix{}) {
		w.prefix(",\"from-prefix\":", e.FromPrefix)
	}
	w.optStr(",\"by\":", e.By)
	w.optStr(",\"note\":", e.Note)
	w.b = append(w.b, '}')
	return w.b, w.ok
}

// recordWriter appends JSON members; ok turns false at the first value
// it cannot write as encoding/json would.
type recordWriter struct {
	b  []byte
	ok bool
}

// mac writes the first member: a MAC as net.HardwareAddr.String does.
func (w *recordWriter) mac(name string, m net.HardwareAddr) {
	const hex = "0123456789abcdef"
	w.b = append(w.b, '"')
	w.b = append(w.b, name...)
	w.b = append(w.b, "\":\""...)
	for i, c := range m {
		if i > 0 {
			w.b = append(w.b, ':')
		}
		w.b = append(w.b, hex[c>>4], hex[c&0xf])
	}
	w.b = append(w.b, '"')
}

func (w *recordWriter) optStr(member, s string) {
	if s != "" {
		w.str(member, s)
	}
}

// str writes a string that needs no escaping; anything else (a quote, a
// backslash, a control character, <, > or &, which encoding/json writes
// as \u escapes, or any byte beyond ASCII) is left to encoding/json.
func (w *recordWriter) str(member, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			w.ok = false
			return
		}
	}
	w.b = append(w.b, member...)
	w.b = append(w.b, '"')
	w.b = append(w.b, s...)
	w.b = append(w.b, '"')
}

// time writes t as time.Time.MarshalJSON does (RFC 3339 with
// nanoseconds), which refuses years outside 0–9999.
func (w *recordWriter) time(member string, t time.Time) {
	if _, off := t.Zone(); off != 0 {
		w.ok = false // encoding/json checks the offset; stored times are UTC
		return
	}
	if y := t.Year(); y < 0 || y > 9999 {
		w.ok = false
		return
	}
	w.b = append(w.b, member...)
	w.b = append(w.b, '"')
	w.b = t.AppendFormat(w.b, time.RFC3339Nano)
	w.b = append(w.b, '"')
}

// prefix and addr write what MarshalText writes (the zero value as "").
func (w *recordWriter) prefix(member string, p netip.Prefix) {
	w.b = append(w.b, member...)
	w.b = append(w.b, '"')
	w.b, _ = p.AppendText(w.b)
	w.b = append(w.b, '"')
}

func (w *recordWriter) addr(member string, a netip.Addr) {
	w.b = append(w.b, member...)
	w.b = append(w.b, '"')
	w.b, _ = a.AppendText(w.b)
	w.b = append(w.b, '"')
}

// marshalAllocRecord is EncodeAllocation's encoder.
func marshalAllocRecord(a *Allocation) ([]byte, error) {
	if b, ok := appendAllocRecord(make([]byte, 0, 320), a); ok {
		return b, nil
	}
	return json.Marshal(allocRecord{MAC: a.MAC.String(), Allocation: *a})
}

// marshalHistoryRecord is the history's encoder.
func marshalHistoryRecord(e *HistoryEvent) ([]byte, error) {
	if b, ok := appendHistoryRecord(make([]byte, 0, 384), e); ok {
		return b, nil
	}
	return json.Marshal(historyRecord{e.MAC.String(), plainEvent(*e)})
}
