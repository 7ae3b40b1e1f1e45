// Package kea reads and writes ISC Kea DHCPv6 configuration files. Reading
// gives the subnets and host reservations of the Kea that cloudstack-pd
// replaces, as the old generator script (cloudstack-kea-config) wrote them
// (import-kea); Export writes a Kea config from the allocation table for
// sites that stay on Kea (kea-export, see export.go).
//
// The reading is faithful to what Kea 2.2 accepts: `//`, `#` and `/* */`
// comments outside strings, and extraneous commas before `}` or `]` (Kea
// warns about those; so does Config.Warnings). Values are kept as written
// (strings stay strings) but checked the way Kea checks them, so that a file
// Kea refuses is refused here too, with the JSON path of each problem.
// The whole document is kept in Config.Raw, so that a Kea config can be
// written back from it.
//
// What is not read: `<?include?>` directives (refused: inline the file),
// and anything outside Dhcp6 subnet6, shared-networks[].subnet6 and the
// global Dhcp6.reservations (it stays in Raw).
package kea

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"strings"
)

// Config is what a Kea DHCPv6 config says about subnets and reservations.
type Config struct {
	// Path is the file the config was read from.
	Path string
	// Subnets lists Dhcp6.subnet6, then the subnet6 of each
	// Dhcp6.shared-networks entry, in file order.
	Subnets []Subnet
	// Reservations are the global ones, Dhcp6.reservations.
	Reservations []Reservation
	// Warnings are what Kea would warn about without refusing the file,
	// e.g. "line 3 column 85: extraneous comma".
	Warnings []string
	// Raw is the whole document after comments and extraneous commas are
	// dropped, as encoding/json decodes it into any, with numbers as
	// json.Number. Callers must not modify it.
	Raw map[string]any
}

// Subnet is one subnet6 entry.
type Subnet struct {
	// Path is the entry's JSON path, e.g. "Dhcp6.subnet6[2]" or
	// "Dhcp6.shared-networks[0].subnet6[1]".
	Path string
	// ID is "id" (0 when absent: Kea then numbers the subnet itself).
	ID int
	// Subnet is "subnet" as written, e.g. "2001:db8:100::/64".
	Subnet string
	// InterfaceID is "interface-id", the relay's interface-id that selects
	// this subnet ("" when absent).
	InterfaceID  string
	Reservations []Reservation
}

// Reservation is one host reservation; strings are as written.
type Reservation struct {
	// Path is the reservation's JSON path, e.g.
	// "Dhcp6.subnet6[2].reservations[5]"; the path of its prefix i is
	// Path+".prefixes[i]" (see PrefixPath).
	Path string
	// HWAddress is "hw-address" ("" when absent); MAC decodes it.
	HWAddress string
	// DUID is "duid" ("" when absent). Kea refuses both in one reservation.
	DUID string
	// Prefixes is "prefixes", e.g. ["2001:db8:200::/60"].
	Prefixes []string
	// IPAddresses is "ip-addresses".
	IPAddresses []string
}

// MAC decodes HWAddress the way Kea does (see DecodeHex).
func (r *Reservation) MAC() (net.HardwareAddr, error) {
	b, err := DecodeHex(r.HWAddress)
	return net.HardwareAddr(b), err
}

// PrefixPath returns the JSON path of the reservation's prefix i.
func (r *Reservation) PrefixPath(i int) string { return fmt.Sprintf("%s.prefixes[%d]", r.Path, i) }

// Problem is one thing wrong in a Kea config.
type Problem struct {
	// Path is the JSON path of the value at fault, or "line L column C"
	// for a syntax error.
	Path string
	// Value is the value at fault (nil when there is none).
	Value any
	Msg   string
}

func (p Problem) String() string {
	if p.Value == nil {
		return p.Path + ": " + p.Msg
	}
	v, err := json.Marshal(p.Value)
	if err != nil {
		v = []byte(fmt.Sprint(p.Value))
	}
	return fmt.Sprintf("%s: %s: %s", p.Path, v, p.Msg)
}

// Error lists every problem found in a Kea config.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string { return formatProblems("kea config "+e.File, e.Problems) }

// formatProblems returns header, the number of problems and one line for
// each of ps.
func formatProblems(header string, ps []Problem) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problem(s)", header, len(ps))
	for _, p := range ps {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// maxDepth bounds nesting; Kea configs are a handful of levels deep.
const maxDepth = 64

// Limits of Kea's identifiers.
const (
	maxHWAddrLen = 20  // Kea's HWAddr::MAX_HWADDR_LEN
	maxDUIDLen   = 130 // 2 bytes of type and up to 128 bytes (RFC 8415)
)

// Load reads and parses the Kea config at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kea config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load on data already read; path names the source in errors. It
// returns an *Error listing every problem, or the config.
func Parse(path string, data []byte) (*Config, error) {
	cleaned, commas, cerr := clean(data)
	if cerr != nil {
		return nil, &Error{File: path, Problems: []Problem{{Path: lineCol(data, cerr.off), Msg: cerr.msg}}}
	}
	c := &Config{Path: path}
	for _, at := range lineCols(data, commas) {
		c.Warnings = append(c.Warnings, at+": extraneous comma (Kea accepts it with a warning)")
	}
	d := &decoder{dec: json.NewDecoder(bytes.NewReader(cleaned))}
	d.dec.UseNumber()
	root, err := d.value("", 0)
	if err == nil {
		if _, err2 := d.dec.Token(); err2 != io.EOF {
			err = d.syntax(errors.New("data after the top-level object"))
		}
	}
	if err != nil {
		return nil, &Error{File: path, Problems: append(d.probs, Problem{Path: lineCol(data, d.errOffset(err)), Msg: errText(err)})}
	}
	obj, ok := root.(map[string]any)
	if !ok {
		d.probs = append(d.probs, Problem{Path: "(top level)", Msg: "not an object"})
		return nil, &Error{File: path, Problems: d.probs}
	}
	c.Raw = obj
	c.read(obj, &d.probs)
	if len(d.probs) > 0 {
		return nil, &Error{File: path, Problems: d.probs}
	}
	return c, nil
}

// read fills c from the decoded document.
func (c *Config) read(root map[string]any, probs *[]Problem) {
	add := func(path string, v any, format string, args ...any) {
		*probs = append(*probs, Problem{Path: path, Value: v, Msg: fmt.Sprintf(format, args...)})
	}
	d6v, ok := root["Dhcp6"]
	if !ok {
		add("Dhcp6", nil, "missing: not a Kea DHCPv6 config")
		return
	}
	d6, ok := d6v.(map[string]any)
	if !ok {
		add("Dhcp6", d6v, "not an object")
		return
	}
	subnets := func(path string, v any) {
		for i, sv := range list(path, v, add) {
			if s, ok := readSubnet(fmt.Sprintf("%s[%d]", path, i), sv, add); ok {
				c.Subnets = append(c.Subnets, s)
			}
		}
	}
	if v, ok := d6["subnet6"]; ok {
		subnets("Dhcp6.subnet6", v)
	}
	if v, ok := d6["shared-networks"]; ok {
		for i, nv := range list("Dhcp6.shared-networks", v, add) {
			path := fmt.Sprintf("Dhcp6.shared-networks[%d]", i)
			n, ok := nv.(map[string]any)
			if !ok {
				add(path, nv, "not an object")
				continue
			}
			if v, ok := n["subnet6"]; ok {
				subnets(path+".subnet6", v)
			}
		}
	}
	if v, ok := d6["reservations"]; ok {
		c.Reservations = readReservations("Dhcp6.reservations", v, add)
	}
}

type addFunc func(path string, v any, format string, args ...any)

func list(path string, v any, add addFunc) []any {
	l, ok := v.([]any)
	if !ok {
		add(path, v, "not a list")
	}
	return l
}

func str(path string, m map[string]any, key string, add addFunc) string {
	v, ok := m[key]
	if !ok {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		add(path+"."+key, v, "not a string")
	}
	return s
}

func strs(path string, m map[string]any, key string, add addFunc) []string {
	v, ok := m[key]
	if !ok {
		return nil
	}
	var out []string
	for i, e := range list(path+"."+key, v, add) {
		s, ok := e.(string)
		if !ok {
			add(fmt.Sprintf("%s.%s[%d]", path, key, i), e, "not a string")
			continue
		}
		out = append(out, s)
	}
	return out
}

func readSubnet(path string, v any, add addFunc) (Subnet, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		add(path, v, "not an object")
		return Subnet{}, false
	}
	s := Subnet{Path: path}
	if idv, ok := m["id"]; ok {
		n, isNum := idv.(json.Number)
		id, err := n.Int64()
		switch {
		case !isNum || err != nil || id < 0 || id > math.MaxUint32:
			add(path+".id", idv, "not a subnet id (an integer from 0 to 4294967295)")
		default:
			s.ID = int(id)
		}
	}
	s.Subnet = str(path, m, "subnet", add)
	if _, ok := m["subnet"]; !ok {
		add(path+".subnet", nil, "missing: Kea needs the subnet prefix")
	} else if p, err := netip.ParsePrefix(s.Subnet); s.Subnet != "" && (err != nil || !p.Addr().Is6() || p.Addr().Is4In6()) {
		add(path+".subnet", s.Subnet, "not an IPv6 prefix")
	}
	s.InterfaceID = str(path, m, "interface-id", add)
	if v, ok := m["reservations"]; ok {
		s.Reservations = readReservations(path+".reservations", v, add)
	}
	return s, true
}

func readReservations(path string, v any, add addFunc) []Reservation {
	var out []Reservation
	for i, rv := range list(path, v, add) {
		rpath := fmt.Sprintf("%s[%d]", path, i)
		m, ok := rv.(map[string]any)
		if !ok {
			add(rpath, rv, "not an object")
			continue
		}
		r := Reservation{
			Path:        rpath,
			HWAddress:   str(rpath, m, "hw-address", add),
			DUID:        str(rpath, m, "duid", add),
			Prefixes:    strs(rpath, m, "prefixes", add),
			IPAddresses: strs(rpath, m, "ip-addresses", add),
		}
		_, hasHW := m["hw-address"]
		_, hasDUID := m["duid"]
		if hasHW && hasDUID {
			add(rpath, nil, "hw-address and duid are mutually exclusive (Kea refuses both)")
		}
		if hasHW {
			if b, err := DecodeHex(r.HWAddress); err != nil {
				add(rpath+".hw-address", r.HWAddress, "%v", err)
			} else if len(b) > maxHWAddrLen {
				add(rpath+".hw-address", r.HWAddress, "%d bytes, Kea allows at most %d", len(b), maxHWAddrLen)
			}
		}
		if hasDUID {
			if b, err := DecodeHex(r.DUID); err != nil {
				add(rpath+".duid", r.DUID, "%v", err)
			} else if len(b) > maxDUIDLen {
				add(rpath+".duid", r.DUID, "%d bytes, a DUID has at most %d", len(b), maxDUIDLen)
			}
		}
		if pv, ok := m["prefix"]; ok {
			add(rpath+".prefix", pv, `Kea knows no "prefix" in a reservation (early cloudstack-kea-config versions wrote it): write "prefixes": [...]`)
		}
		for j, s := range r.Prefixes {
			if p, err := netip.ParsePrefix(s); err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
				add(r.PrefixPath(j), s, "not an IPv6 prefix")
			}
		}
		for j, s := range r.IPAddresses {
			if a, err := netip.ParseAddr(s); err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
				add(fmt.Sprintf("%s.ip-addresses[%d]", rpath, j), s, "not an IPv6 address")
			}
		}
		out = append(out, r)
	}
	return out
}

// DecodeHex decodes an identifier (hw-address, duid) the way Kea does:
// octets of one or two hex digits separated by colons ("6:32:b2:0:4:79") or
// by single spaces, or a plain run of hex digits with an optional 0x prefix
// (an odd count gets a leading 0). Empty strings and other separators are
// refused.
func DecodeHex(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("empty identifier")
	}
	sep := ""
	switch {
	case strings.Contains(s, ":"):
		sep = ":"
	case strings.Contains(s, " "):
		sep = " "
	}
	if sep == "" {
		h := s
		if len(h) > 2 && h[:2] == "0x" {
			h = h[2:]
		}
		if len(h)%2 == 1 {
			h = "0" + h
		}
		b, err := hex.DecodeString(h)
		if err != nil {
			return nil, fmt.Errorf("not hex: %w", err)
		}
		return b, nil
	}
	parts := strings.Split(s, sep)
	out := make([]byte, 0, len(parts))
	for _, p := range parts {
		if len(p) == 0 || len(p) > 2 {
			return nil, fmt.Errorf("not hex octets separated by %q", sep)
		}
		if len(p) == 1 {
			p = "0" + p
		}
		b, err := hex.DecodeString(p)
		if err != nil {
			return nil, fmt.Errorf("not hex octets separated by %q", sep)
		}
		out = append(out, b[0])
	}
	return out, nil
}

// decoder builds the document from JSON tokens, to report duplicate keys
// (Kea refuses them; encoding/json would keep the last) and bound nesting.
type decoder struct {
	dec   *json.Decoder
	probs []Problem
}

// syntaxAt is a syntax error at a known offset of the cleaned data.
type syntaxAt struct {
	off int64
	err error
}

func (e *syntaxAt) Error() string { return e.err.Error() }

func (d *decoder) syntax(err error) error { return &syntaxAt{off: d.dec.InputOffset(), err: err} }

func (d *decoder) errOffset(err error) int {
	var se *json.SyntaxError
	var sa *syntaxAt
	switch {
	case errors.As(err, &sa):
		return int(sa.off)
	case errors.As(err, &se):
		return int(se.Offset)
	}
	return int(d.dec.InputOffset())
}

func errText(err error) string {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "unexpected end of file"
	}
	return err.Error()
}

func (d *decoder) value(path string, depth int) (any, error) {
	if depth > maxDepth {
		return nil, d.syntax(fmt.Errorf("nested more than %d levels", maxDepth))
	}
	tok, err := d.dec.Token()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		obj := map[string]any{}
		for d.dec.More() {
			kt, err := d.dec.Token()
			if err != nil {
				return nil, err
			}
			k := kt.(string) // the decoder only yields string keys
			kpath := k
			if path != "" {
				kpath = path + "." + k
			}
			if _, dup := obj[k]; dup {
				d.probs = append(d.probs, Problem{Path: kpath, Msg: fmt.Sprintf("duplicate key %q (Kea refuses it)", k)})
			}
			v, err := d.value(kpath, depth+1)
			if err != nil {
				return nil, err
			}
			obj[k] = v
		}
		if _, err := d.dec.Token(); err != nil { // '}'
			return nil, err
		}
		return obj, nil
	case json.Delim('['):
		arr := []any{}
		for i := 0; d.dec.More(); i++ {
			v, err := d.value(fmt.Sprintf("%s[%d]", path, i), depth+1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		if _, err := d.dec.Token(); err != nil { // ']'
			return nil, err
		}
		return arr, nil
	}
	return tok, nil
}
