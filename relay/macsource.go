package relay

import "fmt"

// MACSource names one place the client's MAC can be read from. The names are
// Kea's ("mac-sources"), so a Kea config's list can be copied as it is.
type MACSource string

// The MAC sources.
const (
	// SourceRemoteID reads option 37 (remote-id) of the innermost relay as Kea
	// does: skip the 4-byte enterprise number, the rest (1 to 20 bytes) is the
	// hardware address. Beyond Kea, a payload that is a MAC written as text
	// (06:32:b2:00:04:79, 0632.b200.0479, 0632b2000479) is read as that MAC.
	SourceRemoteID MACSource = "remote-id"
	// SourceClientLinkAddr reads option 79 (RFC 6939) of the innermost relay.
	SourceClientLinkAddr MACSource = "client-link-addr-option"
	// SourceDUID reads the MAC out of a DUID-LLT or DUID-LL client identifier.
	SourceDUID MACSource = "duid"
	// SourceIPv6LinkLocal derives the MAC from the EUI-64 interface
	// identifier of the innermost relay's peer-address.
	SourceIPv6LinkLocal MACSource = "ipv6-link-local"
)

// aliases are the other names Kea accepts for the same sources.
var aliases = map[string]MACSource{
	"remote-id":               SourceRemoteID,
	"rfc4649":                 SourceRemoteID,
	"client-link-addr-option": SourceClientLinkAddr,
	"rfc6939":                 SourceClientLinkAddr,
	"duid":                    SourceDUID,
	"ipv6-link-local":         SourceIPv6LinkLocal,
}

// ParseMACSource maps a Kea mac-sources name (or alias) to a MACSource.
func ParseMACSource(name string) (MACSource, error) {
	if s, ok := aliases[name]; ok {
		return s, nil
	}
	return "", fmt.Errorf("unknown MAC source: use remote-id, client-link-addr-option (rfc6939), duid or ipv6-link-local")
}
