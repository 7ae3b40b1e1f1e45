package daemon

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/server"
)

// replayPlaceholderDUID is the server DUID of an offline replay on a store
// that has none yet: a DUID-LL of a locally administered MAC.
var replayPlaceholderDUID = []byte{0, 3, 0, 1, 0x02, 0, 0, 0, 0x05, 0x47}

// OfflineHandler builds the handler as Run does (the table of cfg's
// pools, the store's server DUID, HandlerOptions), for an offline replay:
// with no binding recorder, and never writing to st, which may be
// read-only (a store with no server DUID yet answers with
// replayPlaceholderDUID). note, when not empty, is to be shown.
func OfflineHandler(cfg *config.Config, st *allocator.Store) (h *server.Handler, note string, err error) {
	tbl, rep, err := st.LoadTable(cfg.Pools())
	if err != nil {
		return nil, "", fmt.Errorf("load allocation table from %s: %w", cfg.State, err)
	}
	if len(rep.Orphaned) > 0 {
		note = fmt.Sprintf("note: the store holds %d allocations of pools %s does not configure; they are not served\n", len(rep.Orphaned), cfg.Path)
	}
	duid, err := st.ServerDUID(nil) // read-only: never generates
	if errors.Is(err, allocator.ErrNoServerDUID) {
		duid = replayPlaceholderDUID
		note += fmt.Sprintf("note: store %s has no server DUID yet (serve never ran on it): answering with the placeholder DUID %x", cfg.State, duid)
	} else if err != nil {
		return nil, "", err
	}
	h, err = server.NewHandler(server.HandlerConfig{
		Table:    allocator.NewLive(tbl),
		ServerID: duid,
		Options:  HandlerOptions(cfg),
	})
	return h, strings.TrimRight(note, "\n"), err
}
