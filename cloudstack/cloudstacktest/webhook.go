package cloudstacktest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// HookWebhook is a webhook the fake keeps, as createWebhook made it.
type HookWebhook struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	Description     string `json:"description,omitempty"`
	PayloadURL      string `json:"payloadurl"`
	SecretKey       string `json:"secretkey,omitempty"`
	Scope           string `json:"scope"`
	State           string `json:"state"`
	SSLVerification bool   `json:"sslverification"`
	Account         string `json:"account"`
	Domain          string `json:"domain"`
	Created         string `json:"created"`
}

// HookDelivery is one delivery the fake made, as listWebhookDeliveries
// lists it.
type HookDelivery struct {
	ID                   string `json:"id"`
	EventID              string `json:"eventid"`
	EventType            string `json:"eventtype"`
	WebhookID            string `json:"webhookid"`
	WebhookName          string `json:"webhookname"`
	ManagementServerID   string `json:"managementserverid"`
	ManagementServerName string `json:"managementservername"`
	Headers              string `json:"headers"`
	Payload              string `json:"payload"`
	Success              bool   `json:"success"`
	Response             string `json:"response"`
	StartDate            string `json:"startdate"`
	EndDate              string `json:"enddate"`
}

// Event is a CloudStack event to deliver (the body's fields).
type Event struct {
	// Type is the event, e.g. VM.CREATE; also sent as X-CS-Event.
	Type        string
	Status      string // default Completed
	Entity      string // default VirtualMachine
	EntityUUID  string
	Description string
	Account     string // default admin
	// ID is X-CS-Event-ID; empty: the fake numbers the events.
	ID string
}

// DeliveryFault is what goes wrong with one event's delivery.
type DeliveryFault struct {
	// Drop: the event is never delivered (CloudStack gave up, or was
	// restarted); it is recorded as a failed delivery.
	Drop bool
	// Duplicate: delivered twice, with the same X-CS-Event-ID.
	Duplicate bool
	// Delay: delivered in the background after this long (Emit returns
	// at once; WaitDeliveries waits for it).
	Delay time.Duration
	// BadSignature: signed with another secret.
	BadSignature bool
	// NoSignature: sent without X-CS-Signature.
	NoSignature bool
}

// maxDeliveries is how many deliveries CloudStack keeps per webhook.
const maxDeliveries = 10

// AccountUUID is the account in User-Agent: CS-Hookshot/<account-uuid>.
const AccountUUID = "5e3b0a6c-9d1f-4c2e-8a7b-000000000001"

type webhooks struct {
	mu         sync.Mutex
	list       []*HookWebhook
	deliveries map[string][]HookDelivery // by webhook id, newest first
	next       int
	pending    sync.WaitGroup
	client     *http.Client
}

var webhookCommands = map[string]func(s *Server, params url.Values) (any, int, string){
	"createWebhook":         (*Server).createWebhook,
	"updateWebhook":         (*Server).updateWebhook,
	"listWebhooks":          (*Server).listWebhooks,
	"listWebhookDeliveries": (*Server).listWebhookDeliveries,
}

func (s *Server) webhookCommand(w http.ResponseWriter, params url.Values, call *Call) {
	cmd := params.Get("command")
	name := responseName(cmd)
	v, status, text := webhookCommands[cmd](s, params)
	call.Status = status
	s.record(*call)
	if status != http.StatusOK {
		writeEnvelope(w, name, status, CSInvalidParameter, text)
		return
	}
	b, _ := json.Marshal(map[string]any{name: v})
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Write(b)
}

func (s *Server) createWebhook(p url.Values) (any, int, string) {
	h := &s.hooks
	h.mu.Lock()
	defer h.mu.Unlock()
	if p.Get("name") == "" || p.Get("payloadurl") == "" {
		return nil, 431, "Unable to execute API command createwebhook due to missing parameter name or payloadurl"
	}
	h.next++
	wh := &HookWebhook{
		ID: fmt.Sprintf("0b1c2d3e-0000-4000-8000-%012d", h.next), Name: p.Get("name"), Description: p.Get("description"),
		PayloadURL: p.Get("payloadurl"), SecretKey: p.Get("secretkey"), Scope: orDefault(p.Get("scope"), "Local"),
		State: orDefault(p.Get("state"), "Enabled"), SSLVerification: p.Get("sslverification") == "true",
		Account: "admin", Domain: "ROOT", Created: time.Now().UTC().Format("2006-01-02T15:04:05-0700"),
	}
	h.list = append(h.list, wh)
	return map[string]any{"webhook": *wh}, http.StatusOK, ""
}

func (s *Server) updateWebhook(p url.Values) (any, int, string) {
	h := &s.hooks
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, wh := range h.list {
		if wh.ID != p.Get("id") {
			continue
		}
		for key, f := range map[string]*string{"name": &wh.Name, "description": &wh.Description, "payloadurl": &wh.PayloadURL,
			"secretkey": &wh.SecretKey, "scope": &wh.Scope, "state": &wh.State} {
			if v := p.Get(key); v != "" {
				*f = v
			}
		}
		if v := p.Get("sslverification"); v != "" {
			wh.SSLVerification = v == "true"
		}
		return map[string]any{"webhook": *wh}, http.StatusOK, ""
	}
	return nil, 431, invalidParam("id", p.Get("id"))
}

func (s *Server) listWebhooks(p url.Values) (any, int, string) {
	h := &s.hooks
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []HookWebhook
	for _, wh := range h.list {
		if n := p.Get("name"); n != "" && wh.Name != n {
			continue
		}
		out = append(out, *wh)
	}
	if len(out) == 0 {
		return struct{}{}, http.StatusOK, ""
	}
	return map[string]any{"count": len(out), "webhook": out}, http.StatusOK, ""
}

func (s *Server) listWebhookDeliveries(p url.Values) (any, int, string) {
	h := &s.hooks
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []HookDelivery
	for _, wh := range h.list {
		if id := p.Get("webhookid"); id == "" || id == wh.ID {
			out = append(out, h.deliveries[wh.ID]...)
		}
	}
	if n, err := strconv.Atoi(p.Get("pagesize")); err == nil && n > 0 && len(out) > n {
		out = out[:n]
	}
	if len(out) == 0 {
		return struct{}{}, http.StatusOK, ""
	}
	return map[string]any{"count": len(out), "webhookdelivery": out}, http.StatusOK, ""
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Webhooks returns the webhooks the fake keeps.
func (s *Server) Webhooks() []HookWebhook {
	h := &s.hooks
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []HookWebhook
	for _, wh := range h.list {
		out = append(out, *wh)
	}
	return out
}

// AddWebhook registers a webhook directly (what createWebhook does), for
// tests that do not go through the API, and returns its id.
func (s *Server) AddWebhook(name, payloadURL, secret string) string {
	v, _, _ := s.createWebhook(url.Values{"name": {name}, "payloadurl": {payloadURL}, "secretkey": {secret}, "scope": {"Global"}})
	return v.(map[string]any)["webhook"].(HookWebhook).ID
}

// Emit delivers e to every enabled webhook as CloudStack does: a POST of
// the event's JSON with X-CS-Event-ID, X-CS-Event, User-Agent
// CS-Hookshot/<account uuid> and X-CS-Signature =
// Base64(HMAC-SHA256(secret, body)), tried up to 3 times until it gets
// HTTP 200, each delivery recorded (the last 10 per webhook). f says what
// goes wrong. It returns the event id and, unless delayed, once the
// deliveries are done.
func (s *Server) Emit(e Event, f DeliveryFault) string {
	h := &s.hooks
	h.mu.Lock()
	h.next++
	if e.ID == "" {
		e.ID = fmt.Sprintf("e7e7e7e7-0000-4000-8000-%012d", h.next)
	}
	hooks := make([]HookWebhook, 0, len(h.list))
	for _, wh := range h.list {
		if wh.State == "Enabled" {
			hooks = append(hooks, *wh)
		}
	}
	if h.client == nil {
		h.client = &http.Client{Timeout: 10 * time.Second}
	}
	h.mu.Unlock()
	body, _ := json.Marshal(map[string]string{
		"event": e.Type, "status": orDefault(e.Status, "Completed"), "entity": orDefault(e.Entity, "VirtualMachine"),
		"entityuuid": e.EntityUUID, "description": e.Description, "account": orDefault(e.Account, "admin"), "user": "admin",
		"eventDateTime": time.Now().UTC().Format("2006-01-02 15:04:05 -0700"),
	})
	send := func() {
		for _, wh := range hooks {
			times := 1
			if f.Duplicate {
				times = 2
			}
			for range times {
				s.deliver(wh, e, body, f)
			}
		}
	}
	if f.Delay > 0 {
		h.pending.Add(1)
		go func() {
			defer h.pending.Done()
			time.Sleep(f.Delay)
			send()
		}()
		return e.ID
	}
	send()
	return e.ID
}

// EmitAll emits the events in reverse order (reordered), each without
// fault, and returns their ids in the order given.
func (s *Server) EmitAll(events []Event, reverse bool) []string {
	ids := make([]string, len(events))
	order := make([]int, len(events))
	for i := range order {
		order[i] = i
	}
	if reverse {
		slices.Reverse(order)
	}
	for _, i := range order {
		ids[i] = s.Emit(events[i], DeliveryFault{})
	}
	return ids
}

// WaitDeliveries waits for the delayed deliveries.
func (s *Server) WaitDeliveries() { s.hooks.pending.Wait() }

// Deliveries returns the deliveries made to the webhook, newest first.
func (s *Server) Deliveries(webhookID string) []HookDelivery {
	h := &s.hooks
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.deliveries[webhookID])
}

func (s *Server) deliver(wh HookWebhook, e Event, body []byte, f DeliveryFault) {
	h := &s.hooks
	d := HookDelivery{EventID: e.ID, EventType: e.Type, WebhookID: wh.ID, WebhookName: wh.Name, Payload: string(body),
		ManagementServerID: "ms-1", ManagementServerName: "management-server-1", StartDate: time.Now().UTC().Format(time.RFC3339)}
	if f.Drop {
		d.Response = "dropped by the fake"
		s.recordDelivery(d)
		return
	}
	for attempt := 0; attempt < 3; attempt++ {
		req, err := http.NewRequest(http.MethodPost, wh.PayloadURL, bytes.NewReader(body))
		if err != nil {
			d.Response = err.Error()
			break
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-CS-Event-ID", e.ID)
		req.Header.Set("X-CS-Event", e.Type)
		req.Header.Set("User-Agent", "CS-Hookshot/"+AccountUUID)
		secret := wh.SecretKey
		if f.BadSignature {
			secret += "-wrong"
		}
		if secret != "" && !f.NoSignature {
			req.Header.Set("X-CS-Signature", SignDelivery(secret, body))
		}
		resp, err := h.client.Do(req)
		if err != nil {
			d.Response = err.Error()
			continue
		}
		resp.Body.Close()
		d.Response = resp.Status
		if resp.StatusCode == http.StatusOK {
			d.Success = true
			break
		}
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusRequestEntityTooLarge {
			break // a retry cannot help; keep the test fast
		}
	}
	d.EndDate = time.Now().UTC().Format(time.RFC3339)
	s.recordDelivery(d)
}

func (s *Server) recordDelivery(d HookDelivery) {
	h := &s.hooks
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next++
	d.ID = fmt.Sprintf("d0d0d0d0-0000-4000-8000-%012d", h.next)
	if h.deliveries == nil {
		h.deliveries = map[string][]HookDelivery{}
	}
	l := append([]HookDelivery{d}, h.deliveries[d.WebhookID]...)
	if len(l) > maxDeliveries {
		l = l[:maxDeliveries]
	}
	h.deliveries[d.WebhookID] = l
}

// SignDelivery is X-CS-Signature: Base64(HMAC-SHA256(secret, body)).
func SignDelivery(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}
