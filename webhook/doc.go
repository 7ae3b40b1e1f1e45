// Package webhook receives CloudStack's webhook deliveries (CloudStack
// 4.20 and later) and turns the events that can change a VM's NICs into
// work for the sync: a targeted sync of one VM, or a full sync.
//
// A delivery is an HTTP POST whose body is the event as JSON (event,
// status, entity, entityuuid, description, account, eventDateTime, …),
// with the headers X-CS-Event-ID, X-CS-Event, User-Agent
// CS-Hookshot/<account-uuid> and, when the webhook has a secret,
// X-CS-Signature = Base64(HMAC-SHA256(secret, raw body)). CloudStack counts
// only HTTP 200 as success and tries a delivery 3 times (10 s timeout
// each); duplicates are the receiver's problem.
//
// Handler is the http.Handler of the listener (webhook.listen): it takes
// POSTs to "/" only, refuses a body over MaxBody (413) and a delivery
// without a valid signature (401: nothing else happens), answers a
// delivery whose X-CS-Event-ID it has seen among the last DedupSize once
// (200, nothing else happens), and hands every other event it can act on
// to a Sink, then answers 200 at once: the work is asynchronous, so the
// Sink must not block. Serve runs the listener, with TLS when given.
//
// What an event asks for (Classify): VM.CREATE, VM.START, VM.DESTROY,
// VM.EXPUNGE, VM.MIGRATE and VM.RECOVER name a VM (entityuuid) to sync;
// NIC.CREATE, NIC.DELETE and NIC.UPDATE too when their entity is the VM,
// else (a NIC's own uuid, which no CloudStack call maps back to its VM)
// a full sync; NETWORK.UPDATE and NETWORK.MIGRATE, which can change a
// network's VLAN, a full sync. Every other event is answered 200 and
// ignored. An event never releases anything by itself: the sync it asks
// for follows the allocation rules (allocator.Store.ReconcileVMs).
//
// # Caveats
//
//   - The signature carries no timestamp: a recorded delivery can be
//     replayed. It can only ask for a sync, which reads CloudStack; it
//     never carries data into the table. Serve the listener with TLS
//     where the path to the management server is not trusted.
//   - Deliveries can be lost (CloudStack gives up after 3 tries, a
//     restart loses what was queued): the periodic full sync remains
//     the authority.
package webhook
