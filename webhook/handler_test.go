package webhook

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var secret = []byte("hook-s3cret")

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) VMEvent(_ context.Context, e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) got() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func newHandler(t *testing.T) (*Handler, *recorder, *Metrics) {
	t.Helper()
	rec := &recorder{}
	m := NewMetrics(prometheus.NewRegistry())
	h, err := NewHandler(Config{Secret: secret, Sink: rec, Metrics: m, Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return epoch }})
	if err != nil {
		t.Fatal(err)
	}
	return h, rec, m
}

func eventBody(typ, entity, uuid string) []byte {
	return fmt.Appendf(nil, `{"eventDateTime":"2026-03-01 12:00:00 +0000","entityuuid":%q,"description":"d","event":%q,"user":"admin","account":"admin","entity":%q,"status":"Completed"}`, uuid, typ, entity)
}

// delivery is a request as CloudStack sends it; sig "" means signed with
// secret, "-" means no signature.
func delivery(id, typ string, body []byte, sig string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	r.Header.Set(HeaderEventID, id)
	r.Header.Set(HeaderEvent, typ)
	r.Header.Set("User-Agent", "CS-Hookshot/5e3b0a6c")
	switch sig {
	case "":
		r.Header.Set(HeaderSignature, Sign(secret, body))
	case "-":
	default:
		r.Header.Set(HeaderSignature, sig)
	}
	return r
}

func TestHandler(t *testing.T) {
	const vm = "3c5b7a4e-1111-4222-8333-444455556666"
	big := append(eventBody("VM.CREATE", "VirtualMachine", vm), bytes.Repeat([]byte(" "), MaxBody)...)
	tests := []struct {
		name    string
		req     func() *http.Request
		status  int
		action  Action // Ignore: the sink gets nothing
		vmID    string
		outcome string
		sigFail string
	}{
		{"VM.CREATE syncs the VM", func() *http.Request {
			return delivery("e1", "VM.CREATE", eventBody("VM.CREATE", "VirtualMachine", vm), "")
		}, 200, SyncVM, vm, OutcomeAccepted, ""},
		{"NIC.CREATE on the VM syncs it", func() *http.Request {
			return delivery("e1", "NIC.CREATE", eventBody("NIC.CREATE", "VirtualMachine", vm), "")
		}, 200, SyncVM, vm, OutcomeAccepted, ""},
		{"NIC.UPDATE naming a NIC asks for a full sync", func() *http.Request {
			return delivery("e1", "NIC.UPDATE", eventBody("NIC.UPDATE", "Nic", "aaaa"), "")
		}, 200, SyncAll, "", OutcomeAccepted, ""},
		{"NETWORK.UPDATE asks for a full sync", func() *http.Request {
			return delivery("e1", "NETWORK.UPDATE", eventBody("NETWORK.UPDATE", "Network", "bbbb"), "")
		}, 200, SyncAll, "", OutcomeAccepted, ""},
		{"VM.STOP is ignored", func() *http.Request {
			return delivery("e1", "VM.STOP", eventBody("VM.STOP", "VirtualMachine", vm), "")
		}, 200, Ignore, "", OutcomeIgnored, ""},
		{"no signature: 401, nothing done", func() *http.Request {
			return delivery("e1", "VM.CREATE", eventBody("VM.CREATE", "VirtualMachine", vm), "-")
		}, 401, Ignore, "", OutcomeUnauthorized, "missing"},
		{"another secret's signature: 401", func() *http.Request {
			b := eventBody("VM.CREATE", "VirtualMachine", vm)
			return delivery("e1", "VM.CREATE", b, Sign([]byte("other"), b))
		}, 401, Ignore, "", OutcomeUnauthorized, "invalid"},
		{"the signature of another body: 401", func() *http.Request {
			return delivery("e1", "VM.CREATE", eventBody("VM.CREATE", "VirtualMachine", vm), Sign(secret, eventBody("VM.CREATE", "VirtualMachine", "x")))
		}, 401, Ignore, "", OutcomeUnauthorized, "invalid"},
		{"a signature that is not base64: 401", func() *http.Request {
			return delivery("e1", "VM.CREATE", eventBody("VM.CREATE", "VirtualMachine", vm), "%%%")
		}, 401, Ignore, "", OutcomeUnauthorized, "invalid"},
		{"a body over 64 KiB: 413", func() *http.Request {
			return delivery("e1", "VM.CREATE", big, "")
		}, 413, Ignore, "", OutcomeTooLarge, ""},
		{"a body over 64 KiB without Content-Length: 413", func() *http.Request {
			r := delivery("e1", "VM.CREATE", big, "")
			r.ContentLength = -1
			return r
		}, 413, Ignore, "", OutcomeTooLarge, ""},
		{"signed, not JSON: 400", func() *http.Request {
			return delivery("e1", "VM.CREATE", []byte("hello"), "")
		}, 400, Ignore, "", OutcomeBadRequest, ""},
		{"GET: 405", func() *http.Request {
			return httptest.NewRequest(http.MethodGet, "/", nil)
		}, 405, Ignore, "", OutcomeBadRequest, ""},
		{"another path: 404", func() *http.Request {
			r := delivery("e1", "VM.CREATE", eventBody("VM.CREATE", "VirtualMachine", vm), "")
			r.URL.Path = "/x"
			return r
		}, 404, Ignore, "", OutcomeBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, rec, m := newHandler(t)
			req := tt.req()
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tt.status {
				t.Errorf("status %d, want %d", w.Code, tt.status)
			}
			got := rec.got()
			switch {
			case tt.action == Ignore && len(got) != 0:
				t.Errorf("sink got %+v", got)
			case tt.action != Ignore && (len(got) != 1 || got[0].Action != tt.action || got[0].VMID != tt.vmID || got[0].ID != "e1" || !got[0].Received.Equal(epoch)):
				t.Errorf("sink got %+v, want one %v of %q", got, tt.action, tt.vmID)
			}
			var n float64
			for _, e := range append(EventTypes(), "other") {
				n += testutil.ToFloat64(m.Deliveries.WithLabelValues(e, tt.outcome))
			}
			if n != 1 {
				t.Errorf("%v deliveries counted %s", n, tt.outcome)
			}
			if tt.sigFail != "" && testutil.ToFloat64(m.SignatureFailures.WithLabelValues(tt.sigFail)) != 1 {
				t.Errorf("signature failure %s not counted", tt.sigFail)
			}
		})
	}
}

// The same X-CS-Event-ID is acted on once, however often it comes; a
// refused delivery does not use up its id.
func TestHandlerDuplicates(t *testing.T) {
	h, rec, m := newHandler(t)
	b := eventBody("VM.START", "VirtualMachine", "vm-1")
	h.ServeHTTP(httptest.NewRecorder(), delivery("e1", "VM.START", b, "-"))
	for range 3 {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, delivery("e1", "VM.START", b, ""))
		if w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
	}
	if got := rec.got(); len(got) != 1 {
		t.Errorf("acted on %d times", len(got))
	}
	if n := testutil.ToFloat64(m.Deliveries.WithLabelValues("VM.START", OutcomeDuplicate)); n != 2 {
		t.Errorf("%v duplicates counted", n)
	}
	// Without an id there is nothing to deduplicate on.
	for range 2 {
		h.ServeHTTP(httptest.NewRecorder(), delivery("", "VM.START", b, ""))
	}
	if got := rec.got(); len(got) != 3 {
		t.Errorf("acted on %d times", len(got))
	}
}

// The ids remembered are bounded: the oldest is forgotten first.
func TestSeenIDsBounded(t *testing.T) {
	s := newSeenIDs(3)
	for _, id := range []string{"a", "b", "c"} {
		if !s.add(id) {
			t.Fatalf("%s not new", id)
		}
	}
	if s.add("a") || s.add("c") {
		t.Error("a remembered id was new")
	}
	if !s.add("d") || len(s.set) != 3 {
		t.Fatalf("d: set %v", s.set)
	}
	if !s.add("a") { // a was the oldest
		t.Error("a still remembered after 3 newer ids")
	}
	if s.add("d") {
		t.Error("d forgotten")
	}
	for i := range 10 * DedupSize {
		s.add(fmt.Sprint(i))
	}
	if len(s.set) != 3 {
		t.Errorf("%d ids held", len(s.set))
	}
}

func TestNewHandlerNeedsSecret(t *testing.T) {
	if _, err := NewHandler(Config{Sink: &recorder{}}); err == nil || !strings.Contains(err.Error(), "secret") {
		t.Errorf("err = %v", err)
	}
}

// A reload's new secret applies to the next delivery.
func TestSetSecret(t *testing.T) {
	h, rec, _ := newHandler(t)
	h.SetSecret([]byte("new"))
	b := eventBody("VM.START", "VirtualMachine", "vm-1")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, delivery("e1", "VM.START", b, ""))
	if w.Code != 401 {
		t.Errorf("old secret: %d", w.Code)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, delivery("e2", "VM.START", b, Sign([]byte("new"), b)))
	if w.Code != 200 || len(rec.got()) != 1 {
		t.Errorf("new secret: %d, %d events", w.Code, len(rec.got()))
	}
}

// Whatever the body, ParseEvent never panics, and a type it acts on
// with a VM gives that VM.
func FuzzParseEvent(f *testing.F) {
	f.Add(eventBody("VM.CREATE", "VirtualMachine", "u"), "VM.CREATE") // a real event
	f.Add(eventBody("NIC.DELETE", "Nic", "n"), "")                    // a NIC's own uuid
	f.Add([]byte(`{"event":7}`), "VM.START")                          // a mistyped field
	f.Add([]byte(`{"entityuuid":"u","entity":"VM"}`), "vm.expunge")   // the type from the header
	f.Add([]byte(`[]`), "")                                           // not an object
	f.Add([]byte(`{"event":"VM.CREATE","entityuuid":""}`), "")        // no uuid
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		e, err := ParseEvent(body, "id", header, epoch)
		if err != nil {
			return
		}
		if e.Action == SyncVM && (e.VMID == "" || e.VMID != e.EntityUUID) {
			t.Fatalf("sync-vm without its VM: %+v", e)
		}
		if e.Action != SyncVM && e.VMID != "" {
			t.Fatalf("a VM without sync-vm: %+v", e)
		}
	})
}

// Refused signatures are logged at Warn at most once a minute: a flood of
// bad deliveries does not flood the log; every one is counted.
func TestRefusedSignatureLogBounded(t *testing.T) {
	var logs bytes.Buffer
	now := epoch
	m := NewMetrics(prometheus.NewRegistry())
	h, err := NewHandler(Config{Secret: secret, Sink: &recorder{}, Metrics: m, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	b := eventBody("VM.START", "VirtualMachine", "vm-1")
	for i := range 100 {
		h.ServeHTTP(httptest.NewRecorder(), delivery(fmt.Sprint(i), "VM.START", b, "-"))
	}
	now = now.Add(time.Minute)
	h.ServeHTTP(httptest.NewRecorder(), delivery("x", "VM.START", b, "-"))
	if n := strings.Count(logs.String(), "level=WARN"); n != 2 {
		t.Errorf("%d warnings for 101 refusals over a minute:\n%s", n, logs.String())
	}
	if n := testutil.ToFloat64(m.SignatureFailures.WithLabelValues("missing")); n != 101 {
		t.Errorf("%v counted", n)
	}
}
