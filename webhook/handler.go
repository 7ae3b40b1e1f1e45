package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// MaxBody is the largest delivery body accepted; a larger one gets 413.
// An event is a few hundred bytes.
const MaxBody = 64 << 10

// The headers of a delivery.
const (
	HeaderEventID   = "X-CS-Event-ID"
	HeaderEvent     = "X-CS-Event"
	HeaderSignature = "X-CS-Signature"
)

// Sink takes the events that ask for a sync. In a standalone server it
// triggers the server's own sync; in a cluster it hands the event to the
// server that syncs. VMEvent is called from the HTTP handler, before the
// delivery is answered: it must not block.
type Sink interface {
	VMEvent(ctx context.Context, e Event)
}

// SinkFunc is a function as a Sink.
type SinkFunc func(ctx context.Context, e Event)

// VMEvent implements Sink.
func (f SinkFunc) VMEvent(ctx context.Context, e Event) { f(ctx, e) }

// Config configures a Handler.
type Config struct {
	// Secret is the webhook's secret key (required: a delivery without a
	// valid signature is refused).
	Secret []byte
	// Sink gets the events to act on (required).
	Sink Sink
	// Metrics, when set, count the deliveries.
	Metrics *Metrics
	// Logger gets a Debug record per delivery and a Warn record for a
	// refused signature (at most one a minute, the others at Debug);
	// nil: slog.Default().
	Logger *slog.Logger
	// Now stamps Event.Received; nil: time.Now.
	Now func() time.Time
}

// Handler is the webhook listener's http.Handler. Safe for concurrent use.
type Handler struct {
	secret  atomic.Pointer[[]byte]
	sink    Sink
	metrics *Metrics
	log     *slog.Logger
	now     func() time.Time
	seen    *seenIDs
	// lastWarn is when a refused signature was last logged at Warn level
	// (Unix nanoseconds): at most one a minute, the others at Debug, so
	// that a flood of bad deliveries cannot flood the log.
	lastWarn atomic.Int64
}

// warnEvery is how often a refused signature is logged at Warn level.
const warnEvery = time.Minute

// NewHandler returns a Handler.
func NewHandler(c Config) (*Handler, error) {
	if len(c.Secret) == 0 {
		return nil, errors.New("webhook: no secret: every delivery would be refused")
	}
	if c.Sink == nil {
		return nil, errors.New("webhook: no sink")
	}
	h := &Handler{sink: c.Sink, metrics: c.Metrics, log: c.Logger, now: c.Now, seen: newSeenIDs(DedupSize)}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.now == nil {
		h.now = time.Now
	}
	h.SetSecret(c.Secret)
	return h, nil
}

// SetSecret replaces the secret (a reload); deliveries already being
// checked finish with the old one.
func (h *Handler) SetSecret(secret []byte) {
	s := append([]byte(nil), secret...)
	h.secret.Store(&s)
}

// Sign returns the X-CS-Signature of body under secret, as CloudStack
// computes it: Base64(HMAC-SHA256(secret, body)).
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// validSignature checks a signature in constant time.
func validSignature(secret, body []byte, sig string) bool {
	got, err := base64.StdEncoding.DecodeString(strings.TrimSpace(sig))
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	label := eventLabel(strings.ToUpper(strings.TrimSpace(r.Header.Get(HeaderEvent))))
	count := func(outcome string) {
		if h.metrics != nil {
			h.metrics.Deliveries.WithLabelValues(label, outcome).Inc()
		}
	}
	switch {
	case r.URL.Path != "/":
		count(OutcomeBadRequest)
		http.NotFound(w, r)
		return
	case r.Method != http.MethodPost:
		count(OutcomeBadRequest)
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "deliveries are POSTed", http.StatusMethodNotAllowed)
		return
	case r.ContentLength > MaxBody:
		count(OutcomeTooLarge)
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		count(OutcomeTooLarge)
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	case err != nil:
		count(OutcomeBadRequest)
		http.Error(w, "reading body", http.StatusBadRequest)
		return
	}
	id := strings.TrimSpace(r.Header.Get(HeaderEventID))
	sig := r.Header.Get(HeaderSignature)
	if reason := h.refuse(raw, sig); reason != "" {
		count(OutcomeUnauthorized)
		if h.metrics != nil {
			h.metrics.SignatureFailures.WithLabelValues(reason).Inc()
		}
		level := slog.LevelDebug
		if now, last := h.now().UnixNano(), h.lastWarn.Load(); now-last >= int64(warnEvery) && h.lastWarn.CompareAndSwap(last, now) {
			level = slog.LevelWarn
		}
		h.log.Log(r.Context(), level, "webhook: delivery refused: signature "+reason+" (cloudstack_pd_webhook_signature_failures_total counts them all)",
			"event-id", id, "event", label, "remote", r.RemoteAddr, "user-agent", r.Header.Get("User-Agent"))
		http.Error(w, "signature "+reason, http.StatusUnauthorized)
		return
	}
	e, err := ParseEvent(raw, id, r.Header.Get(HeaderEvent), h.now())
	if err != nil {
		count(OutcomeBadRequest)
		h.log.Warn("webhook: signed delivery is not an event", "event-id", id, "err", err)
		http.Error(w, "not an event", http.StatusBadRequest)
		return
	}
	label = eventLabel(e.Type)
	if id != "" && !h.seen.add(id) {
		count(OutcomeDuplicate)
		h.log.Debug("webhook: duplicate delivery", "event-id", id, "event", e.Type)
		w.WriteHeader(http.StatusOK)
		return
	}
	if e.Action == Ignore {
		count(OutcomeIgnored)
		h.log.Debug("webhook: event ignored", "event-id", id, "event", e.Type, "entity", e.Entity, "uuid", e.EntityUUID)
		w.WriteHeader(http.StatusOK)
		return
	}
	h.sink.VMEvent(r.Context(), e)
	count(OutcomeAccepted)
	h.log.Debug("webhook: event", "event-id", id, "event", e.Type, "status", e.Status, "action", e.Action.String(), "vm", e.VMID)
	w.WriteHeader(http.StatusOK)
}

// refuse returns why a delivery's signature is refused ("missing",
// "invalid"), or "".
func (h *Handler) refuse(body []byte, sig string) string {
	switch {
	case strings.TrimSpace(sig) == "":
		return "missing"
	case !validSignature(*h.secret.Load(), body, sig):
		return "invalid"
	}
	return ""
}
