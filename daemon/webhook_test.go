package daemon

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/cloudstack-pd/cloudstack-pd/allocator"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/boltstore"
	"github.com/cloudstack-pd/cloudstack-pd/clock"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack"
	"github.com/cloudstack-pd/cloudstack-pd/cloudstack/cloudstacktest"
	"github.com/cloudstack-pd/cloudstack-pd/config"
	"github.com/cloudstack-pd/cloudstack-pd/httpapi"
	"github.com/cloudstack-pd/cloudstack-pd/internal/testenv"
	"github.com/cloudstack-pd/cloudstack-pd/webhook"
)

const hookSecret = "0123456789abcdef-hook"

// gatedInventory is the CloudStack client with counted calls; while gate
// is set, the first ListVMNICs waits for it (after telling entered).
type gatedInventory struct {
	c                 *cloudstack.Client
	podCalls, vmCalls atomic.Int32
	gate, entered     chan struct{}
	once              sync.Once
}

func (g *gatedInventory) ListPodNICs(ctx context.Context, pod string) ([]allocator.NIC, error) {
	g.podCalls.Add(1)
	return g.c.ListPodNICs(ctx, pod)
}

func (g *gatedInventory) ListVMNICs(ctx context.Context, pod string, ids []string) ([]allocator.NIC, error) {
	g.vmCalls.Add(1)
	if g.gate != nil {
		g.once.Do(func() {
			close(g.entered)
			<-g.gate
		})
	}
	return g.c.ListVMNICs(ctx, pod, ids)
}

// hookSite is the fixture site with serve's sync loop on a fake clock
// (api.interval 1h) and a webhook listener that the fake CloudStack
// delivers to.
type hookSite struct {
	site    *cloudstacktest.Site
	vms     cloudstacktest.VMs
	live    *allocator.Live
	fc      *clock.Fake
	inv     *gatedInventory
	sy      *syncer
	handler *webhook.Handler
	metrics *webhook.Metrics
	logs    *testenv.SyncBuffer
	full    chan string
}

func newHookSite(t *testing.T, gated bool) *hookSite {
	t.Helper()
	s := newSyncSite(t)
	cfg, err := config.Load(s.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.API.Interval = time.Hour
	cfg.Webhook.Secret = hookSecret
	st, err := allocator.OpenStore(boltstore.Open(cfg.State, boltstore.Options{Create: true, NoSync: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tbl, err := allocator.NewTable(cfg.Pools(), nil)
	if err != nil {
		t.Fatal(err)
	}
	vms, err := cloudstacktest.LoadVMs(filepath.Join("..", "testdata", "cloudstack", "listVirtualMachines-pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	h := &hookSite{site: s, vms: vms, live: allocator.NewLive(tbl), fc: clock.NewFake(epoch), logs: &testenv.SyncBuffer{}, full: make(chan string, 100)}
	h.inv = &gatedInventory{c: cloudstack.New(s.Fake.URL, cloudstacktest.SiteKey, cloudstacktest.SiteSecret, cloudstack.Options{Logger: slog.New(slog.DiscardHandler)})}
	if gated {
		h.inv.gate, h.inv.entered = make(chan struct{}), make(chan struct{})
	}
	d := &daemon{clock: h.fc, log: slog.New(slog.NewTextHandler(h.logs, nil)), st: st,
		deps: Deps{Inventory: func(*config.Config, *slog.Logger) allocator.Inventory { return h.inv }}}
	var (
		current atomic.Pointer[config.Config]
		swapMu  sync.Mutex
	)
	current.Store(cfg)
	h.sy = newSyncer(d, h.live, &current, &swapMu)
	h.sy.observe = func(outcome string, _ time.Duration, _ *allocator.SyncReport, _ time.Time) { h.full <- outcome }
	h.metrics = webhook.NewMetrics(prometheus.NewRegistry())
	h.sy.hookMetrics = h.metrics
	h.handler, err = webhook.NewHandler(webhook.Config{Secret: []byte(hookSecret), Sink: h.sy.Sink(), Metrics: h.metrics, Logger: d.log, Now: h.fc.Now})
	if err != nil {
		t.Fatal(err)
	}
	receiver := httptest.NewServer(h.handler)
	t.Cleanup(receiver.Close)
	s.Fake.AddWebhook("cloudstack-pd", receiver.URL+"/", hookSecret)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.sy.Run(ctx) }()
	t.Cleanup(func() {
		if h.inv.gate != nil {
			select {
			case <-h.inv.gate:
			default:
				close(h.inv.gate)
			}
		}
		cancel()
		<-done
	})
	if o := <-h.full; o != httpapi.SyncOK { // the start-up sync
		t.Fatalf("start-up sync: %s\n%s", o, h.logs.String())
	}
	// Once it is over (the interval armed), events come after its listing.
	h.fc.BlockUntil(1)
	h.fc.Advance(time.Second)
	return h
}

// addVM makes the fake list a new VM (web-01's JSON with another id, name
// and MAC) and returns its id and MAC.
func (h *hookSite) addVM(t *testing.T, n int) (string, net.HardwareAddr) {
	t.Helper()
	id := fmt.Sprintf("a0a0a0a0-0000-4000-8000-%012d", n)
	mac := fmt.Sprintf("1e:00:ab:00:%02x:%02x", n>>8, n&0xff)
	vm, err := cloudstacktest.AnotherVM(h.vms[0], id, fmt.Sprintf("new-%d", n), fmt.Sprintf("b0b0b0b0-0000-4000-8000-%012d", n), mac)
	if err != nil {
		t.Fatal(err)
	}
	h.vms = append(h.vms, vm)
	h.site.Fake.SetPod(cloudstacktest.SitePod, h.vms)
	m, _ := net.ParseMAC(mac)
	return id, m
}

// served waits (real time, for the asynchronous worker) until the table
// serves mac; it fails after 10 s.
func (h *hookSite) served(t *testing.T, mac net.HardwareAddr) *allocator.Allocation {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if a, ok := h.live.Current().Lookup(mac); ok {
			return a
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("%s not served:\n%s", mac, h.logs.String())
	return nil
}

// tick lets the targeted sync start: with the interval's timer, the
// burst delay's is armed; it passes on the fake clock.
func (h *hookSite) tick() {
	h.fc.BlockUntil(2)
	h.fc.Advance(VMSyncDelay)
}

func (h *hookSite) idCalls() int {
	n := 0
	for _, c := range h.site.Fake.Calls() {
		if c.Command == "listVirtualMachines" && c.Params.Get("ids") != "" {
			n++
		}
	}
	return n
}

// A VM.CREATE delivery gets the new VM's NIC its prefix by a targeted
// sync, with api.interval an hour away and the fake clock standing still:
// served without waiting for any timer, one listVirtualMachines ids=…
// call, and the event-to-served histogram has it.
func TestWebhookServesNewVM(t *testing.T) {
	h := newHookSite(t, false)
	id, mac := h.addVM(t, 1)
	h.site.Fake.ResetCalls()
	h.site.Fake.Emit(cloudstacktest.Event{Type: "VM.CREATE", EntityUUID: id}, cloudstacktest.DeliveryFault{})
	h.tick() // VMSyncDelay, well within a second of the event
	a := h.served(t, mac)
	if a.VMID != id || a.Prefix.String() != "2001:db8:200:50::/60" { // the fixture's 5 take the first five
		t.Errorf("allocation %+v", a)
	}
	if n := h.idCalls(); n != 1 {
		t.Errorf("%d targeted calls, want 1", n)
	}
	if c := h.site.Fake.Calls(); len(c) != 1 || c[0].Params.Get("ids") != id || c[0].Pod != cloudstacktest.SitePod {
		t.Errorf("calls %+v", c)
	}
	if n := testutil.CollectAndCount(h.metrics.EventToServed); n != 1 {
		t.Errorf("histogram: %d series", n)
	}
	// On the fake clock: delivered at T, served at T + VMSyncDelay (the
	// listing and the swap take no fake time): well within a second.
	if count, sum := histogram(t, h.metrics.EventToServed); count != 1 || sum != VMSyncDelay.Seconds() {
		t.Errorf("event to served: %d observed, %v s in all; want 1, %v s", count, sum, VMSyncDelay.Seconds())
	}
	if !strings.Contains(h.logs.String(), `msg="synced VMs"`) || !strings.Contains(h.logs.String(), "added=1") {
		t.Errorf("log:\n%s", h.logs.String())
	}
}

func histogram(t *testing.T, c prometheus.Collector) (uint64, float64) {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// A delivery with a bad or missing signature is refused (the fake records
// a failed delivery) and changes nothing: no CloudStack call, nothing
// served; a good one afterwards works.
func TestWebhookBadSignatureChangesNothing(t *testing.T) {
	h := newHookSite(t, false)
	id, mac := h.addVM(t, 2)
	h.site.Fake.ResetCalls()
	for _, f := range []cloudstacktest.DeliveryFault{{BadSignature: true}, {NoSignature: true}} {
		h.site.Fake.Emit(cloudstacktest.Event{Type: "VM.CREATE", EntityUUID: id}, f)
	}
	hook := h.site.Fake.Webhooks()[0]
	for _, d := range h.site.Fake.Deliveries(hook.ID) {
		if d.Success || !strings.HasPrefix(d.Response, "401") {
			t.Errorf("delivery %+v", d)
		}
	}
	// A good delivery of another VM is served; the first VM is not.
	id3, mac3 := h.addVM(t, 3)
	h.site.Fake.Emit(cloudstacktest.Event{Type: "VM.START", EntityUUID: id3}, cloudstacktest.DeliveryFault{})
	h.tick()
	h.served(t, mac3)
	if _, ok := h.live.Current().Lookup(mac); ok {
		t.Error("a VM named by a refused delivery is served")
	}
	for _, c := range h.site.Fake.Calls() {
		if strings.Contains(c.Params.Get("ids"), id) {
			t.Errorf("a refused delivery's VM was looked up: %+v", c.Params)
		}
	}
	if n := testutil.ToFloat64(h.metrics.SignatureFailures.WithLabelValues("invalid")) + testutil.ToFloat64(h.metrics.SignatureFailures.WithLabelValues("missing")); n != 2 {
		t.Errorf("%v signature failures counted", n)
	}
}

// A delivery that comes twice is acted on once.
func TestWebhookDuplicateOnce(t *testing.T) {
	h := newHookSite(t, false)
	id, mac := h.addVM(t, 4)
	h.site.Fake.ResetCalls()
	h.site.Fake.Emit(cloudstacktest.Event{Type: "VM.CREATE", EntityUUID: id}, cloudstacktest.DeliveryFault{Duplicate: true})
	h.tick()
	h.served(t, mac)
	if n := testutil.ToFloat64(h.metrics.Deliveries.WithLabelValues("VM.CREATE", webhook.OutcomeDuplicate)); n != 1 {
		t.Errorf("%v duplicates", n)
	}
	if n := testutil.ToFloat64(h.metrics.Deliveries.WithLabelValues("VM.CREATE", webhook.OutcomeAccepted)); n != 1 {
		t.Errorf("%v accepted", n)
	}
}

// A lost delivery (CloudStack gave up) leaves the VM unserved until the
// next full sync, api.interval later, which serves it.
func TestWebhookLostEventCaughtByFullSync(t *testing.T) {
	h := newHookSite(t, false)
	id, mac := h.addVM(t, 5)
	h.site.Fake.Emit(cloudstacktest.Event{Type: "VM.CREATE", EntityUUID: id}, cloudstacktest.DeliveryFault{Drop: true})
	if _, ok := h.live.Current().Lookup(mac); ok {
		t.Fatal("served without a delivery")
	}
	h.fc.BlockUntil(1)
	h.fc.Advance(time.Hour)
	if o := <-h.full; o != httpapi.SyncOK {
		t.Fatalf("interval sync: %s", o)
	}
	h.served(t, mac)
}

// Deliveries delayed and out of order are all served.
func TestWebhookReorderedAndDelayed(t *testing.T) {
	h := newHookSite(t, false)
	var events []cloudstacktest.Event
	var macs []net.HardwareAddr
	for n := 10; n < 13; n++ {
		id, mac := h.addVM(t, n)
		events = append(events, cloudstacktest.Event{Type: "VM.CREATE", EntityUUID: id})
		macs = append(macs, mac)
	}
	h.site.Fake.Emit(events[0], cloudstacktest.DeliveryFault{Delay: 50 * time.Millisecond})
	h.site.Fake.EmitAll(events[1:], true)
	h.site.Fake.WaitDeliveries()
	h.tick()
	for _, m := range macs {
		h.served(t, m)
	}
}

// A burst of 10,000 deliveries about three VMs, arriving while a targeted
// sync runs, is one more targeted sync (one API call for the one pod), not
// 10,000; a burst about 10,000 different VMs is one full sync.
func TestWebhookBurstCoalesced(t *testing.T) {
	h := newHookSite(t, true)
	first, mac1 := h.addVM(t, 20)
	var ids []string
	var macs []net.HardwareAddr
	for n := 21; n < 24; n++ {
		id, mac := h.addVM(t, n)
		ids, macs = append(ids, id), append(macs, mac)
	}
	h.site.Fake.Emit(cloudstacktest.Event{Type: "VM.CREATE", EntityUUID: first}, cloudstacktest.DeliveryFault{})
	h.tick()
	<-h.inv.entered // the first targeted sync is listing
	deliver := func(i int, vm string) {
		body := fmt.Appendf(nil, `{"event":"VM.START","entity":"VirtualMachine","entityuuid":%q,"status":"Completed"}`, vm)
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		req.Header.Set(webhook.HeaderEventID, fmt.Sprintf("burst-%d", i))
		req.Header.Set(webhook.HeaderSignature, webhook.Sign([]byte(hookSecret), body))
		w := httptest.NewRecorder()
		h.handler.ServeHTTP(w, req)
		if w.Code != 200 {
			t.Fatalf("delivery %d: %d", i, w.Code)
		}
	}
	for i := range 10_000 {
		deliver(i, ids[i%len(ids)])
	}
	close(h.inv.gate)
	h.served(t, mac1)
	h.tick()
	for _, m := range macs {
		h.served(t, m)
	}
	if n := h.inv.vmCalls.Load(); n != 2 {
		t.Errorf("%d targeted listings for 10,001 events, want 2", n)
	}

	// 10,000 different VMs, delivered within the burst delay: more than
	// MaxPendingVMs, so one full sync.
	pods := h.inv.podCalls.Load()
	before := h.inv.vmCalls.Load()
	for i := range 10_000 {
		deliver(20_000+i, fmt.Sprintf("c0c0c0c0-0000-4000-8000-%012d", i))
	}
	h.tick()
	if o := <-h.full; o != httpapi.SyncOK {
		t.Fatalf("full sync: %s", o)
	}
	if n := h.inv.podCalls.Load() - pods; n != 1 {
		t.Errorf("%d full listings, want 1", n)
	}
	if n := h.inv.vmCalls.Load() - before; n != 0 {
		t.Errorf("%d targeted listings after the overflow", n)
	}
}
