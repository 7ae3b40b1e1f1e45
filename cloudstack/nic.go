package cloudstack

import (
	"strconv"
	"strings"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
)

// DateLayout is the layout of CloudStack's dates, e.g.
// "2021-10-04T09:24:38+0000" (Java's yyyy-MM-dd'T'HH:mm:ssZ).
const DateLayout = "2006-01-02T15:04:05-0700"

// NIC is one NIC of one VM, with the VM's fields repeated: the unit the
// allocation table gives a prefix to (see allocator.NIC). Fields CloudStack
// left empty, or sent in a form this package cannot parse, are zero; VLAN
// is read from broadcasturi, else isolationuri (see ParseVLAN).
type NIC = allocator.NIC

// ParseVLAN reads the VLAN named by a NIC's broadcasturi or isolationuri.
// It accepts "vlan://700" and the bare "700" (1–4094), and "untagged" or
// "vlan://untagged" (vlan 0). Any other form – another scheme such as
// vxlan://5000 or pvlan://700-i800, a number out of range, an empty string –
// is not a VLAN: ok is false.
func ParseVLAN(uri string) (vlan int, ok bool) {
	s := strings.TrimSpace(uri)
	if i := strings.Index(s, "://"); i >= 0 {
		if !strings.EqualFold(s[:i], "vlan") {
			return 0, false
		}
		s = s[i+len("://"):]
	}
	if strings.EqualFold(s, "untagged") {
		return 0, true
	}
	if s == "" || len(s) > 4 {
		return 0, false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 4094 {
		return 0, false
	}
	return n, true
}

// nicVLAN is the VLAN of a NIC: its broadcasturi if that names a VLAN (or
// untagged), else its isolationuri, else 0.
func nicVLAN(broadcastURI, isolationURI string) int {
	if v, ok := ParseVLAN(broadcastURI); ok {
		return v
	}
	v, _ := ParseVLAN(isolationURI)
	return v
}
