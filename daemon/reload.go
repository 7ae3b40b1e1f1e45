package daemon

import (
	"slices"

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
	if !slices.Equal(cfg.Server.Listen, old.Server.Listen) || cfg.State != old.State ||
		cfg.Server.Workers != old.Server.Workers || cfg.Server.QueueLength != old.Server.QueueLength {
		log.Warn("server.listen, state, server.workers and server.queue-length change only at restart")
	}
	live.Swap(tbl)
	h.SetOptions(HandlerOptions(cfg))
	log.Info("reloaded", "config", path, "pools", len(tbl.Pools()), "allocations", tbl.Len())
	return cfg
}
