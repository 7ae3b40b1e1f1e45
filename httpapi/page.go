package httpapi

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
)

// Paging of /v1/allocations and /v1/leases.
const (
	// DefaultLimit is how many items a page holds when limit is not given.
	DefaultLimit = 1000
	// MaxLimit is the largest limit accepted: a page is built in memory
	// before it is written, so it bounds what one request costs.
	MaxLimit = 10000
)

// Page is the answer of a listing: Items in the listing's order, and
// Next, the cursor to pass as after= for the next page; null on the last
// page. A page may hold fewer than limit items only when it is the last.
type Page[T any] struct {
	Items []T     `json:"items"`
	Next  *string `json:"next"`
}

// The cursor kinds: a cursor of one listing is refused by the other.
const (
	cursorAllocation = 'a'
	cursorLease      = 'l'
)

// encodeCursor makes the opaque cursor of kind after the item whose key
// is key.
func encodeCursor(kind byte, key []byte) string {
	return base64.RawURLEncoding.EncodeToString(append([]byte{kind, 1}, key...))
}

// decodeCursor returns the key of a cursor of kind, or false.
func decodeCursor(kind byte, s string) ([]byte, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 2 || b[0] != kind || b[1] != 1 {
		return nil, false
	}
	return b[2:], true
}

// allocationCursor is the cursor after the allocation of pool and prefix.
func allocationCursor(pool string, p netip.Prefix) string {
	return encodeCursor(cursorAllocation, append(allocator.PrefixKey(p), pool...))
}

// parseAllocationCursor is the inverse of allocationCursor.
func parseAllocationCursor(s string) (pool string, p netip.Prefix, ok bool) {
	key, ok := decodeCursor(cursorAllocation, s)
	if !ok || len(key) < 17 {
		return "", netip.Prefix{}, false
	}
	p, ok = allocator.ParsePrefixKey(key[:17])
	return string(key[17:]), p, ok
}

// pageParams reads limit and after from q; on a bad value it answers 400
// naming the parameter and returns false. after is "" when not given.
func pageParams(w http.ResponseWriter, q map[string]string) (limit int, after string, ok bool) {
	limit = DefaultLimit
	if s, given := q["limit"]; given {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			writeError(w, http.StatusBadRequest, "limit", "limit: %q is not a number from 1 to %d", s, MaxLimit)
			return 0, "", false
		}
		limit = n
	}
	return limit, q["after"], true
}

// badCursor answers 400 for a cursor that is not one of path's.
func badCursor(w http.ResponseWriter, path, s string) {
	writeError(w, http.StatusBadRequest, "after", "after: %q is not a cursor of %s: pass the \"next\" of the page before, unchanged", s, path)
}

// pageWriter answers 200 with a page written item by item into a
// buffered writer, never as one document in memory.
type pageWriter struct {
	bw *bufio.Writer
	n  int
}

// newPageWriter sends the headers and opens the page.
func newPageWriter(w http.ResponseWriter) *pageWriter {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	p := &pageWriter{bw: bufio.NewWriterSize(w, 32<<10)}
	p.bw.WriteString("{\n  \"items\": [")
	return p
}

// item writes one item's JSON, indented as the fourth level.
func (p *pageWriter) item(b []byte) {
	if p.n == 0 {
		p.bw.WriteString("\n    ")
	} else {
		p.bw.WriteString(",\n    ")
	}
	p.n++
	p.bw.Write(b)
}

// value writes one item, encoded by encoding/json.
func (p *pageWriter) value(v any) {
	b, err := json.MarshalIndent(v, "    ", "  ")
	if err != nil { // the views hold nothing JSON refuses
		b = []byte("null")
	}
	p.item(b)
}

// end closes the page with its next cursor ("": null) and flushes it.
func (p *pageWriter) end(next string) {
	if p.n > 0 {
		p.bw.WriteString("\n  ")
	}
	p.bw.WriteString("],\n  \"next\": ")
	if next == "" {
		p.bw.WriteString("null")
	} else {
		n, _ := json.Marshal(next)
		p.bw.Write(n)
	}
	p.bw.WriteString("\n}\n")
	_ = p.bw.Flush()
}

// orderCache keeps, for the table in force, its record numbers in the
// order of /v1/allocations (pool name, then prefix): computed on the first
// listing of a snapshot, 4 bytes per allocation, so that a page starts
// with a binary search instead of a sort of the whole table.
type orderCache struct {
	mu    sync.Mutex
	table *allocator.Table
	order []int32
}

// get returns the order of t.
func (c *orderCache) get(t *allocator.Table) []int32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.table == t {
		return c.order
	}
	pools := t.Pools()
	rank := make([]int, len(pools)) // by index in pools: place by name
	byName := make([]int, len(pools))
	for i := range byName {
		byName[i] = i
	}
	slices.SortFunc(byName, func(a, b int) int { return strings.Compare(pools[a].Name, pools[b].Name) })
	for r, i := range byName {
		rank[i] = r
	}
	order := make([]int32, t.Len())
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		pa, xa := t.PrefixAt(int(a))
		pb, xb := t.PrefixAt(int(b))
		if pa != pb {
			return rank[pa] - rank[pb]
		}
		return comparePrefix(xa, xb)
	})
	c.table, c.order = t, order
	return order
}
