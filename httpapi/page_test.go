package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
)

// walk lists path page by page with limit, checks each page's size and
// that only the last page has no next cursor, and returns every item's key.
func walk[T any](t *testing.T, w *world, path string, limit int, key func(T) string) []string {
	t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	var keys []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatalf("%s: more than 100 pages", path)
		}
		u := path + sep + "limit=" + strconv.Itoa(limit)
		if after != "" {
			u += "&after=" + url.QueryEscape(after)
		}
		var items []T
		next := w.list(t, u, &items)
		if len(items) > limit {
			t.Fatalf("%s: %d items, limit %d", u, len(items), limit)
		}
		if next != "" && len(items) < limit {
			t.Fatalf("%s: a short page (%d of %d) with a next cursor", u, len(items), limit)
		}
		for _, it := range items {
			keys = append(keys, key(it))
		}
		if next == "" {
			return keys
		}
		after = next
	}
}

// TestAllocationPages: walking /v1/allocations page by page, whatever the
// limit and the filters, gives exactly the one-page listing, in its order,
// and the last page says so (next null) even when it is full.
func TestAllocationPages(t *testing.T) {
	w := newWorld(t)
	mac := func(a Allocation) string { return a.MAC }
	for _, filter := range []string{"", "pool=pod-a", "pool=pod-b", "state=active", "vm=web-1", "mac=06:32:b2:00:04:7a", "state=gone&pool=pod-b"} {
		path := "/v1/allocations"
		if filter != "" {
			path += "?" + filter
		}
		var all []Allocation
		if next := w.list(t, path, &all); next != "" {
			t.Fatalf("%s: one page of everything has next %q", path, next)
		}
		want := []string{}
		for _, a := range all {
			want = append(want, a.MAC)
		}
		for _, limit := range []int{1, 2, 3, len(all), len(all) + 1} {
			if limit == 0 {
				continue
			}
			t.Run(fmt.Sprintf("%s/limit=%d", filter, limit), func(t *testing.T) {
				got := walk(t, w, path, limit, mac)
				if strings.Join(got, " ") != strings.Join(want, " ") {
					t.Errorf("pages give %v, want %v", got, want)
				}
			})
		}
	}
}

// TestAllocationCursorSurvivesChanges: a cursor names a place in the
// order, not a record: after the table changes between two pages, the
// next page starts after that place, with no repeat, even when the
// allocation the cursor was made from is gone.
func TestAllocationCursorSurvivesChanges(t *testing.T) {
	w := newWorld(t)
	var first []Allocation
	next := w.list(t, "/v1/allocations?limit=2", &first)
	if len(first) != 2 || next == "" {
		t.Fatalf("first page %v, next %q", first, next)
	}
	// The second allocation of the page, the cursor's, goes; a new one
	// comes after it.
	allocs := testAllocations()
	var kept []allocator.Allocation
	for _, a := range allocs {
		if a.MAC.String() != first[1].MAC {
			kept = append(kept, a)
		}
	}
	kept = append(kept,
		allocator.Allocation{Pool: "pod-a", MAC: mustMAC("06:00:00:00:00:02"), Prefix: netip.MustParsePrefix("2001:db8:200:40::/60"), State: allocator.StateActive, Source: "sync"})
	tbl, err := allocator.NewTable(w.pools, kept)
	if err != nil {
		t.Fatal(err)
	}
	w.live.Swap(tbl)
	var rest []Allocation
	if n := w.list(t, "/v1/allocations?limit=10&after="+url.QueryEscape(next), &rest); n != "" {
		t.Errorf("next %q after the last page", n)
	}
	var got []string
	for _, a := range rest {
		got = append(got, a.Prefix.String())
	}
	want := "2001:db8:200:20::/60 2001:db8:200:30::/60 2001:db8:200:40::/60 2001:db8:300::/56"
	if strings.Join(got, " ") != want {
		t.Errorf("after the change: %v, want %s", got, want)
	}
}

// TestLeasePages: /v1/leases walked page by page gives the one-page
// listing (key order: client DUID, then IAID), with and without filters.
func TestLeasePages(t *testing.T) {
	w := newWorld(t)
	var bs []allocator.Binding
	for _, b := range []struct {
		mac, pool, prefix string
		iaid              uint32
	}{
		{"06:32:b2:00:04:79", "pod-a", "2001:db8:200::/60", 1},
		{"06:32:b2:00:04:79", "pod-a", "2001:db8:200:40::/60", 2},
		{"06:32:b2:00:04:7a", "pod-a", "2001:db8:200:10::/60", 1},
		{"06:32:b2:00:04:7a", "pod-a", "2001:db8:200:50::/60", 2},
		{"06:32:b2:00:04:80", "pod-b", "2001:db8:300::/56", 1},
		{"06:32:b2:00:04:80", "pod-b", "2001:db8:300:100::/56", 2},
	} {
		mac := mustMAC(b.mac)
		bs = append(bs, allocator.Binding{ClientDUID: append([]byte{0, 3, 0, 1}, mac...), MAC: mac, IAID: b.iaid, Pool: b.pool,
			Prefix: netip.MustParsePrefix(b.prefix), PreferredLifetime: 60, ValidLifetime: 120, Expires: testNow.Add(time.Minute)})
	}
	if err := w.st.PutBindings(bs, nil); err != nil {
		t.Fatal(err)
	}
	key := func(l Lease) string { return l.ClientDUID + "/" + strconv.Itoa(int(l.IAID)) }
	for _, filter := range []string{"", "pool=pod-a", "mac=06:32:b2:00:04:80", "prefix=2001:db8:200:10::/60"} {
		path := "/v1/leases"
		if filter != "" {
			path += "?" + filter
		}
		var all []Lease
		w.list(t, path, &all)
		var want []string
		for _, l := range all {
			want = append(want, key(l))
		}
		if filter == "" && len(want) != len(bs) {
			t.Fatalf("%d leases, want %d: %v", len(want), len(bs), want)
		}
		for _, limit := range []int{1, 2, 4} {
			t.Run(fmt.Sprintf("%s/limit=%d", filter, limit), func(t *testing.T) {
				got := walk(t, w, path, limit, key)
				if strings.Join(got, " ") != strings.Join(want, " ") {
					t.Errorf("pages give %v, want %v", got, want)
				}
			})
		}
	}
}

// TestBadPageParameters: a bad limit or cursor is a 400 naming it; a
// cursor of one listing is refused by the other.
func TestBadPageParameters(t *testing.T) {
	w := newWorld(t)
	var page struct{ Next *string }
	w.get(t, "/v1/allocations?limit=1", http.StatusOK, &page)
	allocCursor := *page.Next
	leaseCursor := encodeCursor(cursorLease, allocator.BindingKey([]byte{0, 3, 0, 1, 6, 0x32, 0xb2, 0, 4, 0x79}, 1))
	tests := []struct {
		path, param, msg string
	}{
		{"/v1/allocations?limit=0", "limit", "from 1 to 10000"},
		{"/v1/allocations?limit=10001", "limit", "from 1 to 10000"},
		{"/v1/allocations?limit=ten", "limit", "ten"},
		{"/v1/allocations?after=nope", "after", `"nope" is not a cursor of /v1/allocations`},
		{"/v1/allocations?after=" + leaseCursor, "after", "not a cursor"},
		{"/v1/leases?after=" + allocCursor, "after", "not a cursor of /v1/leases"},
		{"/v1/leases?after=" + encodeCursor(cursorLease, []byte{9, 1}), "after", "not a cursor"},
		{"/v1/leases?limit=-1", "limit", "-1"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			var e errorBody
			w.get(t, tt.path, http.StatusBadRequest, &e)
			if e.Parameter != tt.param || !strings.Contains(e.Error, tt.msg) {
				t.Errorf("error %+v, want parameter %q and %q", e, tt.param, tt.msg)
			}
		})
	}
	// Without limit, a page holds DefaultLimit items.
	if DefaultLimit < 1 || DefaultLimit > MaxLimit {
		t.Errorf("DefaultLimit %d outside 1..%d", DefaultLimit, MaxLimit)
	}
}

// TestEachAllocationFollowsCursors: the client asks for pages of
// MaxLimit, passes each next cursor back unchanged, and stops at null; a
// server that repeats a cursor is an error, not an endless loop.
func TestEachAllocationFollowsCursors(t *testing.T) {
	pages := map[string]string{ // after → body
		"":     `{"items": [{"mac": "06:00:00:00:00:01"}, {"mac": "06:00:00:00:00:02"}], "next": "c/1+"}`,
		"c/1+": `{"items": [{"mac": "06:00:00:00:00:03"}], "next": "c2"}`,
		"c2":   `{"items": [], "next": null}`,
	}
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.URL.Path != "/v1/allocations" || r.URL.Query().Get("limit") != strconv.Itoa(MaxLimit) {
			http.Error(w, "bad request "+r.URL.String(), http.StatusBadRequest)
			return
		}
		body, ok := pages[r.URL.Query().Get("after")]
		if !ok {
			http.Error(w, "no such cursor", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, body)
	}))
	defer srv.Close()
	got, err := GetAllocations(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	var macs []string
	for _, a := range got {
		macs = append(macs, a.MAC)
	}
	if strings.Join(macs, " ") != "06:00:00:00:00:01 06:00:00:00:00:02 06:00:00:00:00:03" || requests.Load() != 3 {
		t.Errorf("got %v in %d requests", macs, requests.Load())
	}

	pages["c2"] = `{"items": [], "next": "c2"}`
	if _, err := GetAllocations(strings.TrimPrefix(srv.URL, "http://")); err == nil || !strings.Contains(err.Error(), "same next cursor twice") {
		t.Errorf("repeated cursor: %v", err)
	}
}

// TestListingMemory measures what a full listing of a million
// allocations adds to the server's peak RSS: the API over a table of
// 1,000,000 allocations (serve's table), listed to the end in pages of
// MaxLimit by a client in the same process that reads each page into one
// reused buffer and takes only the next cursor from it, so that what it
// measures is the server's side. Run by hand, it takes about a minute:
//
//	CLOUDSTACK_PD_LISTING_RSS=1 go test -run '^TestListingMemory$' -v ./httpapi/
//
// docs/BENCHMARKS.md ("Listing a million allocations") has the figure.
func TestListingMemory(t *testing.T) {
	if os.Getenv("CLOUDSTACK_PD_LISTING_RSS") == "" {
		t.Skip("set CLOUDSTACK_PD_LISTING_RSS=1 to measure (about a minute, 1 GB)")
	}
	const n = 1_000_000
	pools := make([]allocator.Pool, 4)
	for i := range pools {
		pools[i] = allocator.Pool{Name: fmt.Sprintf("pod-%d", i), Prefix: netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x00::/40", i+1)),
			PrefixLen: 60, InterfaceID: fmt.Sprintf("VLAN%d", 2700+i)}
	}
	tbl := func() *allocator.Table {
		allocs := make([]allocator.Allocation, n)
		since := testNow.Add(-time.Hour)
		for i := range allocs {
			p := pools[i%len(pools)]
			a := p.Prefix.Addr().As16()
			k := i / len(pools)
			a[5], a[6], a[7] = byte(k>>12), byte(k>>4), byte(k<<4)
			allocs[i] = allocator.Allocation{Pool: p.Name, MAC: []byte{6, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)},
				Prefix: netip.PrefixFrom(netip.AddrFrom16(a), 60), State: allocator.StateActive, Since: since,
				VMID: fmt.Sprintf("vm-%d", i), VMName: fmt.Sprintf("web-%d", i), NICID: fmt.Sprintf("nic-%d", i), Source: "sync"}
		}
		tbl, err := allocator.NewTable(pools, allocs)
		if err != nil {
			t.Fatal(err)
		}
		return tbl
	}()
	api := New(Config{Table: allocator.NewLive(tbl)})
	srv := httptest.NewServer(api)
	defer srv.Close()

	runtime.GC()
	debug.FreeOSMemory()
	before := rss(t, "VmRSS")
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Fatalf("resetting the peak RSS: %v", err)
	}
	start := time.Now()
	count := listRaw(t, srv.URL+"/v1/allocations")
	took := time.Since(start)
	peak := rss(t, "VmHWM")
	added := float64(peak-before) / (1 << 20)
	t.Logf("listed %d allocations in %d pages of %d in %s; RSS before %.1f MiB, peak %.1f MiB: +%.1f MiB",
		count, (count+MaxLimit-1)/MaxLimit, MaxLimit, took.Round(time.Millisecond), float64(before)/(1<<20), float64(peak)/(1<<20), added)
	if count != n {
		t.Errorf("listed %d allocations, want %d", count, n)
	}
	if added >= 50 {
		t.Errorf("a full listing adds %.1f MiB to the peak RSS, want < 50", added)
	}
	runtime.KeepAlive(tbl)
}

// rss reads a /proc/self/status field in bytes.
func rss(t *testing.T, field string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// listRaw walks a listing in pages of MaxLimit, reading each into one
// reused buffer, and returns how many items it held.
func listRaw(t *testing.T, base string) int {
	t.Helper()
	var (
		body  bytes.Buffer
		count int
		after string
	)
	c := &http.Client{}
	for {
		u := base + "?limit=" + strconv.Itoa(MaxLimit)
		if after != "" {
			u += "&after=" + url.QueryEscape(after)
		}
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body.Reset()
		_, err = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %v %s", u, err, resp.Status)
		}
		b := body.Bytes()
		count += bytes.Count(b, []byte(`"mac": `))
		i := bytes.LastIndex(b, []byte(`"next": `))
		if i < 0 {
			t.Fatalf("GET %s: no next", u)
		}
		rest := bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(b[i+len(`"next": `):]), []byte("}")))
		if string(rest) == "null" {
			return count
		}
		if err := json.Unmarshal(rest, &after); err != nil {
			t.Fatalf("GET %s: next %s: %v", u, rest, err)
		}
	}
}
