package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// DefaultSocket is control.socket's default.
const DefaultSocket = "/run/cloudstack-pd/control.sock"

// maxLine bounds a request or response line.
const maxLine = 1 << 20

// The actions a server answers (Request.Action).
const (
	ActionPing    = "ping"
	ActionRelease = "release"
	ActionMove    = "move"
	ActionForget  = "forget"
	ActionSync    = "sync"
	ActionBackup  = "backup"
	ActionHistory = "history"
)

// Request is what a client asks. Each action reads the fields it needs.
type Request struct {
	Action string `json:"action"`
	MAC    string `json:"mac,omitempty"`
	Pool   string `json:"pool,omitempty"`
	Prefix string `json:"prefix,omitempty"`
	// At is an instant, RFC 3339 (history --at).
	At     string `json:"at,omitempty"`
	To     string `json:"to,omitempty"`
	DryRun bool   `json:"dry-run,omitempty"`
	Force  bool   `json:"force,omitempty"`
	// Quiet asks for counts only (a sync's report).
	Quiet bool `json:"quiet,omitempty"`
	// User is who the client says runs it (the OS user; with sudo, the
	// user who ran sudo); the server adds the peer's uid (Peer).
	User string `json:"user,omitempty"`
	// Note is why: the command line.
	Note string `json:"note,omitempty"`
}

// Response is the server's answer: Result when OK, else Error.
type Response struct {
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Peer is the process at the other end of a connection, as the kernel
// says (uid -1 where it cannot say).
type Peer struct {
	UID, PID int
	// User is the uid's user name, or the uid as a number.
	User string
}

// Who says who made a request: the peer's user, and the user the client
// names when it differs (sudo): "root (sudo alice)".
func Who(p Peer, req Request) string {
	switch {
	case p.User == "" && req.User == "":
		return "unknown"
	case p.User == "":
		return req.User + " (unverified)"
	case req.User == "" || req.User == p.User:
		return p.User
	}
	return fmt.Sprintf("%s (sudo %s)", p.User, req.User)
}

// Handler executes one request; its result is sent back as JSON.
type Handler func(ctx context.Context, req Request, peer Peer) (any, error)

// ErrNoServer is returned by Call when no server listens on the socket.
var ErrNoServer = errors.New("no running server")

// ErrLive is returned by Listen when a live server answers on the socket.
var ErrLive = errors.New("another server answers on the control socket")

// Listener is the control socket. Close removes it.
type Listener struct {
	net.Listener
	path string
	info os.FileInfo
	once sync.Once
}

// Listen makes the control socket at path, mode 0600, creating its folder
// (mode 0750) when missing. A socket left by a server that died is
// replaced; one a live server answers on is refused (ErrLive), and so is
// anything at path that is not a socket.
func Listen(path string) (*Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("control.socket %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("control.socket %s: exists and is not a socket; not replaced", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("control.socket %s: %w (is another cloudstack-pd serve running with this control.socket?)", path, ErrLive)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("control.socket %s: exists and does not answer: %w", path, err)
		}
		// Stale: its server died without removing it.
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control.socket %s: removing the stale socket: %w", path, err)
		}
	}
	// Made under a private folder, made 0600 there, then moved into
	// place: never reachable with wider permissions.
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".control-")
	if err != nil {
		return nil, fmt.Errorf("control.socket %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	tmpSock := filepath.Join(tmp, "sock")
	ln, err := net.Listen("unix", tmpSock)
	if err != nil {
		return nil, fmt.Errorf("control.socket %s: %w", path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmpSock, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control.socket %s: %w", path, err)
	}
	if err := os.Rename(tmpSock, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control.socket %s: %w", path, err)
	}
	info, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("control.socket %s: %w", path, err)
	}
	return &Listener{Listener: ln, path: path, info: info}, nil
}

// Path is where the socket is.
func (l *Listener) Path() string { return l.path }

// Close stops listening and removes the socket, if it is still this one.
func (l *Listener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() {
		if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.info) {
			_ = os.Remove(l.path)
		}
	})
	return err
}

// Serve answers connections on ln with h until ctx ends, then closes ln
// and waits for the requests in progress (their ctx is cancelled).
func Serve(ctx context.Context, ln net.Listener, h Handler, log *slog.Logger) {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				log.Error("control socket: accept", "err", err)
				continue
			}
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveConn(ctx, c, h, log)
		}()
	}
	ln.Close()
	wg.Wait()
}

func serveConn(ctx context.Context, c net.Conn, h Handler, log *slog.Logger) {
	defer c.Close()
	peer := peerOf(c)
	r := bufio.NewReader(io.LimitReader(c, maxLine))
	line, err := r.ReadBytes('\n')
	var resp Response
	var req Request
	switch {
	case err != nil && len(bytes.TrimSpace(line)) == 0:
		return // nothing asked
	default:
		if err := json.Unmarshal(line, &req); err != nil {
			resp.Error = "bad request: " + err.Error()
			break
		}
		// A client that goes away cancels its request.
		reqCtx, cancel := context.WithCancel(ctx)
		go func() {
			var b [1]byte
			if _, err := c.Read(b[:]); err != nil {
				cancel()
			}
		}()
		res, herr := h(reqCtx, req, peer)
		cancel()
		if herr != nil {
			resp.Error = herr.Error()
			break
		}
		b, merr := json.Marshal(res)
		if merr != nil {
			resp.Error = "encoding the result: " + merr.Error()
			break
		}
		resp.OK, resp.Result = true, b
	}
	out, _ := json.Marshal(resp)
	if _, err := c.Write(append(out, '\n')); err != nil {
		log.Warn("control socket: answer not delivered", "action", req.Action, "err", err)
	}
}

// peerOf returns the credentials of c's peer.
func peerOf(c net.Conn) Peer {
	p := Peer{UID: -1, PID: -1}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return p
	}
	uid, pid, ok := peerCred(uc)
	if !ok {
		return p
	}
	p.UID, p.PID = uid, pid
	p.User = fmt.Sprint(uid)
	if u, err := user.LookupId(p.User); err == nil {
		p.User = u.Username
	}
	return p
}

// RemoteError is an error the server answered.
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return e.Msg }

// Call sends req to the server at path and decodes its result into
// result (nil: ignore it). With no server running it returns an error
// wrapping ErrNoServer; an error the server answered is a *RemoteError.
// It waits as long as ctx allows (a sync or a backup takes a while).
func Call(ctx context.Context, path string, req Request, result any) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("control.socket %s: %w", path, ErrNoServer)
		}
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("control.socket %s: %w (the socket is the server's user's only: run as root or as that user)", path, err)
		}
		return fmt.Errorf("control.socket %s: %w", path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := c.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("control.socket %s: %w", path, err)
	}
	line, err := bufio.NewReader(io.LimitReader(c, 1<<30)).ReadBytes('\n')
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("control.socket %s: no answer: %w", path, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return fmt.Errorf("control.socket %s: bad answer: %w", path, err)
	}
	if !resp.OK {
		return &RemoteError{Msg: resp.Error}
	}
	if result != nil && len(resp.Result) > 0 {
		if err := json.Unmarshal(resp.Result, result); err != nil {
			return fmt.Errorf("control.socket %s: bad result: %w", path, err)
		}
	}
	return nil
}
