package config

import (
	"bytes"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestEffectiveMasksURLCredentials: should a URL with credentials reach
// the printer (Load refuses them), they are masked.
func TestEffectiveMasksURLCredentials(t *testing.T) {
	cfg := &Config{API: API{URL: "https://admin:pw-s3cr3t-3@cloud/client/api?apikey=AK-s3cr3t-1&signature=S-s3cr3t-4"}}
	doc, keys := Effective(cfg)
	var out bytes.Buffer
	if err := yaml.NewEncoder(&out).Encode(doc); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "s3cr3t") || !strings.Contains(out.String(), "url: https://xxxxx@cloud/client/api?apikey=xxxxx&signature=xxxxx\n") {
		t.Errorf("printed:\n%s", out.String())
	}
	if keys["CLOUDSTACK_PD_API_URL"] != "api.url" {
		t.Errorf("api.url not listed among the keys: %v", keys)
	}
}
