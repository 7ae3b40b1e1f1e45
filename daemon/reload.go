package daemon

import (
	"reflect"
	"slices"
	"strings"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/server"
)

// reload re-reads the config at old.Path. A valid one is put in force
// (pools, table, handler options) and returned; an invalid one is logged
// and old returned, still in force.
func (d *daemon) reload(old *config.Config, live *allocator.Live, h *server.Handler) *config.Config {
	path, log := old.Path, d.log
	cfg, err := config.Load(path)
	if err == nil {
		_, err = cfg.ListenAddrs()
	}
	if err != nil {
		log.Error("reload refused: the old config stays in force", "err", err)
		return old
	}
	tbl, err := d.loadTable(cfg)
	if err != nil {
		log.Error("reload refused: the old config stays in force", "err", err)
		return old
	}
	if keys := restartOnly(old, cfg); len(keys) > 0 {
		log.Warn("these keys change only at restart: the running values stay until then", "keys", keys)
	}
	live.Swap(tbl)
	h.SetOptions(HandlerOptions(cfg))
	if d.deps.LogLevel != nil {
		setLevel(d.deps.LogLevel, cfg.Log)
	}
	changed := config.Diff(old, cfg)
	if changed == nil {
		changed = []string{}
	}
	log.Info("reloaded", "config", path, "pools", len(tbl.Pools()), "allocations", tbl.Len(), "changed", changed)
	return cfg
}

// restartOnly names the keys whose new value in cfg differs from the
// running config's and takes effect only at restart.
func restartOnly(running, cfg *config.Config) []string {
	var keys []string
	for _, k := range []struct {
		key     string
		changed bool
	}{
		{"server.listen", !slices.Equal(cfg.Server.Listen, running.Server.Listen)},
		{"state", cfg.State != running.State},
		{"server.workers", cfg.Server.Workers != running.Server.Workers},
		{"server.queue-length", cfg.Server.QueueLength != running.Server.QueueLength},
		{"server.receive-buffer", cfg.Server.ReceiveBuffer != running.Server.ReceiveBuffer},
		{"log.format", !strings.EqualFold(cfg.Log.Format, running.Log.Format)},
		{"http.listen", cfg.HTTP.Listen != running.HTTP.Listen},
		{"server.leasequery.max-connections", cfg.Server.Leasequery.MaxConnections != running.Server.Leasequery.MaxConnections},
		{"server.leasequery.idle-timeout", cfg.Server.Leasequery.IdleTimeout != running.Server.Leasequery.IdleTimeout},
		{"server.last-exchange-staleness", cfg.ExchangeStaleness() != running.ExchangeStaleness()},
		{"control.socket", cfg.Control.Socket != running.Control.Socket},
		{"cluster", !reflect.DeepEqual(cfg.Cluster, running.Cluster)},
		{"webhook.listen", cfg.Webhook.Listen != running.Webhook.Listen},
		{"webhook.cert-file", cfg.Webhook.CertFile != running.Webhook.CertFile},
		{"webhook.key-file", cfg.Webhook.KeyFile != running.Webhook.KeyFile},
	} {
		if k.changed {
			keys = append(keys, k.key)
		}
	}
	return keys
}
