package cloudstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	cs "github.com/apache/cloudstack-go/v2/cloudstack"
)

// The webhook commands (CloudStack 4.20 and later). cloudstack-go v2.19.0
// builds and signs them (createWebhook and updateWebhook are POSTs), but
// declares their answers wrongly: WebhookDelivery holds a webhook's
// fields instead of a delivery's, and the create and update answers,
// {"createwebhookresponse":{"webhook":{…}}}, decode into empty structs.
// So the transport keeps each answer (checkAnswer) and this file decodes
// it into its own types; the library's decoding is ignored.

// Webhook is a webhook as CloudStack lists it.
type Webhook struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	Description     string `json:"description"`
	PayloadURL      string `json:"payloadurl"`
	Scope           string `json:"scope"`
	State           string `json:"state"`
	SSLVerification bool   `json:"sslverification"`
	Account         string `json:"account"`
	Domain          string `json:"domain"`
	Created         string `json:"created"`
}

// WebhookDelivery is one delivery CloudStack made (it keeps the last 10
// per webhook).
type WebhookDelivery struct {
	ID                   string `json:"id"`
	EventID              string `json:"eventid"`
	EventType            string `json:"eventtype"`
	WebhookID            string `json:"webhookid"`
	WebhookName          string `json:"webhookname"`
	ManagementServerName string `json:"managementservername"`
	Success              bool   `json:"success"`
	Response             string `json:"response"`
	StartDate            string `json:"startdate"`
	EndDate              string `json:"enddate"`
}

// WebhookSpec is what RegisterWebhook asks CloudStack for.
type WebhookSpec struct {
	// Name identifies the webhook: RegisterWebhook updates the one of
	// this name, if any.
	Name        string
	Description string
	// PayloadURL is where CloudStack POSTs the deliveries: this
	// server's webhook.listen, as the management server reaches it.
	PayloadURL string
	// Secret is webhook.secret: CloudStack signs each delivery with it.
	Secret string
	// Scope is Local (the API key's account), Domain or Global (every
	// account; ROOT admin only). Empty: Global, since the sync lists
	// every VM (listall=true).
	Scope string
	// SSLVerification makes CloudStack check the payload URL's
	// certificate.
	SSLVerification bool
}

// call sends one command, which build makes through the library, and
// returns the value under the command's response key.
func (c *Client) call(ctx context.Context, command string, build func(lib *cs.CloudStackClient) error) (json.RawMessage, error) {
	if c.err != nil {
		return nil, c.err
	}
	tr := &transport{base: c.base, ctx: ctx, timeout: c.timeout, endpoint: c.endpoint}
	lib := cs.NewClient(c.endpoint, c.apiKey, c.secretKey, true, cs.WithHTTPClient(&http.Client{Transport: tr}))
	err := build(lib)
	ex := tr.take()
	switch {
	case ex.err != nil:
		return nil, fmt.Errorf("cloudstack: %s: %w", command, ex.err)
	case !ex.sent && err != nil:
		return nil, fmt.Errorf("cloudstack: %s: %w", command, getError(c.endpoint, err))
	case ex.body == nil:
		return nil, fmt.Errorf("cloudstack: %s: %w: no answer", command, ErrBadResponse)
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(ex.body, &env); err != nil {
		return nil, fmt.Errorf("cloudstack: %s: %w: %v", command, ErrBadResponse, err)
	}
	return env[strings.ToLower(command)+"response"], nil
}

// ListWebhooks lists the webhooks the API key sees (listall=true), those
// named name only when name is not empty.
func (c *Client) ListWebhooks(ctx context.Context, name string) ([]Webhook, error) {
	const command = "listWebhooks"
	raw, err := c.call(ctx, command, func(lib *cs.CloudStackClient) error {
		p := lib.Webhook.NewListWebhooksParams()
		p.SetListall(true)
		if name != "" {
			p.SetName(name)
		}
		_, err := lib.Webhook.ListWebhooks(p)
		return err
	})
	if err != nil {
		return nil, err
	}
	var r struct {
		Webhooks []Webhook `json:"webhook"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("cloudstack: %s: %w: %v", command, ErrBadResponse, err)
	}
	if name == "" {
		return r.Webhooks, nil
	}
	var out []Webhook // CloudStack's name filter may match more than the name
	for _, w := range r.Webhooks {
		if w.Name == name {
			out = append(out, w)
		}
	}
	return out, nil
}

// decodeWebhook reads {"webhook":{…}}, the answer of createWebhook and
// updateWebhook.
func decodeWebhook(command string, raw json.RawMessage) (Webhook, error) {
	var r struct {
		Webhook *Webhook `json:"webhook"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || r.Webhook == nil {
		return Webhook{}, fmt.Errorf("cloudstack: %s: %w: no webhook in the answer", command, ErrBadResponse)
	}
	return *r.Webhook, nil
}

// RegisterWebhook creates the webhook spec describes, or, when one of its
// name exists, updates it (payload URL, secret, scope, description, SSL
// verification) and enables it. It reports whether it created one.
func (c *Client) RegisterWebhook(ctx context.Context, spec WebhookSpec) (Webhook, bool, error) {
	if spec.Name == "" || spec.PayloadURL == "" || spec.Secret == "" {
		return Webhook{}, false, errors.New("cloudstack: a webhook needs a name, a payload URL and a secret")
	}
	if spec.Scope == "" {
		spec.Scope = "Global"
	}
	existing, err := c.ListWebhooks(ctx, spec.Name)
	if err != nil {
		return Webhook{}, false, err
	}
	switch len(existing) {
	case 0:
		const command = "createWebhook"
		raw, err := c.call(ctx, command, func(lib *cs.CloudStackClient) error {
			p := lib.Webhook.NewCreateWebhookParams(spec.Name, spec.PayloadURL)
			p.SetSecretkey(spec.Secret)
			p.SetScope(spec.Scope)
			p.SetState("Enabled")
			p.SetSslverification(spec.SSLVerification)
			if spec.Description != "" {
				p.SetDescription(spec.Description)
			}
			_, err := lib.Webhook.CreateWebhook(p)
			return err
		})
		if err != nil {
			return Webhook{}, false, err
		}
		w, err := decodeWebhook(command, raw)
		return w, true, err
	case 1:
		const command = "updateWebhook"
		raw, err := c.call(ctx, command, func(lib *cs.CloudStackClient) error {
			p := lib.Webhook.NewUpdateWebhookParams(existing[0].ID)
			p.SetPayloadurl(spec.PayloadURL)
			p.SetSecretkey(spec.Secret)
			p.SetScope(spec.Scope)
			p.SetState("Enabled")
			p.SetSslverification(spec.SSLVerification)
			if spec.Description != "" {
				p.SetDescription(spec.Description)
			}
			_, err := lib.Webhook.UpdateWebhook(p)
			return err
		})
		if err != nil {
			return Webhook{}, false, err
		}
		w, err := decodeWebhook(command, raw)
		return w, false, err
	}
	return Webhook{}, false, fmt.Errorf("cloudstack: %d webhooks named %q: delete all but one (deleteWebhook) or choose another --name", len(existing), spec.Name)
}

// ListWebhookDeliveries returns the deliveries CloudStack recorded for the
// webhook, newest first as CloudStack lists them, at most pageSize (at
// most MaxPageSize).
func (c *Client) ListWebhookDeliveries(ctx context.Context, webhookID string, pageSize int) ([]WebhookDelivery, error) {
	const command = "listWebhookDeliveries"
	raw, err := c.call(ctx, command, func(lib *cs.CloudStackClient) error {
		p := lib.Webhook.NewListWebhookDeliveriesParams()
		p.SetWebhookid(webhookID)
		p.SetPage(1)
		p.SetPagesize(min(max(pageSize, 1), MaxPageSize))
		_, err := lib.Webhook.ListWebhookDeliveries(p)
		return err
	})
	if err != nil {
		return nil, err
	}
	var r struct {
		Deliveries []WebhookDelivery `json:"webhookdelivery"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("cloudstack: %s: %w: %v", command, ErrBadResponse, err)
	}
	return r.Deliveries, nil
}
