package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudstack-pd/cloudstack-pd/allocator/kv"
)

// Update runs fn on a clone of the mirror (fn reads its own writes) and
// commits what it wrote in one etcd transaction that compares what it
// read (see the package doc); when another writer changed it meanwhile,
// it waits for the mirror to catch up and runs fn again, up to 8 times
// (then ErrConflict). A fence that no longer holds gives ErrFenced, a
// write to the allocation table without a fence ErrNotFenced. After a
// commit it waits until the mirror reflects it, so that a View sees it.
// fn's error (or panic) commits nothing; an Update that writes nothing
// commits nothing. An Update larger than one transaction is committed in
// several (package doc, "Large updates").
func (b *Backend) Update(fn func(kv.Tx) error) error {
	if b.readOnly {
		return b.wrap(fmt.Errorf("update: %w", kv.ErrReadOnly))
	}
	if !b.begin() {
		return b.wrap(errClosed)
	}
	defer b.ops.Done()
	for try := 1; ; try++ {
		t, rev := b.snapshot()
		tx := &tx{b: b, t: t, rev: rev, writable: true, reads: map[string]int64{},
			cur: map[string]wop{}, inGroup: map[string]bool{}}
		if err := fn(tx); err != nil || tx.err != nil {
			if tx.err != nil {
				return errors.Join(tx.err, err)
			}
			return err
		}
		tx.EndGroup()
		if len(tx.groups) == 0 {
			return nil
		}
		b.mu.Lock()
		fence := b.fence
		b.mu.Unlock()
		if tx.needFence && fence == nil {
			return b.wrap(ErrNotFenced)
		}
		if !tx.needFence {
			fence = nil
		}
		commitRev, retryAt, err := b.commit(tx, fence)
		if err != nil {
			return err
		}
		if retryAt == 0 {
			b.stats.commits.Add(1)
			ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
			defer cancel()
			if err := b.waitRev(ctx, commitRev); err != nil {
				b.log.Warn("etcd commit done but not yet in the mirror", "revision", commitRev, "err", err)
			}
			return nil
		}
		if try == maxTries {
			b.stats.conflicts.Add(1)
			return b.wrap(fmt.Errorf("update tried %d times: %w", try, ErrConflict))
		}
		b.stats.retries.Add(1)
		ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
		err = b.waitRev(ctx, retryAt)
		cancel()
		if err != nil {
			return b.wrap(fmt.Errorf("update conflicted and %w", err))
		}
	}
}

// chunk is the writes of one transaction, whole groups, and the keys those
// groups only read.
type chunk struct {
	ops   []wop
	reads []string
}

// plan splits tx's writes into chunks at group boundaries, so that each
// transaction holds at most maxOps compares and maxOps operations and
// stays under maxTxnBytes. base is the first chunk's own compares (fence,
// ranges, the keys read and not written that belong to no group); each
// chunk has the fence, a compare per key it writes that was read or
// written before, and a compare per key its groups only read (readGroup).
func (b *Backend) plan(tx *tx, base, fence int, baseBytes int) []chunk {
	var out []chunk
	written := map[string]bool{} // by an earlier chunk
	var cur chunk
	idx := map[string]int{} // key → index in cur.ops
	cmps, bytes := base, baseBytes
	newChunk := func() {
		out = append(out, cur)
		for _, w := range cur.ops {
			written[w.key] = true
		}
		cur = chunk{}
		idx = map[string]int{}
		cmps, bytes = fence, 0
	}
	// The keys each group only read.
	groupReads := make(map[int][]string, len(tx.readGroup))
	for k, g := range tx.readGroup {
		if _, w := tx.cur[k]; !w {
			groupReads[g] = append(groupReads[g], k)
		}
	}
	for gi, g := range tx.groups {
		reads := groupReads[gi]
		addOps, addCmps, addBytes := 0, len(reads), 0
		for _, k := range reads {
			addBytes += len(b.prefix) + len(k) + 16
		}
		for _, w := range g {
			if _, in := idx[w.key]; in {
				continue
			}
			addOps++
			addBytes += len(b.prefix) + len(w.key) + len(w.val) + 16
			if _, read := tx.reads[w.key]; read || written[w.key] {
				addCmps++
				addBytes += len(b.prefix) + len(w.key) + 16
			}
		}
		if len(cur.ops) > 0 && (len(cur.ops)+addOps > b.maxOps || cmps+addCmps > b.maxOps || bytes+addBytes > maxTxnBytes) {
			newChunk()
			// Recount against the new chunk: nothing is in it yet.
			addCmps = len(reads)
			for _, w := range g {
				if _, read := tx.reads[w.key]; read || written[w.key] {
					addCmps++
				}
			}
		}
		for _, w := range g {
			if i, in := idx[w.key]; in {
				cur.ops[i] = w // a later group's write of the same key wins
				continue
			}
			idx[w.key] = len(cur.ops)
			cur.ops = append(cur.ops, w)
		}
		cur.reads = append(cur.reads, reads...)
		cmps += addCmps
		bytes += addBytes
	}
	if len(cur.ops) > 0 {
		out = append(out, cur)
	}
	return out
}

// mergeRanges sorts rs and merges the ranges that overlap or touch.
func mergeRanges(rs []keyRange) []keyRange {
	slices.SortFunc(rs, func(a, b keyRange) int { return strings.Compare(a.start, b.start) })
	var out []keyRange
	for _, r := range rs {
		if n := len(out); n > 0 && r.start <= out[n-1].end {
			out[n-1].end = max(out[n-1].end, r.end)
			continue
		}
		out = append(out, r)
	}
	return out
}

// coarsen merges ranges of the same key space (the relative key up to the
// last '/' of its start) into one, for when there are too many to
// compare one by one: more false conflicts, fewer compares.
func coarsen(rs []keyRange) []keyRange {
	var out []keyRange
	for _, r := range rs {
		sp := r.start[:strings.LastIndexByte(r.start, '/')+1]
		if n := len(out); n > 0 && strings.HasPrefix(out[n-1].start, sp) && sp != "" {
			out[n-1].end = max(out[n-1].end, r.end)
			continue
		}
		out = append(out, r)
	}
	return out
}

// commit writes tx's writes in one transaction, or in chunks when they do
// not fit in one. It returns the revision of the (last) commit; or, when
// the first transaction's compares failed for another reason than the
// fence, the revision the mirror must reach before fn runs again.
func (b *Backend) commit(tx *tx, fence *Fence) (rev, retryAt int64, err error) {
	var base []clientv3.Cmp
	var fenceCmp []clientv3.Cmp
	if fence != nil {
		fenceCmp = []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(fence.Key), "=", fence.CreateRevision)}
		base = append(base, fenceCmp...)
	}
	readOnly := make([]string, 0, len(tx.reads))
	for k := range tx.reads {
		_, w := tx.cur[k]
		_, grouped := tx.readGroup[k]
		if !w && !grouped {
			readOnly = append(readOnly, k)
		}
	}
	slices.Sort(readOnly)
	ranges := mergeRanges(tx.ranges)
	if len(base)+len(ranges)+len(readOnly) > b.maxOps/2 {
		// Too many to compare one by one (a large Update): compare each
		// key space read as one range. A range compare sees a key read
		// absent being created, or read present being changed, but not
		// its deletion, which only frees (package doc).
		for _, k := range readOnly {
			ranges = append(ranges, keyRange{k, k + "\x00"})
		}
		readOnly = nil
		ranges = coarsen(mergeRanges(ranges))
	}
	baseBytes := 0
	for _, r := range ranges {
		base = append(base, clientv3.Compare(clientv3.ModRevision(b.prefix+r.start).WithRange(b.prefix+r.end), "<", tx.rev+1))
		baseBytes += 2*len(b.prefix) + len(r.start) + len(r.end) + 16
	}
	for _, k := range readOnly {
		base = append(base, clientv3.Compare(clientv3.ModRevision(b.prefix+k), "=", tx.reads[k]))
		baseBytes += len(b.prefix) + len(k) + 16
	}
	if len(base) > b.maxOps {
		return 0, 0, b.wrap(fmt.Errorf("update read %d key spaces: more compares than a transaction holds (%d)", len(base), b.maxOps))
	}
	chunks := b.plan(tx, len(base), len(fenceCmp), baseBytes)
	if len(chunks) > 1 {
		b.log.Info("etcd update larger than one transaction: committing it in chunks", "chunks", len(chunks), "keys", len(tx.cur))
	}
	committed := map[string]int64{} // key → its mod revision after an earlier chunk (0: deleted)
	for i, c := range chunks {
		cmps := fenceCmp
		if i == 0 {
			cmps = base
		}
		cmps = slices.Clone(cmps)
		for _, k := range c.reads {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(b.prefix+k), "=", tx.reads[k]))
		}
		ops := make([]clientv3.Op, 0, len(c.ops))
		slices.SortFunc(c.ops, func(a, b wop) int { return strings.Compare(a.key, b.key) })
		for _, w := range c.ops {
			if r, ok := committed[w.key]; ok {
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(b.prefix+w.key), "=", r))
			} else if r, ok := tx.reads[w.key]; ok {
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(b.prefix+w.key), "=", r))
			}
			if w.del {
				ops = append(ops, clientv3.OpDelete(b.prefix+w.key))
			} else {
				ops = append(ops, clientv3.OpPut(b.prefix+w.key, w.val))
			}
		}
		ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
		txn := b.cli.Txn(ctx).If(cmps...).Then(ops...)
		if fence != nil {
			txn = txn.Else(clientv3.OpGet(fence.Key))
		}
		resp, err := txn.Commit()
		cancel()
		if err != nil {
			// A request that timed out may still be applied (its proposal
			// may be in the log): its compares, checked when it is, keep
			// the rules whatever happens.
			return 0, 0, b.wrap(b.partial(i, len(chunks), fmt.Errorf("commit (its outcome is unknown if it timed out: it may yet be applied): %w", err)))
		}
		b.stats.txns.Add(1)
		if !resp.Succeeded {
			if fence != nil {
				kvs := resp.Responses[0].GetResponseRange().Kvs
				if len(kvs) == 0 || kvs[0].CreateRevision != fence.CreateRevision {
					b.stats.fenced.Add(1)
					now := "gone"
					if len(kvs) > 0 {
						now = fmt.Sprintf("created at revision %d", kvs[0].CreateRevision)
					}
					return 0, 0, b.wrap(b.partial(i, len(chunks), fmt.Errorf("fence %s (created at revision %d) is %s: %w", fence.Key, fence.CreateRevision, now, ErrFenced)))
				}
			}
			if i == 0 {
				return 0, resp.Header.Revision, nil
			}
			b.stats.conflicts.Add(1)
			return 0, 0, b.wrap(b.partial(i, len(chunks), fmt.Errorf("a key of transaction %d changed meanwhile: %w", i+1, ErrConflict)))
		}
		rev = resp.Header.Revision
		for _, w := range c.ops {
			if w.del {
				committed[w.key] = 0
			} else {
				committed[w.key] = rev
			}
		}
		b.mu.Lock()
		b.lastCommit = max(b.lastCommit, rev)
		b.mu.Unlock()
	}
	return rev, 0, nil
}

// partial says, for a chunked Update that failed at chunk i of n, that the
// chunks before it are committed.
func (b *Backend) partial(i, n int, err error) error {
	if i == 0 {
		return err
	}
	return fmt.Errorf("%w (update in %d transactions: the first %d committed, whole allocations or bindings each; the next sync completes it)", err, n, i)
}
