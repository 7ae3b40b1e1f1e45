package kea

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/cloudstack-pd/cloudstack-pd/relay"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

var updateExport = flag.Bool("update-export", false, "rewrite the golden files in testdata/kea-export")

const exportdata = "../testdata/kea-export"

func mac(s string) net.HardwareAddr {
	m, err := DecodeHex(s)
	if err != nil {
		panic(err)
	}
	return m
}

func res(m, prefix, ip string) ExportReservation {
	r := ExportReservation{MAC: mac(m), Prefix: netip.MustParsePrefix(prefix)}
	if ip != "" {
		r.IP6 = netip.MustParseAddr(ip)
	}
	return r
}

// exportCases are the golden shapes: a source config in testdata/kea-export
// and the table exported into it.
type exportTestCase struct {
	name    string
	subnets []ExportSubnet
	opts    ExportOptions
	// warnings expected, each a substring of one warning, in order.
	warnings []string
	info     []ExportedSubnet
}

var exportCases = []exportTestCase{
	{
		name: "minimal",
		subnets: []ExportSubnet{{
			Name: "77828509-4043-40bc-8756-7745c8ec7a99", Subnet: netip.MustParsePrefix("2001:db8:100::/64"), InterfaceID: "VLAN2701",
			Pool: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60,
			Reservations: []ExportReservation{
				res("06:a5:de:00:04:47", "2001:db8:200:10::/60", ""),
				res("06:32:b2:00:04:79", "2001:db8:200::/60", "2001:db8:100:0:432:b2ff:fe00:479"),
				res("1e:00:91:00:00:0c", "2001:db8:2ff:fff0::/60", "2001:db8:100:0:1c00:91ff:fe00:c"),
			},
		}},
		opts:     ExportOptions{MACSources: []string{"remote-id", "client-link-addr-option"}},
		warnings: []string{`Dhcp6.subnet6: no entry of the source is reused, so the ids are numbered anew in mapping-key order`},
		info: []ExportedSubnet{{Name: "77828509-4043-40bc-8756-7745c8ec7a99", ID: 1, IDFrom: "new", Subnet: netip.MustParsePrefix("2001:db8:100::/64"),
			InterfaceID: "VLAN2701", Reservations: 3, Added: 3}},
	},
	{
		// Global reservations-in-subnet: false: every exported entry sets
		// its own true. The kept shared network loses reservation-mode.
		name: "inherit-off",
		subnets: []ExportSubnet{
			{
				Name: "pod-a", Subnet: netip.MustParsePrefix("2001:db8:100::/64"), InterfaceID: "VLAN2701",
				Pool: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60,
				Reservations: []ExportReservation{res("06:32:b2:00:04:79", "2001:db8:200::/60", "")},
			},
			{
				Name: "pod-b", Subnet: netip.MustParsePrefix("2001:db8:101::/64"), InterfaceID: "VLAN2702",
				Pool: netip.MustParsePrefix("2001:db8:300::/40"), PrefixLen: 56,
				Reservations: []ExportReservation{res("06:51:34:00:00:5e", "2001:db8:300:100::/56", "")},
			},
		},
		opts: ExportOptions{MACSources: []string{"remote-id"}},
		warnings: []string{
			`Dhcp6.shared-networks[0].reservation-mode global replaced by reservations-global: true, reservations-in-subnet: false, as Kea 2.2 reads it`,
			`Dhcp6.shared-networks[0].subnet6[0].reservation-mode all replaced by reservations-global: false, reservations-in-subnet: true, reservations-out-of-pool: false, as Kea 2.2 reads it`,
		},
		info: []ExportedSubnet{
			{Name: "pod-a", ID: 1, IDFrom: "source", Subnet: netip.MustParsePrefix("2001:db8:100::/64"), InterfaceID: "VLAN2701",
				Source: "Dhcp6.subnet6[0]", Reservations: 1},
			{Name: "pod-b", ID: 2, IDFrom: "new", Subnet: netip.MustParsePrefix("2001:db8:101::/64"), InterfaceID: "VLAN2702",
				Reservations: 1, Added: 1},
		},
	},
	{
		// Global reservation-mode "disabled", no subnet6: dropped,
		// translated, and overridden by every exported entry.
		name: "mode-disabled",
		subnets: []ExportSubnet{
			{
				Name: "pod-b", Subnet: netip.MustParsePrefix("2001:db8:101::/64"), InterfaceID: "VLAN2702",
				Pool: netip.MustParsePrefix("2001:db8:300::/40"), PrefixLen: 56,
				Reservations: []ExportReservation{res("06:51:34:00:00:5e", "2001:db8:300:100::/56", "")},
			},
			{
				Name: "pod-a", Subnet: netip.MustParsePrefix("2001:db8:100::/64"), InterfaceID: "VLAN2701",
				Pool: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60,
				Reservations: []ExportReservation{res("06:32:b2:00:04:79", "2001:db8:200::/60", "2001:db8:100:0:432:b2ff:fe00:479")},
			},
		},
		opts: ExportOptions{MACSources: []string{"remote-id"}},
		warnings: []string{
			`Dhcp6.subnet6: no entry of the source is reused`,
			`Dhcp6.reservation-mode disabled replaced by reservations-global: false, reservations-in-subnet: false, as Kea 2.2 reads it`,
		},
		info: []ExportedSubnet{
			{Name: "pod-a", ID: 1, IDFrom: "new", Subnet: netip.MustParsePrefix("2001:db8:100::/64"), InterfaceID: "VLAN2701", Reservations: 1, Added: 1},
			{Name: "pod-b", ID: 2, IDFrom: "new", Subnet: netip.MustParsePrefix("2001:db8:101::/64"), InterfaceID: "VLAN2702", Reservations: 1, Added: 1},
		},
	},
	{
		name: "shared",
		subnets: []ExportSubnet{
			{
				Name: "pod-c", Subnet: netip.MustParsePrefix("2001:db8:102::/64"), InterfaceID: "VLAN2703",
				Pool: netip.MustParsePrefix("2001:db8:400::/40"), PrefixLen: 60,
			},
			{
				Name: "pod-b", Subnet: netip.MustParsePrefix("2001:db8:101::/64"), InterfaceID: "VLAN2702",
				Pool: netip.MustParsePrefix("2001:db8:300::/40"), PrefixLen: 56,
				Reservations: []ExportReservation{
					res("06:51:34:00:00:5e", "2001:db8:300:100::/56", ""),
					// An InfiniBand-sized hardware address: 20 bytes, Kea's most.
					res(strings.Repeat("a0:", 19)+"01", "2001:db8:300::/56", ""),
				},
			},
			{
				Name: "pod-a", Subnet: netip.MustParsePrefix("2001:db8:100::/64"), InterfaceID: "VLAN2701",
				Pool: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60,
				Reservations: []ExportReservation{
					res("06:32:b2:00:04:81", "2001:db8:200:20::/60", "2001:db8:100:0:432:b2ff:fe00:479"),
					res("06:32:b2:00:04:80", "2001:db8:200:10::/60", "2001:db8:555::1"),
					res("06:32:b2:00:04:79", "2001:db8:200::/60", "2001:db8:100:0:432:b2ff:fe00:479"),
				},
			},
		},
		opts: ExportOptions{MACSources: []string{"remote-id"}},
		warnings: []string{
			`Dhcp6.subnet6[0]: interface lo dropped`,
			`Dhcp6.subnet6[0]: reservations-in-subnet false set to true`,
			`Dhcp6.subnet6[2]: interface-id "VLAN-OLD" replaced by mapping.pod-b's "VLAN2702"`,
			`Dhcp6.subnet6[2]: reservation-mode out-of-pool replaced by reservations-out-of-pool: true, reservations-in-subnet: true, reservations-global: false`,
			`mapping.pod-a: reservation of 06:32:b2:00:04:80: ip6 2001:db8:555::1 is not inside ip6-cidr 2001:db8:100::/64`,
			`mapping.pod-a: reservation of 06:32:b2:00:04:81: ip6 2001:db8:100:0:432:b2ff:fe00:479 is also 06:32:b2:00:04:79's`,
			`Dhcp6.subnet6[1]: subnet 2001:db8:1ff::/64 is no mapping's ip6-cidr: left out with its 0 reservation(s)`,
			`Dhcp6.host-reservation-identifiers: hw-address added first`,
			`Dhcp6.reservation-mode all replaced by reservations-global: false, reservations-in-subnet: true, reservations-out-of-pool: false, as Kea 2.2 reads it`,
		},
		info: []ExportedSubnet{
			{Name: "pod-a", ID: 2, IDFrom: "kea-auto", Subnet: netip.MustParsePrefix("2001:db8:100::/64"), InterfaceID: "VLAN2701",
				Source: "Dhcp6.subnet6[0]", Reservations: 3, Added: 2, Removed: 2},
			{Name: "pod-b", ID: 4, IDFrom: "kea-auto", Subnet: netip.MustParsePrefix("2001:db8:101::/64"), InterfaceID: "VLAN2702",
				Source: "Dhcp6.subnet6[2]", Reservations: 2, Added: 2},
			{Name: "pod-c", ID: 3, IDFrom: "new", Subnet: netip.MustParsePrefix("2001:db8:102::/64"), InterfaceID: "VLAN2703"},
		},
	},
}

// exportCase returns the exportCases entry of that name.
func exportCase(name string) *exportTestCase {
	for i := range exportCases {
		if exportCases[i].name == name {
			return &exportCases[i]
		}
	}
	panic("no export case " + name)
}

func TestExportGolden(t *testing.T) {
	for _, tc := range exportCases {
		t.Run(tc.name, func(t *testing.T) {
			src, err := Load(filepath.Join(exportdata, tc.name+".kea.conf"))
			if err != nil {
				t.Fatal(err)
			}
			before, _ := json.Marshal(src.Raw)
			got, err := Export(src, tc.subnets, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if after, _ := json.Marshal(src.Raw); !bytes.Equal(before, after) {
				t.Error("Export modified the source's Raw")
			}
			golden := filepath.Join(exportdata, tc.name+".golden.json")
			testenv.Golden(t, golden, got.Data, *updateExport, "update-export")
			if len(got.Warnings) != len(tc.warnings) {
				t.Errorf("%d warnings, want %d:\n%s", len(got.Warnings), len(tc.warnings), strings.Join(got.Warnings, "\n"))
			}
			for i, w := range tc.warnings {
				if i < len(got.Warnings) && !strings.Contains(got.Warnings[i], w) {
					t.Errorf("warning %d = %q, want it to contain %q", i, got.Warnings[i], w)
				}
			}
			if !slices.Equal(got.Subnets, tc.info) {
				t.Errorf("Subnets:\n got %+v\nwant %+v", got.Subnets, tc.info)
			}
			// What was written reads back as written.
			back, err := Parse("export", got.Data)
			if err != nil {
				t.Fatalf("the export does not parse: %v", err)
			}
			for i, s := range back.Subnets {
				if i < len(tc.info) && (s.ID != tc.info[i].ID || s.InterfaceID != tc.info[i].InterfaceID || len(s.Reservations) != tc.info[i].Reservations) {
					t.Errorf("%s: id %d interface-id %q %d reservations, want %+v", s.Path, s.ID, s.InterfaceID, len(s.Reservations), tc.info[i])
				}
			}
		})
	}
}

// TestExportKeaAccepts runs kea-dhcp6 -t on every golden export and on the
// source configs they came from.
func TestExportKeaAccepts(t *testing.T) {
	kea := testenv.Tool(t, "kea-dhcp6")
	for _, tc := range exportCases {
		for _, f := range []string{tc.name + ".kea.conf", tc.name + ".golden.json"} {
			data, err := os.ReadFile(filepath.Join(exportdata, f))
			if err != nil {
				t.Fatal(err)
			}
			if ok, out := keaCheck(t, kea, string(data)); !ok {
				t.Errorf("kea-dhcp6 -t refuses %s:\n%s", f, out)
			}
		}
	}
}

var keaHostLog = regexp.MustCompile(`hwaddr=([0-9A-Fa-f]+) ipv6_subnet_id=([0-9]+)`)

// keaSubnetIDs runs kea-dhcp6 -d -t on path and returns the subnet id Kea
// gave the reservation of each hw-address, from its debug log
// (HOSTS_CFG_ADD_HOST … hwaddr=0632B2000479 ipv6_subnet_id=2).
func keaSubnetIDs(t *testing.T, kea, path string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(kea, "-d", "-t", path)
	cmd.Env = testenv.KeaEnv(dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kea-dhcp6 -d -t %s: %v\n%s", path, err, out)
	}
	ids := map[string]string{}
	for _, m := range keaHostLog.FindAllStringSubmatch(string(out), -1) {
		ids[strings.ToLower(m[1])] = m[2]
	}
	if len(ids) == 0 {
		t.Fatalf("kea-dhcp6 -d -t %s logged no host reservation:\n%s", path, out)
	}
	return ids
}

// TestExportKeepsKeaIDs checks, against Kea itself, that every reservation
// stays in a subnet of the id Kea gave it before the export: Kea's leases
// are keyed by subnet id. The sources have id-less subnets, which Kea
// numbers itself.
func TestExportKeepsKeaIDs(t *testing.T) {
	kea := testenv.Tool(t, "kea-dhcp6")
	for _, files := range [][2]string{
		{"shared.kea.conf", "shared.golden.json"},
		{"old-script/kea-dhcp6.conf", "old-script/export.golden.json"},
	} {
		before := keaSubnetIDs(t, kea, filepath.Join(exportdata, files[0]))
		after := keaSubnetIDs(t, kea, filepath.Join(exportdata, files[1]))
		kept := 0
		for hw, id := range after {
			if was, ok := before[hw]; ok {
				kept++
				if was != id {
					t.Errorf("%s: hw-address %s was in Kea's subnet %s, is in subnet %s after the export", files[1], hw, was, id)
				}
			}
		}
		if kept == 0 {
			t.Errorf("%s: no reservation in common with %s", files[1], files[0])
		}
	}
}

// TestExportDeterministic exports the same table given in other orders,
// many times over (Go randomises map order): the bytes never change.
// Feeding an export back in as the source gives it back unchanged.
func TestExportDeterministic(t *testing.T) {
	tc := exportCase("shared")
	src, err := Load(filepath.Join(exportdata, tc.name+".kea.conf"))
	if err != nil {
		t.Fatal(err)
	}
	first, err := Export(src, tc.subnets, tc.opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		subnets := slices.Clone(tc.subnets)
		if i%2 == 1 {
			slices.Reverse(subnets)
			for j := range subnets {
				subnets[j].Reservations = slices.Clone(subnets[j].Reservations)
				slices.Reverse(subnets[j].Reservations)
			}
		}
		got, err := Export(src, subnets, tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Data, first.Data) {
			t.Fatalf("run %d differs:\n%s\nfirst:\n%s", i, got.Data, first.Data)
		}
	}
	again, err := Parse("export", first.Data)
	if err != nil {
		t.Fatal(err)
	}
	second, err := Export(again, tc.subnets, tc.opts)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(second.Data, first.Data) {
		t.Errorf("exporting into the export changes it:\n%s", second.Data)
	}
	for _, s := range second.Subnets {
		if s.IDFrom != "source" {
			t.Errorf("%s: id %d from %s, want every id kept from the source", s.Name, s.ID, s.IDFrom)
		}
	}
}

func TestExportRefuses(t *testing.T) {
	const base = `{"Dhcp6": {"shared-networks": [{"name": "office", "interface-id": "OFFICE",
	  "subnet6": [{"id": 7, "subnet": "2001:db8:f00::/64"}]}],
	  "subnet6": [{"id": 7, "subnet": "2001:db8:1ff::/64", "interface-id": "VLAN2799"}]}}`
	good := func() []ExportSubnet {
		return []ExportSubnet{
			{Name: "pod-a", Subnet: netip.MustParsePrefix("2001:db8:100::/64"), InterfaceID: "VLAN2701",
				Pool: netip.MustParsePrefix("2001:db8:200::/40"), PrefixLen: 60,
				Reservations: []ExportReservation{res("06:00:00:00:00:01", "2001:db8:200::/60", "")}},
			{Name: "pod-b", Subnet: netip.MustParsePrefix("2001:db8:101::/64"), InterfaceID: "VLAN2702",
				Pool: netip.MustParsePrefix("2001:db8:300::/40"), PrefixLen: 60,
				Reservations: []ExportReservation{res("06:00:00:00:00:02", "2001:db8:300::/60", "")}},
		}
	}
	opts := ExportOptions{MACSources: []string{"remote-id"}}
	for _, tc := range []struct {
		name   string
		source string
		change func(s []ExportSubnet, o *ExportOptions)
		// want lists "path: message" substrings, one per problem.
		want []string
	}{
		{name: "missing ip6-cidr", change: func(s []ExportSubnet, _ *ExportOptions) { s[1].Subnet = netip.Prefix{} },
			want: []string{"mapping.pod-b.ip6-cidr: missing"}},
		{name: "empty interface-id", change: func(s []ExportSubnet, _ *ExportOptions) { s[0].InterfaceID = "" },
			want: []string{"mapping.pod-a.interface-id: empty"}},
		{name: "duplicate interface-id", change: func(s []ExportSubnet, _ *ExportOptions) { s[1].InterfaceID = "VLAN2701" },
			want: []string{`mapping.pod-b.interface-id: "VLAN2701": also the interface-id of mapping.pod-a`}},
		{name: "interface-id of a kept shared network", change: func(s []ExportSubnet, _ *ExportOptions) { s[0].InterfaceID = "OFFICE" },
			want: []string{`mapping.pod-a.interface-id: "OFFICE": also the interface-id of Dhcp6.shared-networks[0].subnet6[0]`}},
		{name: "overlapping subnets", change: func(s []ExportSubnet, _ *ExportOptions) { s[1].Subnet = netip.MustParsePrefix("2001:db8:100::/56") },
			want: []string{`mapping.pod-b.ip6-cidr: "2001:db8:100::/56": overlaps mapping.pod-a.ip6-cidr (2001:db8:100::/64)`}},
		{name: "overlapping a kept shared network", change: func(s []ExportSubnet, _ *ExportOptions) { s[0].Subnet = netip.MustParsePrefix("2001:db8:f00::/64") },
			want: []string{`mapping.pod-a.ip6-cidr: "2001:db8:f00::/64": overlaps Dhcp6.shared-networks[0].subnet6[0]`}},
		{name: "prefix outside its pool", change: func(s []ExportSubnet, _ *ExportOptions) {
			s[0].Reservations = append(s[0].Reservations, res("06:00:00:00:00:03", "2001:db8:300:10::/60", ""))
		}, want: []string{`mapping.pod-a: reservation of 06:00:00:00:00:03: "2001:db8:300:10::/60": not inside pool 2001:db8:200::/40`}},
		{name: "prefix of the wrong length", change: func(s []ExportSubnet, _ *ExportOptions) {
			s[0].Reservations = append(s[0].Reservations, res("06:00:00:00:00:03", "2001:db8:200:100::/56", ""))
		}, want: []string{`mapping.pod-a: reservation of 06:00:00:00:00:03: "2001:db8:200:100::/56": a /56, the pool delegates /60`}},
		{name: "misaligned prefix", change: func(s []ExportSubnet, _ *ExportOptions) {
			s[0].Reservations = append(s[0].Reservations, res("06:00:00:00:00:03", "2001:db8:200:18::/60", ""))
		}, want: []string{`mapping.pod-a: reservation of 06:00:00:00:00:03: "2001:db8:200:18::/60": misaligned: host bits set (the /60 is 2001:db8:200:10::/60)`}},
		{name: "MAC twice", change: func(s []ExportSubnet, _ *ExportOptions) {
			s[1].Reservations = append(s[1].Reservations, res("06:00:00:00:00:01", "2001:db8:300:10::/60", ""))
		}, want: []string{`mapping.pod-b: reservation of 06:00:00:00:00:01: "06:00:00:00:00:01": MAC also reserved in mapping.pod-a`}},
		{name: "prefix twice", change: func(s []ExportSubnet, _ *ExportOptions) {
			s[0].Reservations = append(s[0].Reservations, res("06:00:00:00:00:03", "2001:db8:200::/60", ""))
		}, want: []string{`mapping.pod-a: reservation of 06:00:00:00:00:03: "2001:db8:200::/60": prefix also reserved for 06:00:00:00:00:01`}},
		{name: "subnet id twice", change: func(s []ExportSubnet, _ *ExportOptions) { s[0].Subnet = netip.MustParsePrefix("2001:db8:1ff::/64") },
			want: []string{"Dhcp6.subnet6[0].id: 7: also the id of Dhcp6.shared-networks[0].subnet6[0]"}},
		{name: "no mac-sources", change: func(_ []ExportSubnet, o *ExportOptions) { o.MACSources = nil },
			want: []string{"server.mac-sources: empty"}},
		{name: "every problem at once", change: func(s []ExportSubnet, _ *ExportOptions) {
			s[0].Subnet, s[1].InterfaceID = netip.Prefix{}, ""
			s[1].Reservations[0].Prefix = netip.MustParsePrefix("2001:db8:999::/60")
		}, want: []string{"mapping.pod-a.ip6-cidr: missing", "mapping.pod-b.interface-id: empty", "mapping.pod-b: reservation of 06:00:00:00:00:02"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := Parse("src.conf", []byte(base))
			if err != nil {
				t.Fatal(err)
			}
			s, o := good(), opts
			tc.change(s, &o)
			got, err := Export(src, s, o)
			var ee *ExportError
			if !errors.As(err, &ee) {
				t.Fatalf("Export = %v, %v; want an *ExportError", got, err)
			}
			if got != nil {
				t.Error("a result beside the error")
			}
			if len(ee.Problems) != len(tc.want) {
				t.Errorf("%d problems, want %d:\n%v", len(ee.Problems), len(tc.want), err)
			}
			for i, w := range tc.want {
				if i < len(ee.Problems) && !strings.Contains(ee.Problems[i].String(), w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, ee.Problems[i], w)
				}
			}
			if !strings.HasPrefix(err.Error(), "kea export from src.conf refused: ") {
				t.Errorf("error %q", err)
			}
		})
	}
	// The base itself exports.
	src, _ := Parse("src.conf", []byte(base))
	if _, err := Export(src, good(), opts); err != nil {
		t.Errorf("base: %v", err)
	}
}

// FuzzExport exports a fixed table into arbitrary Kea configs. Export must
// not panic; what it writes must parse, and exporting into its own output
// must give the same bytes (the ids, once written, are kept).
func FuzzExport(f *testing.F) {
	// The golden sources, the old generator's output, a hand-edited config.
	for _, name := range []string{
		filepath.Join(exportdata, "minimal.kea.conf"),
		filepath.Join(exportdata, "shared.kea.conf"),
		filepath.Join(exportdata, "old-script", "kea-dhcp6.conf"),
		filepath.Join(testdata, "old-generator-output.json"),
		filepath.Join(testdata, "commented.conf"),
	} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	// A subnet of the table inside a shared network: refused (overlap).
	f.Add([]byte(`{"Dhcp6": {"shared-networks": [{"subnet6": [{"subnet": "2001:db8:100::/64"}]}]}}`))
	// Explicit ids that collide with the ones Kea would number.
	f.Add([]byte(`{"Dhcp6": {"subnet6": [{"subnet": "2001:db8:1::/64"}, {"id": 1, "subnet": "2001:db8:101::/64"}]}}`))
	tc := exportCase("shared")
	f.Fuzz(func(t *testing.T, data []byte) {
		src, err := Parse("fuzz.conf", data)
		if err != nil {
			return
		}
		first, err := Export(src, tc.subnets, tc.opts)
		if err != nil {
			var ee *ExportError
			if !errors.As(err, &ee) || len(ee.Problems) == 0 {
				t.Fatalf("error without problems: %v", err)
			}
			return
		}
		again, err := Parse("export", first.Data)
		if err != nil {
			t.Fatalf("the export does not parse: %v\n%s", err, first.Data)
		}
		second, err := Export(again, tc.subnets, tc.opts)
		if err != nil {
			t.Fatalf("exporting into the export: %v\n%s", err, first.Data)
		}
		if !bytes.Equal(second.Data, first.Data) {
			t.Fatalf("exporting into the export changes it:\n%s\nfirst:\n%s", second.Data, first.Data)
		}
	})
}

// keaAdvertised starts kea-dhcp6 on config (a file listening on lo/::1),
// plays a Junos relay (interface-id, remote-id with the MAC, a global
// link-address) sending a Solicit for an IA_PD, and returns the prefixes of
// Kea's Advertise, "" when it has none. It waits up to 15 s for Kea.
func keaAdvertised(t *testing.T, kea, config, iid string, link netip.Addr, m net.HardwareAddr) string {
	t.Helper()
	dir := t.TempDir()
	pc, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		testenv.IPv6Loopback(t)
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	cmd := exec.Command(kea, "-c", config, "-p", strconv.Itoa(port))
	cmd.Env = testenv.KeaEnv(dir)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	conn, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	srv := netip.AddrPortFrom(netip.IPv6Loopback(), uint16(port))
	fwd := relay.Forward{LinkAddr: link, PeerAddr: relay.EUI64LinkLocal(m), InterfaceID: []byte(iid),
		RemoteID: relay.JuniperRemoteID(m), HasSourcePort: true}
	buf := make([]byte, 65535)
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		sol, err := dhcpv6.NewMessage(dhcpv6.WithClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: m}),
			dhcpv6.WithIAPD([4]byte{0, 0, 0, 1}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.WriteToUDPAddrPort(relay.Encapsulate(sol.ToBytes(), fwd), srv); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, _, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			continue // Kea not up yet, or the port unreachable
		}
		outer, err := dhcpv6.FromBytes(buf[:n])
		if err != nil {
			t.Fatalf("Kea's answer does not decode: %v", err)
		}
		adv, err := outer.GetInnerMessage()
		if err != nil || adv.TransactionID != sol.TransactionID {
			continue
		}
		var got []string
		for _, ia := range adv.Options.IAPD() {
			for _, p := range ia.Options.Prefixes() {
				if p.ValidLifetime > 0 && p.Prefix != nil {
					got = append(got, p.Prefix.String())
				}
			}
		}
		return strings.Join(got, " ")
	}
	t.Fatalf("kea-dhcp6 -c %s does not answer within 15 s:\n%s", config, log.String())
	return ""
}

// TestExportReservationsServedByKea serves the exports of templates whose
// global settings switch reservations off (reservations-in-subnet: false,
// reservation-mode: disabled) with Kea itself: the reservations count.
// Without the entry's own reservations-in-subnet, Kea would ignore them.
func TestExportReservationsServedByKea(t *testing.T) {
	kea := testenv.Tool(t, "kea-dhcp6")
	vm := mac("06:32:b2:00:04:79")
	link := netip.MustParseAddr("2001:db8:100::1")
	for _, name := range []string{"inherit-off", "mode-disabled"} {
		t.Run(name, func(t *testing.T) {
			golden := filepath.Join(exportdata, name+".golden.json")
			if got := keaAdvertised(t, kea, golden, "VLAN2701", link, vm); got != "2001:db8:200::/60" {
				t.Errorf("Kea serving %s advertises %q to %s, want 2001:db8:200::/60", golden, got, vm)
			}
			// The control: the same config without the entries' own
			// reservations-in-subnet inherits the template's false.
			data, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			without := filepath.Join(t.TempDir(), "without.json")
			if err := os.WriteFile(without, bytes.ReplaceAll(data, []byte(`"reservations-in-subnet": true,
        "reservations-out-of-pool": true,`), []byte(`"reservations-out-of-pool": true,`)), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := keaAdvertised(t, kea, without, "VLAN2701", link, vm); got != "" {
				t.Errorf("control: Kea advertises %q without the subnet's reservations-in-subnet: the template does not switch reservations off", got)
			}
		})
	}
}
