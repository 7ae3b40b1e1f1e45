// Package cloudstacktest is a fake Apache CloudStack management server for
// tests and benchmarks, on net/http/httptest. It answers listVirtualMachines
// the way the real server does:
//
//   - it verifies each request's signature exactly as ApiServer.verifyRequest
//     does (see Signature), including expires when signatureversion=3, and
//     answers 401 with the real error envelope otherwise;
//   - it pages with page (1-based) and pagesize (at most the maximum page
//     size, 500 by default, else error 431; -1 without page lists all), puts
//     the total over all pages in count, and answers the real envelopes:
//     {"listvirtualmachinesresponse":{"count":N,"virtualmachine":[…]}},
//     {"listvirtualmachinesresponse":{"count":N}} past the last page, and
//     {"listvirtualmachinesresponse":{}} when there is no VM at all;
//   - an unknown podid is error 431; no podid lists every pod; id or ids
//     (comma-separated) list only those VMs;
//   - it serves pods of literal JSON (fixtures read by LoadVMs) or of
//     generated VMs (Synthetic) without holding them in memory.
//
// It can be told to fail in each way a real deployment fails (see Fault).
// It also keeps webhooks (createWebhook, updateWebhook, listWebhooks,
// listWebhookDeliveries) and delivers events to them as CloudStack 4.20
// does, signed, with faults on demand (Emit, DeliveryFault; webhook.go).
// Other commands are unknown to it, and answered 401 as the real server
// answers unknown commands.
package cloudstacktest

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Error texts of the real management server.
const (
	TextBadCredentials = "unable to verify user credentials and/or request signature"
	TextInternal       = "Internal error executing command, please contact your system administrator"
	TextThrottled      = "The given user has reached his/her account api limit, please retry after 218 ms."
)

// CloudStack's cserrorcode values used by the fake.
const (
	CSInvalidParameter = 4350 // InvalidParameterValueException
	CSServerAPI        = 9999 // ServerApiException
)

// DefaultMaxPageSize is CloudStack's default.page.size.
const DefaultMaxPageSize = 500

// maxCalls bounds the call log.
const maxCalls = 4096

// Server is a running fake management server. Its methods are safe for
// concurrent use.
type Server struct {
	// URL is the API endpoint, http://127.0.0.1:port/client/api.
	URL string
	// APIKey and SecretKey are the only credentials it accepts; set by
	// NewServer, not to be changed while it runs.
	APIKey, SecretKey string

	ts *httptest.Server

	mu          sync.Mutex
	pods        map[string]Pod
	faults      []*Fault
	maxPageSize int
	now         func() time.Time
	calls       []Call
	bufs        sync.Pool
	hooks       webhooks
}

// Call is one request the server answered, for assertions.
type Call struct {
	Command string
	Params  url.Values
	Pod     string
	Page    int
	Status  int
	// Fault is the fault applied, 0 if none.
	Fault FaultKind
	// Reason says why a request was refused with 401 (the real server only
	// logs it).
	Reason string
}

// NewServer starts a fake that accepts the given credentials and knows no
// pod yet. Close it when done.
func NewServer(apiKey, secretKey string) *Server {
	s := &Server{
		APIKey:      apiKey,
		SecretKey:   secretKey,
		pods:        make(map[string]Pod),
		maxPageSize: DefaultMaxPageSize,
		now:         time.Now,
	}
	s.ts = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.ts.URL + "/client/api"
	return s
}

// Close shuts the server down; it waits for requests in flight, which a
// FaultSlow ends as soon as its client has gone.
func (s *Server) Close() { s.ts.Close() }

// SetPod makes the server list p for pod id, replacing what it listed.
func (s *Server) SetPod(id string, p Pod) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pods[id] = p
}

// SetPods calls SetPod for each pod of m.
func (s *Server) SetPods(m map[string]Pod) {
	for id, p := range m {
		s.SetPod(id, p)
	}
}

// RemovePod forgets a pod: requests for it get error 431.
func (s *Server) RemovePod(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pods, id)
}

// SetMaxPageSize sets default.page.size, the largest pagesize accepted.
func (s *Server) SetMaxPageSize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxPageSize = n
}

// SetClock sets the clock that expires is checked against.
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// Inject adds a fault; see Fault for which requests it applies to.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Calls returns the requests answered so far (the last 4096), oldest first.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// ResetCalls empties the call log.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
}

func (s *Server) record(c Call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) >= maxCalls {
		s.calls = slices.Delete(s.calls, 0, len(s.calls)-maxCalls+1)
	}
	s.calls = append(s.calls, c)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/client/api" {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	params := r.Form
	cmd := params.Get("command")
	call := Call{Command: cmd, Params: cloneValues(params)}
	s.mu.Lock()
	now := s.now()
	s.mu.Unlock()

	ok, reason := s.verify(params, now)
	webhookCmd := webhookCommands[cmd] != nil
	if ok && cmd != "listVirtualMachines" && !webhookCmd {
		ok, reason = false, fmt.Sprintf("unknown command %q", cmd)
	}
	if !ok {
		call.Status, call.Reason = http.StatusUnauthorized, reason
		s.record(call)
		writeEnvelope(w, responseName(cmd), http.StatusUnauthorized, 0, TextBadCredentials)
		return
	}
	if webhookCmd {
		s.webhookCommand(w, params, &call)
		return
	}
	s.listVirtualMachines(w, r, params, &call)
}

// idFilter returns the VM ids of the id or ids parameter, nil without
// either.
func idFilter(params url.Values) map[string]bool {
	v := params.Get("ids")
	if v == "" {
		v = params.Get("id")
	}
	if v == "" {
		return nil
	}
	ids := map[string]bool{}
	for id := range strings.SplitSeq(v, ",") {
		ids[strings.TrimSpace(id)] = true
	}
	return ids
}

// filtered is the pod's VMs whose id is in ids, in listing order.
func filtered(p Pod, ids map[string]bool) VMs {
	var out VMs
	for i := range p.Len() {
		vm := p.AppendVM(nil, i)
		var v struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(vm, &v) == nil && ids[v.ID] {
			out = append(out, vm)
		}
	}
	return out
}

func responseName(cmd string) string {
	if cmd == "listVirtualMachines" || webhookCommands[cmd] != nil {
		return strings.ToLower(cmd) + "response"
	}
	return "errorresponse"
}

var detailsValues = []string{"all", "group", "nics", "stats", "secgrp", "tmpl", "servoff", "diskoff", "backoff", "iso", "volume", "min", "affgrp"}

func invalidParam(name, value string) string {
	return fmt.Sprintf("Unable to execute API command listvirtualmachines due to invalid value. Invalid parameter %s value=%s due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.", name, value)
}

func (s *Server) listVirtualMachines(w http.ResponseWriter, r *http.Request, params url.Values, call *Call) {
	const name = "listvirtualmachinesresponse"
	// Each answer is recorded before it is written: a client that has
	// its answer finds it in Calls.
	answered := func(status int) {
		call.Status = status
		s.record(*call)
	}
	fail := func(status, csCode int, text string) {
		answered(status)
		writeEnvelope(w, name, status, csCode, text)
	}
	podID := params.Get("podid")
	call.Pod = podID

	s.mu.Lock()
	maxPageSize := s.maxPageSize
	s.mu.Unlock()
	pageSize, page, unlimited := maxPageSize, 1, false
	if v := params.Get("pagesize"); v != "" {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			fail(431, CSServerAPI, invalidParam("pagesize", v))
			return
		case n == -1:
			unlimited = true
		case n > maxPageSize:
			fail(431, CSInvalidParameter, fmt.Sprintf("Page size can't exceed max allowed page size value: %d", maxPageSize))
			return
		case n < 1:
			fail(431, CSInvalidParameter, fmt.Sprintf("Invalid pagesize %d", n))
			return
		default:
			pageSize = n
		}
	}
	if v := params.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			fail(431, CSServerAPI, invalidParam("page", v))
			return
		case unlimited:
			fail(431, CSInvalidParameter, "Can't specify page parameter when pagesize is -1 (Unlimited)")
			return
		case n > 0: // CloudStack reads page 0 or less as page 1
			page = n
		}
	}
	call.Page = page
	if v := params.Get("details"); v != "" {
		for d := range strings.SplitSeq(v, ",") {
			if !slices.Contains(detailsValues, strings.TrimSpace(d)) {
				fail(431, CSInvalidParameter, fmt.Sprintf("The details parameter contains a non permitted value. The allowed values are %v", detailsValues))
				return
			}
		}
	}

	// Pick the pod and the fault under the lock; answer without it.
	s.mu.Lock()
	var pod Pod
	if podID == "" {
		ids := slices.Sorted(maps.Keys(s.pods))
		all := make(multiPod, len(ids))
		for i, id := range ids {
			all[i] = s.pods[id]
		}
		pod = all
	} else if pod = s.pods[podID]; pod == nil {
		s.mu.Unlock()
		fail(431, CSServerAPI, invalidParam("podid", podID))
		return
	}
	var fault Fault
	for i, f := range s.faults {
		if !f.matches(podID, page) {
			continue
		}
		fault = *f
		if f.Times > 0 {
			if f.Times--; f.Times == 0 {
				s.faults = slices.Delete(s.faults, i, i+1)
			}
		}
		break
	}
	if fault.Kind == FaultExpunge && podID != "" && pod.Len() > 0 {
		pod = expunged{pod}
		s.pods[podID] = pod
	}
	if ids := idFilter(params); ids != nil {
		pod = filtered(pod, ids)
	}
	s.mu.Unlock()
	call.Fault = fault.Kind

	text := func(def string) string {
		if fault.Text != "" {
			return fault.Text
		}
		return def
	}
	extra := 0
	switch fault.Kind {
	case FaultHTTP500:
		answered(500)
		w.Header().Set("Content-Type", "text/html;charset=iso-8859-1")
		w.WriteHeader(500)
		fmt.Fprint(w, jettyError500)
		return
	case FaultNotJSON:
		answered(200)
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		fmt.Fprint(w, maintenancePage)
		return
	case FaultSignature:
		fail(401, 0, text(TextBadCredentials))
		return
	case FaultParam:
		fail(431, CSServerAPI, text(invalidParam("podid", podID)))
		return
	case FaultInternal:
		fail(530, CSServerAPI, text(TextInternal))
		return
	case FaultThrottle:
		fail(429, CSServerAPI, text(TextThrottled))
		return
	case FaultSlow:
		select {
		case <-time.After(fault.Delay):
		case <-r.Context().Done():
			answered(-1) // the client went away
			return
		}
	case FaultShortCount:
		extra = max(fault.Missing, 1)
	}

	if params.Get("response") != "json" {
		answered(200)
		w.Header().Set("Content-Type", "text/xml; charset=UTF-8")
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><%s cloud-stack-version="4.20.1.0"><count>%d</count></%s>`, name, pod.Len(), name)
		return
	}

	total := pod.Len()
	start, end := 0, total
	if !unlimited {
		start = min((page-1)*pageSize, total)
		end = min(start+pageSize, total)
	}
	bp, _ := s.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer s.bufs.Put(bp)
	b := append((*bp)[:0], `{"`+name+`":`...)
	if count := total + extra; count == 0 {
		b = append(b, "{}"...)
	} else {
		b = append(b, `{"count":`...)
		b = strconv.AppendInt(b, int64(count), 10)
		if start < end {
			b = append(b, `,"virtualmachine":[`...)
			for i := start; i < end; i++ {
				if i > start {
					b = append(b, ',')
				}
				b = pod.AppendVM(b, i)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	b = append(b, '}')
	*bp = b

	answered(200)
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	if fault.Kind == FaultTruncated {
		w.Write(b[:len(b)/2])
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		panic(http.ErrAbortHandler) // drop the connection, quietly
	}
	w.Write(b)
}

// writeEnvelope writes CloudStack's error envelope with HTTP status =
// errorcode; csCode 0 leaves cserrorcode out, as the 401 of verifyRequest
// does.
func writeEnvelope(w http.ResponseWriter, name string, code, csCode int, text string) {
	t, _ := json.Marshal(text)
	cs := ""
	if csCode != 0 {
		cs = fmt.Sprintf(`"cserrorcode":%d,`, csCode)
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"%s":{"uuidList":[],"errorcode":%d,%s"errortext":%s}}`, name, code, cs, t)
}

func cloneValues(v url.Values) url.Values {
	c := make(url.Values, len(v))
	for k, vs := range v {
		c[k] = slices.Clone(vs)
	}
	return c
}

const jettyError500 = `<html>
<head>
<meta http-equiv="Content-Type" content="text/html;charset=ISO-8859-1"/>
<title>Error 500 Server Error</title>
</head>
<body><h2>HTTP ERROR 500 Server Error</h2>
<table>
<tr><th>URI:</th><td>/client/api</td></tr>
<tr><th>STATUS:</th><td>500</td></tr>
<tr><th>MESSAGE:</th><td>Server Error</td></tr>
<tr><th>SERVLET:</th><td>apiServlet</td></tr>
</table>
</body>
</html>
`

const maintenancePage = `<!DOCTYPE html>
<html><head><title>Scheduled maintenance</title></head>
<body><h1>The cloud portal is under maintenance</h1><p>Please try again later.</p></body></html>
`
