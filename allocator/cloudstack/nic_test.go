package cloudstack

import (
	"net"
	"slices"
	"testing"
)

func TestParseVLAN(t *testing.T) {
	tests := []struct {
		uri  string
		vlan int
		ok   bool
	}{
		{"vlan://700", 700, true},
		{"700", 700, true},
		{"vlan://2701", 2701, true},
		{"VLAN://2701", 2701, true}, // scheme compared case-insensitively
		{" vlan://42 ", 42, true},
		{"vlan://1", 1, true},
		{"vlan://4094", 4094, true},
		{"untagged", 0, true},
		{"vlan://untagged", 0, true},
		{"Untagged", 0, true},
		// Not a VLAN.
		{"", 0, false},
		{"vlan://", 0, false},
		{"vlan://0", 0, false},
		{"vlan://4095", 0, false},
		{"4096", 0, false},
		{"vlan://-1", 0, false},
		{"vlan://+7", 0, false},
		{"vlan://07000", 0, false},
		{"vlan://700-800", 0, false},
		{"vxlan://5001", 0, false},
		{"pvlan://700-i800", 0, false},
		{"lswitch:3a4b", 0, false},
		{"vs://vswitch0", 0, false},
		{"Native", 0, false},
		{"vlan:700", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			vlan, ok := ParseVLAN(tt.uri)
			if vlan != tt.vlan || ok != tt.ok {
				t.Errorf("ParseVLAN(%q) = %d, %v; want %d, %v", tt.uri, vlan, ok, tt.vlan, tt.ok)
			}
		})
	}
}

func TestNICVLAN(t *testing.T) {
	tests := []struct {
		broadcast, isolation string
		want                 int
	}{
		{"vlan://700", "vlan://700", 700},
		{"vlan://700", "", 700},
		{"", "vlan://701", 701},      // broadcasturi empty: isolationuri
		{"vxlan://5001", "702", 702}, // broadcasturi not a VLAN: isolationuri
		{"vlan://untagged", "vlan://703", 0},
		{"vxlan://5001", "vxlan://5001", 0},
		{"", "", 0},
	}
	for _, tt := range tests {
		if got := nicVLAN(tt.broadcast, tt.isolation); got != tt.want {
			t.Errorf("nicVLAN(%q, %q) = %d, want %d", tt.broadcast, tt.isolation, got, tt.want)
		}
	}
}

func TestEligible(t *testing.T) {
	for state, want := range map[string]bool{
		"Running": true, "Stopped": true, "Starting": true, "Stopping": true,
		"Migrating": true, "Unknown": true, "Shutdown": true, "": true,
		"Destroyed": false, "Expunging": false, "Error": false, "destroyed": false,
	} {
		if got := Eligible(state); got != want {
			t.Errorf("Eligible(%q) = %v, want %v", state, got, want)
		}
	}
}

func TestSelect(t *testing.T) {
	nic := func(vm, id string, vlan int, def bool) NIC {
		return NIC{VMID: vm, NICID: id, VLAN: vlan, IsDefault: def, MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(len(id))}}
	}
	nics := []NIC{
		nic("a", "a0", 2701, true),
		nic("b", "b0", 2702, false), // b's default NIC is not its first
		nic("b", "b1", 2701, true),
		nic("b", "b2", 0, false),
		nic("c", "c0", 2702, false), // c has no default NIC: its first one
		nic("c", "c1", 2701, false),
		nic("d", "d0", 2703, true),
		nic("e", "e0", 2701, false), // e's NICs are not adjacent
		nic("a", "a1", 2702, false),
		nic("e", "e1", 2701, true),
	}
	tests := []struct {
		name string
		vlan int
		want []string
	}{
		{"default NICs", 0, []string{"a0", "b1", "c0", "d0", "e1"}},
		{"vlan 2701", 2701, []string{"a0", "b1", "c1", "e0", "e1"}},
		{"vlan 2702", 2702, []string{"b0", "c0", "a1"}},
		{"vlan 2703", 2703, []string{"d0"}},
		{"no such vlan", 999, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, n := range Select(nics, tt.vlan) {
				got = append(got, n.NICID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Select(vlan %d) = %v, want %v", tt.vlan, got, tt.want)
			}
		})
	}
	if got := Select(nil, 0); len(got) != 0 {
		t.Errorf("Select(nil) = %v", got)
	}
}
