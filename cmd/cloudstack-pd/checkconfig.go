package main

import (
	"encoding"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/cloudstack-pd/cloudstack-pd/server/config"
)

func newCheckConfigCmd() *cobra.Command {
	var (
		cfgPath string
		quiet   bool
	)
	cmd := &cobra.Command{
		Use:   "check-config",
		Short: "Validate a config file and print the config in effect, secrets masked",
		Long: `Check-config loads the config file the way serve does (defaults filled in,
CLOUDSTACK_PD_* environment overrides applied) and validates it.

A valid config is printed as YAML on standard output, every key with the
value in effect, and the exit status is 0. Secrets (api.apikey,
api.secretkey, and any key named like a secret, password or token) are
shown as "(set)" or "", never their value, and a URL's user info and
query values as xxxxx. The header lists the environment variables that
override a key; a CLOUDSTACK_PD_* variable that names no key is reported
on standard error, since it is ignored.

An invalid config exits with status 1 and lists every problem on standard
error, each naming its key and the value at fault, e.g. (a list or a map,
a value where api and its secrets belong, and a URL's credentials are not
shown)

  cloudstack-pd: config /etc/cloudstack-pd/config.yaml: 2 problem(s)
    mapping.pod-a.prefixlen: unknown key (a typo?); see example/cloudstack-pd.yaml for the keys
    server.valid-lifetime: "forever": cannot parse value as 'int': strconv.ParseInt: invalid syntax

Run it before a reload (systemctl reload sends SIGHUP): serve refuses an
invalid config at SIGHUP too, and keeps the old one, but check-config says
why before anything is sent. It opens neither the store nor a socket, so it
can run next to a running server.`,
		Example: `  cloudstack-pd check-config --config /etc/cloudstack-pd/config.yaml
  cloudstack-pd check-config -c /etc/cloudstack-pd/config.yaml -q && systemctl reload cloudstack-pd`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCheckConfig(cmd.OutOrStdout(), cmd.ErrOrStderr(), cfgPath, os.Environ(), quiet)
		},
	}
	addConfigFlag(cmd, &cfgPath)
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print nothing when the config is valid (warnings still go to standard error)")
	return cmd
}

// runCheckConfig validates the config at path and prints it to out, with
// warnings to errOut; environ is the environment Load saw (os.Environ()).
func runCheckConfig(out, errOut io.Writer, path string, environ []string, quiet bool) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err // config.Problem never prints a secret's value
	}
	var warnings []string
	if _, err := cfg.ListenAddrs(); err != nil {
		warnings = append(warnings, `server.listen: empty: serve refuses to start without it (other commands do not need it)`)
	}

	doc, keys := effectiveConfig(cfg)
	var fromEnv []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, config.EnvPrefix+"_") {
			continue
		}
		if key, ok := keys[name]; ok {
			fromEnv = append(fromEnv, fmt.Sprintf("%s (%s)", name, key))
		} else {
			warnings = append(warnings, fmt.Sprintf("%s is set but names no config key: it is ignored", name))
		}
	}
	slices.Sort(fromEnv)
	for _, w := range warnings {
		fmt.Fprintln(errOut, "warning:", w)
	}
	if quiet {
		return nil
	}

	fmt.Fprintf(out, "# %s is valid.\n", path)
	fmt.Fprintln(out, "# The config in effect: defaults filled in, environment overrides applied, secrets masked.")
	if len(fromEnv) > 0 {
		fmt.Fprintln(out, "# From the environment:", strings.Join(fromEnv, ", "))
	}
	enc := yaml.NewEncoder(out)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("printing the config: %w", err)
	}
	return enc.Close()
}

// maskedValue is what a secret that is set prints as.
const maskedValue = "(set)"

// effectiveConfig renders cfg as a YAML document, keys in the order of the
// Config struct (map keys sorted), secrets masked. It also returns every
// key path by the name of the environment variable that overrides it.
func effectiveConfig(cfg *config.Config) (*yaml.Node, map[string]string) {
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
	return config.EnvPrefix + "_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
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
	if config.SecretKey(name) && v.Kind() == reflect.String {
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
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: config.MaskURL(v.String())}
	}
	return toNode(v, path, keys)
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
