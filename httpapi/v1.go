package httpapi

import (
	"bytes"
	"cmp"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
)

// loadedTable returns the table in force, or answers 503.
func (a *API) loadedTable(w http.ResponseWriter) *allocator.Table {
	t := a.table()
	if t == nil {
		writeError(w, http.StatusServiceUnavailable, "", "the allocation table is not loaded yet")
	}
	return t
}

func (a *API) pools(w http.ResponseWriter, r *http.Request) {
	if !noQuery(w, r) {
		return
	}
	t := a.loadedTable(w)
	if t == nil {
		return
	}
	counts := a.counts.get(t)
	pools := t.Pools()
	out := make([]Pool, 0, len(pools))
	for i := range pools {
		out = append(out, PoolOf(&pools[i], counts[pools[i].Name]))
	}
	slices.SortFunc(out, func(x, y Pool) int { return strings.Compare(x.Name, y.Name) })
	writeJSON(w, http.StatusOK, out)
}

// filter is a parsed set of query filters; zero fields match everything.
type filter struct {
	mac    []byte
	pool   string
	vm     string
	state  allocator.State
	prefix netip.Prefix
}

// parseFilter reads the filters q holds; on a bad value it answers 400
// naming the parameter and returns false.
func parseFilter(w http.ResponseWriter, q map[string]string, t *allocator.Table) (filter, bool) {
	var f filter
	if s, ok := q["mac"]; ok {
		mac, err := ParseMAC(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, "mac", "mac: %v", err)
			return f, false
		}
		f.mac = mac
	}
	if s, ok := q["pool"]; ok {
		if _, known := t.Pool(s); !known {
			names := make([]string, 0, len(t.Pools()))
			for _, p := range t.Pools() {
				names = append(names, p.Name)
			}
			slices.Sort(names)
			writeError(w, http.StatusBadRequest, "pool", "pool: %q is not a configured pool (mapping key); the pools are: %s", s, strings.Join(names, ", "))
			return f, false
		}
		f.pool = s
	}
	if s, ok := q["vm"]; ok {
		f.vm = s
	}
	if s, ok := q["state"]; ok {
		switch st := allocator.State(strings.ToLower(s)); st {
		case allocator.StateActive, allocator.StateGone, allocator.StateQuarantined:
			f.state = st
		default:
			writeError(w, http.StatusBadRequest, "state", "state: %q is not active, gone or quarantined", s)
			return f, false
		}
	}
	if s, ok := q["prefix"]; ok {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
			writeError(w, http.StatusBadRequest, "prefix", "prefix: %q is not an IPv6 prefix such as 2001:db8:200::/60", s)
			return f, false
		}
		f.prefix = p.Masked()
	}
	return f, true
}

func (f *filter) allocation(a *allocator.Allocation) bool {
	return (f.mac == nil || bytes.Equal(a.MAC, f.mac)) &&
		(f.pool == "" || a.Pool == f.pool) &&
		(f.vm == "" || a.VMID == f.vm || strings.EqualFold(a.VMName, f.vm)) &&
		(f.state == "" || a.State == f.state) &&
		(!f.prefix.IsValid() || a.Prefix == f.prefix)
}

func (f *filter) binding(b *allocator.Binding) bool {
	return (f.mac == nil || bytes.Equal(b.MAC, f.mac)) &&
		(f.pool == "" || b.Pool == f.pool) &&
		(!f.prefix.IsValid() || b.Prefix == f.prefix)
}

func (a *API) allocations(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, "mac", "pool", "vm", "state", "prefix")
	if !ok {
		return
	}
	t := a.loadedTable(w)
	if t == nil {
		return
	}
	f, ok := parseFilter(w, q, t)
	if !ok {
		return
	}
	out := []Allocation{}
	add := func(al *allocator.Allocation) {
		if f.allocation(al) {
			p, _ := t.Pool(al.Pool)
			out = append(out, AllocationOf(al, p))
		}
	}
	if f.mac != nil {
		// A MAC has at most one allocation: no need to walk the table.
		if al, found := t.Lookup(f.mac); found {
			add(al)
		}
	} else {
		for i := range t.Len() {
			al := t.At(i)
			add(&al)
		}
	}
	sortAllocations(out)
	writeJSON(w, http.StatusOK, out)
}

func (a *API) leases(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, "mac", "pool", "prefix")
	if !ok {
		return
	}
	if a.cfg.Bindings == nil {
		writeError(w, http.StatusServiceUnavailable, "", "no binding store is attached")
		return
	}
	t := a.loadedTable(w)
	if t == nil {
		return
	}
	f, ok := parseFilter(w, q, t)
	if !ok {
		return
	}
	bs, err := a.cfg.Bindings.Bindings()
	if err != nil {
		a.log.Error("reading the bindings for /v1/leases", "err", err)
		writeError(w, http.StatusInternalServerError, "", "reading the bindings: %v", err)
		return
	}
	now := a.now()
	out := []Lease{}
	for i := range bs {
		if f.binding(&bs[i]) {
			out = append(out, LeaseOf(&bs[i], now))
		}
	}
	slices.SortFunc(out, func(x, y Lease) int {
		return cmp.Or(strings.Compare(x.Pool, y.Pool), comparePrefix(x.Prefix, y.Prefix),
			strings.Compare(x.ClientDUID, y.ClientDUID), cmp.Compare(x.IAID, y.IAID))
	})
	writeJSON(w, http.StatusOK, out)
}
