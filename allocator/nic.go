package allocator

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"time"
)

// NIC is one NIC of one VM as the inventory (CloudStack) lists it, with the
// VM's fields repeated: the unit the table gives a prefix to. Fields the
// inventory left empty (or sent in a form it cannot parse) are zero.
type NIC struct {
	VMID    string
	VMName  string
	VMState string // e.g. Running, Stopped, Destroyed; see Eligible
	NICID   string
	MAC     net.HardwareAddr
	IP6     netip.Addr   // zero if the NIC has no IPv6 address
	IP6CIDR netip.Prefix // the NIC's IPv6 network; zero if none
	// NetworkID is the network (a CloudStack UUID) the NIC is on.
	NetworkID string
	// VLAN is the VLAN the NIC is on, 0 if untagged or not a VLAN
	// (vxlan://, pvlan://, …).
	VLAN      int
	IsDefault bool
	// Created is when the VM was created; zero if unknown.
	Created time.Time
}

// Inventory lists the NICs of a pod. *cloudstack.Client implements it.
//
// ListPodNICs returns either the complete listing of the pod (every NIC of
// every VM, whatever the VM's state, in listing order) or an error: a
// partial listing must never be returned, since Sync marks every NIC
// missing from a listing gone. An empty listing with a nil error means the
// pod has no VMs.
type Inventory interface {
	ListPodNICs(ctx context.Context, pod string) ([]NIC, error)
}

// Eligible reports whether a VM in this state may get a new allocation:
// false for Destroyed, Expunging and Error, true for any other state
// (Running, Stopped, Starting, Migrating, …). A listed VM that already owns
// a prefix keeps it whatever its state, until it vanishes from the listing.
func Eligible(state string) bool {
	switch {
	case strings.EqualFold(state, "Destroyed"),
		strings.EqualFold(state, "Expunging"),
		strings.EqualFold(state, "Error"):
		return false
	}
	return true
}

// SelectNICs picks the NICs that qualify for a pool, keeping their order.
// With vlan 0 (the mapping entry has no vlan key) it picks each VM's
// default NIC (IsDefault), or, if none of the VM's NICs is flagged default,
// the VM's first NIC, as the old generator script took nic[0]. With vlan N
// it picks every NIC whose VLAN is N, default or not. It does not filter on
// VMState: see Eligible.
func SelectNICs(nics []NIC, vlan int) []NIC {
	if len(nics) == 0 {
		return nil
	}
	// Most VMs have one NIC: room for all saves growing a list of
	// 100,000 NICs step by step.
	out := make([]NIC, 0, len(nics))
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
	byVM := make(map[string]pick, len(nics))
	for _, n := range nics {
		p, seen := byVM[n.VMID]
		switch {
		case !seen:
			byVM[n.VMID] = pick{at: len(out), defSeen: n.IsDefault}
			out = append(out, n)
		case n.IsDefault && !p.defSeen:
			out[p.at] = n
			p.defSeen = true
			byVM[n.VMID] = p
		}
	}
	return out
}
