// Package httpserve runs an http.Server until its context ends, then shuts
// it down within a bound: the one way both of serve's HTTP listeners (the
// local API and the webhook listener) stop.
package httpserve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Run serves srv on ln until ctx is done, then shuts it down: requests in
// flight get shutdown to finish, after which the remaining connections
// (say, an idle keep-alive that never sent a request) are closed. It
// returns nil then, and any other failure of the server as it happens.
func Run(ctx context.Context, srv *http.Server, ln net.Listener, shutdown time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdown)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
