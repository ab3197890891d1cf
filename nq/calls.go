package nq

import (
	"context"
	"sync"
	"time"
)

// callPool recycles call records: a pipelined connection makes millions of calls.
var callPool = sync.Pool{New: func() any { return new(call) }}

// newCall returns a clean call record; a Call-form record (wait) has its channel.
func newCall(wait bool) *call {
	c := callPool.Get().(*call)
	if wait && c.ch == nil {
		c.ch = make(chan struct{}, 1)
	}
	return c
}

// release returns c to the pool. Only the last user of c may call it: the waiting caller for the
// Call form, finish (after the callback) for the Go form without a per-call ctx watcher.
func (c *call) release() {
	ch := c.ch
	*c = call{ch: ch}
	callPool.Put(c)
}

// call is one request waiting for its answer.
type call struct {
	id       uint64
	method   uint32
	timeout  time.Duration
	deadline time.Time
	heapIdx  int
	ctx      context.Context // the ctx the stream's shared watcher covers for this call, if any
	stop     func() bool     // this call's own ctx watcher, when the shared one covers another ctx

	// exactly one of ch (Call) and cb (Go) is set
	ch    chan struct{}
	reply []byte
	err   error
	cb    func(reply []byte, err error)
}

// callTable holds a stream's pending calls: by message id, and in a min-heap by deadline served
// by one timer per stream (no timer per call). Its owner's mutex guards it.
type callTable struct {
	byID  map[uint64]*call
	heap  []*call
	timer *time.Timer
	armed time.Time // when the timer fires; zero while idle

	// A cancellable ctx shared by many calls (a game loop's ctx) is watched once per stream,
	// not once per call.
	watchCtx  context.Context
	watchStop func() bool
}

func (t *callTable) add(c *call, onTimer func()) {
	t.byID[c.id] = c
	c.heapIdx = len(t.heap)
	t.heap = append(t.heap, c)
	t.up(c.heapIdx)
	switch {
	case t.timer == nil:
		t.timer = time.AfterFunc(time.Until(c.deadline), onTimer)
		t.armed = c.deadline
	case t.armed.IsZero() || c.deadline.Before(t.armed):
		t.timer.Reset(time.Until(c.deadline))
		t.armed = c.deadline
	}
}

// remove takes the call id out of the table and returns it, or nil if it is not pending. The
// timer is left alone: it fires at its old time and re-arms for what is left.
func (t *callTable) remove(id uint64) *call {
	c := t.byID[id]
	if c == nil {
		return nil
	}
	delete(t.byID, id)
	t.removeHeap(c.heapIdx)
	return c
}

// removeCall takes c, registered under id, out of the table if it is still pending (id may
// since belong to a newer call, and c may have been recycled) and reports whether it was.
func (t *callTable) removeCall(id uint64, c *call) bool {
	if t.byID[id] != c {
		return false
	}
	t.remove(id)
	return true
}

// expired removes and returns the calls whose deadline has passed and re-arms the timer.
func (t *callTable) expired(now time.Time) []*call {
	var out []*call
	for len(t.heap) > 0 && !t.heap[0].deadline.After(now) {
		c := t.heap[0]
		delete(t.byID, c.id)
		t.removeHeap(0)
		out = append(out, c)
	}
	t.armed = time.Time{}
	if len(t.heap) > 0 {
		t.armed = t.heap[0].deadline
		t.timer.Reset(t.armed.Sub(now))
	}
	return out
}

// drain removes and returns every call, and stops the timer and the shared watcher.
func (t *callTable) drain() []*call {
	out := make([]*call, 0, len(t.byID))
	for _, c := range t.byID {
		out = append(out, c)
	}
	clear(t.byID)
	t.heap = t.heap[:0]
	if t.timer != nil {
		t.timer.Stop()
	}
	t.armed = time.Time{}
	if t.watchStop != nil {
		t.watchStop()
		t.watchStop, t.watchCtx = nil, nil
	}
	return out
}

// takeCtx removes and returns the calls covered by the shared watcher of ctx, which ended.
func (t *callTable) takeCtx(ctx context.Context) []*call {
	if t.watchCtx != ctx {
		return nil
	}
	var out []*call
	for id, c := range t.byID {
		if c.ctx == ctx {
			delete(t.byID, id)
			t.removeHeap(c.heapIdx)
			out = append(out, c)
		}
	}
	t.watchCtx, t.watchStop = nil, nil
	return out
}

func (t *callTable) removeHeap(i int) {
	last := len(t.heap) - 1
	if i != last {
		t.swap(i, last)
	}
	t.heap[last] = nil
	t.heap = t.heap[:last]
	if i < last {
		t.down(i)
		t.up(i)
	}
}

func (t *callTable) less(i, j int) bool { return t.heap[i].deadline.Before(t.heap[j].deadline) }

func (t *callTable) swap(i, j int) {
	t.heap[i], t.heap[j] = t.heap[j], t.heap[i]
	t.heap[i].heapIdx = i
	t.heap[j].heapIdx = j
}

func (t *callTable) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !t.less(i, p) {
			return
		}
		t.swap(i, p)
		i = p
	}
}

func (t *callTable) down(i int) {
	n := len(t.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && t.less(r, l) {
			m = r
		}
		if !t.less(m, i) {
			return
		}
		t.swap(i, m)
		i = m
	}
}
