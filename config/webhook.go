package config

import (
	"crypto/tls"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/spf13/viper"
)

// Webhook is the listener for CloudStack's webhook deliveries
// (CloudStack 4.20 and later): an event about a VM syncs that VM at once
// (package webhook).
type Webhook struct {
	// Listen is the host:port the management server POSTs deliveries
	// to; "" (the default) turns webhooks off. It must be reachable from
	// the management server, unlike http.listen.
	Listen string `mapstructure:"listen"`
	// Secret is the webhook's secret key, which CloudStack signs every
	// delivery with (required with listen; at least MinWebhookSecret
	// characters; CLOUDSTACK_PD_WEBHOOK_SECRET).
	Secret string `mapstructure:"secret"`
	// CertFile and KeyFile, both or neither, serve the listener over TLS
	// (PEM files).
	CertFile string `mapstructure:"cert-file"`
	KeyFile  string `mapstructure:"key-file"`
}

// DefaultAPIIntervalWebhook is api.interval's default when webhook.listen
// is set: events keep the table current, and the full sync is the safety
// net for lost deliveries.
const DefaultAPIIntervalWebhook = 10 * time.Minute

// MinWebhookSecret is the shortest webhook.secret accepted.
const MinWebhookSecret = 16

// intervalGiven reports whether api.interval is in the file or the
// environment (viper's IsSet counts the default).
func intervalGiven(v *viper.Viper) bool {
	_, env := os.LookupEnv(EnvPrefix + "_API_INTERVAL")
	return env || v.InConfig("api.interval")
}

// validateWebhook checks the webhook section.
func (c *Config) validateWebhook() []Problem {
	var probs []Problem
	add := func(key string, val any, msg string) {
		probs = append(probs, Problem{Key: key, Value: val, Msg: msg, Safe: val == nil})
	}
	w := c.Webhook
	if w.Listen == "" {
		for key, v := range map[string]string{"webhook.secret": w.Secret, "webhook.cert-file": w.CertFile, "webhook.key-file": w.KeyFile} {
			if v != "" {
				add(key, nil, "set, but webhook.listen is not: set webhook.listen to receive CloudStack's webhook deliveries, or remove it")
			}
		}
		return probs
	}
	host, port, err := net.SplitHostPort(w.Listen)
	pn, perr := strconv.Atoi(port)
	switch {
	case err != nil:
		add("webhook.listen", w.Listen, "not host:port: "+err.Error())
	case perr != nil || pn < 0 || pn > 65535:
		add("webhook.listen", w.Listen, "port must be 0 to 65535")
	case host != "" && host != "localhost" && net.ParseIP(host) == nil:
		add("webhook.listen", w.Listen, "host must be an IP address, localhost or empty (all addresses)")
	case w.Listen == c.HTTP.Listen:
		add("webhook.listen", w.Listen, "the same as http.listen: the webhook listener needs an address of its own")
	}
	if why := c.API.WhyNoSync(); why != "" {
		add("webhook.listen", w.Listen, "webhooks need the CloudStack API to look the VMs up, but "+why)
	}
	switch {
	case w.Secret == "":
		add("webhook.secret", nil, "empty: set the secret key of the webhook (or CLOUDSTACK_PD_WEBHOOK_SECRET); deliveries without a valid signature are refused")
	case len(w.Secret) < MinWebhookSecret:
		add("webhook.secret", nil, "shorter than "+strconv.Itoa(MinWebhookSecret)+" characters: anyone who guesses it can make the server sync at will")
	}
	switch {
	case (w.CertFile == "") != (w.KeyFile == ""):
		add("webhook.cert-file", nil, "webhook.cert-file and webhook.key-file go together: set both (TLS) or neither")
	case w.CertFile != "":
		if _, err := tls.LoadX509KeyPair(w.CertFile, w.KeyFile); err != nil {
			add("webhook.cert-file", w.CertFile, "with webhook.key-file "+w.KeyFile+": "+err.Error())
		}
	}
	return probs
}
