package cloudstack

import (
	"errors"
	"fmt"
)

// Errors returned by ListPodNICs. Callers test them with errors.Is; the
// wrapping error names the pod, the command and the page. Whatever the
// error, the listing is not complete and must not be reconciled.
var (
	// ErrIncomplete is returned when a listing ends (an empty page, or a
	// first page without VMs) before the total count CloudStack announced
	// has been read.
	ErrIncomplete = errors.New("listing ended before count was reached")
	// ErrInconsistent is returned when a listing changed while it was read
	// page by page: the count differs between pages, a VM shows up twice,
	// or more VMs than the count arrive. The client restarts such a
	// listing Options.Restarts times before it gives up with this error.
	ErrInconsistent = errors.New("listing changed while it was read")
	// ErrBadResponse is returned when an answer is not a CloudStack JSON
	// answer: not JSON (a proxy's or a maintenance page), truncated, too
	// large, or JSON of an unexpected shape; and for an HTTP error status
	// whose body is not a CloudStack error envelope.
	ErrBadResponse = errors.New("bad response")
	// ErrTimeout is returned when one request took longer than
	// Options.Timeout.
	ErrTimeout = errors.New("request timed out")
)

// APIError is an error answered by CloudStack itself: the envelope
// {"listvirtualmachinesresponse":{"errorcode":431,"cserrorcode":4350,"errortext":"…"}}.
// The usual codes: 401 bad API key, bad signature or an expires in the past
// (check the keys and this host's clock); 431 a bad parameter (an unknown
// pod id, a page size above the server's maximum); 530 an internal error of
// the management server; 429 API throttling.
type APIError struct {
	// Code is CloudStack's errorcode; it is also the HTTP status.
	Code int
	// CSCode is CloudStack's cserrorcode (the exception class), 0 if absent.
	CSCode int
	// Text is CloudStack's errortext.
	Text string
	// Command is the API command that failed, e.g. "listVirtualMachines".
	Command string
	// HTTPStatus is the HTTP status of the answer.
	HTTPStatus int
}

// Error reports code, cserrorcode and text. It does not repeat Command: the
// error that wraps an APIError names the pod, the command and the page.
func (e *APIError) Error() string {
	s := fmt.Sprintf("CloudStack error %d", e.Code)
	if e.CSCode != 0 {
		s += fmt.Sprintf(" (cserrorcode %d)", e.CSCode)
	}
	if e.HTTPStatus != 0 && e.HTTPStatus != e.Code {
		s += fmt.Sprintf(" (HTTP %d)", e.HTTPStatus)
	}
	text := e.Text
	if text == "" {
		text = "no errortext"
	}
	return s + ": " + text
}
