package config

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// Diff lists what differs from old to new, one "key: old → new" line per
// key path (a mapping entry added or removed as a whole), in key order.
// A secret's value is never shown: its line says only that it changed.
// Path is not compared.
func Diff(old, new *Config) []string {
	a, b := map[string]string{}, map[string]string{}
	flatten(reflect.ValueOf(old).Elem(), "", a)
	flatten(reflect.ValueOf(new).Elem(), "", b)
	keys := slices.Sorted(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var out []string
	for _, k := range keys {
		va, ina := a[k]
		vb, inb := b[k]
		if ina && inb && va == vb {
			continue
		}
		switch {
		case SecretKey(k) || holdsSecrets(k):
			out = append(out, k+": changed")
		case !ina:
			out = append(out, fmt.Sprintf("%s: added (%s)", k, vb))
		case !inb:
			out = append(out, fmt.Sprintf("%s: removed (was %s)", k, va))
		case urlKey(k):
			out = append(out, fmt.Sprintf("%s: %s → %s", k, MaskURL(va), MaskURL(vb)))
		default:
			out = append(out, fmt.Sprintf("%s: %s → %s", k, va, vb))
		}
	}
	return out
}

// flatten writes every leaf of v under path into out, by the keys of the
// file (mapstructure tags); a mapping entry is one leaf per field.
func flatten(v reflect.Value, path string, out map[string]string) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			flatten(v.Elem(), path, out)
		}
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[struct{}]() {
			return
		}
		if _, ok := v.Interface().(fmt.Stringer); ok && v.NumField() == 0 {
			out[path] = fmt.Sprint(v.Interface())
			return
		}
		for i := range v.NumField() {
			f := v.Type().Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			flatten(v.Field(i), join(path, name), out)
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			flatten(v.MapIndex(k), join(path, fmt.Sprint(k.Interface())), out)
		}
	default:
		out[path] = fmt.Sprint(v.Interface())
	}
}
