package cloudstack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	cs "github.com/apache/cloudstack-go/v2/cloudstack"
)

// This file is the one place where this package works around
// cloudstack-go v2.19.0 (see the package doc): transport is the
// http.RoundTripper under the library's HTTP client. The library builds and
// signs each request; the transport
//
//  1. sends it with the ListPodNICs call's context and a per-request
//     timeout (the library sends without a context);
//  2. reads the whole answer and checks that it is a listVirtualMachines
//     listing: anything else – an HTTP error, CloudStack's error envelope
//     (even with HTTP 200), a body that is not JSON, truncated or not the
//     listVirtualMachines envelope – fails the round trip, so the library
//     can never mistake it for an empty listing (a redirect goes back to
//     the HTTP client, which follows it);
//  3. records the HTTP status and CloudStack's errorcode, cserrorcode and
//     errortext of that answer, which the library flattens into a string;
//  4. rewrites the listing so that the library can decode it: it replaces
//     by null every virtualmachine[].vnfnics and
//     virtualmachine[].nic[].extradhcpoption value that is not a list of
//     strings (real servers send lists of objects there; the library
//     declares []string and fails the whole page), and, only when the page
//     does not parse otherwise, replaces raw control bytes by spaces (see
//     scrubControlBytes). Every other byte reaches the library unchanged;
//  5. reads, in the same pass, the fields this package needs (pageReader):
//     the library is then handed an empty listing to decode, and
//     Client.fetchPage takes the transport's page. cloudstack-go builds,
//     signs and sends every request, and pages; it no longer decodes the
//     500 VMs of a page with reflection into its 200-field structs, which
//     cost most of a sync's CPU (docs/BENCHMARKS.md);
//  6. when pageReader cannot read a page (a field this package needs of an
//     unexpected type, and the rare shapes listed at pageReader), hands the
//     library the listing itself, as before, and keeps it until the next
//     request, so that a page the library still cannot decode – some other
//     field of an unexpected JSON type, which makes encoding/json fail the
//     whole page – is decoded again by decodeNeeded, into only the fields
//     this package reads (see Client.fetchPage, which logs and counts each
//     such page).

// transport carries one ListPodNICs call: the library client that uses it
// is made per call, so ctx is the call's.
type transport struct {
	base     http.RoundTripper
	ctx      context.Context
	timeout  time.Duration
	endpoint string

	mu   sync.Mutex
	last exchange
	buf  bytes.Buffer
	// strs shares the strings that repeat from VM to VM over the pages of
	// one listing (states, network ids, VLAN URIs, CIDRs).
	strs interner
}

// exchange is what the transport saw of one request.
type exchange struct {
	// sent is set once a request went through the transport.
	sent bool
	// status is the HTTP status, 0 if no answer came.
	status int
	// bytes is the length of the answer's body as received.
	bytes int
	// edited counts the values replaced by null.
	edited int
	// body is the listing handed to the library (nil unless err is nil).
	// It may share the transport's buffer: valid until the next request.
	body []byte
	// page is the listing as pageReader read it during the check; when
	// set, the library was handed an empty listing instead of body, and
	// fetchPage takes page.
	page *vmPage
	// libErr is the library's error on a page that decodeNeeded read
	// instead (set by Client.fetchPage, not by the transport).
	libErr error
	// apiErr is CloudStack's error envelope, if the answer was one.
	apiErr *APIError
	// err is why the answer is not a listing (an *APIError, or an error
	// wrapping ErrBadResponse or ErrTimeout, or a network error); nil for
	// a listing.
	err error
}

// take returns the record of the last request and clears it.
func (t *transport) take() exchange {
	t.mu.Lock()
	defer t.mu.Unlock()
	ex := t.last
	t.last = exchange{}
	return ex
}

func (t *transport) record(ex exchange) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ex.sent = true
	t.last = ex
}

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	command := commandOf(req)
	rctx, cancel := context.WithTimeout(t.ctx, t.timeout)
	defer cancel()
	req = req.Clone(rctx)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "cloudstack-pd (cloudstack-go/v2)")
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, t.fail(exchange{}, t.transportError(rctx, err))
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 && resp.Header.Get("Location") != "" {
		// The HTTP client follows it (an http:// endpoint sent to
		// https://, say); the request's timeout starts afresh.
		return resp, nil
	}
	defer resp.Body.Close()

	t.mu.Lock()
	defer t.mu.Unlock()
	buf := &t.buf
	buf.Reset()
	if resp.ContentLength > 0 && resp.ContentLength <= maxBody {
		buf.Grow(int(resp.ContentLength) + bytes.MinRead) // ReadFrom wants MinRead spare to stop growing
	}
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, maxBody+1))
	ex := exchange{sent: true, status: resp.StatusCode, bytes: int(n)}
	switch {
	case err != nil && (rctx.Err() != nil || isTimeout(err)):
		err = t.transportError(rctx, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		err = fmt.Errorf("%w: HTTP %d, body truncated after %d bytes", ErrBadResponse, resp.StatusCode, n)
	case err != nil:
		err = fmt.Errorf("%w: HTTP %d, reading body after %d bytes: %v", ErrBadResponse, resp.StatusCode, n, err)
	case n > maxBody:
		err = fmt.Errorf("%w: HTTP %d, body larger than %d bytes", ErrBadResponse, resp.StatusCode, maxBody)
	}
	if err != nil {
		ex.err = err
		t.last = ex
		return nil, err
	}
	var (
		body []byte
		page pageCheck
	)
	if command == cmdListVMs {
		body, page = checkListingInterned(command, resp.StatusCode, buf.Bytes(), &t.strs)
	} else {
		body, page = checkAnswer(command, resp.StatusCode, buf.Bytes())
	}
	ex.apiErr, ex.err, ex.edited = page.apiErr, page.err, page.edited
	t.last = ex
	if ex.err != nil {
		return nil, ex.err
	}
	// The library reads the body before the next request: the buffer can
	// be reused then. So can t.last.body, which fetchPage reads at once.
	t.last.body = body
	if page.page != nil {
		// Read already: the library only has to see a listing.
		t.last.page = page.page
		body = emptyListing
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}

func (t *transport) fail(ex exchange, err error) error {
	ex.err = err
	t.record(ex)
	return err
}

// transportError classifies an error of sending a request or reading its
// answer: the call's context ended, the request's own timeout passed, or
// the network failed.
func (t *transport) transportError(rctx context.Context, err error) error {
	switch {
	case t.ctx.Err() != nil:
		return fmt.Errorf("canceled: %w", context.Cause(t.ctx))
	case rctx.Err() != nil || isTimeout(err):
		return fmt.Errorf("%w after %v", ErrTimeout, t.timeout)
	}
	return getError(t.endpoint, err)
}

// getError reports err of a GET of endpoint. A *url.Error is unwrapped: it
// would print the whole signed URL.
func getError(endpoint string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("GET %s: %w", endpoint, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

const listVMsKey = "listvirtualmachinesresponse"

// commandOf returns the API command of a request the library built: in
// the query of a GET, in the form of a POST (createWebhook, updateWebhook).
func commandOf(req *http.Request) string {
	if c := req.URL.Query().Get("command"); c != "" || req.GetBody == nil {
		return c
	}
	rc, err := req.GetBody()
	if err != nil {
		return ""
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil {
		return ""
	}
	form, err := url.ParseQuery(string(b))
	if err != nil {
		return ""
	}
	return form.Get("command")
}

// checkAnswer checks the answer to a command other than
// listVirtualMachines (the webhook commands): CloudStack's error envelope
// gives an *APIError; anything but a JSON object with one key, the
// command's response, gives ErrBadResponse. The body is kept as it is:
// the client decodes it itself (see webhook.go), since cloudstack-go
// v2.19.0 declares the webhook answers wrongly.
func checkAnswer(command string, status int, body []byte) ([]byte, pageCheck) {
	bad := func(format string, args ...any) ([]byte, pageCheck) {
		return nil, pageCheck{err: fmt.Errorf("%w: "+format, append([]any{ErrBadResponse}, args...)...)}
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return bad("HTTP %d, not JSON: %s", status, snippet(trimmed))
	}
	scrubControlBytes(trimmed) // an answer other than a listing is small
	if e := decodeAPIError(command, status, trimmed); e != nil {
		return nil, pageCheck{apiErr: e, err: e}
	}
	if status < 200 || status > 299 {
		return bad("HTTP %d without a CloudStack error: %s", status, snippet(trimmed))
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &env); err != nil {
		return bad("invalid JSON: %v", err)
	}
	want := strings.ToLower(command) + "response"
	if len(env) != 1 || env[want] == nil {
		return bad("no %q alone in answer: %s", want, snippet(trimmed))
	}
	return trimmed, pageCheck{}
}

// emptyListing is what the library decodes when the transport has read
// the page itself.
var emptyListing = []byte(`{"` + listVMsKey + `":{}}`)

// pageCheck is what checkListing found.
type pageCheck struct {
	apiErr *APIError
	err    error
	edited int
	// page is the listing's fields this package reads, when pageReader
	// could read them (see walkListing); nil otherwise.
	page *vmPage
}

// checkListing checks one answer to command (listVirtualMachines) and
// returns the body to hand to the library: the listing, with the values
// the library cannot decode replaced by null. status is the HTTP status;
// body may be modified in place. An answer that is not a listing gives an
// *APIError for CloudStack's error envelope, an error wrapping
// ErrBadResponse for anything else.
func checkListing(command string, status int, body []byte) ([]byte, pageCheck) {
	return checkListingInterned(command, status, body, nil)
}

// checkListingInterned is checkListing sharing repeated strings through
// strs (nil: none shared).
func checkListingInterned(command string, status int, body []byte, strs *interner) ([]byte, pageCheck) {
	bad := func(format string, args ...any) ([]byte, pageCheck) {
		return nil, pageCheck{err: fmt.Errorf("%w: "+format, append([]any{ErrBadResponse}, args...)...)}
	}
	apiError := func(e *APIError) ([]byte, pageCheck) { return nil, pageCheck{apiErr: e, err: e} }

	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return bad("HTTP %d, not JSON: %s", status, snippet(trimmed))
	}
	if status < 200 || status > 299 {
		scrubControlBytes(trimmed) // an error body is small
		if e := decodeAPIError(command, status, trimmed); e != nil {
			return apiError(e)
		}
		return bad("HTTP %d without a CloudStack error: %s", status, snippet(trimmed))
	}

	w, err := walkListingInterned(trimmed, strs)
	if err != nil && scrubControlBytes(trimmed) {
		w, err = walkListingInterned(trimmed, strs)
	}
	var se *scanError
	switch {
	case errors.As(err, &se) && se.offset >= len(trimmed):
		return bad("truncated JSON after %d bytes", len(trimmed))
	case errors.As(err, &se):
		return bad("invalid JSON at byte %d: %s", se.offset, se.msg)
	case err != nil:
		return bad("%v", err)
	}
	if !w.hasResp || w.keys != 1 {
		if e := decodeAPIError(command, status, trimmed); e != nil {
			return apiError(e)
		}
		if w.hasResp { // the library would take any one of the keys
			return bad("%q and %d other key(s) in the answer: %s", listVMsKey, w.keys-1, snippet(trimmed))
		}
		return bad("no %q in answer: %s", listVMsKey, snippet(trimmed))
	}
	if !w.respObject {
		return bad("%q is not an object: %s", listVMsKey, snippet(trimmed))
	}
	if w.errorCode != nil {
		var e APIError
		if json.Unmarshal(w.errorCode, &e.Code) != nil ||
			(w.csErrorCode != nil && json.Unmarshal(w.csErrorCode, &e.CSCode) != nil) ||
			(w.errorText != nil && json.Unmarshal(w.errorText, &e.Text) != nil) {
			return bad("malformed error envelope: %s", snippet(trimmed))
		}
		if e.Code != 0 {
			e.Command, e.HTTPStatus = command, status
			return apiError(&e)
		}
	}
	return w.apply(trimmed), pageCheck{edited: len(w.edits), page: w.page}
}

// neededPage is a listVirtualMachines page reduced to the fields this
// package reads (listPod and appendNICs), under the library's JSON names
// and of the library's types: decoded with encoding/json, as the library
// decodes, it yields the same values for them. A field listed here that
// is of an unexpected type still fails the page; any other field is
// ignored. Keep it in step with appendNICs.
type neededPage struct {
	Response struct {
		Count           int         `json:"count"`
		VirtualMachines []*neededVM `json:"virtualmachine"`
	} `json:"listvirtualmachinesresponse"`
}

type neededVM struct {
	Id      string      `json:"id"`
	Name    string      `json:"name"`
	State   string      `json:"state"`
	Created string      `json:"created"`
	Nic     []neededNIC `json:"nic"`
}

type neededNIC struct {
	Id           string `json:"id"`
	Macaddress   string `json:"macaddress"`
	Networkid    string `json:"networkid"`
	Broadcasturi string `json:"broadcasturi"`
	Isolationuri string `json:"isolationuri"`
	Isdefault    bool   `json:"isdefault"`
	Ip6address   string `json:"ip6address"`
	Ip6cidr      string `json:"ip6cidr"`
}

// UnmarshalJSON does what cloudstack-go's VirtualMachine.UnmarshalJSON
// does before its typed decode: when success is a string or ostypeid a
// number, it decodes the VM from its re-encoded map (keys sorted, one per
// name), so that even duplicate keys resolve as the library resolves them.
func (vm *neededVM) UnmarshalJSON(b []byte) error {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	_, successString := m["success"].(string)
	_, ostypeidNumber := m["ostypeid"].(float64)
	if successString || ostypeidNumber {
		var err error
		if b, err = json.Marshal(m); err != nil {
			return err
		}
	}
	type plain neededVM
	return json.Unmarshal(b, (*plain)(vm))
}

// decodeNeeded decodes a listing that checkListing passed but the library
// cannot decode: only the fields this package reads, into the library's
// types, as the library would have decoded them. It fails, as the library
// did, if one of those fields is of an unexpected type.
func decodeNeeded(body []byte) (*cs.ListVirtualMachinesResponse, error) {
	var p neededPage
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, err
	}
	r := &cs.ListVirtualMachinesResponse{Count: p.Response.Count}
	if p.Response.VirtualMachines != nil {
		r.VirtualMachines = make([]*cs.VirtualMachine, len(p.Response.VirtualMachines))
	}
	for i, vm := range p.Response.VirtualMachines {
		if vm == nil {
			continue
		}
		v := &cs.VirtualMachine{Id: vm.Id, Name: vm.Name, State: vm.State, Created: vm.Created}
		if vm.Nic != nil {
			v.Nic = make([]cs.Nic, len(vm.Nic))
		}
		for j, n := range vm.Nic {
			v.Nic[j] = cs.Nic{
				Id:           n.Id,
				Macaddress:   n.Macaddress,
				Networkid:    n.Networkid,
				Broadcasturi: n.Broadcasturi,
				Isolationuri: n.Isolationuri,
				Isdefault:    n.Isdefault,
				Ip6address:   n.Ip6address,
				Ip6cidr:      n.Ip6cidr,
			}
		}
		r.VirtualMachines[i] = v
	}
	return r, nil
}

// errorBody is the inside of an error envelope, whatever its key (the
// command's response name, or "errorresponse" for an unknown command).
type errorBody struct {
	ErrorCode   int    `json:"errorcode"`
	CSErrorCode int    `json:"cserrorcode"`
	ErrorText   string `json:"errortext"`
}

// decodeAPIError returns the *APIError in an error envelope, nil if body is
// not one: a JSON object whose only key holds an errorcode.
func decodeAPIError(command string, status int, body []byte) *APIError {
	var env map[string]errorBody
	if json.Unmarshal(body, &env) != nil || len(env) != 1 {
		return nil
	}
	for _, e := range env {
		if e.ErrorCode == 0 {
			return nil
		}
		return &APIError{Code: e.ErrorCode, CSCode: e.CSErrorCode, Text: e.ErrorText, Command: command, HTTPStatus: status}
	}
	return nil
}

// scrubControlBytes replaces raw control bytes other than tab, newline and
// carriage return with spaces, and reports whether it found any. The
// management server serializes with Gson, which escapes a control character
// in a string as \u00XX, and then ApiResponseSerializer.unescape turns
// every \uXXXX back into the raw character: a VM whose display name holds,
// say, \x01 makes the whole page invalid JSON. Such bytes are never valid
// JSON, and never part of a multi-byte UTF-8 sequence, so replacing them
// cannot corrupt anything else. It runs on a listing only when the listing
// fails to parse.
func scrubControlBytes(b []byte) bool {
	found := false
	for i, c := range b {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			b[i] = ' '
			found = true
		}
	}
	return found
}

// snippet describes a body for an error message: the title of an HTML
// page, else its start with white space collapsed, quoted.
func snippet(b []byte) string {
	const max = 120
	s := string(b[:min(len(b), 4*max)])
	if _, rest, ok := strings.Cut(s, "<title>"); ok {
		if title, _, ok := strings.Cut(rest, "</title>"); ok {
			return fmt.Sprintf("HTML page %q", strings.Join(strings.Fields(title), " "))
		}
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "…"
	}
	return fmt.Sprintf("%q", s)
}

// listingWalk is what walkListing found in a listing.
type listingWalk struct {
	// keys counts the top-level keys; hasResp says whether one is
	// listvirtualmachinesresponse, respObject whether its value is an
	// object.
	keys                int
	hasResp, respObject bool
	// The raw values of the envelope's errorcode, cserrorcode and
	// errortext, nil when absent.
	errorCode, csErrorCode, errorText []byte
	// edits are the spans [start, end) of the values to replace by null.
	edits [][2]int
	// page holds the fields this package reads, decoded on the way
	// (see pageReader); nil when they cannot be read that way.
	page *vmPage
}

// apply returns b with the edits made; b itself when there are none.
func (w *listingWalk) apply(b []byte) []byte {
	if len(w.edits) == 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	at := 0
	for _, e := range w.edits {
		out = append(out, b[at:e[0]]...)
		out = append(out, "null"...)
		at = e[1]
	}
	return append(out, b[at:]...)
}

// scanError is a syntax error at byte offset (len(input) when the input
// ended too soon).
type scanError struct {
	offset int
	msg    string
}

func (e *scanError) Error() string { return fmt.Sprintf("byte %d: %s", e.offset, e.msg) }

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

// walkListing checks that b is one JSON value, exactly as encoding/json
// would accept it, and walks the path
// listvirtualmachinesresponse.virtualmachine[].{vnfnics, nic[].extradhcpoption},
// noting every value there that is not null or a list of strings. Object
// keys match case-insensitively, as encoding/json matches them to the
// library's fields. It allocates nothing per value: a page of 500 VMs is
// read in one pass.
func walkListing(b []byte) (*listingWalk, error) { return walkListingInterned(b, nil) }

// walkListingInterned is walkListing with the strings that repeat shared
// through strs (nil: none shared).
func walkListingInterned(b []byte, strs *interner) (*listingWalk, error) {
	w := &listingWalk{}
	s := &scanner{b: b}
	pr := &pageReader{s: s, page: &vmPage{}, strs: strs}
	s.ws()
	if s.peek() != '{' {
		if err := s.value(); err != nil {
			return nil, err
		}
	} else if err := s.object(func(key []byte) error {
		w.keys++
		if !keyIs(key, listVMsKey) {
			return s.value()
		}
		w.hasResp = true
		if s.peek() != '{' {
			return s.value()
		}
		w.respObject = true
		return s.object(func(key []byte) error {
			switch {
			case keyIs(key, "virtualmachine"):
				return pr.vms(w)
			case keyIs(key, "count"):
				return pr.count()
			case keyIs(key, "errorcode"):
				return s.raw(&w.errorCode)
			case keyIs(key, "cserrorcode"):
				return s.raw(&w.csErrorCode)
			case keyIs(key, "errortext"):
				return s.raw(&w.errorText)
			}
			return s.value()
		})
	}); err != nil {
		return nil, err
	}
	s.ws()
	if s.i < len(b) {
		return nil, s.errorf("invalid character %q after top-level value", b[s.i])
	}
	if !pr.off && w.hasResp && w.respObject && w.keys == 1 {
		w.page = pr.page
	}
	return w, nil
}

// vmPage is a listVirtualMachines page reduced to the fields this package
// reads: what listPod and appendNICs take, whichever decoder read it.
type vmPage struct {
	Count int
	VMs   []*neededVM
}

// pageFromLibrary keeps of a page the library (or decodeNeeded) decoded
// the fields this package reads.
func pageFromLibrary(r *cs.ListVirtualMachinesResponse) *vmPage {
	p := &vmPage{Count: r.Count}
	if r.VirtualMachines != nil {
		p.VMs = make([]*neededVM, len(r.VirtualMachines))
	}
	for i, vm := range r.VirtualMachines {
		if vm == nil {
			continue
		}
		v := &neededVM{Id: vm.Id, Name: vm.Name, State: vm.State, Created: vm.Created}
		if vm.Nic != nil {
			v.Nic = make([]neededNIC, len(vm.Nic))
		}
		for j, n := range vm.Nic {
			v.Nic[j] = neededNIC{Id: n.Id, Macaddress: n.Macaddress, Networkid: n.Networkid, Broadcasturi: n.Broadcasturi,
				Isolationuri: n.Isolationuri, Isdefault: n.Isdefault, Ip6address: n.Ip6address, Ip6cidr: n.Ip6cidr}
		}
		p.VMs[i] = v
	}
	return p
}

// pageReader decodes, during walkListing's one pass over a listing, the
// fields this package reads (neededVM, neededNIC, count) and skips every
// other value unread: no map, no reflection, one string per field kept.
// It gives each field the value encoding/json would give it in the
// library's types (keys matched case-insensitively, the last of
// duplicate keys winning, null leaving a field as it is, strings
// unescaped as encoding/json unescapes them), which FuzzCheckListing
// checks against decodeNeeded. Whatever it cannot decode that way – a
// needed field of an unexpected JSON type, a VM that is neither an object
// nor null, a key repeated where encoding/json would merge two lists, a VM
// the library would re-encode (success a string, ostypeid a number) – turns
// it off, and the page goes to the library as before (and, if the library
// fails on it, to decodeNeeded), so that every error stays the library's.
type pageReader struct {
	s    *scanner
	page *vmPage
	strs *interner
	off  bool
	// vmsSeen is set once virtualmachine was read.
	vmsSeen bool
}

// count reads the page's count as encoding/json reads an int.
func (r *pageReader) count() error {
	s := r.s
	switch c := s.peek(); {
	case c == 'n':
		return s.value()
	case c == '-' || ('0' <= c && c <= '9'):
		start := s.i
		if err := s.number(); err != nil {
			return err
		}
		n, err := strconv.ParseInt(string(s.b[start:s.i]), 10, 0)
		if err != nil {
			r.off = true
			return nil
		}
		r.page.Count = int(n)
		return nil
	}
	r.off = true
	return s.value()
}

// vms reads the virtualmachine list.
func (r *pageReader) vms(w *listingWalk) error {
	s := r.s
	if r.vmsSeen {
		r.off = true // encoding/json would decode into the list already read
	}
	r.vmsSeen = true
	switch s.peek() {
	case 'n':
		r.page.VMs = nil
		return s.value()
	case '[':
	default:
		r.off = true
		return s.value()
	}
	vms := make([]*neededVM, 0, 16)
	err := s.array(func() error {
		switch s.peek() {
		case 'n':
			vms = append(vms, nil)
			return s.value()
		case '{':
		default:
			r.off = true
			return s.value()
		}
		vm := &neededVM{}
		vms = append(vms, vm)
		return r.vm(w, vm)
	})
	r.page.VMs = vms
	return err
}

// vm reads one VM object.
func (r *pageReader) vm(w *listingWalk, vm *neededVM) error {
	s := r.s
	nicSeen := false
	return s.object(func(key []byte) error {
		switch name := fieldName(key, vmFields); name {
		case "vnfnics":
			return s.stringList(w)
		case "nic":
			if nicSeen {
				r.off = true
			}
			nicSeen = true
			return r.nics(w, vm)
		case "id":
			return r.str(&vm.Id)
		case "name":
			return r.str(&vm.Name)
		case "state":
			return r.shared(&vm.State)
		case "created":
			return r.str(&vm.Created)
		case "success", "ostypeid":
			// The library re-encodes a VM whose success is a string or
			// whose ostypeid is a number, which resolves duplicate keys
			// differently: leave such pages to it.
			c := s.peek()
			if exactKey(key, name) && ((name == "success" && c == '"') || (name == "ostypeid" && (c == '-' || ('0' <= c && c <= '9')))) {
				r.off = true
			}
		}
		return s.value()
	})
}

// nics reads a VM's nic list.
func (r *pageReader) nics(w *listingWalk, vm *neededVM) error {
	s := r.s
	switch s.peek() {
	case 'n':
		vm.Nic = nil
		return s.value()
	case '[':
	default:
		r.off = true
		return s.value()
	}
	nics := make([]neededNIC, 0, 2)
	err := s.array(func() error {
		nics = append(nics, neededNIC{})
		switch s.peek() {
		case 'n':
			return s.value()
		case '{':
		default:
			r.off = true
			return s.value()
		}
		n := &nics[len(nics)-1]
		return s.object(func(key []byte) error {
			switch fieldName(key, nicFields) {
			case "extradhcpoption":
				return s.stringList(w)
			case "id":
				return r.str(&n.Id)
			case "macaddress":
				return r.str(&n.Macaddress)
			case "networkid":
				return r.shared(&n.Networkid)
			case "broadcasturi":
				return r.shared(&n.Broadcasturi)
			case "isolationuri":
				return r.shared(&n.Isolationuri)
			case "ip6address":
				return r.str(&n.Ip6address)
			case "ip6cidr":
				return r.shared(&n.Ip6cidr)
			case "isdefault":
				switch s.peek() {
				case 't':
					n.Isdefault = true
				case 'f':
					n.Isdefault = false
				case 'n':
				default:
					r.off = true
				}
			}
			return s.value()
		})
	})
	vm.Nic = nics
	return err
}

// shared is str for a field whose values repeat from VM to VM: one string
// per value, shared through the listing's interner.
func (r *pageReader) shared(dst *string) error { return r.readStr(dst, r.strs) }

// interner hands out one string per distinct value, up to maxInterned
// values (then new strings, so that memory stays bounded whatever the
// listing holds).
type interner struct {
	m map[string]string
}

const maxInterned = 4096

func (in *interner) get(b []byte) string {
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if in.m == nil {
		in.m = make(map[string]string)
	}
	if len(in.m) < maxInterned {
		in.m[s] = s
	}
	return s
}

// str reads a string field as encoding/json does: null leaves it as it
// is; escapes and invalid UTF-8 are decoded by encoding/json itself.
func (r *pageReader) str(dst *string) error { return r.readStr(dst, nil) }

// readStr is str, taking a plain string's value from in when it is not
// nil.
func (r *pageReader) readStr(dst *string, in *interner) error {
	s := r.s
	switch s.peek() {
	case 'n':
		return s.value()
	case '"':
	default:
		r.off = true
		return s.value()
	}
	start := s.i
	raw, err := s.str()
	if err != nil {
		return err
	}
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		if in != nil {
			*dst = in.get(raw)
		} else {
			*dst = string(raw)
		}
		return nil
	}
	if json.Unmarshal(s.b[start:s.i], dst) != nil {
		r.off = true
	}
	return nil
}

// The keys pageReader reads, in a VM and in a NIC.
var (
	vmFields  = []string{"vnfnics", "nic", "id", "name", "state", "created", "success", "ostypeid"}
	nicFields = []string{"extradhcpoption", "id", "macaddress", "networkid", "broadcasturi", "isolationuri", "ip6address", "ip6cidr", "isdefault"}
)

// fieldName returns the name of fields that the raw key names, matched as
// encoding/json matches keys to fields (case-insensitively), or "". A key
// that is lower-case ASCII without escapes, as CloudStack writes them all,
// is compared once.
func fieldName(raw []byte, fields []string) string {
	plain := true
	for _, c := range raw {
		if ('A' <= c && c <= 'Z') || c >= 0x80 || c == '\\' {
			plain = false
			break
		}
	}
	for _, f := range fields {
		if plain {
			if string(raw) == f {
				return f
			}
		} else if keyIs(raw, f) {
			return f
		}
	}
	return ""
}

// exactKey reports whether the raw key, unescaped, is name exactly (as a
// key of the map the library decodes a VM into).
func exactKey(raw []byte, name string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw) == name
	}
	var k string
	q := make([]byte, 0, len(raw)+2)
	q = append(append(append(q, '"'), raw...), '"')
	return json.Unmarshal(q, &k) == nil && k == name
}

// keyIs reports whether the raw key (the bytes between the quotes)
// names name, compared as encoding/json compares keys with field names.
func keyIs(raw []byte, name string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return bytes.EqualFold(raw, []byte(name))
	}
	var k string
	q := make([]byte, 0, len(raw)+2)
	q = append(append(append(q, '"'), raw...), '"')
	return json.Unmarshal(q, &k) == nil && strings.EqualFold(k, name)
}

// scanner is a minimal JSON reader over a byte slice.
type scanner struct {
	b     []byte
	i     int
	depth int
}

func (s *scanner) errorf(format string, args ...any) error {
	return &scanError{offset: s.i, msg: fmt.Sprintf(format, args...)}
}

func (s *scanner) eof() error {
	return &scanError{offset: len(s.b), msg: "unexpected end of JSON input"}
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte, 0 at the end.
func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// raw reads a value and stores its bytes in *dst.
func (s *scanner) raw(dst *[]byte) error {
	start := s.i
	if err := s.value(); err != nil {
		return err
	}
	*dst = s.b[start:s.i]
	return nil
}

// stringList reads a value that the library decodes as []string and notes
// it for replacement by null unless it is null or a list of strings.
func (s *scanner) stringList(w *listingWalk) error {
	start := s.i
	ok := true
	var err error
	switch s.peek() {
	case '[':
		err = s.array(func() error {
			if s.peek() != '"' {
				ok = false
				return s.value()
			}
			_, err := s.str()
			return err
		})
	case 'n':
		err = s.value()
	default:
		ok = false
		err = s.value()
	}
	if err == nil && !ok {
		w.edits = append(w.edits, [2]int{start, s.i})
	}
	return err
}

// value skips one value, starting at s.i (no leading white space).
func (s *scanner) value() error {
	if s.i >= len(s.b) {
		return s.eof()
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(func([]byte) error { return s.value() })
	case c == '[':
		return s.array(s.value)
	case c == '"':
		_, err := s.str()
		return err
	case c == '-' || ('0' <= c && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	default:
		return s.errorf("invalid character %q looking for beginning of value", c)
	}
}

// object reads an object; member is called for each key with s.i at the
// value, and must read it.
func (s *scanner) object(member func(key []byte) error) error {
	return s.seq('}', "object key:value pair", func() error {
		if s.i >= len(s.b) {
			return s.eof()
		}
		if s.b[s.i] != '"' {
			return s.errorf("invalid character %q looking for beginning of object key string", s.b[s.i])
		}
		key, err := s.str()
		if err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return s.eof()
		}
		if s.b[s.i] != ':' {
			return s.errorf("invalid character %q after object key", s.b[s.i])
		}
		s.i++
		s.ws()
		return member(key)
	})
}

// array reads an array; elem is called with s.i at each element, and must
// read it.
func (s *scanner) array(elem func() error) error {
	return s.seq(']', "array element", elem)
}

// seq reads an object or array from its opening byte at s.i to the
// closing byte end: item is called with s.i at each member or element, and
// must read it; what names one in the error for a bad separator.
func (s *scanner) seq(end byte, what string, item func() error) error {
	if s.depth++; s.depth > maxDepth {
		return s.errorf("exceeded max depth")
	}
	defer func() { s.depth-- }()
	s.i++ // '{' or '['
	s.ws()
	if s.peek() == end {
		s.i++
		return nil
	}
	for {
		if err := item(); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return s.eof()
		}
		switch s.b[s.i] {
		case ',':
			s.i++
			s.ws()
		case end:
			s.i++
			return nil
		default:
			return s.errorf("invalid character %q after %s", s.b[s.i], what)
		}
	}
}

// str reads a string and returns its raw content (between the quotes).
func (s *scanner) str() ([]byte, error) {
	s.i++ // '"'
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], nil
		case c == '\\':
			s.i++
			if s.i >= len(s.b) {
				return nil, s.eof()
			}
			switch s.b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				s.i++
				for range 4 {
					if s.i >= len(s.b) {
						return nil, s.eof()
					}
					if !isHex(s.b[s.i]) {
						return nil, s.errorf("invalid character %q in \\u hexadecimal character escape", s.b[s.i])
					}
					s.i++
				}
			default:
				return nil, s.errorf("invalid character %q in string escape code", s.b[s.i])
			}
		case c < 0x20:
			return nil, s.errorf("invalid character %q in string literal", c)
		default:
			s.i++
		}
	}
	return nil, s.eof()
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

// number reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() error {
	digits := func() error {
		if s.i >= len(s.b) {
			return s.eof()
		}
		if c := s.b[s.i]; c < '0' || c > '9' {
			return s.errorf("invalid character %q in numeric literal", c)
		}
		for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
			s.i++
		}
		return nil
	}
	if s.b[s.i] == '-' {
		s.i++
	}
	if s.i < len(s.b) && s.b[s.i] == '0' {
		s.i++
	} else if err := digits(); err != nil {
		return err
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if err := digits(); err != nil {
			return err
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if err := digits(); err != nil {
			return err
		}
	}
	return nil
}

func (s *scanner) literal(lit string) error {
	for j := 0; j < len(lit); j++ {
		if s.i >= len(s.b) {
			return s.eof()
		}
		if s.b[s.i] != lit[j] {
			return s.errorf("invalid character %q in literal %s (expecting %q)", s.b[s.i], lit, lit[j])
		}
		s.i++
	}
	return nil
}
