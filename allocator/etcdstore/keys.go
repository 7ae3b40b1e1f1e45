package etcdstore

import (
	"slices"
	"strings"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// markerKind is the name under the prefix of the pool markers: one key per
// pool that has (or had) a pool-scoped space, so that Tx.Pools reads a
// short range (and an Update that read it compares a short range).
const markerKind = "pools"

// kindByName maps the name of every key space kind (kv.Kind.String) to
// the kind; poolScoped says which kinds are per pool (kv.Space.String
// names the pool): a kind package kv adds later is laid out without a
// change here. fenced are the kinds a write to which needs a fence (the
// allocation table); the pool markers too.
var (
	kindByName, poolScoped = kinds()
	fenced                 = [256]bool{kv.Alloc: true, kv.Prefix: true, kv.MACs: true, kv.Held: true}
)

func kinds() (map[string]kv.Kind, *[256]bool) {
	byName := map[string]kv.Kind{}
	var scoped [256]bool
	for i := 1; i < 256; i++ {
		k := kv.Kind(i)
		name := k.String()
		if name == "unknown" || name == markerKind {
			continue
		}
		byName[name] = k
		scoped[i] = kv.Space{Kind: k, Pool: "x"}.String() != name
	}
	return byName, &scoped
}

// knownKind reports whether k has a name (its String is not "unknown").
func knownKind(k kv.Kind) bool {
	named, ok := kindByName[k.String()]
	return ok && named == k
}

// escapePool writes a pool name so that it holds no '/': '%' becomes
// "%25" and '/' "%2F". Two pools' spaces never nest.
func escapePool(name string) string {
	if !strings.ContainsAny(name, "%/") {
		return name
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		switch c := name[i]; c {
		case '%':
			b.WriteString("%25")
		case '/':
			b.WriteString("%2F")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// unescapePool reverses escapePool; false for what escapePool never
// writes (a '/', or a '%' not followed by 25 or 2F).
func unescapePool(s string) (string, bool) {
	if strings.IndexByte(s, '/') >= 0 {
		return "", false
	}
	if strings.IndexByte(s, '%') < 0 {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "%25"):
			b.WriteByte('%')
		case strings.HasPrefix(s[i:], "%2F"):
			b.WriteByte('/')
		default:
			return "", false
		}
		i += 2
	}
	return b.String(), true
}

// spacePrefix returns the relative key (without the backend's prefix)
// every key of s starts with: "<kind>/" or "<kind>/<escaped pool>/"; ""
// for a kind without a name.
func spacePrefix(s kv.Space) string {
	if !knownKind(s.Kind) {
		return ""
	}
	if poolScoped[s.Kind] {
		return s.Kind.String() + "/" + escapePool(s.Pool) + "/"
	}
	return s.Kind.String() + "/"
}

// markerKey is the relative key of pool's marker.
func markerKey(pool string) string { return markerKind + "/" + escapePool(pool) }

// prefixEnd returns the first string after every string that starts with
// p (p ends in '/', so this is p with '/' turned into '0').
func prefixEnd(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return "\x00" // unreachable for our prefixes
}

// parsed is what a relative key says.
type parsed struct {
	marker bool   // a pool marker
	pool   string // the pool of a marker or of a pool-scoped space
	space  kv.Space
	key    string // the key within the space
}

// parseKey reads a relative key. known is false for a key whose kind has
// no name (another program's, or a newer version's): ignored. ok is false
// for a key of a known kind that does not parse (a bad pool escape, no
// '/' after the pool): damage.
func parseKey(rel string) (p parsed, known, ok bool) {
	kind, rest, found := strings.Cut(rel, "/")
	if !found {
		return p, false, false
	}
	if kind == markerKind {
		name, ok := unescapePool(rest)
		return parsed{marker: true, pool: name}, true, ok
	}
	k, isKind := kindByName[kind]
	if !isKind {
		return p, false, false
	}
	if !poolScoped[k] {
		return parsed{space: kv.Space{Kind: k}, key: rest}, true, true
	}
	esc, key, found := strings.Cut(rest, "/")
	if !found {
		return p, true, false
	}
	name, ok := unescapePool(esc)
	if !ok {
		return p, true, false
	}
	return parsed{pool: name, space: kv.Space{Kind: k, Pool: name}, key: key}, true, true
}

// kindNames returns the names of the known kinds, sorted: for messages.
func kindNames() []string {
	var out []string
	for n := range kindByName {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// SpacePrefix returns the etcd key every key of space s starts with in a
// store under prefix ("/cloudstack-pd/table/", ending in '/'): for a
// reader of the store's keys other than a Backend (a follower of the
// allocations). "" for a kind without a name.
func SpacePrefix(prefix string, s kv.Space) string {
	sp := spacePrefix(s)
	if sp == "" {
		return ""
	}
	return prefix + sp
}

// KindPrefix returns the etcd key every key of kind k starts with (every
// pool's spaces of a pool-scoped kind) under prefix; "" for a kind
// without a name.
func KindPrefix(prefix string, k kv.Kind) string {
	if !knownKind(k) {
		return ""
	}
	return prefix + k.String() + "/"
}

// ParseKey reads an etcd key of a store under prefix: its space and its
// key within the space. ok is false for a key outside the prefix, a pool
// marker, a key of no known kind or one that does not parse.
func ParseKey(prefix, key string) (s kv.Space, k []byte, ok bool) {
	if !strings.HasPrefix(key, prefix) {
		return s, nil, false
	}
	p, known, good := parseKey(key[len(prefix):])
	if !known || !good || p.marker {
		return s, nil, false
	}
	return p.space, []byte(p.key), true
}

// PrefixEnd returns the first key after every key that starts with p:
// the end of p's range.
func PrefixEnd(p string) string { return prefixEnd(p) }

// MarkerPrefix returns the etcd key every pool marker starts with under
// prefix; a marker's value is its pool's name.
func MarkerPrefix(prefix string) string { return prefix + markerKind + "/" }
