package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const webhookBase = `
api:
  url: https://cloud.example.com/client/api
  apikey: AKEY
  secretkey: SKEY
mapping:
  pod-a:
    pool: 2001:db8:200::/40
    interface-id: VLAN2701
`

// The webhook section: off by default; with listen, a secret of its own
// (from the environment too, never shown), and api.interval's default
// goes up to 10 minutes unless it is given.
func TestWebhookKeys(t *testing.T) {
	c, err := Parse("cfg.yaml", []byte(webhookBase))
	if err != nil {
		t.Fatal(err)
	}
	if c.Webhook != (Webhook{}) || c.API.Interval != DefaultAPIInterval {
		t.Errorf("defaults: %+v, interval %v", c.Webhook, c.API.Interval)
	}
	on := webhookBase + "webhook:\n  listen: \"[::]:9548\"\n  secret: 0123456789abcdef-hook\n"
	c, err = Parse("cfg.yaml", []byte(on))
	if err != nil {
		t.Fatal(err)
	}
	if c.Webhook.Listen != "[::]:9548" || c.Webhook.Secret != "0123456789abcdef-hook" || c.API.Interval != DefaultAPIIntervalWebhook {
		t.Errorf("webhook %+v, interval %v", c.Webhook, c.API.Interval)
	}
	c, err = Parse("cfg.yaml", []byte(strings.Replace(on, "  secretkey: SKEY\n", "  secretkey: SKEY\n  interval: 2m\n", 1)))
	if err != nil || c.API.Interval != 2*time.Minute {
		t.Errorf("interval given: %v, %v", c.API.Interval, err)
	}
	t.Setenv("CLOUDSTACK_PD_API_INTERVAL", "90s")
	t.Setenv("CLOUDSTACK_PD_WEBHOOK_SECRET", "from-the-environment")
	c, err = Parse("cfg.yaml", []byte(on))
	if err != nil || c.API.Interval != 90*time.Second || c.Webhook.Secret != "from-the-environment" {
		t.Errorf("from the environment: %v, %q, %v", c.API.Interval, c.Webhook.Secret, err)
	}
}

func TestWebhookProblems(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	const secret = "  secret: 0123456789abcdef-hook\n"
	tests := []struct {
		name, yaml, key, has string
	}{
		{"no secret", "webhook:\n  listen: \":9548\"\n", "webhook.secret", "empty: set the secret key"},
		{"short secret", "webhook:\n  listen: \":9548\"\n  secret: short-s3cret\n", "webhook.secret", "shorter than 16"},
		{"listen not host:port", "webhook:\n  listen: \"9548\"\n" + secret, "webhook.listen", "not host:port"},
		{"listen a name", "webhook:\n  listen: \"example.com:9548\"\n" + secret, "webhook.listen", "host must be an IP address"},
		{"listen = http.listen", "http:\n  listen: \"127.0.0.1:9547\"\nwebhook:\n  listen: \"127.0.0.1:9547\"\n" + secret, "webhook.listen", "the same as http.listen"},
		{"cert without key", "webhook:\n  listen: \":9548\"\n" + secret + "  cert-file: " + bad + "\n", "webhook.cert-file", "go together"},
		{"a bad certificate", "webhook:\n  listen: \":9548\"\n" + secret + "  cert-file: " + bad + "\n  key-file: " + bad + "\n", "webhook.cert-file", "with webhook.key-file"},
		{"secret without listen", "webhook:\n" + secret, "webhook.secret", "webhook.listen is not"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("cfg.yaml", []byte(webhookBase+tt.yaml))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v", err)
			}
			found := false
			for _, p := range ce.Problems {
				if p.Key == tt.key && strings.Contains(p.String(), tt.has) {
					found = true
				}
			}
			if !found {
				t.Errorf("no problem %s %q in:\n%v", tt.key, tt.has, err)
			}
			if strings.Contains(err.Error(), "0123456789abcdef-hook") || strings.Contains(err.Error(), "short-s3cret") {
				t.Errorf("the secret is shown:\n%v", err)
			}
		})
	}
	// Without the API there is nothing to look the VMs up with.
	noAPI := "mapping:\n  pod-a:\n    pool: 2001:db8:200::/40\n    interface-id: V\nwebhook:\n  listen: \":9548\"\n" + secret
	if _, err := Parse("cfg.yaml", []byte(noAPI)); err == nil || !strings.Contains(err.Error(), "webhooks need the CloudStack API") {
		t.Errorf("err = %v", err)
	}
}
