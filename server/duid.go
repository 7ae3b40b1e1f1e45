package server

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// duidEpoch is the DUID-LLT time origin (RFC 8415 11.2).
var duidEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// NewServerDUID makes a server identifier: a DUID-LLT (type 1, hardware
// type Ethernet) of now and a random, locally administered unicast MAC.
// It is made once and kept in the store, so the server keeps its identity
// across restarts and clients' Renews keep reaching it.
func NewServerDUID(rand io.Reader, now time.Time) ([]byte, error) {
	d := make([]byte, 14)
	binary.BigEndian.PutUint16(d[0:], 1) // DUID-LLT
	binary.BigEndian.PutUint16(d[2:], 1) // Ethernet
	binary.BigEndian.PutUint32(d[4:], uint32(now.Sub(duidEpoch)/time.Second))
	if _, err := io.ReadFull(rand, d[8:]); err != nil {
		return nil, fmt.Errorf("server DUID: %w", err)
	}
	d[8] = d[8]&^0x01 | 0x02 // unicast, locally administered
	return d, nil
}
