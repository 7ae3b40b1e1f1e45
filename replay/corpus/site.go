package corpus

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// Pool is one pod's pool, as the cloudstack-pd config and Kea's subnet6
// both describe it.
type Pool struct {
	Name        string
	Prefix      netip.Prefix // the pod's /40
	PrefixLen   int          // each VM's prefix
	InterfaceID string       // what the relay puts in option 18
	Subnet      netip.Prefix // the VLAN's SLAAC subnet (Kea's subnet6)
	Router      netip.Addr   // the router's address on the VLAN: the relay's link-address
}

// VM is a client of the corpus.
type VM struct {
	Name string
	MAC  net.HardwareAddr
	// Pool is where its prefix is reserved; "" for no reservation.
	Pool   string
	Prefix netip.Prefix
	// Used says which captures it appears in.
	Used string
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// The site: two pods, each with its pool and VLAN, as in the old
// generator's config.
var (
	PodA = Pool{Name: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60, InterfaceID: "VLAN2701",
		Subnet: netip.MustParsePrefix("2001:db8:100::/64"), Router: netip.MustParseAddr("2001:db8:100::1")}
	PodB = Pool{Name: "pod-b", Prefix: netip.MustParsePrefix("2001:db8:300::/40"), PrefixLen: 56, InterfaceID: "VLAN2702",
		Subnet: netip.MustParsePrefix("2001:db8:101::/64"), Router: netip.MustParseAddr("2001:db8:101::1")}
	Pools = []Pool{PodA, PodB}
)

// The VMs. Every MAC with a reservation is reserved in both configs.
var (
	VMA = VM{Name: "vm-a", MAC: mustMAC("06:32:b2:00:04:79"), Pool: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200::/60"),
		Used: "juniper-relay: the whole life of a lease, and every relay variant"}
	VMB = VM{Name: "vm-b", MAC: mustMAC("06:51:34:00:00:5e"), Pool: "pod-b", Prefix: netip.MustParsePrefix("2001:db8:300:100::/56"),
		Used: "juniper-relay: the second pool (/56), a retransmitted Solicit, its MAC on the wrong VLAN"}
	VMC = VM{Name: "vm-c", MAC: mustMAC("06:32:b2:00:04:7a"), Pool: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200:10::/60"),
		Used: "juniper-relay: IA_NA with IA_PD, Decline, link-local link-address, malformed remote-id"}
	VMD = VM{Name: "vm-d", MAC: mustMAC("06:32:b2:00:04:7b"), Pool: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200:20::/60"),
		Used: "juniper-relay: behind two nested relays"}
	VME = VM{Name: "vm-e", MAC: mustMAC("06:32:b2:00:04:7c"), Pool: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200:30::/60"),
		Used: "tcpdump-any"}
	VMF = VM{Name: "vm-f", MAC: mustMAC("06:32:b2:00:04:7d"), Pool: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200:40::/60"),
		Used: "unrelayed-trunk"}
	// The client of ../shared/captures' dhcpv6-ia-pd, dhcpv6-ia-na and
	// dhcpv6-AFTR-Name-RFC6334 (one test client), replayed wrapped on VLAN2701.
	SharedPD = VM{Name: "shared-client", MAC: mustMAC("00:01:02:03:04:05"), Pool: "pod-a", Prefix: netip.MustParsePrefix("2001:db8:200:50::/60"),
		Used: "../shared/captures, wrapped on VLAN2701"}
	// The client of ../shared/captures' dhcpv6-rfc6355-duid-uuid: its
	// prefix is in pod-b, so on VLAN2701 it gets none.
	SharedUUID = VM{Name: "shared-uuid-client", MAC: mustMAC("48:5b:39:e7:14:84"), Pool: "pod-b", Prefix: netip.MustParsePrefix("2001:db8:300:200::/56"),
		Used: "../shared/captures dhcpv6-rfc6355-duid-uuid, wrapped on VLAN2701 (its pool is pod-b's)"}
	Unknown = VM{Name: "unknown", MAC: mustMAC("06:ff:ff:00:00:01"),
		Used: "juniper-relay: a MAC with no reservation"}
	VMs = []VM{VMA, VMB, VMC, VMD, VME, VMF, SharedPD, SharedUUID, Unknown}
)

// The network around the relay.
var (
	// RouterAddr is the MX's address the Relay-Forwards come from.
	RouterAddr = netip.MustParseAddr("2001:db8:ffff::1")
	// ServerAddr is the DHCPv6 server's address (the old Kea).
	ServerAddr = netip.MustParseAddr("2001:db8::100:69")
	// AccessSwitchAddr is the inner relay of the nested case.
	AccessSwitchAddr = netip.MustParseAddr("2001:db8:100::2")
	RouterMAC        = mustMAC("02:00:5e:00:53:01")
	ServerMAC        = mustMAC("02:00:5e:00:53:02")
	// OldServerDUID is the DUID of the Kea that answered at capture time:
	// the captured Requests, Renews, Releases and Declines name it.
	OldServerDUID = []byte{0, 1, 0, 1, 0x2b, 0x3c, 0x4d, 0x5e, 0x02, 0x00, 0x5e, 0x00, 0x53, 0x02}
)

// Lifetimes and timers of both configs (the old Kea setup's).
const (
	Preferred = 86400
	Valid     = 172800
	T1        = 1000
	T2        = 2000
)

// Config is the cloudstack-pd config of the corpus. Tests copy it with
// their own state and listen address.
func Config() []byte {
	var b bytes.Buffer
	b.WriteString(header("#"))
	b.WriteString("# The cloudstack-pd side of the replay corpus: the pools of corpus.kea.conf.\n")
	b.WriteString("# A test adopts corpus.kea.conf's reservations into a store (allocator.Import,\n# what import-kea runs) and replays the captures on it.\nmapping:\n")
	for _, p := range Pools {
		fmt.Fprintf(&b, "  %s:\n    pool: %s\n    prefix-len: %d\n    interface-id: %s\n    ip6-cidr: %s\n",
			p.Name, p.Prefix, p.PrefixLen, p.InterfaceID, p.Subnet)
	}
	fmt.Fprintf(&b, "server:\n  listen: [\"[::1]:10547\"]\n  mac-sources: [remote-id]\n  rapid-commit: false\n")
	// vm-d is behind an access switch that relays inside the MX: two
	// levels the site's own relays add.
	b.WriteString("  relay-depth: 2\n")
	fmt.Fprintf(&b, "  preferred-lifetime: %d\n  valid-lifetime: %d\n  renew-timer: %d\n  rebind-timer: %d\n", Preferred, Valid, T1, T2)
	b.WriteString("state: ./replay-state.db\n")
	return b.Bytes()
}

func header(comment string) string {
	return comment + " Generated by replay/corpus (go test ./replay/corpus -run TestCorpus -update).\n" +
		comment + " Do not edit: change the generator.\n"
}

// KeaConfig is the Kea 2.2 config of the corpus: the reservations of the
// VMs, for import-kea and for kea-dhcp6 itself (on lo/::1, leases and
// server DUID in memory only). Run it with kea-dhcp6 -c FILE -p PORT.
func KeaConfig() ([]byte, error) {
	type reservation struct {
		HWAddress string   `json:"hw-address"`
		Prefixes  []string `json:"prefixes"`
	}
	type subnet struct {
		ID                    int           `json:"id"`
		Subnet                string        `json:"subnet"`
		InterfaceID           string        `json:"interface-id"`
		ReservationsOutOfPool bool          `json:"reservations-out-of-pool"`
		Reservations          []reservation `json:"reservations"`
	}
	var subnets []subnet
	for i, p := range Pools {
		s := subnet{ID: i + 1, Subnet: p.Subnet.String(), InterfaceID: p.InterfaceID, ReservationsOutOfPool: true}
		for _, vm := range VMs {
			if vm.Pool == p.Name {
				s.Reservations = append(s.Reservations, reservation{HWAddress: vm.MAC.String(), Prefixes: []string{vm.Prefix.String()}})
			}
		}
		subnets = append(subnets, s)
	}
	cfg := map[string]any{
		"Dhcp6": map[string]any{
			"interfaces-config":            map[string]any{"interfaces": []string{"lo/::1"}},
			"lease-database":               map[string]any{"type": "memfile", "persist": false},
			"server-id":                    map[string]any{"type": "LLT", "persist": false},
			"mac-sources":                  []string{"remote-id"},
			"host-reservation-identifiers": []string{"hw-address"},
			"preferred-lifetime":           Preferred,
			"valid-lifetime":               Valid,
			"renew-timer":                  T1,
			"rebind-timer":                 T2,
			"subnet6":                      subnets,
			"loggers": []map[string]any{{
				"name": "kea-dhcp6", "output_options": []map[string]any{{"output": "stdout"}}, "severity": "INFO",
			}},
		},
	}
	body, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	out := []byte(header("//") + "// The Kea side of the replay corpus: kea-dhcp6 serves it on lo/::1 next to\n" +
		"// cloudstack-pd for `replay --compare`, and import-kea adopts its reservations.\n")
	return append(append(out, body...), '\n'), nil
}

// reservedMACs lists the MACs with a reservation, for the README.
func reservedMACs() []VM {
	return slices.DeleteFunc(slices.Clone(VMs), func(v VM) bool { return v.Pool == "" })
}
