package config

import (
	"encoding"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Checked is what check-config reports of a config that loaded.
type Checked struct {
	// Doc is the config in effect (Effective).
	Doc *yaml.Node
	// FromEnv lists the environment variables that override a key, as
	// "NAME (key)", sorted.
	FromEnv []string
	// Warnings are what is wrong but does not make the config invalid: an
	// empty server.listen, a CLOUDSTACK_PD_* variable that names no key.
	Warnings []string
}

// Check renders cfg as check-config prints it; environ is the environment
// Load saw (os.Environ()).
func Check(cfg *Config, environ []string) Checked {
	var c Checked
	if _, err := cfg.ListenAddrs(); err != nil {
		c.Warnings = append(c.Warnings, `server.listen: empty: serve refuses to start without it (other commands do not need it)`)
	}
	doc, keys := Effective(cfg)
	c.Doc = doc
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix+"_") {
			continue
		}
		if key, ok := keys[name]; ok {
			c.FromEnv = append(c.FromEnv, fmt.Sprintf("%s (%s)", name, key))
		} else {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s is set but names no config key: it is ignored", name))
		}
	}
	slices.Sort(c.FromEnv)
	return c
}

// maskedValue is what a secret that is set prints as.
const maskedValue = "(set)"

// Effective renders cfg as a YAML document, keys in the order of the
// Config struct (map keys sorted), secrets masked. It also returns every
// key path by the name of the environment variable that overrides it.
func Effective(cfg *Config) (*yaml.Node, map[string]string) {
	keys := map[string]string{}
	root := toNode(reflect.ValueOf(cfg).Elem(), "", keys)
	return &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}, keys
}

var (
	durationType      = reflect.TypeFor[time.Duration]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// envName is the environment variable that overrides key, as config.Parse
// binds it: the prefix, then the key in capitals, dots and dashes as
// underscores.
func envName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
}

// toNode converts v, found at key path, to a YAML node. Struct fields are
// named by their mapstructure tags, as in the file.
func toNode(v reflect.Value, path string, keys map[string]string) *yaml.Node {
	if path != "" {
		keys[envName(path)] = path
	}
	scalar := func(tag, s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: s} }
	if !v.IsValid() {
		return scalar("!!null", "null")
	}
	if v.Type() == durationType {
		return scalar("!!str", time.Duration(v.Int()).String())
	}
	if v.Kind() != reflect.String && v.Type().Implements(textMarshalerType) {
		if v.Kind() == reflect.Pointer && v.IsNil() {
			return scalar("!!null", "null")
		}
		b, err := v.Interface().(encoding.TextMarshaler).MarshalText()
		if err == nil {
			return scalar("!!str", string(b))
		}
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return scalar("!!null", "null")
		}
		return toNode(v.Elem(), path, keys)
	case reflect.Struct:
		n := &yaml.Node{Kind: yaml.MappingNode}
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
			if name == "-" {
				continue
			}
			if strings.Contains(opts, "squash") {
				n.Content = append(n.Content, toNode(v.Field(i), path, keys).Content...)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			n.Content = append(n.Content, scalar("!!str", name), fieldNode(v.Field(i), join(path, name), name, keys))
		}
		return n
	case reflect.Map:
		n := &yaml.Node{Kind: yaml.MappingNode}
		mk := v.MapKeys()
		slices.SortFunc(mk, func(a, b reflect.Value) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
		for _, k := range mk {
			name := fmt.Sprint(k.Interface())
			n.Content = append(n.Content, scalar("!!str", name), fieldNode(v.MapIndex(k), join(path, name), name, keys))
		}
		return n
	case reflect.Slice, reflect.Array:
		n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for i := range v.Len() {
			c := toNode(v.Index(i), path+"["+strconv.Itoa(i)+"]", map[string]string{})
			if c.Kind != yaml.ScalarNode {
				n.Style = 0
			}
			n.Content = append(n.Content, c)
		}
		return n
	case reflect.Bool:
		return scalar("!!bool", strconv.FormatBool(v.Bool()))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return scalar("!!int", strconv.FormatInt(v.Int(), 10))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return scalar("!!int", strconv.FormatUint(v.Uint(), 10))
	case reflect.Float32, reflect.Float64:
		return scalar("!!float", strconv.FormatFloat(v.Float(), 'g', -1, 64))
	case reflect.String:
		return scalar("!!str", v.String())
	}
	return scalar("!!str", fmt.Sprint(v.Interface()))
}

// fieldNode is toNode for a named key, masking it when it holds a secret.
func fieldNode(v reflect.Value, path, name string, keys map[string]string) *yaml.Node {
	if SecretKey(name) && v.Kind() == reflect.String {
		keys[envName(path)] = path
		s := ""
		if v.String() != "" {
			s = maskedValue
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	}
	if strings.Contains(name, "url") && v.Kind() == reflect.String {
		// Load refuses credentials in api.url; should a URL carry any,
		// they are masked all the same.
		keys[envName(path)] = path
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: MaskURL(v.String())}
	}
	return toNode(v, path, keys)
}
