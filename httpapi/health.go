package httpapi

import (
	"fmt"
	"net/http"
	"net/netip"
	"time"
)

// Readiness is what the serve loop reports of itself to /readyz.
type Readiness struct {
	// Listening lists the DHCPv6 endpoints being served. Empty means not
	// listening: not yet, or no more (shutting down), and so not ready.
	Listening []netip.AddrPort
	// SyncEnabled says a CloudStack sync is configured; when false, no
	// sync warning is given and last-sync stays null.
	SyncEnabled bool
	// LastSync is when the last successful sync finished (zero: none yet).
	// SyncMetrics.LastSuccessTime gives it.
	LastSync time.Time
	// Warnings are more warnings to show, e.g. the last sync's error. They
	// never make the server not ready; keep secrets out of them.
	Warnings []string
	// Degraded, when not empty, says why the server answers from a table
	// that may be out of date (a cluster server out of reach of etcd). The
	// server stays ready: it answers.
	Degraded string
}

// ReadyStatus is the JSON body of /readyz.
type ReadyStatus struct {
	// Ready is true when the server listens and its table is loaded.
	Ready bool `json:"ready"`
	// Listening lists the DHCPv6 endpoints served, as [addr]:port.
	Listening []string `json:"listening"`
	// TableLoaded says an allocation table is in force.
	TableLoaded bool `json:"table-loaded"`
	// Pools and Allocations count the table in force.
	Pools       int `json:"pools"`
	Allocations int `json:"allocations"`
	// LastSync is when the last successful sync finished; null when there
	// was none or no sync is configured.
	LastSync *time.Time `json:"last-sync"`
	// Warnings say what an operator should look at; they never make the
	// server not ready.
	Warnings []string `json:"warnings"`
	// Degraded says why the table answered from may be out of date (a
	// cluster server out of reach of etcd); absent when it is not.
	Degraded string `json:"degraded,omitempty"`
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	if !noQuery(w, r) {
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	if !noQuery(w, r) {
		return
	}
	st := a.Status()
	code := http.StatusOK
	if !st.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, st)
}

// Status computes what /readyz answers.
func (a *API) Status() ReadyStatus {
	var rd Readiness
	if a.cfg.Ready != nil {
		rd = a.cfg.Ready()
	}
	st := ReadyStatus{Listening: []string{}, Warnings: []string{}}
	for _, ap := range rd.Listening {
		st.Listening = append(st.Listening, ap.String())
	}
	if t := a.table(); t != nil {
		st.TableLoaded = true
		st.Pools = len(t.Pools())
		st.Allocations = t.Len()
		if st.Pools == 0 {
			st.Warnings = append(st.Warnings, "no pools configured: every request gets NoPrefixAvail")
		} else if st.Allocations == 0 {
			st.Warnings = append(st.Warnings, "the allocation table is empty: run a sync or import-kea")
		}
	} else {
		st.Warnings = append(st.Warnings, "the allocation table is not loaded")
	}
	if len(st.Listening) == 0 {
		st.Warnings = append(st.Warnings, "not listening for DHCPv6")
	}
	st.Ready = st.TableLoaded && len(st.Listening) > 0
	if rd.SyncEnabled {
		now := a.now()
		switch {
		case !rd.LastSync.IsZero():
			t := rd.LastSync.UTC()
			st.LastSync = &t
			if age := now.Sub(rd.LastSync); age > a.cfg.SyncStaleAfter {
				st.Warnings = append(st.Warnings, fmt.Sprintf("sync stale: last success %s ago (at %s)", age.Round(time.Second), t.Format(time.RFC3339)))
			}
		case now.Sub(a.started) > a.cfg.SyncStaleAfter:
			st.Warnings = append(st.Warnings, fmt.Sprintf("sync stale: no successful sync since the start %s ago", now.Sub(a.started).Round(time.Second)))
		}
	}
	st.Warnings = append(st.Warnings, rd.Warnings...)
	if rd.Degraded != "" {
		st.Degraded = rd.Degraded
		st.Warnings = append(st.Warnings, "degraded: "+rd.Degraded)
	}
	return st
}
