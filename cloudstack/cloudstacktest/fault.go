package cloudstacktest

import "time"

// FaultKind is a way the fake can fail a request.
type FaultKind int

// The faults. The envelope faults answer what the real management server
// answers, with HTTP status = errorcode.
const (
	// FaultHTTP500 answers HTTP 500 with the servlet container's HTML
	// error page: no CloudStack envelope.
	FaultHTTP500 FaultKind = iota + 1
	// FaultSignature answers 401 "unable to verify user credentials and/or
	// request signature", as for a bad key, signature or expires.
	FaultSignature
	// FaultParam answers 431, cserrorcode 4350 (InvalidParameterValueException).
	FaultParam
	// FaultInternal answers 530, cserrorcode 9999 (ServerApiException).
	FaultInternal
	// FaultThrottle answers 429, CloudStack's API rate limit.
	FaultThrottle
	// FaultSlow waits Fault.Delay (or until the client gives up), then
	// answers normally.
	FaultSlow
	// FaultTruncated sends the headers with the full Content-Length, half
	// the body, and drops the connection.
	FaultTruncated
	// FaultNotJSON answers 200 with an HTML maintenance page, as a load
	// balancer in front of the management servers does.
	FaultNotJSON
	// FaultShortCount makes the count overstate the pod by Fault.Missing
	// VMs: the listing runs out of VMs before count is reached.
	FaultShortCount
	// FaultExpunge expunges the pod's first VM just before answering (for
	// good: later requests see the pod without it), so a listing read page
	// by page sees the count drop and the pages shift.
	FaultExpunge
)

var faultNames = map[FaultKind]string{
	FaultHTTP500:    "http-500",
	FaultSignature:  "signature",
	FaultParam:      "param-431",
	FaultInternal:   "internal-530",
	FaultThrottle:   "throttle-429",
	FaultSlow:       "slow",
	FaultTruncated:  "truncated",
	FaultNotJSON:    "not-json",
	FaultShortCount: "short-count",
	FaultExpunge:    "expunge",
}

func (k FaultKind) String() string {
	if s, ok := faultNames[k]; ok {
		return s
	}
	return "fault(?)"
}

// A Fault makes the fake fail matching listVirtualMachines requests. The
// first injected fault that matches a request applies to it.
type Fault struct {
	Kind FaultKind
	// Pod restricts the fault to requests for this pod id; "" matches any.
	Pod string
	// Page restricts the fault to this page number; 0 matches any.
	Page int
	// Times is how many matching requests the fault applies to before it
	// is used up; 0 means every one.
	Times int
	// Delay is FaultSlow's wait.
	Delay time.Duration
	// Missing is how many VMs FaultShortCount adds to the count; 0 means 1.
	Missing int
	// Text replaces the errortext of the envelope faults.
	Text string
}

func (f *Fault) matches(pod string, page int) bool {
	return (f.Pod == "" || f.Pod == pod) && (f.Page == 0 || f.Page == page)
}
