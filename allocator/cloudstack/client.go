package cloudstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"
)

// Limits and defaults.
const (
	// MaxPageSize is the largest page size the client asks for: CloudStack's
	// default.page.size is 500, and it answers a larger pagesize with error
	// 431 ("Page size can't exceed max allowed page size value: 500").
	MaxPageSize = 500
	// DefaultTimeout is the time one page request may take when
	// Options.Timeout is zero.
	DefaultTimeout = 60 * time.Second
	// DefaultRestarts is how often a listing that changed while it was read
	// is restarted when Options.Restarts is zero.
	DefaultRestarts = 2
	// expiresAfter is how long a signed request stays valid (the expires
	// parameter). The server refuses it with 401 once that time has passed
	// by its own clock, so this also bounds the clock skew tolerated.
	expiresAfter = 10 * time.Minute
	// maxBody bounds one answer. A page of 500 VMs with their NICs is about
	// 1–3 MB.
	maxBody = 64 << 20
)

const cmdListVMs = "listVirtualMachines"

// Options configure a Client. Every zero value means the default.
type Options struct {
	// PageSize is the pagesize of each listVirtualMachines call. Zero (or
	// less) means MaxPageSize; values above MaxPageSize are lowered to it.
	PageSize int
	// Timeout bounds each request, from sending it to reading the whole
	// answer. Zero (or less) means DefaultTimeout.
	Timeout time.Duration
	// HTTPClient sends the requests. Nil means a client of the package's
	// own (proxy from the environment, TLS certificates verified, no
	// timeout of its own: Timeout applies).
	HTTPClient *http.Client
	// Logger gets a Debug record per page, and a Warn record per NIC
	// dropped because its MAC does not parse and per restarted listing. Nil
	// means slog.Default().
	Logger *slog.Logger
	// Restarts is how often a listing that changed while it was read (see
	// ErrInconsistent) is restarted from page 1 before ListPodNICs gives up.
	// Zero means DefaultRestarts; negative means never.
	Restarts int
	// Now is the clock used for the expires parameter. Nil means time.Now.
	Now func() time.Time
}

// Client reads the VM inventory of pods from a CloudStack management
// server. It is safe for concurrent use.
type Client struct {
	endpoint  string
	err       error // a bad URL, reported by every call
	apiKey    string
	secretKey string
	pageSize  int
	timeout   time.Duration
	hc        *http.Client
	log       *slog.Logger
	restarts  int
	now       func() time.Time
}

// New returns a client for the API endpoint apiURL (e.g.
// https://cloud.example.com/client/api) with the user's API key and secret
// key. The URL must be http or https and carry no query; if it does not,
// every call returns that error.
func New(apiURL, apiKey, secretKey string, opts Options) *Client {
	c := &Client{
		endpoint:  apiURL,
		apiKey:    apiKey,
		secretKey: secretKey,
		pageSize:  opts.PageSize,
		timeout:   opts.Timeout,
		hc:        opts.HTTPClient,
		log:       opts.Logger,
		restarts:  opts.Restarts,
		now:       opts.Now,
	}
	if u, err := url.Parse(apiURL); err != nil {
		c.err = fmt.Errorf("cloudstack: API URL: %w", err)
	} else if u.User != nil {
		c.err = fmt.Errorf("cloudstack: API URL %s: user info not supported", u.Redacted())
	} else if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		c.err = fmt.Errorf("cloudstack: API URL %q: want http(s)://host/path without a query", apiURL)
	}
	if c.pageSize <= 0 || c.pageSize > MaxPageSize {
		c.pageSize = MaxPageSize
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	switch {
	case c.restarts == 0:
		c.restarts = DefaultRestarts
	case c.restarts < 0:
		c.restarts = 0
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// ListPodNICs returns every NIC of every VM CloudStack lists in the pod
// (listVirtualMachines podid=… listall=true details=nics), VMs of every
// state included, in listing order. It reads page after page until it has
// read the total count of VMs, and returns either the complete listing or
// an error: any failure – an HTTP error, CloudStack's error envelope (as
// *APIError), a timeout, a truncated or non-JSON body, a listing that ends
// before its count (ErrIncomplete) or changes while it is read
// (ErrInconsistent) – aborts with an error that names the pod, the command
// and the page. A NIC whose MAC does not parse is dropped and logged; a VM
// without NICs contributes none.
func (c *Client) ListPodNICs(ctx context.Context, podID string) ([]NIC, error) {
	if c.err != nil {
		return nil, c.err
	}
	if podID == "" {
		return nil, errors.New("cloudstack: empty pod id")
	}
	for attempt := 0; ; attempt++ {
		nics, err := c.listPod(ctx, podID)
		if err == nil || !errors.Is(err, ErrInconsistent) || attempt >= c.restarts {
			if err != nil && attempt > 0 {
				err = fmt.Errorf("%w (after %d attempts)", err, attempt+1)
			}
			return nics, err
		}
		c.log.Warn("cloudstack: listing changed while read; restarting it",
			"pod", podID, "attempt", attempt+1, "err", err)
	}
}

// listPod reads one listing of the pod, page by page.
func (c *Client) listPod(ctx context.Context, podID string) ([]NIC, error) {
	var (
		nics  []NIC
		seen  map[string]struct{}
		count int
		buf   bytes.Buffer
	)
	for page := 1; ; page++ {
		fail := func(err error) error {
			return fmt.Errorf("cloudstack: pod %s: %s page %d: %w", podID, cmdListVMs, page, err)
		}
		start := time.Now()
		p, err := c.fetchPage(ctx, podID, page, &buf)
		if err != nil {
			return nil, fail(err)
		}
		c.log.Debug("cloudstack: page read", "pod", podID, "page", page,
			"vms", len(p.VMs), "count", p.Count, "bytes", buf.Len(), "took", time.Since(start))
		if page == 1 {
			count = p.Count
			if count < 0 || (count == 0 && len(p.VMs) > 0) {
				return nil, fail(fmt.Errorf("%w: count %d with %d VMs", ErrBadResponse, count, len(p.VMs)))
			}
			// Sized for the count, within reason: a count is not a promise.
			hint := min(count, 1<<20)
			seen = make(map[string]struct{}, hint)
			nics = make([]NIC, 0, hint+hint/8) // most VMs have one NIC
		} else if p.Count != count {
			return nil, fail(fmt.Errorf("%w: count %d on page 1, %d on page %d", ErrInconsistent, count, p.Count, page))
		}
		if len(p.VMs) == 0 {
			if count == 0 {
				return nil, nil // the empty listing, {"listvirtualmachinesresponse":{}}
			}
			return nil, fail(fmt.Errorf("%w: read %d of %d VMs", ErrIncomplete, len(seen), count))
		}
		for i := range p.VMs {
			vm := &p.VMs[i]
			if vm.ID == "" {
				return nil, fail(fmt.Errorf("%w: VM %d of the page has no id", ErrBadResponse, i))
			}
			if _, dup := seen[vm.ID]; dup {
				return nil, fail(fmt.Errorf("%w: VM %s listed twice", ErrInconsistent, vm.ID))
			}
			seen[vm.ID] = struct{}{}
			nics = c.appendNICs(nics, podID, vm)
		}
		switch {
		case len(seen) > count:
			return nil, fail(fmt.Errorf("%w: read %d VMs, count is %d", ErrInconsistent, len(seen), count))
		case len(seen) == count:
			return nics, nil
		}
	}
}

// fetchPage sends one signed listVirtualMachines request and decodes the
// answer. buf is reused between pages.
func (c *Client) fetchPage(ctx context.Context, podID string, page int, buf *bytes.Buffer) (*vmPage, error) {
	params := url.Values{
		"command":          {cmdListVMs},
		"podid":            {podID},
		"listall":          {"true"},
		"details":          {"nics"},
		"page":             {strconv.Itoa(page)},
		"pagesize":         {strconv.Itoa(c.pageSize)},
		"response":         {"json"},
		"apiKey":           {c.apiKey},
		"signatureversion": {"3"},
		// CloudStack's own date layout: every server version parses it,
		// while older ones refuse the RFC 3339 "Z" form cloudstack-go sends.
		"expires": {c.now().UTC().Add(expiresAfter).Format(DateLayout)},
	}
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, c.endpoint+"?"+signedQuery(params, c.secretKey), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "cloudstack-pd")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, rctx, err)
	}
	defer resp.Body.Close()
	buf.Reset()
	if resp.ContentLength > 0 && resp.ContentLength <= maxBody {
		buf.Grow(int(resp.ContentLength) + bytes.MinRead) // ReadFrom wants MinRead spare to stop growing
	}
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, maxBody+1))
	switch {
	case err != nil && (ctx.Err() != nil || rctx.Err() != nil || isTimeout(err)):
		return nil, c.transportError(ctx, rctx, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("%w: HTTP %d, body truncated after %d bytes", ErrBadResponse, resp.StatusCode, n)
	case err != nil:
		return nil, fmt.Errorf("%w: HTTP %d, reading body after %d bytes: %v", ErrBadResponse, resp.StatusCode, n, err)
	case n > maxBody:
		return nil, fmt.Errorf("%w: HTTP %d, body larger than %d bytes", ErrBadResponse, resp.StatusCode, maxBody)
	}
	return decodeListVMs(cmdListVMs, resp.StatusCode, buf.Bytes())
}

// transportError classifies an error of sending a request or reading its
// answer: the caller's context ended, the request's own Timeout passed, or
// the network failed.
func (c *Client) transportError(ctx, rctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("canceled: %w", context.Cause(ctx))
	case rctx.Err() != nil || isTimeout(err):
		return fmt.Errorf("%w after %v", ErrTimeout, c.timeout)
	}
	// A *url.Error would print the whole signed URL.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("GET %s: %w", c.endpoint, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// appendNICs appends the NICs of one VM.
func (c *Client) appendNICs(nics []NIC, podID string, vm *vmJSON) []NIC {
	var created time.Time
	if vm.Created != "" {
		t, err := time.Parse(DateLayout, vm.Created)
		if err != nil {
			c.log.Debug("cloudstack: VM created date does not parse", "pod", podID, "vm", vm.ID, "created", vm.Created)
		}
		created = t
	}
	for i := range vm.NICs {
		n := &vm.NICs[i]
		mac, err := net.ParseMAC(n.MACAddress)
		if err != nil {
			c.log.Warn("cloudstack: NIC dropped: its MAC does not parse",
				"pod", podID, "vm", vm.ID, "vm-name", vm.Name, "nic", n.ID, "mac", n.MACAddress)
			continue
		}
		nic := NIC{
			VMID:      vm.ID,
			VMName:    vm.Name,
			VMState:   vm.State,
			NICID:     n.ID,
			MAC:       mac,
			NetworkID: n.NetworkID,
			VLAN:      nicVLAN(n.BroadcastURI, n.IsolationURI),
			IsDefault: n.IsDefault,
			Created:   created,
		}
		if n.IP6Address != "" {
			if a, err := netip.ParseAddr(n.IP6Address); err == nil && a.Is6() && !a.Is4In6() {
				nic.IP6 = a
			} else {
				c.log.Debug("cloudstack: NIC ip6address does not parse", "pod", podID, "nic", n.ID, "ip6address", n.IP6Address)
			}
		}
		if n.IP6CIDR != "" {
			if p, err := netip.ParsePrefix(n.IP6CIDR); err == nil && p.Addr().Is6() {
				nic.IP6CIDR = p.Masked()
			} else {
				c.log.Debug("cloudstack: NIC ip6cidr does not parse", "pod", podID, "nic", n.ID, "ip6cidr", n.IP6CIDR)
			}
		}
		nics = append(nics, nic)
	}
	return nics
}
