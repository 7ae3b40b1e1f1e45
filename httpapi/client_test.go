package httpapi

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

// TestGetAllocations: the client reads what /v1/allocations serves, the
// same views as AllocationOf makes of the table, and names the URL when
// the server answers otherwise.
func TestGetAllocations(t *testing.T) {
	w := newWorld(t)
	srv := httptest.NewServer(w.handler)
	defer srv.Close()
	listen := strings.TrimPrefix(srv.URL, "http://")
	got, err := GetAllocations(listen)
	if err != nil {
		t.Fatal(err)
	}
	var want []Allocation
	for _, a := range testAllocations() {
		p, _ := w.live.Current().Pool(a.Pool)
		want = append(want, AllocationOf(&a, p))
	}
	if len(got) != len(want) {
		t.Fatalf("%d allocations, want %d", len(got), len(want))
	}
	byPrefix := map[netip.Prefix]Allocation{}
	for _, a := range got {
		byPrefix[a.Prefix] = a
	}
	for _, a := range want {
		if !jsonEqual(byPrefix[a.Prefix], a) {
			t.Errorf("%s: got %+v, want %+v", a.Prefix, byPrefix[a.Prefix], a)
		}
	}

	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	listen = strings.TrimPrefix(notFound.URL, "http://")
	if _, err := GetAllocations(listen); err == nil || !strings.Contains(err.Error(), "GET http://"+listen+"/v1/allocations: 404") {
		t.Errorf("404: %v", err)
	}
}
