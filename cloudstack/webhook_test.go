package cloudstack

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
)

// RegisterWebhook creates the webhook once, then updates the same one
// (a new payload URL and secret); ListWebhookDeliveries reads what
// CloudStack delivered, newest first.
func TestRegisterWebhook(t *testing.T) {
	fake := newFake(t)
	c := newClient(fake, Options{})
	var (
		mu   sync.Mutex
		got  []*http.Request
		body []string
	)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got, body = append(got, r), append(body, string(b))
		mu.Unlock()
	}))
	defer receiver.Close()

	w, created, err := c.RegisterWebhook(t.Context(), WebhookSpec{Name: "cloudstack-pd", PayloadURL: "http://old.invalid/", Secret: "s1"})
	if err != nil || !created || w.ID == "" || w.PayloadURL != "http://old.invalid/" || w.Scope != "Global" || w.State != "Enabled" {
		t.Fatalf("create: %+v, %v, %v", w, created, err)
	}
	w2, created, err := c.RegisterWebhook(t.Context(), WebhookSpec{Name: "cloudstack-pd", PayloadURL: receiver.URL + "/", Secret: "s2"})
	if err != nil || created || w2.ID != w.ID || w2.PayloadURL != receiver.URL+"/" {
		t.Fatalf("update: %+v, %v, %v", w2, created, err)
	}
	if hooks := fake.Webhooks(); len(hooks) != 1 || hooks[0].SecretKey != "s2" {
		t.Fatalf("fake holds %+v", hooks)
	}
	cmds := map[string]string{}
	for _, call := range fake.Calls() {
		cmds[call.Command] = call.Params.Get("signature")
	}
	for _, cmd := range []string{"listWebhooks", "createWebhook", "updateWebhook"} {
		if cmds[cmd] == "" {
			t.Errorf("no signed %s call: %v", cmd, cmds)
		}
	}

	id := fake.Emit(cloudstacktest.Event{Type: "VM.CREATE", EntityUUID: "3c5b7a4e-1111-4222-8333-444455556666"}, cloudstacktest.DeliveryFault{})
	mu.Lock()
	if len(got) != 1 {
		t.Fatalf("%d deliveries", len(got))
	}
	r := got[0]
	if r.Method != http.MethodPost || r.Header.Get("X-CS-Event-ID") != id || r.Header.Get("X-CS-Event") != "VM.CREATE" ||
		r.Header.Get("User-Agent") != "CS-Hookshot/"+cloudstacktest.AccountUUID ||
		r.Header.Get("X-CS-Signature") != cloudstacktest.SignDelivery("s2", []byte(body[0])) {
		t.Errorf("delivery %v %v", r.Method, r.Header)
	}
	for _, f := range []string{`"event":"VM.CREATE"`, `"entityuuid":"3c5b7a4e-1111-4222-8333-444455556666"`, `"status":"Completed"`, `"entity":"VirtualMachine"`, `"account":"admin"`, `"eventDateTime":`} {
		if !strings.Contains(body[0], f) {
			t.Errorf("body lacks %s: %s", f, body[0])
		}
	}
	mu.Unlock()
	fake.Emit(cloudstacktest.Event{Type: "VM.START", EntityUUID: "x"}, cloudstacktest.DeliveryFault{Drop: true})
	ds, err := c.ListWebhookDeliveries(t.Context(), w.ID, 10)
	if err != nil || len(ds) != 2 {
		t.Fatalf("%d deliveries, %v", len(ds), err)
	}
	if ds[0].EventType != "VM.START" || ds[0].Success || ds[1].EventID != id || !ds[1].Success || ds[1].WebhookName != "cloudstack-pd" {
		t.Errorf("deliveries %+v", ds)
	}

	// CloudStack's errors come back as *APIError.
	_, err = c.ListWebhookDeliveries(t.Context(), w.ID, 10)
	if err != nil {
		t.Fatal(err)
	}
	bad := New(fake.URL, apiKey, "wrong", Options{})
	var ae *APIError
	if _, _, err := bad.RegisterWebhook(t.Context(), WebhookSpec{Name: "n", PayloadURL: "http://x/", Secret: "s"}); !errors.As(err, &ae) || ae.Code != 401 {
		t.Errorf("bad key: %v", err)
	}
}
