// Package cloudstack reads, from an Apache CloudStack management server,
// what the allocation table needs to know about a pod: every NIC of every
// VM, with its MAC (the key the relay's remote-id gives us), its VLAN, its
// IPv6 address and the VM's id, name and state.
//
// The allocation table is reconciled against these listings: a NIC missing
// from a listing is eventually released. So a listing is only ever returned
// whole. Client.ListPodNICs calls listVirtualMachines podid=… listall=true
// details=nics (the NICs and none of the costlier details: stats, volumes,
// templates, …) page by page until it has read the total count CloudStack
// announced, and any failure on the way aborts the listing with an error
// that names the pod, the command, the page and what went wrong (see
// errors.go). Reconciliation itself, and what to do with a failed sync, is
// the caller's business.
//
// Select picks the NICs that qualify for a mapping entry (each VM's default
// NIC, or every NIC on a VLAN); Eligible says whether a VM's state allows a
// new allocation. ParseVLAN reads broadcasturi and isolationuri.
//
// The package cloudstacktest is a fake management server for tests and
// benchmarks.
//
// # Why not cloudstack-go
//
// github.com/apache/cloudstack-go/v2 v2.19.0 is the project's reference for
// the API, and this package follows its request format (apiKey, command,
// response=json, signatureversion=3, expires, an HMAC-SHA1 signature), but
// does not call it:
//
//   - It cannot decode a real listVirtualMachines page: it declares
//     nic[].extradhcpoption and vnfnics as []string, real servers send
//     objects there, and one such VM fails the whole page. We decode with
//     our own minimal structs, in one place (decode.go).
//   - Its request path (newRequest, newRawRequest) is unexported. The
//     exported CustomService.CustomRequest hides behind an empty interface,
//     sends a POST, takes no context, and returns errors as strings, so the
//     HTTP status of a non-JSON answer and CloudStack's errorcode are lost.
//   - Its EncodeValues leaves "~" unencoded where the server's Java
//     URLEncoder encodes it, so the signatures of such values are refused;
//     and it sends expires in the RFC 3339 "Z" form, which older servers
//     refuse (4.11 parses only CloudStack's own 2018-10-01T08:12:14+0100
//     form, the one we send).
//   - Importing it at all pulls go.uber.org/mock into the build.
//
// So signedQuery (sign.go) signs requests itself, with the server's
// algorithm; its tests check it against the fake server's independent
// implementation and, with the build tag cloudstackgo, against
// cloudstack-go's own signature on the same parameters.
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
//     included. Use Eligible before giving a NIC a new prefix.
//   - A 401 means a bad API key or secret, or this host's clock more than
//     expiresAfter (10 minutes) behind the server's: the request's expires
//     is then already past for the server.
//   - The server unescapes Gson's \u00XX escapes after serializing, so a
//     control character in a VM's display name reaches us raw and makes
//     the page invalid JSON; such bytes are replaced by spaces before
//     decoding.
//   - Fields this project needs are decoded strictly: if CloudStack ever
//     sent, say, isdefault as a string, the page fails with ErrBadResponse
//     rather than yield a guess.
package cloudstack
