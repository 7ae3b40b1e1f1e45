package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cloudstack-pd/cloudstack-pd/cloudstack"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/daemon"
)

// DefaultWebhookName is the name webhook register gives the webhook.
const DefaultWebhookName = "cloudstack-pd"

type webhookFlags struct {
	config, name, url, scope string
	noSSLVerify              bool
	limit                    int
}

func newWebhookCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "webhook",
		Short: "Register cloudstack-pd's webhook in CloudStack (4.20+), and see its deliveries",
		Long: `CloudStack 4.20 and later POST every event to the webhooks registered in
it. serve, given webhook.listen and webhook.secret, syncs the VM an event
names at once (VM.CREATE, VM.START, NIC.CREATE, …): a new VM has its prefix
within a second instead of at the next api.interval (docs/sync.md).

  register  creates the webhook (createWebhook), or updates the one of the
            same --name (updateWebhook): payload URL, webhook.secret, scope
  status    shows the webhook and its recent deliveries
            (listWebhookDeliveries; CloudStack keeps the last 10)

Both use the config's api section (the API key must be allowed to manage
webhooks; scope Global needs a ROOT admin's key).`,
	}
	cmd.AddCommand(newWebhookRegisterCmd(), newWebhookStatusCmd())
	return cmd
}

func newWebhookRegisterCmd() *cobra.Command {
	var f webhookFlags
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Create or update the webhook that sends CloudStack's events to serve",
		Long: `register creates a webhook in CloudStack that POSTs every event to --url,
signed with webhook.secret (X-CS-Signature), or, when a webhook of that
--name exists, updates its payload URL, secret and scope and enables it.
Run it again after changing webhook.secret (then reload serve).

--url is the webhook listener (webhook.listen) as the management server
reaches it: https://… when webhook.cert-file is set. The scope is Global
by default (events of every account, as the sync lists every VM; needs a
ROOT admin's API key); Domain or Local narrow it to the key's domain or
account.`,
		Example: `  cloudstack-pd webhook register --config /etc/cloudstack-pd/config.yaml --url https://pd1.example.com:9548/`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runWebhookRegister(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	addConfigFlag(cmd, &f.config)
	cmd.Flags().StringVar(&f.url, "url", "", "the payload URL: webhook.listen as the management server reaches it (required)")
	cmd.Flags().StringVar(&f.name, "name", DefaultWebhookName, "the webhook's name in CloudStack")
	cmd.Flags().StringVar(&f.scope, "scope", "Global", "Global, Domain or Local")
	cmd.Flags().BoolVar(&f.noSSLVerify, "no-ssl-verification", false, "let CloudStack deliver to an https URL whose certificate it cannot verify")
	return cmd
}

func newWebhookStatusCmd() *cobra.Command {
	var f webhookFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the webhook and its recent deliveries",
		Long: `status shows the webhook of --name as CloudStack has it (payload URL,
scope, state) and its recent deliveries, newest first: when, which event,
whether serve answered 200. A delivery that failed with 401 means the
webhook's secret and webhook.secret differ: run register again.`,
		Example: `  cloudstack-pd webhook status --config /etc/cloudstack-pd/config.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runWebhookStatus(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	addConfigFlag(cmd, &f.config)
	cmd.Flags().StringVar(&f.name, "name", DefaultWebhookName, "the webhook's name in CloudStack")
	cmd.Flags().IntVar(&f.limit, "limit", 10, "how many deliveries to show")
	return cmd
}

// webhookClient is the CloudStack client of the config's api section.
func webhookClient(cfg *config.Config, stderr io.Writer) (*cloudstack.Client, error) {
	if why := cfg.API.WhyNoSync(); why != "" {
		return nil, fmt.Errorf("config %s: no CloudStack API to talk to: %s", cfg.Path, why)
	}
	a := cfg.API
	return cloudstack.New(a.URL, a.APIKey, a.SecretKey, cloudstack.Options{
		Timeout: a.Timeout, InsecureSkipVerify: !a.VerifyTLS, Logger: daemon.NewLogger(cfg.Log, stderr),
	}), nil
}

func runWebhookRegister(ctx context.Context, out io.Writer, f webhookFlags) error {
	cfg, err := config.Load(f.config)
	if err != nil {
		return err
	}
	if cfg.Webhook.Secret == "" {
		return fmt.Errorf("config %s: webhook.secret is empty: set it (and webhook.listen), then register", cfg.Path)
	}
	u, err := url.Parse(f.url)
	if f.url == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--url %q: give the webhook listener's URL as the management server reaches it, e.g. https://pd1.example.com:9548/", f.url)
	}
	switch f.scope {
	case "Global", "Domain", "Local":
	default:
		return fmt.Errorf("--scope %q: Global, Domain or Local", f.scope)
	}
	c, err := webhookClient(cfg, out)
	if err != nil {
		return err
	}
	w, created, err := c.RegisterWebhook(ctx, cloudstack.WebhookSpec{
		Name: f.name, PayloadURL: f.url, Secret: cfg.Webhook.Secret, Scope: f.scope,
		Description:     "cloudstack-pd: a targeted sync of each VM an event names",
		SSLVerification: !f.noSSLVerify,
	})
	if err != nil {
		return err
	}
	what := "updated"
	if created {
		what = "created"
	}
	fmt.Fprintf(out, "%s webhook %q (id %s): events POSTed to %s, scope %s, %s, signed with webhook.secret\n",
		what, w.Name, w.ID, w.PayloadURL, w.Scope, w.State)
	return nil
}

func runWebhookStatus(ctx context.Context, out io.Writer, f webhookFlags) error {
	cfg, err := config.Load(f.config)
	if err != nil {
		return err
	}
	c, err := webhookClient(cfg, out)
	if err != nil {
		return err
	}
	hooks, err := c.ListWebhooks(ctx, f.name)
	if err != nil {
		return err
	}
	if len(hooks) == 0 {
		return fmt.Errorf("no webhook named %q in CloudStack: run 'cloudstack-pd webhook register'", f.name)
	}
	for _, w := range hooks {
		fmt.Fprintf(out, "webhook %q (id %s): %s, scope %s, payload URL %s, SSL verification %v\n",
			w.Name, w.ID, w.State, w.Scope, w.PayloadURL, w.SSLVerification)
		ds, err := c.ListWebhookDeliveries(ctx, w.ID, f.limit)
		if err != nil {
			return err
		}
		if len(ds) == 0 {
			fmt.Fprintln(out, "no deliveries recorded")
			continue
		}
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "START\tEVENT\tEVENT ID\tOK\tRESPONSE")
		failed := 0
		for _, d := range ds {
			ok := "yes"
			if !d.Success {
				ok, failed = "NO", failed+1
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.StartDate, d.EventType, d.EventID, ok, d.Response)
		}
		tw.Flush()
		if failed > 0 {
			fmt.Fprintf(out, "%d of the %d deliveries shown failed: a 401 means the webhook's secret is not webhook.secret (run register again); "+
				"no answer means the management server cannot reach the payload URL. The next full sync (api.interval) catches what they missed.\n", failed, len(ds))
		}
	}
	return nil
}
