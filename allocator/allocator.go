package allocator

import (
	"net"
	"net/netip"
	"time"
)

// Pool is one mapping entry of the config: the pool of one pod or VLAN.
type Pool struct {
	// Name is the mapping key (the CloudStack pod UUID).
	Name string
	// Prefix is the pool prefix, e.g. 2001:db8:200::/40.
	Prefix netip.Prefix
	// PrefixLen is the length of each delegated prefix, e.g. 60.
	PrefixLen int
	// InterfaceID is the relay interface-id (option 18) that names this
	// pool's VLAN, e.g. "VLAN2701".
	InterfaceID string
	// IP6CIDR is the SLAAC subnet of the VMs (the Kea subnet6 "subnet").
	IP6CIDR netip.Prefix
	// VLAN selects the NICs of the pod that get a prefix of this pool
	// (see SelectNICs): 0 each VM's default NIC, N every NIC on VLAN N.
	VLAN int
}

// State is the life-cycle state of an allocation.
type State string

// The allocation states.
const (
	// StateActive: the NIC exists; its prefix is served.
	StateActive State = "active"
	// StateGone: the NIC vanished from CloudStack; it keeps its prefix (and
	// is still served) until release-after has passed.
	StateGone State = "gone"
	// StateQuarantined: the prefix was released and waits out the
	// quarantine before reuse; it is not served to anyone.
	StateQuarantined State = "quarantined"
)

// Allocation is one MAC's prefix in one pool.
type Allocation struct {
	Pool   string           `json:"pool"`
	MAC    net.HardwareAddr `json:"-"`
	Prefix netip.Prefix     `json:"prefix"`
	State  State            `json:"state"`
	// Since is when the allocation was made (or adopted by import-kea).
	Since time.Time `json:"since"`
	// GoneAt is when the NIC was first missing from a complete listing
	// (zero unless State is gone or quarantined).
	GoneAt time.Time `json:"gone-at,omitzero"`
	// QuarantinedAt is when the prefix was released into quarantine.
	QuarantinedAt time.Time `json:"quarantined-at,omitzero"`
	// What CloudStack says of the NIC (empty for imported reservations
	// until the first sync).
	VMID   string     `json:"vm-id,omitempty"`
	VMName string     `json:"vm-name,omitempty"`
	NICID  string     `json:"nic-id,omitempty"`
	IP6    netip.Addr `json:"ip6,omitzero"`
	// IP6CIDR is the pool's ip6-cidr (the SLAAC subnet of the VM's
	// network, Kea's subnet6 "subnet") when the allocation was last
	// written; zero if the pool had none, and in records written before
	// it was kept.
	IP6CIDR netip.Prefix `json:"ip6-cidr,omitzero"`
	// Source says who made the allocation: "import-kea" or "sync".
	Source string `json:"source,omitempty"`
}

// Served reports whether the allocation's prefix is handed out to its MAC.
func (a *Allocation) Served() bool { return a.State == StateActive || a.State == StateGone }
