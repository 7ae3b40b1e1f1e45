// Package daemon is `cloudstack-pd serve`: it starts the server on a
// config, serves until its context ends, and stops in order. Run is the
// whole life of the daemon; the command only parses flags, opens the
// store and calls it.
//
// Start-up, in order: open the store (Deps.OpenStore; refused or
// damaged: nothing else starts), load the table while the index pages are
// verified, read or make the server DUID, build the metrics, the binding
// recorder and the handler, bind the DHCPv6 listener, the HTTP API, the
// webhook listener (webhook.listen) and the control socket
// (control.socket).
// From there on the store is kept whatever happens (a store --init made
// for a start that failed before is discarded). Then the recorder's flush
// loop, the webhook listener, the CloudStack sync loop (a full sync at
// start-up, every api.interval after the end of the last one, after each
// reload, and when the control socket asks; in between, the targeted
// syncs of the VMs that webhook events name: webhook.go), the HTTP API,
// the control socket, the history's pruning (at start-up, then daily) and
// the reload loop start, and the listener serves.
//
// The control socket's actions (admin.go) run one method each: release,
// move and forget through allocator.Store.Admin, then the table swapped as
// after a sync; sync now through the sync loop (a server that does not run
// it, a cluster's follower, says so); backup through Deps.Backup; history
// reads. In a cluster, etcdstore refuses an allocation write without the
// syncer's fence.
//
// Webhooks: the listener's events go to Deps.WebhookSink, or, when it is
// nil (a standalone server), to the sync loop's own sink: an event naming
// a VM joins the set of pending VMs (syncer.TriggerVMs), any other asks
// for a full sync. The set is drained by the sync loop itself, one sync
// at a time, after gathering a burst for VMSyncDelay; past MaxPendingVMs
// it becomes one full sync. A full sync serves every event received
// before its listing began.
//
// Reload (each value on Deps.Reload, SIGHUP for the binary): re-read the
// config; a valid one puts its pools, table and handler options in force,
// an invalid one is logged and the old one stays; then a sync is asked
// for.
//
// Shutdown (the context ends): /readyz turns not ready at once; the
// listener keeps answering for server.shutdown-delay (a timer of
// Deps.Clock), then stops reading and answers what is queued; then the
// control socket closes (an action in progress finishes), the history's
// pruning stops, the webhook listener stops (deliveries in progress are
// answered), the sync loop stops (a sync in progress finishes writing or
// stops listing), the recorder flushes once more, the HTTP API stops, and the
// store is closed last.
//
// Every timer (the recorder's flush ticker, the sync interval, the
// history's daily pass, the shutdown delay) and every Now comes from Deps.Clock, so that tests
// drive the daemon with clock.Fake instead of sleeping.
package daemon
