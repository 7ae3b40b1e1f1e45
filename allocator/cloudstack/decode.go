package cloudstack

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// The workaround for cloudstack-go v2.19.0 lives in this file, and only
// here: the library decodes a listVirtualMachines page into structs that
// declare nic[].extradhcpoption and vnfnics as []string, while real servers
// send lists of objects there, so one such VM fails the whole page. We
// decode with our own structs that name only the fields this project needs;
// encoding/json skips every other field, whatever its shape.

// vmPage is one page of listVirtualMachines: the value of the
// "listvirtualmachinesresponse" key. An error answer carries errorcode,
// cserrorcode and errortext in the same object.
type vmPage struct {
	Count int      `json:"count"`
	VMs   []vmJSON `json:"virtualmachine"`

	ErrorCode   int    `json:"errorcode"`
	CSErrorCode int    `json:"cserrorcode"`
	ErrorText   string `json:"errortext"`
}

type vmJSON struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	State   string    `json:"state"`
	Created string    `json:"created"`
	NICs    []nicJSON `json:"nic"`
}

type nicJSON struct {
	ID           string `json:"id"`
	MACAddress   string `json:"macaddress"`
	IP6Address   string `json:"ip6address"`
	IP6CIDR      string `json:"ip6cidr"`
	NetworkID    string `json:"networkid"`
	BroadcastURI string `json:"broadcasturi"`
	IsolationURI string `json:"isolationuri"`
	IsDefault    bool   `json:"isdefault"`
}

// errorBody is the inside of an error envelope, whatever its key (the
// command's response name, or "errorresponse" for an unknown command).
type errorBody struct {
	ErrorCode   int    `json:"errorcode"`
	CSErrorCode int    `json:"cserrorcode"`
	ErrorText   string `json:"errortext"`
}

const listVMsKey = "listvirtualmachinesresponse"

// decodeListVMs decodes one answer to listVirtualMachines. status is the
// HTTP status; body may be modified in place (see scrubControlBytes). It
// returns the page for a listing (including the empty one,
// {"listvirtualmachinesresponse":{}}), an *APIError for CloudStack's error
// envelope, and ErrBadResponse for anything else.
func decodeListVMs(command string, status int, body []byte) (*vmPage, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fmt.Errorf("%w: HTTP %d, not JSON: %s", ErrBadResponse, status, snippet(trimmed))
	}
	if status < 200 || status > 299 {
		scrubControlBytes(trimmed) // an error body is small
		if e := decodeAPIError(command, status, trimmed); e != nil {
			return nil, e
		}
		return nil, fmt.Errorf("%w: HTTP %d without a CloudStack error: %s", ErrBadResponse, status, snippet(trimmed))
	}

	var env struct {
		Page *vmPage `json:"listvirtualmachinesresponse"`
	}
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	err := json.Unmarshal(trimmed, &env)
	if errors.As(err, &syntax) && scrubControlBytes(trimmed) {
		env.Page = nil
		err = json.Unmarshal(trimmed, &env)
	}
	switch {
	case err == nil:
	case errors.As(err, &syntax) && syntax.Offset >= int64(len(trimmed)):
		return nil, fmt.Errorf("%w: truncated JSON after %d bytes", ErrBadResponse, len(trimmed))
	case errors.As(err, &syntax):
		return nil, fmt.Errorf("%w: invalid JSON at byte %d: %v", ErrBadResponse, syntax.Offset, err)
	case errors.As(err, &typ):
		return nil, fmt.Errorf("%w: field %s is JSON %s, not %s", ErrBadResponse, typ.Field, typ.Value, typ.Type)
	default:
		return nil, fmt.Errorf("%w: %v", ErrBadResponse, err)
	}
	if env.Page == nil {
		if e := decodeAPIError(command, status, trimmed); e != nil {
			return nil, e
		}
		return nil, fmt.Errorf("%w: no %q in answer: %s", ErrBadResponse, listVMsKey, snippet(trimmed))
	}
	if p := env.Page; p.ErrorCode != 0 {
		return nil, &APIError{Code: p.ErrorCode, CSCode: p.CSErrorCode, Text: p.ErrorText, Command: command, HTTPStatus: status}
	}
	return env.Page, nil
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
	s := string(b)
	if _, rest, ok := strings.Cut(s, "<title>"); ok {
		if title, _, ok := strings.Cut(rest, "</title>"); ok {
			return fmt.Sprintf("HTML page %q", strings.Join(strings.Fields(title), " "))
		}
	}
	if len(s) > 4*max {
		s = s[:4*max]
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "…"
	}
	return fmt.Sprintf("%q", s)
}
