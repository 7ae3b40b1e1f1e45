package kea

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
)

const testdata = "../testdata/kea"

func TestParseOldGeneratorOutput(t *testing.T) {
	c, err := Load(filepath.Join(testdata, "old-generator-output.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Subnet{
		{Path: "Dhcp6.subnet6[0]", Subnet: "2001:db8:100::/64", InterfaceID: "VLAN2701", Reservations: []Reservation{
			{Path: "Dhcp6.subnet6[0].reservations[0]", HWAddress: "06:32:b2:00:04:79", Prefixes: []string{"2001:db8:200::/60"}, IPAddresses: []string{"2001:db8:100:0:432:b2ff:fe00:479"}},
			{Path: "Dhcp6.subnet6[0].reservations[1]", HWAddress: "06:a5:de:00:04:47", Prefixes: []string{"2001:db8:200:10::/60"}, IPAddresses: []string{"2001:db8:100:0:4a5:deff:fe00:447"}},
			{Path: "Dhcp6.subnet6[0].reservations[2]", HWAddress: "06:32:b2:00:04:80", Prefixes: []string{"2001:db8:200:20::/60"}, IPAddresses: []string{"2001:db8:100:0:432:b2ff:fe00:480"}},
			{Path: "Dhcp6.subnet6[0].reservations[3]", HWAddress: "1e:00:91:00:00:0c", Prefixes: []string{"2001:db8:200:40::/60"}, IPAddresses: []string{"2001:db8:100:0:1c00:91ff:fe00:c"}},
		}},
		{Path: "Dhcp6.subnet6[1]", Subnet: "2001:db8:101::/64", InterfaceID: "VLAN2702", Reservations: []Reservation{
			{Path: "Dhcp6.subnet6[1].reservations[0]", HWAddress: "06:51:34:00:00:5e", Prefixes: []string{"2001:db8:300::/60"}, IPAddresses: []string{"2001:db8:101:0:451:34ff:fe00:5e"}},
			{Path: "Dhcp6.subnet6[1].reservations[1]", HWAddress: "06:51:34:00:00:5f", Prefixes: []string{"2001:db8:300:10::/60"}},
		}},
		{Path: "Dhcp6.subnet6[2]", Subnet: "2001:db8:102::/64"},
	}
	if !reflect.DeepEqual(c.Subnets, want) {
		t.Errorf("Subnets:\n got %+v\nwant %+v", c.Subnets, want)
	}
	if len(c.Warnings) != 0 || len(c.Reservations) != 0 {
		t.Errorf("Warnings %v, global reservations %v", c.Warnings, c.Reservations)
	}
	d6 := c.Raw["Dhcp6"].(map[string]any)
	if got := fmt.Sprint(d6["mac-sources"]); got != "[remote-id]" {
		t.Errorf("Raw Dhcp6.mac-sources = %s", got)
	}
	mac, err := c.Subnets[0].Reservations[0].MAC()
	if err != nil || mac.String() != "06:32:b2:00:04:79" {
		t.Errorf("MAC() = %v, %v", mac, err)
	}
	if p := c.Subnets[0].Reservations[0].PrefixPath(0); p != "Dhcp6.subnet6[0].reservations[0].prefixes[0]" {
		t.Errorf("PrefixPath = %s", p)
	}
}

func TestParseCommented(t *testing.T) {
	c, err := Load(filepath.Join(testdata, "commented.conf"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Subnet{
		{Path: "Dhcp6.subnet6[0]", ID: 20, Subnet: "2001:db8:101::/64", InterfaceID: "VLAN2702", Reservations: []Reservation{
			{Path: "Dhcp6.subnet6[0].reservations[0]", HWAddress: "06:51:34:00:00:5e", Prefixes: []string{"2001:db8:300::/60"}, IPAddresses: []string{"2001:db8:101::5e"}},
			{Path: "Dhcp6.subnet6[0].reservations[1]", DUID: "00:03:00:01:06:51:34:00:00:60", IPAddresses: []string{"2001:db8:101::60"}},
		}},
		{Path: "Dhcp6.subnet6[1]", ID: 30, Subnet: "2001:db8:999::/64", InterfaceID: "VLAN999", Reservations: []Reservation{
			{Path: "Dhcp6.subnet6[1].reservations[0]", HWAddress: "06:99:00:00:00:01", IPAddresses: []string{"2001:db8:999::1"}},
		}},
		{Path: "Dhcp6.shared-networks[0].subnet6[0]", ID: 10, Subnet: "2001:db8:100::/64", InterfaceID: "VLAN2701", Reservations: []Reservation{
			{Path: "Dhcp6.shared-networks[0].subnet6[0].reservations[0]", HWAddress: "0632b2000479", Prefixes: []string{"2001:db8:200::/60"}},
			{Path: "Dhcp6.shared-networks[0].subnet6[0].reservations[1]", HWAddress: "6:32:b2:0:4:80", Prefixes: []string{"2001:db8:200:10::/60"}},
			{Path: "Dhcp6.shared-networks[0].subnet6[0].reservations[2]", HWAddress: "06:32:b2:00:04:81", IPAddresses: []string{"2001:db8:100::81"}},
		}},
	}
	if !reflect.DeepEqual(c.Subnets, want) {
		t.Errorf("Subnets:\n got %+v\nwant %+v", c.Subnets, want)
	}
	// Where kea-dhcp6 -t 2.2 warns "Extraneous comma" on this file.
	var wantWarn []string
	for _, lc := range [][2]int{{23, 85}, {24, 92}, {25, 14}, {26, 12}, {27, 10}, {28, 8}} {
		wantWarn = append(wantWarn, fmt.Sprintf("line %d column %d: extraneous comma (Kea accepts it with a warning)", lc[0], lc[1]))
	}
	if !reflect.DeepEqual(c.Warnings, wantWarn) {
		t.Errorf("Warnings:\n got %q\nwant %q", c.Warnings, wantWarn)
	}
	// Comment characters inside strings are data.
	sn := c.Raw["Dhcp6"].(map[string]any)["shared-networks"].([]any)[0].(map[string]any)["subnet6"].([]any)[0].(map[string]any)
	host := sn["reservations"].([]any)[1].(map[string]any)["hostname"]
	if host != "vm-#2 // not a comment" {
		t.Errorf("hostname = %q", host)
	}
	for i, want := range []string{"06:32:b2:00:04:79", "06:32:b2:00:04:80"} {
		if m, err := c.Subnets[2].Reservations[i].MAC(); err != nil || m.String() != want {
			t.Errorf("reservation %d: MAC() = %v, %v; want %s", i, m, err, want)
		}
	}
}

func TestParseExample(t *testing.T) {
	c, err := Load("../example/kea-dhcp6.conf")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Subnets) != 2 || c.Subnets[0].InterfaceID != "VLAN2701" || c.Subnets[1].InterfaceID != "VLAN2702" {
		t.Errorf("Subnets = %+v", c.Subnets)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.conf"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "nope.conf") {
		t.Errorf("Load of a missing file: %v", err)
	}
}

// sub wraps reservations in a minimal config.
func sub(reservations string) string {
	return `{"Dhcp6": {"subnet6": [{"subnet": "2001:db8:100::/64", "interface-id": "VLAN2701", "reservations": [` + reservations + `]}]}}`
}

func TestParseErrors(t *testing.T) {
	const r0 = "Dhcp6.subnet6[0].reservations[0]"
	for _, tc := range []struct {
		name, in string
		want     []string // problem lines, in order
	}{
		{"empty file", ``, []string{"line 1 column 1: unexpected end of file"}},
		{"syntax", "{\"Dhcp6\": {\n  \"subnet6\": [}}", []string{"line 2 column 15: invalid character '}' looking for beginning of value"}},
		{"truncated", `{"Dhcp6": {"subnet6": [`, []string{"line 1 column 24: unexpected end of file"}},
		{"unclosed comment", "{\n/* no end", []string{"line 2 column 1: comment /* never closed by */"}},
		{"include", "{\"Dhcp6\": <?include \"subnets.json\"?>}", []string{"line 1 column 11: <?include?> directives are not supported: inline the included file"}},
		{"data after the object", `{"Dhcp6": {}} {}`, []string{"line 1 column 16: data after the top-level object"}},
		{"too deep", strings.Repeat("[", 100) + strings.Repeat("]", 100), []string{"line 1 column 66: nested more than 64 levels"}},
		{"top level list", `[]`, []string{"(top level): not an object"}},
		{"no Dhcp6", `{"Dhcp4": {}}`, []string{"Dhcp6: missing: not a Kea DHCPv6 config"}},
		{"Dhcp6 not object", `{"Dhcp6": []}`, []string{"Dhcp6: []: not an object"}},
		{"subnet6 not list", `{"Dhcp6": {"subnet6": {}}}`, []string{"Dhcp6.subnet6: {}: not a list"}},
		{"subnet not object", `{"Dhcp6": {"subnet6": ["x"]}}`, []string{`Dhcp6.subnet6[0]: "x": not an object`}},
		{"subnet fields", `{"Dhcp6": {"subnet6": [{"id": -1, "interface-id": 7}, {"id": 1.5, "subnet": "10.0.0.0/8"}, {"id": "3", "subnet": 5}]}}`, []string{
			`Dhcp6.subnet6[0].id: -1: not a subnet id (an integer from 0 to 4294967295)`,
			`Dhcp6.subnet6[0].subnet: missing: Kea needs the subnet prefix`,
			`Dhcp6.subnet6[0].interface-id: 7: not a string`,
			`Dhcp6.subnet6[1].id: 1.5: not a subnet id (an integer from 0 to 4294967295)`,
			`Dhcp6.subnet6[1].subnet: "10.0.0.0/8": not an IPv6 prefix`,
			`Dhcp6.subnet6[2].id: "3": not a subnet id (an integer from 0 to 4294967295)`,
			`Dhcp6.subnet6[2].subnet: 5: not a string`,
		}},
		{"shared network not object", `{"Dhcp6": {"shared-networks": [1]}}`, []string{"Dhcp6.shared-networks[0]: 1: not an object"}},
		{"shared network subnet", `{"Dhcp6": {"shared-networks": [{"subnet6": [{"subnet": "x"}]}]}}`, []string{`Dhcp6.shared-networks[0].subnet6[0].subnet: "x": not an IPv6 prefix`}},
		{"reservations not list", `{"Dhcp6": {"subnet6": [{"subnet": "2001:db8::/64", "reservations": {}}]}}`, []string{"Dhcp6.subnet6[0].reservations: {}: not a list"}},
		{"reservation not object", sub(`7`), []string{r0 + ": 7: not an object"}},
		{"bad prefix", sub(`{"hw-address": "06:32:b2:00:04:79", "prefixes": ["2001:db8:200::/60", "2001:db8:200::/129", "192.0.2.0/28", 5]}`), []string{
			r0 + `.prefixes[3]: 5: not a string`,
			r0 + `.prefixes[1]: "2001:db8:200::/129": not an IPv6 prefix`,
			r0 + `.prefixes[2]: "192.0.2.0/28": not an IPv6 prefix`,
		}},
		{"prefixes not list", sub(`{"hw-address": "06:32:b2:00:04:79", "prefixes": "2001:db8:200::/60"}`), []string{r0 + `.prefixes: "2001:db8:200::/60": not a list`}},
		{"legacy prefix key", sub(`{"hw-address": "06:32:b2:00:04:79", "prefix": "2001:db8:200::/60"}`), []string{
			r0 + `.prefix: "2001:db8:200::/60": Kea knows no "prefix" in a reservation (early cloudstack-kea-config versions wrote it): write "prefixes": [...]`}},
		{"bad ip-address", sub(`{"hw-address": "06:32:b2:00:04:79", "ip-addresses": ["2001:db8:100::1", "192.0.2.1", "fe80::1%eth0"]}`), []string{
			r0 + `.ip-addresses[1]: "192.0.2.1": not an IPv6 address`,
			r0 + `.ip-addresses[2]: "fe80::1%eth0": not an IPv6 address`,
		}},
		{"bad hw-address", sub(`{"hw-address": "06-32-b2-00-04-79"}, {"hw-address": ""}, {"hw-address": 6}`), []string{
			r0 + `.hw-address: "06-32-b2-00-04-79": not hex: encoding/hex: invalid byte: U+002D '-'`,
			"Dhcp6.subnet6[0].reservations[1].hw-address: \"\": empty identifier",
			"Dhcp6.subnet6[0].reservations[2].hw-address: 6: not a string",
			"Dhcp6.subnet6[0].reservations[2].hw-address: \"\": empty identifier",
		}},
		{"long hw-address", sub(`{"hw-address": "` + strings.Repeat("ab", 21) + `"}`), []string{
			r0 + `.hw-address: "` + strings.Repeat("ab", 21) + `": 21 bytes, Kea allows at most 20`}},
		{"bad duid", sub(`{"duid": "00:01:zz"}, {"duid": "` + strings.Repeat("ab", 131) + `"}`), []string{
			r0 + `.duid: "00:01:zz": not hex octets separated by ":"`,
			"Dhcp6.subnet6[0].reservations[1].duid: \"" + strings.Repeat("ab", 131) + "\": 131 bytes, a DUID has at most 130",
		}},
		{"hw-address and duid", sub(`{"hw-address": "06:32:b2:00:04:79", "duid": "00:01:02"}`), []string{
			r0 + ": hw-address and duid are mutually exclusive (Kea refuses both)"}},
		{"duplicate key", sub(`{"hw-address": "06:32:b2:00:04:79", "hw-address": "06:32:b2:00:04:80"}`), []string{
			r0 + `.hw-address: duplicate key "hw-address" (Kea refuses it)`}},
		{"global reservation", `{"Dhcp6": {"reservations": [{"hw-address": "xx"}]}}`, []string{
			`Dhcp6.reservations[0].hw-address: "xx": not hex: encoding/hex: invalid byte: U+0078 'x'`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("test.conf", []byte(tc.in))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", c)
			}
			var ke *Error
			if !errors.As(err, &ke) {
				t.Fatalf("error %T %v is not *Error", err, err)
			}
			var got []string
			for _, p := range ke.Problems {
				got = append(got, p.String())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems:\n got %q\nwant %q", got, tc.want)
			}
			if !strings.HasPrefix(err.Error(), fmt.Sprintf("kea config test.conf: %d problem(s)\n  ", len(tc.want))) {
				t.Errorf("Error() = %q", err)
			}
		})
	}
}

func TestDecodeHex(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // hex, or "error"
	}{
		{"06:32:b2:00:04:79", "0632b2000479"},
		{"6:32:b2:0:4:79", "0632b2000479"},
		{"AA:BB:cc", "aabbcc"},
		{"0632b2000479", "0632b2000479"},
		{"0x0632b2000479", "0632b2000479"},
		{"06 32 b2 00 04 79", "0632b2000479"},
		{"abc", "0abc"},
		{"0x6", "06"},
		{"aa", "aa"},
		{"", "error"},
		{"06-32-b2-00-04-79", "error"},
		{"06::32", "error"},
		{"06:32 b2", "error"},
		{":06:32", "error"},
		{"06:32:", "error"},
		{"063:2", "error"},
		{"0x", "error"},
		{"g6", "error"},
		{"06  32", "error"},
	} {
		got, err := DecodeHex(tc.in)
		switch {
		case tc.want == "error" && err == nil:
			t.Errorf("DecodeHex(%q) = %x, want an error", tc.in, got)
		case tc.want != "error" && (err != nil || fmt.Sprintf("%x", got) != tc.want):
			t.Errorf("DecodeHex(%q) = %x, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// keaCheck runs kea-dhcp6 -t on config and reports whether Kea accepts it.
func keaCheck(t *testing.T, kea, config string) (bool, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "kea-dhcp6.conf")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kea, "-t", path)
	cmd.Env = testenv.KeaEnv(dir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("kea-dhcp6 -t: %v", err)
	}
	return err == nil, string(out)
}

// TestKeaAgrees checks this reading against Kea itself, where installed.
func TestKeaAgrees(t *testing.T) {
	kea := testenv.Tool(t, "kea-dhcp6")
	for _, f := range []string{"../example/kea-dhcp6.conf", filepath.Join(testdata, "old-generator-output.json"), filepath.Join(testdata, "commented.conf")} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if ok, out := keaCheck(t, kea, string(data)); !ok {
			t.Errorf("kea-dhcp6 -t refuses %s:\n%s", f, out)
		}
	}
	// Identifiers and reservations both read the same way.
	base := `{"Dhcp6": {"interfaces-config": {"interfaces": []}, "lease-database": {"type": "memfile", "persist": false},
	  "subnet6": [{"id": 1, "subnet": "2001:db8:100::/64", "interface-id": "VLAN2701", "reservations": [%s]}]}}`
	for _, r := range []string{
		`{"hw-address": "6:32:b2:0:4:79", "prefixes": ["2001:db8:200::/60"]}`,
		`{"hw-address": "0x632b2000479", "prefixes": ["2001:db8:200::/60"]}`,
		`{"hw-address": "06 32 b2 00 04 79", "prefixes": ["2001:db8:200::/60"]}`,
		`{"hw-address": "06-32-b2-00-04-79", "prefixes": ["2001:db8:200::/60"]}`,
		`{"hw-address": "06:32 b2", "prefixes": ["2001:db8:200::/60"]}`,
		`{"hw-address": "", "prefixes": ["2001:db8:200::/60"]}`,
		`{"hw-address": "` + strings.Repeat("ab:", 20) + `ab"}`,
		`{"hw-address": "06:32:b2:00:04:79", "duid": "00:01:02"}`,
		`{"hw-address": "06:32:b2:00:04:79", "prefix": "2001:db8:200::/60"}`,
		`{"hw-address": "06:32:b2:00:04:79", "prefixes": ["192.0.2.0/28"]}`,
		`{"hw-address": "06:32:b2:00:04:79", "prefixes": ["2001:db8:200::/60",],} /* trailing commas */`,
		`{"hw-address": "06:32:b2:00:04:79", "hw-address": "06:32:b2:00:04:80"}`,
		`{"duid": "00:03:00:01:06:32:b2:00:04:79", "prefixes": ["2001:db8:200::1/60"]}`,
	} {
		config := fmt.Sprintf(base, r)
		kok, out := keaCheck(t, kea, config)
		_, err := Parse("t.conf", []byte(config))
		if kok != (err == nil) {
			t.Errorf("%s: Kea accepts: %v, Parse: %v\n%s", r, kok, err, out)
		}
	}
}

// FuzzClean checks the comment and comma stripping: same length, same line
// breaks, JSON left alone, idempotent on what it turns into JSON.
func FuzzClean(f *testing.F) {
	for _, seed := range []string{
		`{"a": 1}`,                              // plain JSON: unchanged
		`{"a": "# not // a /* comment */"}`,     // comment markers in a string
		`{"a": "\"# still a string"} # comment`, // escaped quote
		"# hash\n// slashes\n/* block\n */{}",   // the three kinds
		`{"a": [1, 2,], }`,                      // extraneous commas
		"[1, /* c */ ]",                         // comma before a comment, then ]
		"/* never closed",                       // error
		`{"a": "x\\"}`,                          // escaped backslash ends the string
		"<?include \"x.json\"?>",                // include: error
		"{\"a\": 1 /* */ , }",                   // comment between value and comma
		"/",                                     // lone slash
		"\"unterminated",                        // unterminated string
		"[1,,]",                                 // double comma
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, commas, cerr := clean(data)
		if cerr != nil {
			if cerr.off < 0 || cerr.off > len(data) {
				t.Fatalf("error offset %d outside [0,%d]", cerr.off, len(data))
			}
			return
		}
		if len(out) != len(data) {
			t.Fatalf("length %d, want %d", len(out), len(data))
		}
		for i := range data {
			if (data[i] == '\n') != (out[i] == '\n') {
				t.Fatalf("line break moved at %d", i)
			}
			if out[i] != data[i] && out[i] != ' ' {
				t.Fatalf("byte %d changed to %q, not blanked", i, out[i])
			}
		}
		for _, c := range commas {
			if data[c] != ',' || out[c] != ' ' {
				t.Fatalf("comma offset %d wrong", c)
			}
		}
		if json.Valid(data) && !bytes.Equal(out, data) {
			t.Fatalf("valid JSON changed:\n%q\n%q", data, out)
		}
		if json.Valid(out) {
			again, commas2, err := clean(out)
			if err != nil || !bytes.Equal(again, out) || len(commas2) != 0 {
				t.Fatalf("not idempotent on %q: %q, %v", out, again, err)
			}
		}
		// Parse never panics, and fails only with *Error.
		if _, err := Parse("fuzz.conf", data); err != nil {
			var ke *Error
			if !errors.As(err, &ke) || len(ke.Problems) == 0 {
				t.Fatalf("Parse error %T %v", err, err)
			}
		}
	})
}

// BenchmarkParse reads a config of 10,000 reservations, commas and all.
func BenchmarkParse(b *testing.B) {
	var rs []string
	for i := range 10000 {
		rs = append(rs, fmt.Sprintf(`{"hw-address": "06:00:00:00:%02x:%02x", "prefixes": ["2001:db8:%x:%x0::/60",], "ip-addresses": ["2001:db8:100::%x"]}, // VM %d`, i>>8, i&0xff, 0x200+i>>12, i&0xfff, i, i))
	}
	data := []byte(sub("\n" + strings.Join(rs, ",\n") + "\n"))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		c, err := Parse("bench.conf", data)
		if err != nil || len(c.Subnets[0].Reservations) != 10000 || len(c.Warnings) != 10001 {
			b.Fatal(err)
		}
	}
}
