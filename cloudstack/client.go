package cloudstack

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	cs "github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
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
	// Transport sends the requests cloudstack-go builds and signs. Nil
	// means a transport of the package's own (proxy from the environment,
	// TLS certificates verified unless InsecureSkipVerify), shared by the
	// calls of the Client.
	Transport http.RoundTripper
	// InsecureSkipVerify turns off the verification of the server's TLS
	// certificate (config: api.verify-tls false). Ignored with Transport.
	InsecureSkipVerify bool
	// Logger gets a Debug record per page (and per page whose
	// extradhcpoption or vnfnics values were dropped), and a Warn record per
	// NIC dropped because its MAC does not parse, per restarted listing and
	// per page read with the fallback decoder (see DecodeFallbacks).
	// Nil means slog.Default().
	Logger *slog.Logger
	// Restarts is how often a listing that changed while it was read (see
	// ErrInconsistent) is restarted from page 1 before ListPodNICs gives up.
	// Zero means DefaultRestarts; negative means never.
	Restarts int
}

// Client reads the VM inventory of pods from a CloudStack management
// server through cloudstack-go. It is safe for concurrent use, and
// implements allocator.Inventory.
type Client struct {
	endpoint  string
	err       error // a bad URL, reported by every call
	apiKey    string
	secretKey string
	pageSize  int
	timeout   time.Duration
	base      http.RoundTripper
	log       *slog.Logger
	restarts  int
	fallbacks atomic.Uint64
}

var (
	_ allocator.Inventory   = (*Client)(nil)
	_ allocator.VMInventory = (*Client)(nil)
)

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
		base:      opts.Transport,
		log:       opts.Logger,
		restarts:  opts.Restarts,
	}
	// No error shows the URL's user info, query or fragment: they may
	// hold the keys or a signature.
	if u, err := url.Parse(apiURL); err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // it quotes the whole URL
		}
		c.err = fmt.Errorf("cloudstack: API URL: %w", err)
	} else if u.User != nil {
		c.err = fmt.Errorf("cloudstack: API URL %s: user info not supported", u.Redacted())
	} else if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		shown := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, Opaque: u.Opaque}).String()
		if u.RawQuery != "" || u.Fragment != "" {
			shown += " (query and fragment not shown)"
		}
		c.err = fmt.Errorf("cloudstack: API URL %q: want http(s)://host/path without a query", shown)
	}
	if c.pageSize <= 0 || c.pageSize > MaxPageSize {
		c.pageSize = MaxPageSize
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		if opts.InsecureSkipVerify {
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the operator asked for it: api.verify-tls false
		}
		c.base = t
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
	return c
}

// DecodeFallbacks returns how many pages, since New, cloudstack-go could
// not decode (a field of an unexpected JSON type, in any VM of the page)
// and were read instead with only the fields this package needs. Each such
// page is also logged at Warn level with its pod, page and the library's
// error.
func (c *Client) DecodeFallbacks() uint64 { return c.fallbacks.Load() }

// ListPodNICs returns every NIC of every VM CloudStack lists in the pod
// (listVirtualMachines podid=… listall=true details=nics), VMs of every
// state included, in listing order. It reads page after page until it has
// read the total count of VMs, and returns either the complete listing or
// an error: any failure – an HTTP error, CloudStack's error envelope (as
// *APIError), a timeout, a truncated or non-JSON body, a listing that ends
// before its count (ErrIncomplete) or changes while it is read
// (ErrInconsistent) – aborts with an error that names the pod, the command
// and the page. A page cloudstack-go cannot decode because some field is of
// an unexpected type is read with only the fields this package needs (see
// DecodeFallbacks); if those do not decode, it fails with ErrBadResponse. A
// NIC whose MAC does not parse is dropped and logged; a VM without NICs
// contributes none.
func (c *Client) ListPodNICs(ctx context.Context, podID string) ([]NIC, error) {
	if c.err != nil {
		return nil, c.err
	}
	if podID == "" {
		return nil, errors.New("cloudstack: empty pod id")
	}
	if strings.Contains(podID, "~") {
		// cloudstack-go signs "~" unencoded where the server encodes it:
		// the request could only get 401.
		return nil, fmt.Errorf("cloudstack: pod id %q: contains \"~\", which cloudstack-go v2.19.0 signs wrongly (see the package doc); a CloudStack pod id is a UUID", podID)
	}
	return c.list(ctx, podID, nil)
}

// MaxIDsPerCall is how many VM ids ListVMNICs names in one
// listVirtualMachines call (ids=…): 100 UUIDs make a URL of about 4 KB.
const MaxIDsPerCall = 100

// ListVMNICs returns every NIC of the VMs of vmIDs that CloudStack lists
// in the pod (listVirtualMachines podid=… ids=… listall=true
// details=nics), VMs of every state included: a VM of another pod, or
// one that no longer exists, is not listed. It names at most
// MaxIDsPerCall VMs a call, and fails as ListPodNICs fails: a listing is
// complete or an error. It implements allocator.VMInventory, for the
// targeted syncs of CloudStack's events.
func (c *Client) ListVMNICs(ctx context.Context, podID string, vmIDs []string) ([]NIC, error) {
	if c.err != nil {
		return nil, c.err
	}
	if podID == "" {
		return nil, errors.New("cloudstack: empty pod id")
	}
	for _, id := range append([]string{podID}, vmIDs...) {
		if id == "" || strings.ContainsAny(id, "~,") {
			// "~" is signed wrongly by cloudstack-go; "," would split the
			// list of ids.
			return nil, fmt.Errorf("cloudstack: id %q: not a CloudStack UUID", id)
		}
	}
	var nics []NIC
	for start := 0; start < len(vmIDs); start += MaxIDsPerCall {
		part, err := c.list(ctx, podID, vmIDs[start:min(start+MaxIDsPerCall, len(vmIDs))])
		if err != nil {
			return nil, err
		}
		nics = append(nics, part...)
	}
	return nics, nil
}

// list reads a complete listing of the pod, of only the VMs of ids when
// ids is not nil, restarting it when it changed while read.
func (c *Client) list(ctx context.Context, podID string, ids []string) ([]NIC, error) {
	// A library client per call: it is cheap (no connection of its own),
	// and its transport carries this call's context.
	tr := &transport{base: c.base, ctx: ctx, timeout: c.timeout, endpoint: c.endpoint}
	lib := cs.NewClient(c.endpoint, c.apiKey, c.secretKey, true, cs.WithHTTPClient(&http.Client{Transport: tr}))
	for attempt := 0; ; attempt++ {
		nics, err := c.listPod(lib, tr, podID, ids)
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
func (c *Client) listPod(lib *cs.CloudStackClient, tr *transport, podID string, ids []string) ([]NIC, error) {
	var (
		nics  []NIC
		seen  map[string]struct{}
		count int
	)
	for page := 1; ; page++ {
		fail := func(err error) error {
			return fmt.Errorf("cloudstack: pod %s: %s page %d: %w", podID, cmdListVMs, page, err)
		}
		start := time.Now()
		p, ex, err := c.fetchPage(lib, tr, podID, ids, page)
		if err != nil {
			return nil, fail(err)
		}
		c.log.Debug("cloudstack: page read", "pod", podID, "page", page,
			"vms", len(p.VMs), "count", p.Count, "bytes", ex.bytes, "took", time.Since(start))
		if ex.libErr != nil {
			c.fallbacks.Add(1)
			c.log.Warn("cloudstack: cloudstack-go cannot decode the page; read the fields this package needs with the fallback decoder",
				"pod", podID, "page", page, "vms", len(p.VMs), "err", ex.libErr)
		}
		if ex.edited > 0 {
			c.log.Debug("cloudstack: extradhcpoption or vnfnics values the library cannot decode were dropped",
				"pod", podID, "page", page, "values", ex.edited)
		}
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
		for i, vm := range p.VMs {
			if vm == nil || vm.Id == "" {
				return nil, fail(fmt.Errorf("%w: VM %d of the page has no id", ErrBadResponse, i))
			}
			if _, dup := seen[vm.Id]; dup {
				return nil, fail(fmt.Errorf("%w: VM %s listed twice", ErrInconsistent, vm.Id))
			}
			seen[vm.Id] = struct{}{}
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

// fetchPage has cloudstack-go list one page. The transport's record of the
// answer, not the library's flattened error, says what went wrong.
func (c *Client) fetchPage(lib *cs.CloudStackClient, tr *transport, podID string, ids []string, page int) (*vmPage, exchange, error) {
	p := lib.VirtualMachine.NewListVirtualMachinesParams()
	p.SetPodid(podID)
	if ids != nil {
		p.SetIds(ids)
	}
	p.SetListall(true)
	p.SetDetails([]string{"nics"})
	p.SetPage(page)
	p.SetPagesize(c.pageSize)
	r, err := lib.VirtualMachine.ListVirtualMachines(p)
	ex := tr.take()
	switch {
	case ex.err != nil:
		return nil, ex, ex.err
	case err != nil && !ex.sent:
		return nil, ex, getError(c.endpoint, err)
	case err != nil:
		// A listing the transport passed that the library cannot decode. If
		// it failed on the type of a field (one VM is enough to fail the
		// page), read the fields this package needs without it; listPod
		// logs and counts that. If those fields themselves do not decode,
		// the page fails as the library failed it.
		var typ *json.UnmarshalTypeError
		if !errors.As(err, &typ) {
			return nil, ex, fmt.Errorf("%w: HTTP %d: cloudstack-go cannot decode the page: %v", ErrBadResponse, ex.status, err)
		}
		r, ferr := decodeNeeded(ex.body)
		if ferr != nil {
			return nil, ex, fmt.Errorf("%w: HTTP %d: cloudstack-go cannot decode the page: %v; nor can the fallback decoder of the fields this package reads: %v",
				ErrBadResponse, ex.status, err, ferr)
		}
		ex.libErr = err
		return pageFromLibrary(r), ex, nil
	case ex.page != nil:
		return ex.page, ex, nil // read by the transport
	case r == nil:
		return nil, ex, fmt.Errorf("%w: HTTP %d: cloudstack-go returned no page", ErrBadResponse, ex.status)
	}
	return pageFromLibrary(r), ex, nil
}

// appendNICs appends the NICs of one VM.
func (c *Client) appendNICs(nics []NIC, podID string, vm *neededVM) []NIC {
	var created time.Time
	if vm.Created != "" {
		t, err := time.Parse(DateLayout, vm.Created)
		if err != nil {
			c.log.Debug("cloudstack: VM created date does not parse", "pod", podID, "vm", vm.Id, "created", vm.Created)
		}
		created = t
	}
	for i := range vm.Nic {
		n := &vm.Nic[i]
		mac, err := net.ParseMAC(n.Macaddress)
		if err != nil {
			c.log.Warn("cloudstack: NIC dropped: its MAC does not parse",
				"pod", podID, "vm", vm.Id, "vm-name", vm.Name, "nic", n.Id, "mac", n.Macaddress)
			continue
		}
		nic := NIC{
			VMID:      vm.Id,
			VMName:    vm.Name,
			VMState:   vm.State,
			NICID:     n.Id,
			MAC:       mac,
			NetworkID: n.Networkid,
			VLAN:      nicVLAN(n.Broadcasturi, n.Isolationuri),
			IsDefault: n.Isdefault,
			Created:   created,
		}
		if n.Ip6address != "" {
			if a, err := netip.ParseAddr(n.Ip6address); err == nil && a.Is6() && !a.Is4In6() {
				nic.IP6 = a
			} else {
				c.log.Debug("cloudstack: NIC ip6address does not parse", "pod", podID, "nic", n.Id, "ip6address", n.Ip6address)
			}
		}
		if n.Ip6cidr != "" {
			if p, err := netip.ParsePrefix(n.Ip6cidr); err == nil && p.Addr().Is6() {
				nic.IP6CIDR = p.Masked()
			} else {
				c.log.Debug("cloudstack: NIC ip6cidr does not parse", "pod", podID, "nic", n.Id, "ip6cidr", n.Ip6cidr)
			}
		}
		nics = append(nics, nic)
	}
	return nics
}
