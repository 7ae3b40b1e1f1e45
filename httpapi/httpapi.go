package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/buildinfo"
	"github.com/cloudstack-pd/cloudstack-pd/internal/httpserve"
)

// DefaultSyncStaleAfter is how long after the last successful sync /readyz
// starts warning that the sync is stale, when Config.SyncStaleAfter is 0.
const DefaultSyncStaleAfter = 15 * time.Minute

// BindingLister lists the recorded bindings in key order, from after a
// key (see allocator.Store.ScanBindings). *allocator.Store is one.
type BindingLister interface {
	ScanBindings(after []byte, fn func(key []byte, b allocator.Binding) (more bool, err error)) error
}

// Config gathers what New needs. Only Table is required.
type Config struct {
	// Table yields the allocation table in force; a nil Table, or one whose
	// Current is nil, means the table is not loaded yet.
	Table allocator.Reader
	// Bindings lists the recorded bindings for /v1/leases; nil: /v1/leases
	// answers 503.
	Bindings BindingLister
	// Registry is gathered by /metrics: the registry server.NewMetrics,
	// NewCollectors and NewSyncMetrics registered into. nil: /metrics is 404.
	Registry prometheus.Gatherer
	// Ready reports the serve loop's state for /readyz; nil: never ready.
	// It is called on every /readyz request and must not block.
	Ready func() Readiness
	// Logger; nil discards.
	Logger *slog.Logger
	// Version is the program's version, shown on /.
	Version string
	// SyncStaleAfter is how old the last successful sync may be before
	// /readyz warns; 0 means DefaultSyncStaleAfter.
	SyncStaleAfter time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// API is the HTTP handler of the local API. It is safe for concurrent use.
type API struct {
	cfg     Config
	mux     *http.ServeMux
	log     *slog.Logger
	now     func() time.Time
	started time.Time
	counts  countCache
	order   orderCache
}

// New returns the API's handler.
func New(c Config) *API {
	a := &API{cfg: c, log: c.Logger, now: c.Now}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.cfg.SyncStaleAfter <= 0 {
		a.cfg.SyncStaleAfter = DefaultSyncStaleAfter
	}
	a.started = a.now()

	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", a.index)
	mux.HandleFunc("/healthz", a.healthz)
	mux.HandleFunc("/readyz", a.readyz)
	if c.Registry != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(c.Registry, promhttp.HandlerOpts{
			ErrorLog:      promLogger{a.log},
			ErrorHandling: promhttp.ContinueOnError,
		}))
	}
	mux.HandleFunc("/v1/pools", a.pools)
	mux.HandleFunc("/v1/allocations", a.allocations)
	mux.HandleFunc("/v1/leases", a.leases)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "", "no such endpoint: %s (see /)", r.URL.Path)
	})
	a.mux = mux
	return a
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := a.now()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		sw.Header().Set("Allow", "GET, HEAD")
		writeError(sw, http.StatusMethodNotAllowed, "", "method %s not allowed: this API is read-only (GET, HEAD)", r.Method)
	} else {
		a.mux.ServeHTTP(sw, r)
	}
	a.log.Debug("http", "method", r.Method, "path", r.URL.Path, "status", sw.status,
		"remote", r.RemoteAddr, "duration", a.now().Sub(start))
}

// statusWriter remembers the status written, for the debug log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// table returns the table in force, or nil when none is loaded.
func (a *API) table() *allocator.Table {
	if a.cfg.Table == nil {
		return nil
	}
	return a.cfg.Table.Current()
}

func (a *API) index(w http.ResponseWriter, r *http.Request) {
	if !noQuery(w, r) {
		return
	}
	build := buildinfo.Get(a.cfg.Version)
	writeJSON(w, http.StatusOK, struct {
		Name       string              `json:"name"`
		Version    string              `json:"version"`
		Revision   string              `json:"revision"`
		Endpoints  []string            `json:"endpoints"`
		Parameters map[string][]string `json:"parameters"`
		Examples   []string            `json:"examples"`
	}{"cloudstack-pd", build.Version, build.Revision, Endpoints, EndpointParameters, IndexExamples})
}

// Endpoints lists the paths the API serves, as / shows them.
var Endpoints = []string{"/healthz", "/readyz", "/metrics", "/v1/pools", "/v1/allocations", "/v1/leases"}

// EndpointParameters lists the query parameters of the endpoints that
// take any, as / shows them.
var EndpointParameters = map[string][]string{
	"/v1/allocations": {"mac", "pool", "vm", "state", "prefix", "limit", "after"},
	"/v1/leases":      {"mac", "pool", "prefix", "limit", "after"},
}

// IndexExamples are the example queries / shows: each one answers 200 as
// it is written (an empty parameter would be a 400).
var IndexExamples = []string{
	"/v1/allocations?state=gone&limit=100",
	"/v1/allocations?mac=06:32:b2:00:04:79",
	"/v1/leases?prefix=2001:db8:200::/60",
}

// errorBody is the JSON of every error answer.
type errorBody struct {
	Error     string `json:"error"`
	Parameter string `json:"parameter,omitempty"`
}

// writeError answers status with a JSON error naming param (when not "").
func writeError(w http.ResponseWriter, status int, param, format string, args ...any) {
	writeJSON(w, status, errorBody{Error: fmt.Sprintf(format, args...), Parameter: param})
}

// writeJSON answers status with v, indented for people reading it with curl.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status = http.StatusInternalServerError
		body, _ = json.Marshal(errorBody{Error: "encoding the answer: " + err.Error()})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// promLogger passes promhttp's errors to slog.
type promLogger struct{ log *slog.Logger }

func (p promLogger) Println(v ...any) { p.log.Error("metrics: " + fmt.Sprint(v...)) }

// NewServer returns an http.Server for h on addr with the timeouts of a
// local API; its own errors go to log at warn level.
func NewServer(addr string, h http.Handler, log *slog.Logger) *http.Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      time.Minute, // /v1/leases of a large store
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// ShutdownTimeout bounds how long Serve waits for requests in flight once
// its context is done; then it closes what is left.
const ShutdownTimeout = 3 * time.Second

// Serve answers h on ln until ctx is done, then shuts down: requests in
// flight get ShutdownTimeout to finish, after which the remaining
// connections (say, a scraper's idle keep-alive that never sent a request)
// are closed. It returns nil then, and any other failure of the server as
// it happens. Listen first (net.Listen) so that a bad or busy http.listen
// fails at start-up, not in a goroutine.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	return httpserve.Run(ctx, NewServer(ln.Addr().String(), h, log), ln, ShutdownTimeout)
}
