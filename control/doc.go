// Package control is the control socket of a running server: a unix
// socket (control.socket, by default /run/cloudstack-pd/control.sock,
// mode 0600, so only the server's own user and root reach it) through
// which the CLI's write commands reach `serve`, so that nothing needs a
// stop (Kea's control socket is the model).
//
// The protocol is one JSON line each way per connection: the client
// writes a Request and reads one Response, then the connection closes.
//
//	→ {"action": "release", "mac": "06:32:b2:00:04:79", "dry-run": true, "user": "alice", "note": "allocation release …"}
//	← {"ok": true, "result": {…}}
//	← {"ok": false, "error": "MAC 06:32:b2:00:04:79: no allocation"}
//
// Listen makes the socket (its folder too), replaces a stale one left by
// a server that died, and refuses one a live server answers on; Serve
// runs a Handler per connection with the peer's credentials (the uid the
// kernel gives, SO_PEERCRED on Linux). Call is the client: with no server
// running (no socket, or nobody listening) it returns an error wrapping
// ErrNoServer, so that the caller opens the store itself.
//
// This package knows no action: the daemon package executes them.
package control
