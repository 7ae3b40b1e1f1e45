//go:build !linux

package bench

// relayGroups is 0: one goroutine per socket (epoll is Linux's).
func relayGroups(int) int { return 0 }

func runGroup([]*benchShard) error { return nil }
