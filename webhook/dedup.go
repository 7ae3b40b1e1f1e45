package webhook

import "sync"

// DedupSize is how many event ids the handler remembers: CloudStack
// retries a delivery within about 30 s, and keeps 10 deliveries per
// webhook; 4096 ids cover a burst of thousands of events.
const DedupSize = 4096

// seenIDs remembers the last n ids it was given, in a ring: memory is
// fixed whatever arrives.
type seenIDs struct {
	mu   sync.Mutex
	ring []string
	next int
	set  map[string]struct{}
}

func newSeenIDs(n int) *seenIDs {
	return &seenIDs{ring: make([]string, n), set: make(map[string]struct{}, n)}
}

// add records id and reports whether it was new; the oldest id is
// forgotten when the ring is full.
func (s *seenIDs) add(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.set[id]; ok {
		return false
	}
	if old := s.ring[s.next]; old != "" {
		delete(s.set, old)
	}
	s.ring[s.next] = id
	s.set[id] = struct{}{}
	s.next = (s.next + 1) % len(s.ring)
	return true
}
