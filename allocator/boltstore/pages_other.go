//go:build !linux

package boltstore

import bolt "go.etcd.io/bbolt"

// dropPages does nothing outside Linux (see pages_linux.go).
func (s *Store) dropPages(*bolt.Tx) {}
