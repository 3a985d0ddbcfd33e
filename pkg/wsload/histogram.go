package wsload

import (
	"math/bits"
	"sync"
	"time"
)

// histogram records durations with a relative error below 1/64 (about 1.6%) in fixed memory: values
// below 128ns are exact, larger ones fall into 64 buckets per power of two.
type histogram struct {
	counts [histBuckets]uint64
	total  uint64
	max    time.Duration
}

const (
	histSubBits = 6 // 64 buckets per power of two
	histLinear  = 1 << (histSubBits + 1)
	histBuckets = histLinear + (64-histSubBits-1)*(1<<histSubBits)
)

func bucketOf(v time.Duration) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u < histLinear {
		return int(u)
	}
	shift := bits.Len64(u) - histSubBits - 1
	return histLinear + (shift-1)<<histSubBits + int(u>>uint(shift)) - 1<<histSubBits
}

// bucketValue is the middle of bucket i.
func bucketValue(i int) time.Duration {
	if i < histLinear {
		return time.Duration(i)
	}
	i -= histLinear
	shift := i>>histSubBits + 1
	mantissa := uint64(i&(1<<histSubBits-1)) + 1<<histSubBits
	low := mantissa << uint(shift)
	return time.Duration(low + (uint64(1)<<uint(shift))/2)
}

func (h *histogram) record(v time.Duration) {
	h.counts[bucketOf(v)]++
	h.total++
	if v > h.max {
		h.max = v
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile returns the value below which a fraction q of the recordings fall.
func (h *histogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q*float64(h.total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := bucketValue(i)
			if v > h.max {
				return h.max
			}
			return v
		}
	}
	return h.max
}

// shardedHistogram lets many connections record round trips without contending on one lock.
type shardedHistogram struct {
	shards [32]struct {
		sync.Mutex
		h histogram
	}
}

func (s *shardedHistogram) record(shard int, v time.Duration) {
	sh := &s.shards[shard%len(s.shards)]
	sh.Lock()
	sh.h.record(v)
	sh.Unlock()
}

func (s *shardedHistogram) snapshot() *histogram {
	out := &histogram{}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.Lock()
		out.merge(&sh.h)
		sh.Unlock()
	}
	return out
}
