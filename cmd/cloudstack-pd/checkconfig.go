package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/cloudstack-pd/cloudstack-pd/config"
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
	c := config.Check(cfg, environ)
	for _, w := range c.Warnings {
		fmt.Fprintln(errOut, "warning:", w)
	}
	if quiet {
		return nil
	}
	fmt.Fprintf(out, "# %s is valid.\n", path)
	fmt.Fprintln(out, "# The config in effect: defaults filled in, environment overrides applied, secrets masked.")
	if len(c.FromEnv) > 0 {
		fmt.Fprintln(out, "# From the environment:", strings.Join(c.FromEnv, ", "))
	}
	enc := yaml.NewEncoder(out)
	enc.SetIndent(2)
	if err := enc.Encode(c.Doc); err != nil {
		return fmt.Errorf("printing the config: %w", err)
	}
	return enc.Close()
}
