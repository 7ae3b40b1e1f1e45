package config

import (
	"strings"
	"testing"
)

func TestDiff(t *testing.T) {
	base := `
api: {url: "https://cloud.example.com/client/api", apikey: AKEY, secretkey: SKEY-old}
mapping:
  pod-a: {pool: "2001:db8:200::/40", interface-id: VLAN2701}
server: {valid-lifetime: 172800, trusted-relays: ["2001:db8::/32"]}
`
	changed := `
api: {url: "https://cloud.example.com/client/api", apikey: AKEY, secretkey: SKEY-new}
mapping:
  pod-a: {pool: "2001:db8:200::/40", interface-id: VLAN2701}
  pod-b: {pool: "2001:db8:300::/40", interface-id: VLAN2702}
server: {valid-lifetime: 86400, preferred-lifetime: 43200, trusted-relays: ["2001:db8::/32", "2001:db9::/32"]}
log: {level: debug}
`
	a, err := Parse("a.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("b.yaml", []byte(changed))
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(a, a); len(d) != 0 {
		t.Fatalf("a config against itself: %v", d)
	}
	got := strings.Join(Diff(a, b), "\n")
	for _, want := range []string{
		"api.secretkey: changed",
		"log.level: info → debug",
		"mapping.pod-b.interface-id: added (VLAN2702)",
		"mapping.pod-b.pool: added (2001:db8:300::/40)",
		"server.valid-lifetime: 172800 → 86400",
		"server.preferred-lifetime: 86400 → 43200",
		"server.trusted-relays: [2001:db8::/32] → [2001:db8::/32 2001:db9::/32]",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("diff lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "SKEY") {
		t.Errorf("a secret in the diff:\n%s", got)
	}
	if strings.Contains(got, "api.url") || strings.Contains(got, "pod-a") {
		t.Errorf("unchanged keys listed:\n%s", got)
	}
}
