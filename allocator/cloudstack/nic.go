package cloudstack

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// DateLayout is the layout of CloudStack's dates, e.g.
// "2021-10-04T09:24:38+0000" (Java's yyyy-MM-dd'T'HH:mm:ssZ).
const DateLayout = "2006-01-02T15:04:05-0700"

// NIC is one NIC of one VM, with the VM's fields repeated: the unit the
// allocation table gives a prefix to. Fields CloudStack left empty (or sent
// in a form this package cannot parse) are zero.
type NIC struct {
	VMID    string
	VMName  string
	VMState string // e.g. Running, Stopped, Destroyed; see Eligible
	NICID   string
	MAC     net.HardwareAddr
	IP6     netip.Addr   // zero if the NIC has no IPv6 address
	IP6CIDR netip.Prefix // the NIC's IPv6 network; zero if none
	// NetworkID is the CloudStack network (UUID) the NIC is on.
	NetworkID string
	// VLAN is the VLAN the NIC's broadcasturi (or else isolationuri) names,
	// 0 if untagged or not a VLAN (vxlan://, pvlan://, …); see ParseVLAN.
	VLAN      int
	IsDefault bool
	// Created is when the VM was created; zero if unparsable.
	Created time.Time
}

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

// Eligible reports whether a VM in this state may get a new allocation:
// false for Destroyed, Expunging and Error, true for any other state
// (Running, Stopped, Starting, Migrating, …). ListPodNICs and Select return
// NICs of every state so that the reconciler decides: a Destroyed VM that
// already owns a prefix keeps it until it vanishes from the listing.
func Eligible(state string) bool {
	switch {
	case strings.EqualFold(state, "Destroyed"),
		strings.EqualFold(state, "Expunging"),
		strings.EqualFold(state, "Error"):
		return false
	}
	return true
}

// Select picks the NICs that qualify for a mapping entry, keeping their
// order. With vlan 0 (the entry has no vlan key) it picks each VM's default
// NIC (IsDefault), or, if none of the VM's NICs is flagged default, the
// VM's first NIC, as the old script took nic[0]. With vlan N it picks every
// NIC whose VLAN is N, default or not. It does not filter on VMState: see
// Eligible.
func Select(nics []NIC, vlan int) []NIC {
	var out []NIC
	if vlan != 0 {
		for _, n := range nics {
			if n.VLAN == vlan {
				out = append(out, n)
			}
		}
		return out
	}
	// NICs of one VM are adjacent in a listing, but do not rely on it.
	type pick struct {
		at      int // index in out
		defSeen bool
	}
	byVM := make(map[string]*pick)
	for _, n := range nics {
		p := byVM[n.VMID]
		switch {
		case p == nil:
			byVM[n.VMID] = &pick{at: len(out), defSeen: n.IsDefault}
			out = append(out, n)
		case n.IsDefault && !p.defSeen:
			out[p.at] = n
			p.defSeen = true
		}
	}
	return out
}
