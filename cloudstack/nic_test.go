package cloudstack

import "testing"

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
