package allocator

import (
	"fmt"
	"net/netip"
)

// Contains checks that prefix is a delegated prefix of this pool: inside the
// pool, of the pool's PrefixLen, and aligned (no host bits set).
func (p *Pool) Contains(prefix netip.Prefix) error {
	if !prefix.IsValid() || !prefix.Addr().Is6() || prefix.Addr().Is4In6() {
		return fmt.Errorf("prefix %s: %w", prefix, ErrOutsidePool)
	}
	if prefix.Bits() != p.PrefixLen || prefix.Masked() != prefix {
		return fmt.Errorf("prefix %s in pool %q (/%d): %w", prefix, p.Name, p.PrefixLen, ErrPrefixLength)
	}
	if !p.Prefix.Contains(prefix.Addr()) {
		return fmt.Errorf("prefix %s not in pool %q (%s): %w", prefix, p.Name, p.Prefix, ErrOutsidePool)
	}
	return nil
}
