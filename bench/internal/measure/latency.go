// Package measure holds what nqbench measures with: sharded HDR latency histograms with request
// and error counters, process CPU time and peak RSS (getrusage), Go heap and stack use after a
// garbage collection, and the live progress line.
package measure

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram bounds: latencies from 1 µs to 60 s with three significant digits. Longer latencies
// are recorded as 60 s.
const (
	minLatency = int64(time.Microsecond)
	maxLatency = int64(60 * time.Second)
	sigDigits  = 3
)

// Recorder collects latencies and counts from many goroutines. It is split into shards, each
// with its own lock and histogram, so that goroutines recording into different shards do not
// contend; give each connection (or each goroutine) its own shard index.
type Recorder struct {
	shards []Shard
}

// Shard is one part of a Recorder. Its methods are safe for concurrent use.
type Shard struct {
	mu   sync.Mutex
	hist *hdrhistogram.Histogram
	n    atomic.Int64
	errs atomic.Int64
	_    [64]byte // keep shards on separate cache lines
}

// NewRecorder returns a Recorder with n shards (at least 1).
func NewRecorder(n int) *Recorder {
	n = max(n, 1)
	r := &Recorder{shards: make([]Shard, n)}
	for i := range r.shards {
		r.shards[i].hist = hdrhistogram.New(minLatency, maxLatency, sigDigits)
	}
	return r
}

// Shard returns shard i modulo the number of shards.
func (r *Recorder) Shard(i int) *Shard {
	if i < 0 {
		i = -i
	}
	return &r.shards[i%len(r.shards)]
}

// Record adds one answered request with latency d.
func (s *Shard) Record(d time.Duration) {
	v := min(max(int64(d), minLatency), maxLatency)
	s.mu.Lock()
	_ = s.hist.RecordValue(v) // cannot fail: v is within the histogram's bounds
	s.mu.Unlock()
	s.n.Add(1)
}

// Error counts one failed request.
func (s *Shard) Error() { s.errs.Add(1) }

// Count returns the requests recorded and the errors counted so far, over every shard.
func (r *Recorder) Count() (requests, errors int64) {
	for i := range r.shards {
		requests += r.shards[i].n.Load()
		errors += r.shards[i].errs.Load()
	}
	return requests, errors
}

// Reset forgets everything recorded so far (after a warm-up phase).
func (r *Recorder) Reset() {
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		s.hist.Reset()
		s.n.Store(0)
		s.errs.Store(0)
		s.mu.Unlock()
	}
}

// Latency is a summary of recorded latencies.
type Latency struct {
	// Count is the number of latencies recorded.
	Count int64
	// P50, P99, P999 and Max are the median, 99th and 99.9th percentiles and the maximum.
	P50, P99, P999, Max time.Duration
}

// Latency merges the shards and summarises them.
func (r *Recorder) Latency() Latency {
	all := hdrhistogram.New(minLatency, maxLatency, sigDigits)
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		all.Merge(s.hist)
		s.mu.Unlock()
	}
	if all.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Count: all.TotalCount(),
		P50:   time.Duration(all.ValueAtQuantile(50)),
		P99:   time.Duration(all.ValueAtQuantile(99)),
		P999:  time.Duration(all.ValueAtQuantile(99.9)),
		Max:   time.Duration(all.Max()),
	}
}
