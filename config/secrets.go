package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
)

// What a problem shows of a value, so that no secret reaches an error, a
// log line or check-config's output, whatever the shape of the config:
//
//   - a key named like a secret (SecretKey): "(set)", never the value nor
//     the decoder's message;
//   - a key that holds secrets below it (api): only the kind of value
//     found ("a list", "a string"), since a list or a string there may
//     well be the keys themselves;
//   - a list or a map, anywhere: only its kind, since a secret may sit in
//     it under any name;
//   - a URL (a key named like url, or a value with "://"): its user info
//     and its query and fragment values masked (MaskURL);
//   - a parse error of the file: values yaml quotes in backquotes masked.

// masked replaces a credential inside a URL, as url.URL.Redacted does.
const masked = "xxxxx"

// secretParents are the key paths with a secret key below them ("api"),
// found from Config's mapstructure tags.
var secretParents = func() map[string]bool {
	parents := map[string]bool{}
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Map || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			if SecretKey(name) {
				for p := path; p != ""; p, _ = cutLast(p) {
					parents[p] = true
				}
			}
			// Map keys (pod UUIDs) are not part of the path: a secret
			// under any entry marks the map's key.
			walk(f.Type, join(path, name))
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return parents
}()

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// cutLast drops the last segment of a key path.
func cutLast(path string) (string, string) {
	i := strings.LastIndexByte(path, '.')
	if i < 0 {
		return "", path
	}
	return path[:i], path[i+1:]
}

// holdsSecrets reports whether a secret key lies below key.
func holdsSecrets(key string) bool { return secretParents[normKey(key)] }

// urlKey reports whether key names a URL, whose value is masked by MaskURL.
func urlKey(key string) bool {
	_, last := cutLast(normKey(key))
	return strings.Contains(last, "url") || strings.Contains(last, "uri") || strings.Contains(last, "endpoint")
}

// MaskURL returns s, read as a URL (with or without a scheme), with its
// user info, its query values and its fragment masked as "xxxxx":
// https://user:pass@host/api?apikey=K&signature=S becomes
// https://xxxxx@host/api?apikey=xxxxx&signature=xxxxx. The rest is kept, so
// that the operator still sees which URL it is. It works on text that does
// not parse as a URL too.
func MaskURL(s string) string {
	scheme, rest := "", s
	if i := strings.Index(s, "://"); i >= 0 {
		scheme, rest = s[:i+3], s[i+3:]
	}
	// The authority ends at the first "/"; an "@" before it ends the user
	// info, even when a password holds "?" or "#".
	end := strings.IndexByte(rest, '/')
	if end < 0 {
		end = len(rest)
	}
	if at := strings.LastIndexByte(rest[:end], '@'); at >= 0 {
		rest = masked + rest[at:]
	}
	frag, hasFrag := "", false
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		rest, frag, hasFrag = rest[:i], rest[i+1:], true
	}
	query, hasQuery := "", false
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		rest, query, hasQuery = rest[:i], rest[i+1:], true
	}
	var b strings.Builder
	b.WriteString(scheme)
	b.WriteString(rest)
	if hasQuery {
		b.WriteByte('?')
		b.WriteString(queryMasker.ReplaceAllStringFunc(query, func(item string) string {
			if name, _, ok := strings.Cut(item, "="); ok {
				return name + "=" + masked
			}
			return masked
		}))
	}
	if hasFrag && frag != "" {
		b.WriteString("#" + masked)
	}
	return b.String()
}

// queryMasker matches the items of a query, between "&" and ";".
var queryMasker = regexp.MustCompile(`[^&;]+`)

// yamlQuoted matches a value yaml quotes in an error ("cannot unmarshal
// !!str `hunter2` into …").
var yamlQuoted = regexp.MustCompile("`[^`]*`")

// maskParseError masks the values a parser's message quotes.
func maskParseError(msg string) string {
	return yamlQuoted.ReplaceAllLiteralString(msg, "(value not shown)")
}

// keyName matches a key that reads as a name; anything else (a space, a
// colon, an "=") may be a value typed where a key was meant.
var keyName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// safeKey returns the unknown key path key, its last segment replaced
// when it does not read as a name.
func safeKey(key string) string {
	parent, last := cutLast(key)
	if keyName.MatchString(last) {
		return key
	}
	return join(parent, "(a key that is not a name; not shown)")
}

// kindOf names the kind of a decoded value, for a value not shown.
func kindOf(v any) string {
	switch reflect.ValueOf(v).Kind() {
	case reflect.Map, reflect.Struct:
		return "a map"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "a value"
}

// shown is what p prints of its value and of its message: the value
// quoted, or its kind when it is not shown; the message without the
// values it may quote.
func (p Problem) shown() (value, msg string) {
	rv := reflect.ValueOf(p.Value)
	hide := ""
	switch {
	case rv.Kind() == reflect.Map || rv.Kind() == reflect.Slice || rv.Kind() == reflect.Array || rv.Kind() == reflect.Struct:
		hide = "not shown"
	case holdsSecrets(p.Key):
		hide = "not shown: " + normKey(p.Key) + " holds secrets"
	}
	if hide != "" {
		msg = p.Msg
		for _, s := range stringsIn(p.Value) {
			msg = strings.ReplaceAll(msg, s, "(not shown)")
		}
		return fmt.Sprintf("(%s, %s)", kindOf(p.Value), hide), msg
	}
	s := fmt.Sprint(p.Value)
	if urlKey(p.Key) || strings.Contains(s, "://") {
		if m := MaskURL(s); m != s {
			return strconv.Quote(m), strings.ReplaceAll(p.Msg, s, m)
		}
	}
	return strconv.Quote(s), p.Msg
}

// stringsIn lists the scalar values in v, as text, that a message might
// quote (of three bytes or more, so that "1" does not mangle a message).
func stringsIn(v any) []string {
	var out []string
	var walk func(rv reflect.Value)
	walk = func(rv reflect.Value) {
		switch rv.Kind() {
		case reflect.Interface, reflect.Pointer:
			if !rv.IsNil() {
				walk(rv.Elem())
			}
		case reflect.Map:
			for _, k := range rv.MapKeys() {
				walk(rv.MapIndex(k))
			}
		case reflect.Slice, reflect.Array:
			for i := range rv.Len() {
				walk(rv.Index(i))
			}
		case reflect.Invalid:
		default:
			if s := fmt.Sprint(rv.Interface()); len(s) >= 3 {
				out = append(out, s)
			}
		}
	}
	walk(reflect.ValueOf(v))
	return out
}
