package cloudstacktest

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Signature computes the signature of a request's parameters the way the
// management server does in ApiServer.verifyRequest, written independently
// of the client's signer so that each checks the other:
//
//   - every parameter except signature (its name compared case-
//     insensitively), names sorted case-sensitively as Java's
//     Collections.sort sorts them, the first value of each;
//   - name + "=" + URLEncoder.encode(value, "UTF-8") with "+" replaced by
//     "%20", joined by "&";
//   - the whole string lower-cased, HMAC-SHA1 with the secret key, standard
//     base64.
func Signature(params url.Values, secretKey string) string {
	return signature(canonical(params), secretKey)
}

func canonical(params url.Values) string {
	names := make([]string, 0, len(params))
	for name := range params {
		if !strings.EqualFold(name, "signature") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = name + "=" + strings.ReplaceAll(javaURLEncoder(params[name][0]), "+", "%20")
	}
	return strings.Join(parts, "&")
}

func signature(canonical, secretKey string) string {
	mac := hmac.New(sha1.New, []byte(secretKey))
	mac.Write([]byte(strings.ToLower(canonical)))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// javaURLEncoder is java.net.URLEncoder.encode(s, "UTF-8"): like Go's
// url.QueryEscape, except that Java keeps "*" and encodes "~".
func javaURLEncoder(s string) string {
	e := url.QueryEscape(s)
	e = strings.ReplaceAll(e, "%2A", "*")
	return strings.ReplaceAll(e, "~", "%7E")
}

// expiresLayouts are the forms of the expires parameter that CloudStack's
// DateUtil.parseTZDateString accepts (ISO_OFFSET_DATE_TIME,
// yyyy-MM-dd'T'HH:mm:ssZ, ISO_INSTANT, with or without fractions).
// time.Parse accepts a fraction after the seconds in either layout.
var expiresLayouts = []string{
	time.RFC3339,               // 2018-10-01T08:12:14Z, 2018-10-01T08:12:14.000+01:00
	"2006-01-02T15:04:05-0700", // 2018-10-01T08:12:14+0100
}

func parseExpires(s string) (time.Time, error) {
	for _, layout := range expiresLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("unparseable date %q", s)
}

// param returns the first value of the parameter whose name equals name
// case-insensitively, as the server looks up apiKey, signature,
// signatureVersion and expires.
func param(params url.Values, name string) (string, bool) {
	for k, v := range params {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0], true
		}
	}
	return "", false
}

// verify checks a request's credentials as verifyRequest does; reason says
// why it failed (the real server only logs it).
func (s *Server) verify(params url.Values, now time.Time) (ok bool, reason string) {
	sig, hasSig := param(params, "signature")
	key, hasKey := param(params, "apiKey")
	if !hasSig || !hasKey {
		return false, "missing signature or apiKey"
	}
	if v, _ := param(params, "signatureVersion"); v == "3" {
		exp, ok := param(params, "expires")
		if !ok {
			return false, "signatureversion=3 without expires"
		}
		t, err := parseExpires(exp)
		if err != nil {
			return false, "expires: " + err.Error()
		}
		if t.Before(now) {
			return false, fmt.Sprintf("request expired at %s", exp)
		}
	}
	if key != s.APIKey {
		return false, "unknown apiKey"
	}
	want := Signature(params, s.SecretKey)
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return false, fmt.Sprintf("signature %q, computed %q over %q", sig, want, strings.ToLower(canonical(params)))
	}
	return true, ""
}
