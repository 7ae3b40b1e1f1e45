package httpapi

import (
	"bytes"
	"cmp"
	"net/http"
	"net/netip"
	"slices"
	"sort"
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
	q, ok := query(w, r, "mac", "pool", "vm", "state", "prefix", "limit", "after")
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
	limit, after, ok := pageParams(w, q)
	if !ok {
		return
	}
	var (
		cPool   string
		cPrefix netip.Prefix
	)
	if after != "" {
		if cPool, cPrefix, ok = parseAllocationCursor(after); !ok {
			badCursor(w, r.URL.Path, after)
			return
		}
	}
	// afterCursor reports whether pool and prefix come after the cursor.
	afterCursor := func(pool string, p netip.Prefix) bool {
		return after == "" || cmp.Or(strings.Compare(pool, cPool), comparePrefix(p, cPrefix)) > 0
	}
	if f.mac != nil {
		// A MAC has at most one allocation: no need to walk the table.
		pw := newPageWriter(w)
		if al, found := t.Lookup(f.mac); found && f.allocation(al) && afterCursor(al.Pool, al.Prefix) {
			p, _ := t.Pool(al.Pool)
			pw.item(appendAllocation(nil, al, p))
		}
		pw.end("")
		return
	}
	order := a.order.get(t)
	pools := t.Pools()
	key := func(i int) (string, netip.Prefix) {
		p, x := t.PrefixAt(int(order[i]))
		return pools[p].Name, x
	}
	start := 0
	if f.pool != "" {
		start = sort.Search(len(order), func(i int) bool { name, _ := key(i); return name >= f.pool })
	}
	if after != "" {
		start = max(start, sort.Search(len(order), func(i int) bool { return afterCursor(key(i)) }))
	}
	// Each allocation is encoded into buf and written out: a page, however
	// long, costs the table nothing but the write buffer.
	pw := newPageWriter(w)
	var (
		buf      []byte
		n        int
		lastPool string
		lastPfx  netip.Prefix
		next     string
	)
	for i := start; i < len(order); i++ {
		if f.pool != "" {
			if name, _ := key(i); name != f.pool {
				break
			}
		}
		al := t.At(int(order[i]))
		if !f.allocation(&al) {
			continue
		}
		if n == limit {
			next = allocationCursor(lastPool, lastPfx)
			break
		}
		p, _ := t.Pool(al.Pool)
		buf = appendAllocation(buf[:0], &al, p)
		pw.item(buf)
		n++
		lastPool, lastPfx = al.Pool, al.Prefix
	}
	pw.end(next)
}

func (a *API) leases(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, "mac", "pool", "prefix", "limit", "after")
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
	limit, after, ok := pageParams(w, q)
	if !ok {
		return
	}
	var afterKey []byte
	if after != "" {
		// A binding key: the DUID's length, the DUID, the IAID.
		if afterKey, ok = decodeCursor(cursorLease, after); !ok || len(afterKey) < 6 || int(afterKey[0]) != len(afterKey)-5 {
			badCursor(w, r.URL.Path, after)
			return
		}
	}
	// A page is collected before it is written: a store error can still
	// be answered with a 500. MaxLimit bounds it.
	now := a.now()
	out := make([]Lease, 0, min(limit, 256))
	var lastKey []byte
	next := ""
	err := a.cfg.Bindings.ScanBindings(afterKey, func(k []byte, b allocator.Binding) (bool, error) {
		if !f.binding(&b) {
			return true, nil
		}
		if len(out) == limit {
			next = encodeCursor(cursorLease, lastKey)
			return false, nil
		}
		out = append(out, LeaseOf(&b, now))
		lastKey = append(lastKey[:0], k...)
		return true, nil
	})
	if err != nil {
		a.log.Error("reading the bindings for /v1/leases", "err", err)
		writeError(w, http.StatusInternalServerError, "", "reading the bindings: %v", err)
		return
	}
	pw := newPageWriter(w)
	for i := range out {
		pw.value(&out[i])
	}
	pw.end(next)
}
