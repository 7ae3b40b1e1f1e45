package kea

import (
	"strings"
	"testing"
)

func TestDiff(t *testing.T) {
	const conf = `{"Dhcp6": {"subnet6": [{"id": 1, "subnet": "2001:db8:100::/64", "interface-id": "VLAN2701", "reservations": [%s]}]}}`
	res := func(mac, prefix string) string {
		return `{"hw-address": "` + mac + `", "prefixes": ["` + prefix + `"]}`
	}
	parse := func(rs ...string) *Config {
		t.Helper()
		c, err := Parse("k.conf", []byte(strings.Replace(conf, "%s", strings.Join(rs, ", "), 1)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	old := parse(res("06:00:00:00:00:01", "2001:db8:200::/60"), res("06:00:00:00:00:02", "2001:db8:200:10::/60"), res("06:00:00:00:00:03", "2001:db8:200:20::/60"))
	cur := parse(res("06:00:00:00:00:01", "2001:db8:200::/60"), res("06:00:00:00:00:02", "2001:db8:200:30::/60"), res("06:00:00:00:00:04", "2001:db8:200:40::/60"))
	var out strings.Builder
	kept, moved, added, removed := Diff(&out, old, cur)
	if kept != 1 || moved != 1 || added != 1 || removed != 1 {
		t.Errorf("kept %d moved %d added %d removed %d", kept, moved, added, removed)
	}
	for _, want := range []string{
		"MOVED    06:00:00:00:00:02  2001:db8:200:10::/60 in subnet 2001:db8:100::/64 interface-id \"VLAN2701\"",
		"removed  06:00:00:00:00:03  2001:db8:200:20::/60",
		"added    06:00:00:00:00:04  2001:db8:200:40::/60",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), ":01") {
		t.Errorf("a kept reservation is listed:\n%s", out.String())
	}
}
