package allocator

import (
	"net"
	"slices"
	"testing"
)

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
			for _, n := range SelectNICs(nics, tt.vlan) {
				got = append(got, n.NICID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("SelectNICs(vlan %d) = %v, want %v", tt.vlan, got, tt.want)
			}
		})
	}
	if got := SelectNICs(nil, 0); len(got) != 0 {
		t.Errorf("SelectNICs(nil) = %v", got)
	}
}
