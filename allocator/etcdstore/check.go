package etcdstore

import (
	"fmt"
	"strings"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// damagedError is a key under the prefix that does not parse.
type damagedError struct {
	name string
	why  string
}

func (e *damagedError) Error() string { return fmt.Sprintf("store %s is damaged: %s", e.name, e.why) }
func (e *damagedError) Unwrap() error { return kv.ErrDamaged }

// maxFindings bounds the keys an error or a check lists.
const maxFindings = 20

// findings walks the mirror and reports each key of a known kind that
// does not parse (bad) and each key of no known kind (unknown), and each
// pool space without its marker.
func (b *Backend) findings() (bad, unknown, unmarked []string) {
	t, _ := b.snapshot()
	markers := map[string]bool{}
	spaces := map[string]bool{}
	t.Ascend(func(it item) bool {
		p, known, ok := parseKey(it.key())
		switch {
		case !known:
			unknown = append(unknown, it.key())
		case !ok:
			bad = append(bad, it.key())
		case p.marker:
			markers[p.pool] = true
			if it.val() != p.pool {
				bad = append(bad, fmt.Sprintf("%s (names pool %q)", it.key(), it.val()))
			}
		case poolScoped[p.space.Kind]:
			spaces[p.pool] = true
		}
		return true
	})
	for p := range spaces {
		if !markers[p] {
			unmarked = append(unmarked, p)
		}
	}
	return bad, unknown, unmarked
}

func quoteSome(keys []string) string {
	var q []string
	for i, k := range keys {
		if i == maxFindings {
			q = append(q, "…")
			break
		}
		q = append(q, fmt.Sprintf("%q", k))
	}
	return strings.Join(q, ", ")
}

// Verify checks that every key in the mirror of a kind of this layout
// parses into its space (kv.Verifier): a key with a bad pool escape, or a
// pool-scoped key without a pool, gives an error wrapping kv.ErrDamaged.
// Keys of other kinds are ignored (CheckStructure lists them). It reads
// memory only; skipAlloc changes nothing.
func (b *Backend) Verify(skipAlloc bool) error {
	bad, _, _ := b.findings()
	if len(bad) > 0 {
		return &damagedError{name: b.name, why: fmt.Sprintf("%d key(s) under the prefix do not parse: %s", len(bad), quoteSome(bad))}
	}
	return nil
}

// CheckStructure reports, one line each, the keys under the prefix that
// do not parse, the keys of no kind this version knows (another
// program's under the same prefix?), and pools whose spaces have no pool
// marker (kv.Checker).
func (b *Backend) CheckStructure() ([]string, error) {
	bad, unknown, unmarked := b.findings()
	var out []string
	for i, k := range bad {
		if i == maxFindings {
			out = append(out, fmt.Sprintf("… %d more keys that do not parse", len(bad)-i))
			break
		}
		out = append(out, fmt.Sprintf("%s%s: key does not parse", b.prefix, k))
	}
	if len(unknown) > 0 {
		out = append(out, fmt.Sprintf("%d key(s) of no known kind under the prefix (known: %s, %s): %s",
			len(unknown), strings.Join(kindNames(), ", "), markerKind, quoteSome(unknown)))
	}
	for _, p := range unmarked {
		out = append(out, fmt.Sprintf("%s%s: missing pool marker", b.prefix, markerKey(p)))
	}
	return out, nil
}
