package etcdstore

import (
	"strings"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

func TestKeyLayout(t *testing.T) {
	for _, tc := range []struct {
		space kv.Space
		want  string
	}{
		{kv.Space{Kind: kv.Meta}, "meta/"},
		{kv.Space{Kind: kv.MACs}, "mac/"},
		{kv.Space{Kind: kv.Bindings}, "binding/"},
		{kv.Space{Kind: kv.BindingPrefix}, "binding-prefix/"},
		{kv.Space{Kind: kv.Alloc, Pool: "pod-a"}, "alloc/pod-a/"},
		{kv.Space{Kind: kv.Prefix, Pool: "a/b%c"}, "prefix/a%2Fb%25c/"},
		{kv.Space{Kind: kv.Kind(200)}, ""}, // no name: no space
	} {
		if got := spacePrefix(tc.space); got != tc.want {
			t.Errorf("spacePrefix(%s) = %q, want %q", tc.space, got, tc.want)
		}
	}
	if _, ok := kindByName[markerKind]; ok {
		t.Errorf("a kv.Kind is named %q, the name of the pool markers", markerKind)
	}
}

func TestParseKey(t *testing.T) {
	for _, tc := range []struct {
		rel         string
		known, ok   bool
		space       kv.Space
		key, marker string
	}{
		{rel: "meta/schema", known: true, ok: true, space: kv.Space{Kind: kv.Meta}, key: "schema"},
		{rel: "alloc/p%2Fq/\x06\x00/x", known: true, ok: true, space: kv.Space{Kind: kv.Alloc, Pool: "p/q"}, key: "\x06\x00/x"},
		{rel: "binding-prefix/\x20\x01", known: true, ok: true, space: kv.Space{Kind: kv.BindingPrefix}, key: "\x20\x01"},
		{rel: "pools/a%25b", known: true, ok: true, marker: "a%b"},
		{rel: "alloc/bad%zz/k", known: true, ok: false},
		{rel: "prefix/no-slash", known: true, ok: false},
		{rel: "pools/a/b", known: true, ok: false},
		{rel: "election/x", known: false},
		{rel: "noslash", known: false},
	} {
		p, known, ok := parseKey(tc.rel)
		if known != tc.known || ok != tc.ok {
			t.Errorf("parseKey(%q) known %v ok %v, want %v %v", tc.rel, known, ok, tc.known, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		if tc.marker != "" {
			if !p.marker || p.pool != tc.marker {
				t.Errorf("parseKey(%q) = %+v, want marker of %q", tc.rel, p, tc.marker)
			}
			continue
		}
		if p.space != tc.space || p.key != tc.key {
			t.Errorf("parseKey(%q) = %+v, want %s %q", tc.rel, p, tc.space, tc.key)
		}
	}
}

// FuzzParseKey: any relative key parses or is refused without a panic,
// and a parsed key is laid out again as the same string.
func FuzzParseKey(f *testing.F) {
	f.Add("alloc/pod-a/\x06\x00\x00\x00\x00\x01") // an allocation
	f.Add("prefix/a%2Fb/k")                       // an escaped pool
	f.Add("pools/%25")                            // a marker
	f.Add("alloc/%2/k")                           // a truncated escape
	f.Add("")                                     // nothing
	f.Fuzz(func(t *testing.T, rel string) {
		p, known, ok := parseKey(rel)
		if !known || !ok {
			return
		}
		var again string
		if p.marker {
			again = markerKey(p.pool)
		} else {
			again = spacePrefix(p.space) + p.key
		}
		if again != rel {
			t.Errorf("parseKey(%q) = %+v, laid out again as %q", rel, p, again)
		}
		if esc := escapePool(p.pool); strings.Contains(esc, "/") {
			t.Errorf("escapePool(%q) = %q holds a '/'", p.pool, esc)
		}
	})
}
