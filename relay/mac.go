package relay

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// ErrNoMAC is returned by MAC when none of the sources yields a MAC.
var ErrNoMAC = errors.New("no MAC found")

// maxHWAddrLen is the longest hardware address Kea accepts (HWAddr::MAX_HWADDR_LEN).
const maxHWAddrLen = 20

// MAC returns the client's hardware address from the first of sources that
// yields one, and which source that was. clientID is the client message's
// Client Identifier (a DUID), used by SourceDUID; nil if absent.
//
// The returned address points into the packet or into a new slice; copy it
// if it must outlive the packet. When no source yields a MAC the error
// wraps ErrNoMAC and says why each source failed.
//
// MAC reads the innermost level; a server reads the innermost trusted
// level's with (*Level).MAC (see Trusted).
func (c *Chain) MAC(sources []MACSource, clientID []byte) (net.HardwareAddr, MACSource, error) {
	return c.Innermost().MAC(sources, clientID)
}

// MAC returns the client's hardware address read from this relay level (and
// from clientID for SourceDUID), from the first of sources that yields one,
// as Chain.MAC does.
func (in *Level) MAC(sources []MACSource, clientID []byte) (net.HardwareAddr, MACSource, error) {
	var why []string
	for _, src := range sources {
		mac, err := in.macFrom(src, clientID)
		if err == nil {
			return mac, src, nil
		}
		why = append(why, string(src)+": "+err.Error())
	}
	return nil, "", fmt.Errorf("%w (%s)", ErrNoMAC, strings.Join(why, "; "))
}

func (in *Level) macFrom(src MACSource, clientID []byte) (net.HardwareAddr, error) {
	switch src {
	case SourceRemoteID:
		if in.RemoteID == nil {
			return nil, errors.New("relay level has no remote-id")
		}
		return RemoteIDMAC(in.RemoteID)
	case SourceClientLinkAddr:
		if in.ClientLinkLayer == nil {
			return nil, errors.New("relay level has no client link-layer address option")
		}
		return hwAddr(in.ClientLinkLayer[2:])
	case SourceDUID:
		if clientID == nil {
			return nil, errors.New("no client identifier")
		}
		return DUIDMAC(clientID)
	case SourceIPv6LinkLocal:
		return EUI64MAC(in.PeerAddr.As16())
	}
	return nil, fmt.Errorf("unknown MAC source %q", src)
}

// RemoteIDMAC reads a MAC from remote-id option data (enterprise number
// first) as Kea does: skip the 4-byte enterprise number without checking
// it; the rest, 1 to 20 bytes, is the hardware address. Beyond Kea, a rest
// that spells a MAC as text (06:32:b2:00:04:79, 06-32-b2-00-04-79,
// 0632.b200.0479 or 0632b2000479, any case) is read as that MAC, since
// Junos can be told to put text there.
func RemoteIDMAC(data []byte) (net.HardwareAddr, error) {
	if len(data) <= remoteIDEnterpriseSz {
		return nil, fmt.Errorf("remote-id of %d bytes has no id after the enterprise number", len(data))
	}
	id := data[remoteIDEnterpriseSz:]
	if mac, ok := textMAC(id); ok {
		return mac, nil
	}
	return hwAddr(id)
}

// RemoteIDEnterprise returns the enterprise number of remote-id option data.
func RemoteIDEnterprise(data []byte) uint32 {
	if len(data) < remoteIDEnterpriseSz {
		return 0
	}
	return binary.BigEndian.Uint32(data)
}

func hwAddr(b []byte) (net.HardwareAddr, error) {
	if len(b) == 0 || len(b) > maxHWAddrLen {
		return nil, fmt.Errorf("hardware address of %d bytes (want 1 to %d)", len(b), maxHWAddrLen)
	}
	return net.HardwareAddr(b), nil
}

// textMAC parses a 6-byte MAC written as text. It accepts the forms
// net.ParseMAC accepts for EUI-48 and twelve bare hex digits.
func textMAC(b []byte) (net.HardwareAddr, bool) {
	switch len(b) {
	case 12:
		mac := make(net.HardwareAddr, 6)
		if _, err := hex.Decode(mac, b); err != nil {
			return nil, false
		}
		return mac, true
	case 14, 17:
		mac, err := net.ParseMAC(string(b))
		if err != nil || len(mac) != 6 {
			return nil, false
		}
		return mac, true
	}
	return nil, false
}

// DUID types that carry a link-layer address.
const (
	duidLLT = 1
	duidLL  = 3
)

// DUIDMAC reads the link-layer address out of a DUID-LLT (offset 8) or
// DUID-LL (offset 4), as Kea's "duid" MAC source does.
func DUIDMAC(duid []byte) (net.HardwareAddr, error) {
	if len(duid) < 2 {
		return nil, fmt.Errorf("DUID of %d bytes", len(duid))
	}
	switch t := binary.BigEndian.Uint16(duid); t {
	case duidLLT:
		if len(duid) <= 8 {
			return nil, fmt.Errorf("DUID-LLT of %d bytes has no address", len(duid))
		}
		return hwAddr(duid[8:])
	case duidLL:
		if len(duid) <= 4 {
			return nil, fmt.Errorf("DUID-LL of %d bytes has no address", len(duid))
		}
		return hwAddr(duid[4:])
	default:
		return nil, fmt.Errorf("DUID type %d carries no link-layer address", t)
	}
}

// EUI64LinkLocal is the link-local address a host with a 6-byte mac forms
// by SLAAC (modified EUI-64): the inverse of EUI64MAC. Another length gives
// fe80:: with no interface identifier.
func EUI64LinkLocal(mac net.HardwareAddr) netip.Addr {
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	if len(mac) == 6 {
		a[8], a[9], a[10], a[11], a[12] = mac[0]^0x02, mac[1], mac[2], 0xff, 0xfe
		a[13], a[14], a[15] = mac[3], mac[4], mac[5]
	}
	return netip.AddrFrom16(a)
}

// EUI64MAC derives a MAC from a link-local address whose interface
// identifier is a modified EUI-64 (ff:fe in the middle, universal/local bit
// inverted), as Kea's "ipv6-link-local" MAC source does.
func EUI64MAC(a [16]byte) (net.HardwareAddr, error) {
	if a[0] != 0xfe || a[1]&0xc0 != 0x80 {
		return nil, errors.New("innermost peer-address is not link-local")
	}
	if a[11] != 0xff || a[12] != 0xfe {
		return nil, errors.New("innermost peer-address is not EUI-64 based")
	}
	return net.HardwareAddr{a[8] ^ 0x02, a[9], a[10], a[13], a[14], a[15]}, nil
}
