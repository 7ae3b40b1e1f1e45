// Package wire moves the client messages the server answers between bytes
// and github.com/insomniacslk/dhcp's types without allocating per packet.
//
// The library is the codec of record: its types are what the server's
// rules read and build, and anything this package does not handle itself
// it hands to the library. But the library allocates for every option it
// decodes (eleven times for one IA_PD with its prefix) and every option it
// encodes (a buffer per option, copied into its parent's), which puts some
// forty allocations on every answered packet. This package is the one place
// that works around that, for the options of the hot path only:
//
//   - Decoder.Decode walks the message with the library's own option walk
//     (Options.FromBytesWithParser) but parses the options a server reads on
//     every packet into memory it reuses: Client and Server Identifiers, the
//     Option Request, Elapsed Time, Rapid Commit, Reconfigure Accept (kept
//     as OptionGeneric, their bytes, after the library's own checks), and
//     IA_PD with its IA Prefixes (as the library's OptIAPD and OptIAPrefix;
//     the options inside an IA_PD are walked with relay.WalkOptions, the
//     project's one walk of the option format). Anything else, and an
//     IA_PD of unusual shape, goes to dhcpv6.ParseOption.
//   - AppendMessage and AppendOptions encode by appending to a caller's
//     buffer, writing the option types a server answers with directly and
//     calling the library's ToBytes for any other.
//
// Both are checked against the library, byte for byte and error for error,
// by table tests and by fuzz targets (FuzzDecode, FuzzAppend), with two
// deliberate differences: Decode is stricter than the library where a
// value is out of the protocol's bounds and the library lets it through.
//
//   - A Client or Server Identifier longer than MaxDUIDLen (RFC 8415
//     section 11.1: a DUID is a 2-byte type and at most 128 bytes) is
//     refused (ErrDUIDTooLong); the library takes any length.
//   - An IA Prefix, inside an IA_PD, with a prefix length above 128 is
//     refused (ErrPrefixLength); the library decodes it as ::/0, which an
//     answer would echo.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/cloudstack-pd/cloudstack-pd/relay"
)

// MaxDUIDLen is the longest DUID, type included (RFC 8415 section 11.1).
const MaxDUIDLen = 2 + 128

// The errors of Decode's checks beyond the library's.
var (
	// ErrDUIDTooLong is returned when a Client or Server Identifier is
	// longer than MaxDUIDLen.
	ErrDUIDTooLong = errors.New("DUID longer than 130 bytes")
	// ErrPrefixLength is returned when an IA Prefix in an IA_PD has a
	// prefix length above 128.
	ErrPrefixLength = errors.New("prefix length above 128")
)

// Decoder decodes client messages into memory it reuses from one message to
// the next. The options it returns point into the decoded bytes and into
// the Decoder: a decoded message is valid until the next Decode or Reset,
// and as long as its bytes are. A Decoder is not safe for concurrent use.
type Decoder struct {
	parse              dhcpv6.OptionParser
	clientID, serverID []byte

	opts     dhcpv6.Options
	generics [maxGenerics]dhcpv6.OptionGeneric
	ng       int

	pds    [maxIAPDs]dhcpv6.OptIAPD
	pdOpts [maxIAPDs][maxPrefixesPerIA]dhcpv6.Option
	npd    int

	prefixes [maxPrefixes]dhcpv6.OptIAPrefix
	nets     [maxPrefixes]net.IPNet
	ips      [maxPrefixes][net.IPv6len]byte
	np       int
}

// How many options of each kind a message decodes into reused memory;
// more are decoded too, by allocating.
const (
	maxGenerics      = 16
	maxIAPDs         = 4
	maxPrefixesPerIA = 4
	maxPrefixes      = 8
	iapdHeaderLen    = 12 // IAID, T1, T2
	iaPrefixLen      = 25 // preferred, valid, prefix-length, prefix
)

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder {
	d := &Decoder{}
	d.parse = d.parseOption
	return d
}

// Reset forgets the last message, so that the Decoder holds no reference
// to its bytes.
func (d *Decoder) Reset() {
	clear(d.opts[:cap(d.opts)])
	d.opts = d.opts[:0]
	d.clientID, d.serverID = nil, nil
	for i := range d.ng {
		d.generics[i] = dhcpv6.OptionGeneric{}
	}
	for i := range d.npd {
		d.pds[i] = dhcpv6.OptIAPD{}
		clear(d.pdOpts[i][:])
	}
	for i := range d.np {
		d.prefixes[i] = dhcpv6.OptIAPrefix{}
		d.nets[i] = net.IPNet{}
	}
	d.ng, d.npd, d.np = 0, 0, 0
}

// Decode decodes b, a client message (not a relay message), into m, as
// dhcpv6.MessageFromBytes would: it fails where the library fails.
func (d *Decoder) Decode(m *dhcpv6.Message, b []byte) error {
	d.Reset()
	if len(b) < 4 {
		return fmt.Errorf("message header: %d bytes, want at least 4", len(b))
	}
	*m = dhcpv6.Message{MessageType: dhcpv6.MessageType(b[0])}
	copy(m.TransactionID[:], b[1:4])
	if d.opts == nil {
		d.opts = make(dhcpv6.Options, 0, maxGenerics)
	}
	m.Options.Options = d.opts
	err := m.Options.FromBytesWithParser(b[4:], d.parse)
	d.opts = m.Options.Options[:0]
	return err
}

// ClientID is the data of the last message's first Client Identifier; nil
// when it had none.
func (d *Decoder) ClientID() []byte { return d.clientID }

// ServerID is the data of the last message's first Server Identifier; nil
// when it had none.
func (d *Decoder) ServerID() []byte { return d.serverID }

// parseOption is the OptionParser Decode gives the library's option walk.
// data is nil when the option runs past the end (the walk then fails).
func (d *Decoder) parseOption(code dhcpv6.OptionCode, data []byte) (dhcpv6.Option, error) {
	switch code {
	case dhcpv6.OptionClientID, dhcpv6.OptionServerID:
		if err := checkDUID(data); err != nil {
			return nil, fmt.Errorf("%s: %w", code, err)
		}
		if code == dhcpv6.OptionClientID && d.clientID == nil {
			d.clientID = data[:len(data):len(data)]
		}
		if code == dhcpv6.OptionServerID && d.serverID == nil {
			d.serverID = data[:len(data):len(data)]
		}
	case dhcpv6.OptionORO:
		if len(data)%2 != 0 {
			return nil, fmt.Errorf("%s: %d bytes, not a whole number of 2-byte option codes", code, len(data))
		}
	case dhcpv6.OptionElapsedTime:
		if len(data) != 2 {
			return nil, fmt.Errorf("%s: %d bytes, want 2", code, len(data))
		}
	case dhcpv6.OptionRapidCommit, dhcpv6.OptionReconfAccept:
		// The library keeps these as OptionGeneric, unchecked.
	case dhcpv6.OptionIAPD:
		if err := checkPrefixLengths(data); err != nil {
			return nil, fmt.Errorf("%s: %w", code, err)
		}
		if pd := d.iapd(data); pd != nil {
			return pd, nil
		}
		return dhcpv6.ParseOption(code, data)
	default:
		return dhcpv6.ParseOption(code, data)
	}
	return d.generic(code, data), nil
}

// generic returns an OptionGeneric holding data, from the Decoder's memory
// while it lasts.
func (d *Decoder) generic(code dhcpv6.OptionCode, data []byte) *dhcpv6.OptionGeneric {
	var g *dhcpv6.OptionGeneric
	if d.ng < len(d.generics) {
		g = &d.generics[d.ng]
		d.ng++
	} else {
		g = &dhcpv6.OptionGeneric{}
	}
	*g = dhcpv6.OptionGeneric{OptionCode: code}
	if len(data) > 0 { // the library's copy of no bytes is nil
		g.OptionData = data[:len(data):len(data)]
	}
	return g
}

// checkDUID applies dhcpv6.DUIDFromBytes's checks: a 2-byte type, then
// the fixed part of the four known types (DUID-UUID is exactly 16 bytes).
//
// Beyond the library, a DUID longer than MaxDUIDLen is refused.
func checkDUID(b []byte) error {
	if len(b) < 2 {
		return fmt.Errorf("DUID of %d bytes, want at least 2", len(b))
	}
	if len(b) > MaxDUIDLen {
		return fmt.Errorf("%d bytes: %w", len(b), ErrDUIDTooLong)
	}
	var want int
	switch dhcpv6.DUIDType(binary.BigEndian.Uint16(b)) {
	case dhcpv6.DUID_LLT:
		want = 2 + 2 + 4
	case dhcpv6.DUID_LL:
		want = 2 + 2
	case dhcpv6.DUID_EN:
		want = 2 + 4
	case dhcpv6.DUID_UUID:
		if len(b) != 2+16 {
			return fmt.Errorf("DUID-UUID of %d bytes, want 18", len(b))
		}
		return nil
	default:
		return nil
	}
	if len(b) < want {
		return fmt.Errorf("%s of %d bytes, want at least %d", dhcpv6.DUIDType(binary.BigEndian.Uint16(b)), len(b), want)
	}
	return nil
}

// checkPrefixLengths refuses an IA_PD value whose IA Prefix options (26)
// carry a prefix length above 128. It walks the IA_PD's options as far as
// they are well formed; what is not is left to the library, which fails
// on it.
func checkPrefixLengths(data []byte) error {
	if len(data) < iapdHeaderLen {
		return nil
	}
	w := relay.WalkOptions(data[iapdHeaderLen:])
	for w.Next() {
		if v := w.Data(); dhcpv6.OptionCode(w.Code()) == dhcpv6.OptionIAPrefix && len(v) >= iaPrefixLen {
			if bits := v[8]; bits > 128 {
				return fmt.Errorf("IA Prefix of length %d: %w", bits, ErrPrefixLength)
			}
		}
	}
	return nil
}

// iapd decodes an IA_PD that holds only IA Prefixes without options of
// their own, as OptIAPD.FromBytes would, into the Decoder's memory. It
// returns nil for any other IA_PD (a malformed one among them), or when
// its memory is used up: the caller hands those to the library.
func (d *Decoder) iapd(data []byte) *dhcpv6.OptIAPD {
	if len(data) < iapdHeaderLen || d.npd == maxIAPDs {
		return nil
	}
	n := 0
	w := relay.WalkOptions(data[iapdHeaderLen:])
	for w.Next() {
		if dhcpv6.OptionCode(w.Code()) != dhcpv6.OptionIAPrefix || len(w.Data()) != iaPrefixLen {
			return nil
		}
		n++
	}
	if w.Err() != nil {
		return nil
	}
	if n > maxPrefixesPerIA || d.np+n > maxPrefixes {
		return nil
	}
	pd := &d.pds[d.npd]
	opts := d.pdOpts[d.npd][:0]
	d.npd++
	*pd = dhcpv6.OptIAPD{T1: seconds(data[4:]), T2: seconds(data[8:])}
	copy(pd.IaId[:], data)
	for w = relay.WalkOptions(data[iapdHeaderLen:]); w.Next(); {
		v := w.Data()
		p, ipn, ip := &d.prefixes[d.np], &d.nets[d.np], d.ips[d.np][:]
		d.np++
		*p = dhcpv6.OptIAPrefix{PreferredLifetime: seconds(v), ValidLifetime: seconds(v[4:])}
		// The library's decoded options are an empty list, not none.
		p.Options.Options = noOptions
		if bits := v[8]; bits != 0 {
			copy(ip, v[9:iaPrefixLen])
			*ipn = net.IPNet{IP: net.IP(ip), Mask: Mask(int(bits))}
			p.Prefix = ipn
		}
		opts = append(opts, p)
	}
	pd.Options.Options = opts
	return pd
}

// noOptions is the empty, non-nil option list of a decoded IA Prefix.
var noOptions = dhcpv6.Options{}

func seconds(b []byte) time.Duration {
	return time.Duration(binary.BigEndian.Uint32(b)) * time.Second
}

// masks are the IPv6 masks by length, shared: they are only ever read.
var masks = func() (m [129]net.IPMask) {
	for i := range m {
		m[i] = net.CIDRMask(i, 128)
	}
	return m
}()

// Mask is net.CIDRMask(bits, 128) without allocating: the mask returned is
// shared and must not be modified. Like net.CIDRMask it is nil for bits
// outside 0..128.
func Mask(bits int) net.IPMask {
	if bits < 0 || bits > 128 {
		return nil
	}
	return masks[bits]
}

// AppendMessage appends m encoded, as m.ToBytes() encodes it, to b.
func AppendMessage(b []byte, m *dhcpv6.Message) []byte {
	b = append(b, byte(m.MessageType))
	b = append(b, m.TransactionID[:]...)
	return AppendOptions(b, m.Options.Options)
}

// AppendOptions appends opts encoded, as opts.ToBytes() encodes them, to b.
// The option types a server answers with are written directly; any other
// is encoded by its own ToBytes.
func AppendOptions(b []byte, opts dhcpv6.Options) []byte {
	for _, o := range opts {
		b = binary.BigEndian.AppendUint16(b, uint16(o.Code()))
		at := len(b)
		b = append(b, 0, 0)
		switch v := o.(type) {
		case *dhcpv6.OptionGeneric:
			b = append(b, v.OptionData...)
		case *dhcpv6.OptIAPD:
			b = appendIA(b, v.IaId, v.T1, v.T2, v.Options.Options)
		case *dhcpv6.OptIAPrefix:
			b = appendDuration(b, v.PreferredLifetime)
			b = appendDuration(b, v.ValidLifetime)
			var ip net.IP
			if v.Prefix != nil {
				bits, _ := v.Prefix.Mask.Size()
				b = append(b, byte(bits))
				ip = v.Prefix.IP
			} else {
				b = append(b, 0)
			}
			b = appendIP16(b, ip)
			b = AppendOptions(b, v.Options.Options)
		case *dhcpv6.OptStatusCode:
			b = binary.BigEndian.AppendUint16(b, uint16(v.StatusCode))
			b = append(b, v.StatusMessage...)
		case *dhcpv6.OptIANA:
			b = appendIA(b, v.IaId, v.T1, v.T2, v.Options.Options)
		case *dhcpv6.OptIATA:
			b = append(b, v.IaId[:]...)
			b = AppendOptions(b, v.Options.Options)
		default:
			b = append(b, o.ToBytes()...)
		}
		// As the library, a value over 65535 bytes gets its length truncated.
		binary.BigEndian.PutUint16(b[at:], uint16(len(b)-at-2))
	}
	return b
}

// appendIA writes the value of an IA_PD or an IA_NA, which are alike.
func appendIA(b []byte, id [4]byte, t1, t2 time.Duration, opts dhcpv6.Options) []byte {
	b = append(b, id[:]...)
	b = appendDuration(b, t1)
	b = appendDuration(b, t2)
	return AppendOptions(b, opts)
}

// appendDuration writes d as the library's Duration.Marshal does: whole
// seconds, rounded, as 32 bits.
func appendDuration(b []byte, d time.Duration) []byte {
	return binary.BigEndian.AppendUint32(b, uint32(d.Round(time.Second)/time.Second))
}

// appendIP16 writes ip in 16 bytes, zeros when it is not an IP address.
func appendIP16(b []byte, ip net.IP) []byte {
	if ip16 := ip.To16(); ip16 != nil {
		return append(b, ip16...)
	}
	var zeros [net.IPv6len]byte
	return append(b, zeros[:]...)
}
