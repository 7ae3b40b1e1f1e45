package bench

import (
	"math/bits"
	"time"
)

// latencyHist is a log-linear histogram of durations in nanoseconds for
// the load generator: a fixed array, so recording never allocates. Values
// under 64 ns are exact; above, each power of two is split into 64
// buckets, so a percentile is within 1/64 (1.6 %) of the true value.
type latencyHist struct {
	counts [59 << histSubBits]uint64
	n      uint64
	max    int64
}

const histSubBits = 6

func histBucket(v uint64) int {
	if v < 1<<histSubBits {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1
	return (shift+1)<<histSubBits | int(v>>uint(shift))&(1<<histSubBits-1)
}

// histLow returns the lowest value of bucket b, and its width.
func histLow(b int) (low, width uint64) {
	if b < 1<<histSubBits {
		return uint64(b), 1
	}
	shift := uint(b>>histSubBits - 1)
	m := uint64(1<<histSubBits | b&(1<<histSubBits-1))
	return m << shift, 1 << shift
}

// record adds one duration (negative counts as 0).
func (h *latencyHist) record(d int64) {
	if d < 0 {
		d = 0
	}
	h.counts[histBucket(uint64(d))]++
	h.n++
	h.max = max(h.max, d)
}

func (h *latencyHist) merge(o *latencyHist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile (0 < q ≤ 1): the middle of the bucket
// holding the value of rank ⌈q·n⌉, never above the maximum.
func (h *latencyHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.999999)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			low, width := histLow(b)
			return time.Duration(min(int64(low+width/2), h.max))
		}
	}
	return time.Duration(h.max)
}
