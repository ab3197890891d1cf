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
	deadline int64           // nanoseconds after the table's base time
	heapIdx  int             // index in the table's heap, or -1 when the call waits in the FIFO
	ctx      context.Context // the ctx the stream's shared watcher covers for this call, if any
	stop     func() bool     // this call's own ctx watcher, when the shared one covers another ctx

	// exactly one of ch (Call) and cb (Go) is set
	ch    chan struct{}
	reply []byte
	err   error
	cb    func(reply []byte, err error)
}

// Message ids stay below maxShortID (two-byte varints on the wire) while fewer than
// shortIDPending calls are pending, and below maxLongID (four-byte varints) otherwise.
const (
	maxShortID     = 1<<14 - 1
	shortIDPending = 1 << 13
	maxLongID      = 1<<30 - 1
	minSlots       = 16
)

// fifoEntry is a call waiting in the deadline FIFO. The entry outlives its call when the call
// completes first (entries leave the FIFO lazily); the id and deadline tell whether the call
// found under the id is still the one the entry was made for.
type fifoEntry struct {
	id       uint64
	deadline int64
}

// slot is one entry of the lookup table: the call and the facts the table checks often, kept
// beside the pointer so that checking them touches no call record.
type slot struct {
	c        *call
	id       uint64
	deadline int64
	inHeap   bool
}

// callTable holds a stream's pending calls, for the lookup of replies by message id and for
// their deadlines, with no allocation or hashing per call in the common case. Its owner's mutex
// guards it.
//
// Lookup: slots is an open table indexed by id modulo its power-of-two size; ids are allocated
// sequentially, skipping ids whose slot is taken, so each pending call has a slot of its own.
//
// Deadlines: calls made with the stream's default timeout, or with a deadline shared by many
// calls (a game loop's ctx), arrive in deadline order and wait in a FIFO; a call whose deadline
// is earlier than the FIFO's last goes into a min-heap instead. One timer per stream, armed at
// the earliest deadline, serves both (no timer per call). Completed calls leave the heap at once
// and the FIFO lazily: from its head as the calls there complete (replies mostly come in order),
// and by compaction when stale entries outnumber pending calls.
type callTable struct {
	base  time.Time // deadlines count nanoseconds from here (monotonic clock)
	slots []slot
	n     int // pending calls

	fifo     []fifoEntry // ring buffer; len is a power of two once used
	fifoHead int
	fifoLen  int
	heap     []*call

	timer   *time.Timer
	armed   int64 // when the timer fires; valid while timerOn
	timerOn bool
	onTimer func()

	// A cancellable ctx shared by many calls (a game loop's ctx) is watched once per stream,
	// not once per call.
	watchCtx  context.Context
	watchStop func() bool
}

func newCallTable(onTimer func()) callTable {
	return callTable{base: time.Now(), onTimer: onTimer}
}

// now returns the current time on the table's clock.
func (t *callTable) now() int64 { return int64(time.Since(t.base)) }

// at converts a wall-clock deadline to the table's clock.
func (t *callTable) at(d time.Time) int64 { return int64(d.Sub(t.base)) }

// pending returns the number of pending calls.
func (t *callTable) pending() int { return t.n }

// allocID returns an unused message id after prev.
func (t *callTable) allocID(prev uint64) uint64 {
	if t.n+1 > len(t.slots)/2 {
		t.grow()
	}
	limit := uint64(maxShortID)
	if t.n >= shortIDPending {
		limit = maxLongID
	}
	mask := uint64(len(t.slots) - 1)
	id := prev
	for {
		id++
		if id > limit {
			id = 1
		}
		if t.slots[id&mask].c == nil {
			return id
		}
	}
}

// grow doubles the slot table (or creates it) and re-files the pending calls.
func (t *callTable) grow() {
	old := t.slots
	t.slots = make([]slot, max(minSlots, 2*len(old)))
	mask := uint64(len(t.slots) - 1)
	for _, sl := range old {
		if sl.c != nil {
			t.slots[sl.id&mask] = sl
		}
	}
}

// add files c, whose id came from allocID and whose deadline is set, and arms the timer when c
// is now the earliest deadline.
func (t *callTable) add(c *call) {
	sl := slot{c: c, id: c.id, deadline: c.deadline}
	t.n++
	if t.fifoLen == 0 || c.deadline >= t.fifo[(t.fifoHead+t.fifoLen-1)&(len(t.fifo)-1)].deadline {
		c.heapIdx = -1
		t.pushFIFO(fifoEntry{id: c.id, deadline: c.deadline})
	} else {
		sl.inHeap = true
		c.heapIdx = len(t.heap)
		t.heap = append(t.heap, c)
		t.up(c.heapIdx)
	}
	t.slots[c.id&uint64(len(t.slots)-1)] = sl
	t.arm(c.deadline)
}

// arm makes the timer fire no later than deadline.
func (t *callTable) arm(deadline int64) {
	if t.timerOn && t.armed <= deadline {
		return
	}
	d := time.Duration(deadline - t.now())
	if t.timer == nil {
		t.timer = time.AfterFunc(d, t.onTimer)
	} else {
		t.timer.Reset(d)
	}
	t.armed, t.timerOn = deadline, true
}

// lookup returns the pending call with id, or nil.
func (t *callTable) lookup(id uint64) *call {
	if len(t.slots) == 0 {
		return nil
	}
	if sl := &t.slots[id&uint64(len(t.slots)-1)]; sl.id == id {
		return sl.c
	}
	return nil
}

// remove takes the call id out of the table and returns it, or nil if it is not pending. The
// timer is left alone: it fires at its old time and re-arms for what is left.
func (t *callTable) remove(id uint64) *call {
	c := t.lookup(id)
	if c == nil {
		return nil
	}
	t.unlink(c)
	return c
}

// removeCall takes c, registered under id, out of the table if it is still pending (id may
// since belong to a newer call, and c may have been recycled) and reports whether it was.
func (t *callTable) removeCall(id uint64, c *call) bool {
	if t.lookup(id) != c {
		return false
	}
	t.unlink(c)
	return true
}

// unlink removes the pending call c.
func (t *callTable) unlink(c *call) {
	t.slots[c.id&uint64(len(t.slots)-1)] = slot{}
	t.n--
	if c.heapIdx >= 0 {
		t.removeHeap(c.heapIdx)
		return
	}
	t.trimFIFO()
	if t.fifoLen > 2*t.n+minSlots {
		t.compactFIFO()
	}
}

// live reports whether e's call is still pending.
func (t *callTable) live(e fifoEntry) bool {
	sl := &t.slots[e.id&uint64(len(t.slots)-1)]
	return sl.c != nil && sl.id == e.id && sl.deadline == e.deadline && !sl.inHeap
}

// trimFIFO drops the entries of completed calls from the head of the FIFO.
func (t *callTable) trimFIFO() {
	for t.fifoLen > 0 && !t.live(t.fifo[t.fifoHead]) {
		t.popFIFO()
	}
}

// compactFIFO drops every entry of a completed call, keeping the order of the others.
func (t *callTable) compactFIFO() {
	mask := len(t.fifo) - 1
	kept := 0
	for i := range t.fifoLen {
		e := t.fifo[(t.fifoHead+i)&mask]
		if t.live(e) {
			t.fifo[(t.fifoHead+kept)&mask] = e
			kept++
		}
	}
	t.fifoLen = kept
}

func (t *callTable) pushFIFO(e fifoEntry) {
	if t.fifoLen == len(t.fifo) {
		n := make([]fifoEntry, max(minSlots, 2*len(t.fifo)))
		for i := range t.fifoLen {
			n[i] = t.fifo[(t.fifoHead+i)&(len(t.fifo)-1)]
		}
		t.fifo, t.fifoHead = n, 0
	}
	t.fifo[(t.fifoHead+t.fifoLen)&(len(t.fifo)-1)] = e
	t.fifoLen++
}

func (t *callTable) popFIFO() {
	t.fifoHead = (t.fifoHead + 1) & (len(t.fifo) - 1)
	t.fifoLen--
}

// expired removes and returns the calls whose deadline has passed (now on the table's clock)
// and re-arms the timer for the earliest deadline left. The timer called it.
func (t *callTable) expired(now int64) []*call {
	t.timerOn = false
	var out []*call
	for {
		t.trimFIFO()
		if t.fifoLen == 0 {
			break
		}
		e := t.fifo[t.fifoHead]
		if e.deadline > now {
			break
		}
		c := t.lookup(e.id)
		t.slots[c.id&uint64(len(t.slots)-1)] = slot{}
		t.n--
		t.popFIFO()
		out = append(out, c)
	}
	for len(t.heap) > 0 && t.heap[0].deadline <= now {
		c := t.heap[0]
		t.slots[c.id&uint64(len(t.slots)-1)] = slot{}
		t.n--
		t.removeHeap(0)
		out = append(out, c)
	}
	next, ok := int64(0), false
	if t.fifoLen > 0 {
		next, ok = t.fifo[t.fifoHead].deadline, true
	}
	if len(t.heap) > 0 && (!ok || t.heap[0].deadline < next) {
		next, ok = t.heap[0].deadline, true
	}
	if ok {
		t.arm(next)
	}
	return out
}

// drain removes and returns every call, and stops the timer and the shared watcher.
func (t *callTable) drain() []*call {
	out := make([]*call, 0, t.n)
	for i, sl := range t.slots {
		if sl.c != nil {
			out = append(out, sl.c)
			t.slots[i] = slot{}
		}
	}
	t.n = 0
	t.fifoHead, t.fifoLen = 0, 0
	clear(t.heap)
	t.heap = t.heap[:0]
	if t.timer != nil {
		t.timer.Stop()
	}
	t.timerOn = false
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
	for _, sl := range t.slots {
		if sl.c != nil && sl.c.ctx == ctx {
			t.unlink(sl.c)
			out = append(out, sl.c)
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

func (t *callTable) less(i, j int) bool { return t.heap[i].deadline < t.heap[j].deadline }

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
