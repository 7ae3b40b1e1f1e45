package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/httpapi"
)

// TestJSONArrayIsEncoders: allocations --json, written one allocation at
// a time, prints what encoding/json's Encoder (indent "  ") prints of the
// whole slice, empty included.
func TestJSONArrayIsEncoders(t *testing.T) {
	views := []httpapi.Allocation{
		{MAC: "06:32:b2:00:04:79", Prefix: netip.MustParsePrefix("2001:db8:200::/60"), Pool: "pod-a", State: allocator.StateActive, VMName: "<web>"},
		{MAC: "06:32:b2:00:04:7a", Prefix: netip.MustParsePrefix("2001:db8:200:10::/60"), Pool: "pod-a", State: allocator.StateGone},
	}
	for n := range len(views) + 1 {
		var want, got bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetIndent("", "  ")
		if err := enc.Encode(append([]httpapi.Allocation{}, views[:n]...)); err != nil {
			t.Fatal(err)
		}
		j := &jsonArray{out: &got}
		for i := range views[:n] {
			if err := j.Write(&views[i]); err != nil {
				t.Fatal(err)
			}
		}
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("%d allocations:\n got %q\nwant %q", n, got.String(), want.String())
		}
	}
}
