package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// serve runs Serve on a new socket in a temporary folder with h.
func serve(t *testing.T, h Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "control.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); Serve(ctx, ln, h, quiet()) }()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

func TestListenMakesAnOwnerOnlySocket(t *testing.T) {
	path := serve(t, func(context.Context, Request, Peer) (any, error) { return nil, nil })
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	dir, _ := os.Stat(filepath.Dir(path))
	if dir.Mode().Perm()&0o007 != 0 {
		t.Errorf("folder mode %v: open to others", dir.Mode())
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".control-*")); len(left) != 0 {
		t.Errorf("temporary folders left: %v", left)
	}
}

func TestListenReplacesStaleRefusesLive(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "control.sock")
	// A socket whose server died: the file stays, nobody listens.
	dead, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	dead.(*net.UnixListener).SetUnlinkOnClose(false)
	dead.Close()
	if err := Call(context.Background(), path, Request{Action: ActionPing}, nil); !errors.Is(err, ErrNoServer) {
		t.Errorf("Call on a stale socket = %v, want ErrNoServer", err)
	}
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	if _, err := Listen(path); !errors.Is(err, ErrLive) {
		t.Errorf("Listen over a live socket = %v, want ErrLive", err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Close left the socket: %v", err)
	}
	// Not a socket: never replaced.
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a file = %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "x" {
		t.Error("the file was replaced")
	}
}

func TestCallWithoutServer(t *testing.T) {
	err := Call(context.Background(), filepath.Join(t.TempDir(), "none.sock"), Request{Action: ActionPing}, nil)
	if !errors.Is(err, ErrNoServer) {
		t.Errorf("Call without a socket = %v, want ErrNoServer", err)
	}
}

func TestRoundTrip(t *testing.T) {
	type echo struct {
		Req  Request
		Peer Peer
	}
	path := serve(t, func(_ context.Context, req Request, p Peer) (any, error) {
		if req.Action == "fail" {
			return nil, errors.New("MAC 06:00:00:00:00:01: no allocation")
		}
		return echo{req, p}, nil
	})
	req := Request{Action: ActionRelease, MAC: "06:00:00:00:00:01", DryRun: true, User: "alice", Note: "allocation release"}
	var got echo
	if err := Call(context.Background(), path, req, &got); err != nil {
		t.Fatal(err)
	}
	if got.Req != req {
		t.Errorf("server got %+v, want %+v", got.Req, req)
	}
	if got.Peer.UID != os.Getuid() || got.Peer.PID != os.Getpid() {
		t.Errorf("peer %+v, want uid %d pid %d", got.Peer, os.Getuid(), os.Getpid())
	}
	err := Call(context.Background(), path, Request{Action: "fail"}, nil)
	var re *RemoteError
	if !errors.As(err, &re) || re.Msg != "MAC 06:00:00:00:00:01: no allocation" {
		t.Errorf("Call of a failing action = %v", err)
	}
}

func TestClientGoneCancels(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan struct{})
	path := serve(t, func(ctx context.Context, _ Request, _ Peer) (any, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Call(ctx, path, Request{Action: ActionSync}, nil) }()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Call = %v, want context.Canceled", err)
	}
	<-cancelled // the handler saw the client go
}

func TestWho(t *testing.T) {
	for _, tc := range []struct {
		peer Peer
		user string
		want string
	}{
		{Peer{User: "alice"}, "alice", "alice"},
		{Peer{User: "alice"}, "", "alice"},
		{Peer{User: "root"}, "alice", "root (sudo alice)"},
		{Peer{}, "alice", "alice (unverified)"},
		{Peer{}, "", "unknown"},
	} {
		if got := Who(tc.peer, Request{User: tc.user}); got != tc.want {
			t.Errorf("Who(%+v, %q) = %q, want %q", tc.peer, tc.user, got, tc.want)
		}
	}
}

// FuzzServeConn feeds any bytes to a connection: the server answers one
// JSON line or nothing, and never crashes.
func FuzzServeConn(f *testing.F) {
	f.Add([]byte(`{"action":"ping"}` + "\n"))            // a request
	f.Add([]byte(`{"action":"release","mac":1}` + "\n")) // a field of the wrong type
	f.Add([]byte("not json\n"))                          // garbage
	f.Add([]byte(""))                                    // nothing
	f.Add([]byte(`{"action":"ping"}`))                   // no newline
	f.Fuzz(func(t *testing.T, in []byte) {
		srv, cli := socketPair(t)
		done := make(chan struct{})
		go func() {
			defer close(done)
			serveConn(context.Background(), srv, func(context.Context, Request, Peer) (any, error) { return "ok", nil }, quiet())
		}()
		go func() { cli.Write(in); cli.CloseWrite() }()
		line, _ := bufio.NewReader(cli).ReadBytes('\n')
		cli.Close()
		<-done
		if len(line) == 0 {
			return
		}
		var resp Response
		if err := json.Unmarshal(line, &resp); err != nil {
			t.Fatalf("answer %q is not a response: %v", line, err)
		}
	})
}

// socketPair returns the two ends of a connected unix socket.
func socketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}
