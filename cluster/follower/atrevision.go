package follower

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/etcdstore"
	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// atRevision is the table in etcd at one revision as a read-only
// kv.Backend for allocator.Store.LoadTable: Pools reads the pool markers,
// Scan streams a space's range, each at the revision, holding one chunk
// of the stream at a time. Nothing else is read (any other read is an
// error), nothing is written.
type atRevision struct {
	f   *Follower
	ctx context.Context
	rev int64
}

var errUnsupported = errors.New("not read by the table follower")

func (b *atRevision) Name() string {
	return fmt.Sprintf("etcd %s prefix %s at revision %d", strings.Join(b.f.o.Client.Endpoints(), ","), b.f.o.Prefix, b.rev)
}
func (b *atRevision) ReadOnly() bool { return true }
func (b *atRevision) Close() error   { return nil }
func (b *atRevision) Update(func(kv.Tx) error) error {
	return fmt.Errorf("store %s: %w", b.Name(), kv.ErrReadOnly)
}

func (b *atRevision) View(fn func(kv.Tx) error) error {
	t := &revTx{b: b}
	err := fn(t)
	if t.err != nil {
		return errors.Join(t.err, err)
	}
	return err
}

// revTx is a transaction of atRevision; err is the first read it could
// not make (View returns it).
type revTx struct {
	b   *atRevision
	err error
}

func (t *revTx) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

func (t *revTx) Writable() bool { return false }
func (t *revTx) Get(s kv.Space, key []byte) []byte {
	t.fail(fmt.Errorf("get %s: %w", s, errUnsupported))
	return nil
}
func (t *revTx) Put(s kv.Space, key, value []byte) error {
	return fmt.Errorf("put %s: %w", s, kv.ErrReadOnly)
}
func (t *revTx) Delete(s kv.Space, key []byte) error {
	return fmt.Errorf("delete %s: %w", s, kv.ErrReadOnly)
}
func (t *revTx) Seek(s kv.Space, key []byte) (k, v []byte) {
	t.fail(fmt.Errorf("seek %s: %w", s, errUnsupported))
	return nil, nil
}
func (t *revTx) Last(s kv.Space, key []byte) (k, v []byte) {
	t.fail(fmt.Errorf("last %s: %w", s, errUnsupported))
	return nil, nil
}

// stream calls fn with each key and value of [key, end) at the revision.
func (t *revTx) stream(key, end string, fn func(k, v []byte) error) error {
	b := t.b
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	stall := time.AfterFunc(b.f.o.Timeout, cancel)
	defer stall.Stop()
	ch, err := b.f.o.Client.GetStream(ctx, key, clientv3.WithRange(end), clientv3.WithRev(b.rev))
	if err != nil {
		return err
	}
	for resp := range ch {
		if err := resp.Err(); err != nil {
			return err
		}
		stall.Reset(b.f.o.Timeout)
		for _, kv := range resp.Kvs {
			if err := fn(kv.Key, kv.Value); err != nil {
				return err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("range stream of %s stalled for %s: %w", key, b.f.o.Timeout, err)
	}
	return nil
}

func (t *revTx) Scan(s kv.Space, from []byte, fn func(k, v []byte) error) error {
	sp := etcdstore.SpacePrefix(t.b.f.o.Prefix, s)
	if s.Kind != kv.Alloc || sp == "" {
		t.fail(fmt.Errorf("scan %s: %w", s, errUnsupported))
		return t.err
	}
	err := t.stream(sp+string(from), etcdstore.PrefixEnd(sp), func(k, v []byte) error {
		return fn(k[len(sp):], v)
	})
	if errors.Is(err, kv.ErrStop) {
		return nil
	}
	return err
}

func (t *revTx) Pools() []string {
	p := etcdstore.MarkerPrefix(t.b.f.o.Prefix)
	var names []string
	err := t.stream(p, etcdstore.PrefixEnd(p), func(k, v []byte) error {
		// The marker's value is the pool's name (etcdstore's layout).
		names = append(names, string(v))
		return nil
	})
	if err != nil {
		t.fail(fmt.Errorf("read the pools: %w", err))
	}
	slices.Sort(names)
	return names
}
