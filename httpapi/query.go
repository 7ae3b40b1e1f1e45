package httpapi

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// query reads r's query parameters: each must be one of allowed, given
// once, and not empty. Otherwise it answers 400 naming the parameter and
// returns false.
func query(w http.ResponseWriter, r *http.Request, allowed ...string) (map[string]string, bool) {
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, "", "query string %q: %v", r.URL.RawQuery, err)
		return nil, false
	}
	out := make(map[string]string, len(vals))
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range vals {
			if !yield(k) {
				return
			}
		}
	}) {
		v := vals[name]
		switch {
		case !slices.Contains(allowed, name):
			if len(allowed) == 0 {
				writeError(w, http.StatusBadRequest, name, "unknown parameter %q: %s takes none", name, r.URL.Path)
			} else {
				writeError(w, http.StatusBadRequest, name, "unknown parameter %q: %s takes %s", name, r.URL.Path, strings.Join(allowed, ", "))
			}
			return nil, false
		case len(v) > 1:
			writeError(w, http.StatusBadRequest, name, "parameter %q given %d times: give it once", name, len(v))
			return nil, false
		case strings.TrimSpace(v[0]) == "":
			writeError(w, http.StatusBadRequest, name, "parameter %q is empty: leave it out to match everything", name)
			return nil, false
		}
		out[name] = strings.TrimSpace(v[0])
	}
	return out, true
}

// noQuery answers 400 and returns false when r has any query parameter.
func noQuery(w http.ResponseWriter, r *http.Request) bool {
	_, ok := query(w, r)
	return ok
}

// errBadMAC is returned by ParseMAC for what is no hardware address.
var errBadMAC = errors.New("not a MAC address: write it as 06:32:b2:00:04:79, 06-32-b2-00-04-79, 0632.b200.0479 or 0632b2000479")

// ParseMAC reads a hardware address in any common notation, any case:
// colons or dashes between bytes (06:32:b2:00:04:79), Cisco's dotted groups
// of four hex digits (0632.b200.0479), or bare hex digits (0632b2000479).
// EUI-64 and 20-byte InfiniBand addresses are accepted in the same forms.
func ParseMAC(s string) (net.HardwareAddr, error) {
	s = strings.TrimSpace(s)
	if strings.ContainsAny(s, ":-.") {
		mac, err := net.ParseMAC(s)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", s, errBadMAC)
		}
		return mac, nil
	}
	if n := len(s); n == 0 || n%2 != 0 || n > 40 {
		return nil, fmt.Errorf("%q: %w", s, errBadMAC)
	}
	mac, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", s, errBadMAC)
	}
	return net.HardwareAddr(mac), nil
}
