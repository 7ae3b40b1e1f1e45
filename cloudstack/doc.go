// Package cloudstack reads, from an Apache CloudStack management server,
// what the allocation table needs to know about a pod: every NIC of every
// VM, with its MAC (the key the relay's remote-id gives us), its VLAN, its
// IPv6 address and the VM's id, name and state. *Client implements
// allocator.Inventory, and NIC is allocator.NIC.
//
// The allocation table is reconciled against these listings: a NIC missing
// from a listing is eventually released. So a listing is only ever returned
// whole. Client.ListPodNICs calls listVirtualMachines podid=… listall=true
// details=nics (the NICs and none of the costlier details: stats, volumes,
// templates, …) page by page until it has read the total count CloudStack
// announced, and any failure on the way aborts the listing with an error
// that names the pod, the command, the page and what went wrong (see
// errors.go). Client.ListVMNICs lists only some VMs of a pod (ids=…, at
// most MaxIDsPerCall a call) the same way, for the targeted syncs of
// CloudStack's events (allocator.VMInventory). Reconciliation itself, and
// what to do with a failed sync, is the allocator's business
// (allocator.Store.Sync, SyncVMs).
//
// Client.RegisterWebhook creates or updates the webhook that sends
// CloudStack's events (4.20+) to serve, and ListWebhookDeliveries lists
// what it delivered (webhook.go).
//
// ParseVLAN reads broadcasturi and isolationuri. The package cloudstacktest
// is a fake management server for tests and benchmarks.
//
// # cloudstack-go
//
// Requests go through github.com/apache/cloudstack-go/v2 v2.19.0: the
// library builds each listVirtualMachines request (apiKey, command,
// response=json, signatureversion=3, expires 15 minutes on in RFC 3339),
// signs it with HMAC-SHA1 as the server verifies it, and sends it.
// library_test.go checks its signatures against the fake's verifier, an
// independent implementation of the server's.
//
// It does not decode the listing: the http.RoundTripper under the
// library's HTTP client (transport.go), which reads every page once to
// check it anyway, decodes on the way only the fields this package reads
// (pageReader: no map, no reflection) and hands the library an empty
// listing. The library's own decoding (a map of each VM, then some 200
// typed fields by reflection) took nearly all of a sync's CPU: 11–16 s
// for 100,000 VMs, now about 1.6 s for the whole sync
// (docs/BENCHMARKS.md). FuzzCheckListing checks that pageReader gives the
// values decodeNeeded gives, which gives the library's.
//
// A page pageReader cannot read (a field this package reads of an
// unexpected type, and the rare shapes listed at pageReader) is decoded by
// the library as before, which is wrong in three ways, worked around in
// the same place, the transport and the decoding of the page it keeps
// (tested in transport_test.go; library_test.go proves each fault still
// there):
//
//   - It cannot decode a real listVirtualMachines page: it declares
//     virtualmachine[].vnfnics and virtualmachine[].nic[].extradhcpoption
//     as []string, real servers send lists of objects there (VNF
//     appliances, PXE options), and one such VM fails the whole page. The
//     transport replaces exactly those values, when they are not lists of
//     strings, by null before the library decodes the page; this project
//     needs neither field. Any other field of an unexpected JSON type
//     (say "cpunumber":"2" or "details":"x") fails the page just the same:
//     then the page the transport kept is decoded again, with
//     encoding/json, into only the fields this package reads (decodeNeeded),
//     which gives them the values the library would have given. Each such
//     page is logged at Warn level, naming the pod, the page and the
//     library's error, and counted (Client.DecodeFallbacks). The rewrite
//     stays: real pages carry those two fields, and without it each such
//     page would be decoded twice and logged as a fallback.
//   - It flattens CloudStack's errors into strings ("CloudStack API error
//     431 (CSExceptionErrorCode: 4350): …"), loses the HTTP status of an
//     answer that is not JSON, and takes an error envelope sent with HTTP
//     200, or any other one-key JSON object, for an empty listing. The
//     transport checks every answer, records its HTTP status and
//     errorcode, cserrorcode and errortext, and fails the round trip of
//     anything that is not a listing, so that ListPodNICs returns
//     *APIError, ErrBadResponse or ErrTimeout, never an empty listing.
//   - It sends without a context: the transport attaches the call's
//     context and a per-request timeout (Options.Timeout). A library
//     client is made per ListPodNICs call, to carry that call's context;
//     the connections belong to the Client's shared base transport.
//   - It declares the webhook answers wrongly (WebhookDelivery holds a
//     webhook's fields; the create and update answers decode into empty
//     structs): the transport keeps those answers (checkAnswer) and
//     webhook.go decodes them into its own types.
//
// And one fault that needs no workaround: its EncodeValues leaves "~"
// unencoded where the server's Java URLEncoder encodes it (%7E), so a
// value holding "~" gets a signature the server refuses with 401. The
// values ListPodNICs sends never hold "~": a pod id is a UUID (one with
// "~" is refused before sending), and the others are fixed words and
// numbers.
//
// # Caveats
//
//   - A listing can change while it is read: a VM created or expunged
//     between two pages changes the count, and an expunged VM shifts the
//     later pages so that one VM is never seen. The client detects a
//     changed count or a VM seen twice and restarts the listing (see
//     Options.Restarts); but a VM expunged and another created between the
//     same two pages keep the count and can hide a VM from that one
//     listing. The reconciler's grace period (release-after) must absorb
//     that: never release on one listing.
//   - An empty listing is a complete, successful answer. Whether "this pod
//     has no VMs" is believable is the reconciler's safety valve.
//   - NICs of VMs in every state are returned, Destroyed and Expunging
//     included. Use allocator.Eligible before giving a NIC a new prefix.
//   - A 401 means a bad API key or secret, or this host's clock more than
//     15 minutes (cloudstack-go's expires) behind the server's: the
//     request's expires is then already past for the server. The expires
//     is in the library's RFC 3339 form ("…Z"), which the fake accepts as
//     current servers' DateUtil.parseTZDateString does; a server that
//     parsed only CloudStack's own "+0000" form would answer 401 to every
//     request, and nothing here can change that form without breaking the
//     library's signature.
//   - The server unescapes Gson's \u00XX escapes after serializing, so a
//     control character in a VM's display name reaches us raw and makes
//     the page invalid JSON; the transport replaces such bytes by spaces
//     when, and only when, a page does not parse otherwise.
//   - Fields this project needs are decoded strictly, by the library or
//     the fallback decoder: if CloudStack ever sent, say, isdefault as a
//     string or macaddress as a number, the page fails with ErrBadResponse
//     rather than yield a guess.
package cloudstack
