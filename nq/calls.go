package nq

import (
	"context"
	"sync"
	"time"
)

// waiterPool recycles the records of blocking calls (Call): a caller waiting on each call is
// common in request-per-goroutine code.
var waiterPool = sync.Pool{New: func() any { return &waiter{ch: make(chan struct{}, 1)} }}

// waiter is what a call needs beyond its table slot: the channel a blocking caller waits on and
// the answer handed to it, or the stop function of a callback call's own ctx watcher. Its
// identity also tells a pending call from a later call that reuses the message id.
type waiter struct {
	ch    chan struct{} // set for Call: signalled once with reply and err
	reply []byte
	err   error
	stop  func() bool // set for Go with a ctx of its own: stops the watcher
}

// newWaiter returns a clean record for a blocking call.
func newWaiter() *waiter { return waiterPool.Get().(*waiter) }

// release returns w to the pool; only the blocking caller, its last user, calls it.
func (w *waiter) release() {
	w.reply, w.err = nil, nil
	waiterPool.Put(w)
}

// call is one pending request, held by value in the table's slot for its message id: answering
// a call touches only the slot, which sits next to the slots of the calls made just before and
// after it (no pointer to chase to a record last touched a round trip ago).
type call struct {
	id       uint64                        // message id; 0 marks a free slot
	deadline int64                         // nanoseconds after the table's base time
	cb       func(reply []byte, err error) // Go: the callback
	w        *waiter                       // Call, or Go with its own ctx watcher
	method   uint32
	heapIdx  int32 // index in the table's heap, or -1 when the call waits in the FIFO
	shared   bool  // the table's shared ctx watcher covers the call
	ctxDL    bool  // the deadline is the caller's ctx deadline, not the stream's timeout
	dead     bool  // a tombstone (see callTable.bury): no caller; deadline ends the quarantine
}

// Message ids stay below maxShortID (two-byte varints on the wire) while fewer than
// shortIDPending calls are pending, and below maxLongID (four-byte varints) otherwise.
const (
	maxShortID     = 1<<14 - 1
	shortIDPending = 1 << 13
	maxLongID      = 1<<30 - 1
	minSlots       = 16
)

// maxTombstones bounds the abandoned ids a stream keeps in quarantine: past it (a peer that
// stopped answering a stream making thousands of calls a second), ids are freed at once again,
// so the table's memory stays bounded.
const maxTombstones = shortIDPending

// minQuarantine is the shortest time an abandoned call's id stays taken (callTable.bury): a
// stream's tombstones last its call timeout, and at least this long.
const minQuarantine = 10 * time.Second

// fifoEntry is a call waiting in the deadline FIFO. The entry outlives its call when the call
// completes first (entries leave the FIFO lazily); the id and deadline tell whether the call
// found under the id is still the one the entry was made for.
type fifoEntry struct {
	id       uint64
	deadline int64
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
//
// Abandoned ids: a call abandoned before its answer (its deadline passed, its ctx ended) leaves a
// tombstone under its id for the quarantine, so that an answer the peer sends late is dropped
// instead of completing a newer call that reused the id (ids wrap after 16383 calls). The
// tombstone goes when that answer arrives or the quarantine ends, whichever is first.
type callTable struct {
	base       time.Time // deadlines count nanoseconds from here (monotonic clock)
	quarantine int64     // how long an abandoned id stays taken, in nanoseconds
	slots      []call
	n          int // slots in use: pending calls and tombstones
	dead       int // tombstones

	fifo     []fifoEntry // ring buffer; len is a power of two once used
	fifoHead int
	fifoLen  int
	heap     []uint64 // ids of the calls in the heap

	timer   *time.Timer
	armed   int64 // when the timer fires; valid while timerOn
	timerOn bool
	onTimer func()

	// A cancellable ctx shared by many calls (a game loop's ctx) is watched once per stream,
	// not once per call; the calls it covers are marked shared.
	// The watched ctx is known by its Done channel: calls made with a ctx cancelled with it
	// share the watcher, and channels compare whatever the ctx's type.
	watchDone <-chan struct{}
	watchStop func() bool
}

// newCallTable returns a table whose timer runs onTimer and whose abandoned ids stay taken for
// quarantine.
func newCallTable(onTimer func(), quarantine time.Duration) callTable {
	return callTable{base: time.Now(), onTimer: onTimer, quarantine: int64(quarantine)}
}

// now returns the current time on the table's clock.
func (t *callTable) now() int64 { return int64(time.Since(t.base)) }

// at converts a wall-clock deadline to the table's clock.
func (t *callTable) at(d time.Time) int64 { return int64(d.Sub(t.base)) }

// pending returns the number of pending calls.
func (t *callTable) pending() int { return t.n - t.dead }

// slot returns the slot for id; the table must not be empty.
func (t *callTable) slot(id uint64) *call { return &t.slots[id&uint64(len(t.slots)-1)] }

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
		if t.slots[id&mask].id == 0 {
			return id
		}
	}
}

// grow doubles the slot table (or creates it) and re-files the pending calls.
func (t *callTable) grow() {
	old := t.slots
	t.slots = make([]call, max(minSlots, 2*len(old)))
	mask := uint64(len(t.slots) - 1)
	for _, c := range old {
		if c.id != 0 {
			t.slots[c.id&mask] = c
		}
	}
}

// add files c, whose id came from allocID and whose deadline is set, and arms the timer when c
// is now the earliest deadline.
func (t *callTable) add(c call) {
	t.n++
	sl := t.slot(c.id)
	if t.fifoLen == 0 || c.deadline >= t.fifo[(t.fifoHead+t.fifoLen-1)&(len(t.fifo)-1)].deadline {
		c.heapIdx = -1
		*sl = c
		t.pushFIFO(fifoEntry{id: c.id, deadline: c.deadline})
	} else {
		c.heapIdx = int32(len(t.heap))
		*sl = c
		t.heap = append(t.heap, c.id)
		t.up(int(c.heapIdx))
	}
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

// lookup returns the slot of the pending call with id, or nil.
func (t *callTable) lookup(id uint64) *call {
	if len(t.slots) == 0 || id == 0 {
		return nil
	}
	if sl := t.slot(id); sl.id == id {
		return sl
	}
	return nil
}

// remove takes the call id out of the table and returns it; ok is false if it is not pending.
// An answer to an abandoned call frees its id (drops its tombstone) and reports false. The timer
// is left alone: it fires at its old time and re-arms for what is left.
func (t *callTable) remove(id uint64) (call, bool) {
	sl := t.lookup(id)
	if sl != nil && sl.dead {
		t.unlink(sl)
		return call{}, false
	}
	return t.take(sl)
}

// abandonWaiter takes the call id out of the table if it is still the call of w (the id may
// since belong to a newer call), leaves a tombstone under its id, and returns it.
func (t *callTable) abandonWaiter(id uint64, w *waiter) (call, bool) {
	sl := t.lookup(id)
	if sl != nil && (sl.w != w || sl.dead) {
		sl = nil
	}
	c, ok := t.take(sl)
	if ok {
		t.bury(c.id, t.now())
	}
	return c, ok
}

// bury leaves a tombstone under id, whose call was just taken out of the table unanswered (now
// on the table's clock): the id stays taken until the answer arrives or the quarantine ends.
func (t *callTable) bury(id uint64, now int64) {
	if t.quarantine <= 0 || t.dead >= maxTombstones || t.slot(id).id != 0 {
		return
	}
	t.dead++
	t.add(call{id: id, deadline: now + t.quarantine, dead: true})
}

// take unlinks the pending call in slot sl and returns it; ok is false when sl is nil.
func (t *callTable) take(sl *call) (c call, ok bool) {
	if sl == nil {
		return call{}, false
	}
	c = *sl
	t.unlink(sl)
	return c, true
}

// unlink frees the slot sl of a pending call or tombstone.
func (t *callTable) unlink(sl *call) {
	t.n--
	if sl.dead {
		t.dead--
	}
	if sl.heapIdx >= 0 {
		t.removeHeap(int(sl.heapIdx))
		*sl = call{}
		return
	}
	*sl = call{}
	t.trimFIFO()
	if t.fifoLen > 2*t.n+minSlots {
		t.compactFIFO()
	}
}

// live reports whether e's call is still pending.
func (t *callTable) live(e fifoEntry) bool {
	sl := t.slot(e.id)
	return sl.id == e.id && sl.deadline == e.deadline && sl.heapIdx < 0
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
func (t *callTable) expired(now int64) []call {
	t.timerOn = false
	var out []call
	for {
		t.trimFIFO()
		if t.fifoLen == 0 {
			break
		}
		e := t.fifo[t.fifoHead]
		if e.deadline > now {
			break
		}
		out = t.expire(t.slot(e.id), now, out) // pops e, now stale, from the FIFO
	}
	for len(t.heap) > 0 {
		sl := t.slot(t.heap[0])
		if sl.deadline > now {
			break
		}
		out = t.expire(sl, now, out)
	}
	next, ok := int64(0), false
	if t.fifoLen > 0 {
		next, ok = t.fifo[t.fifoHead].deadline, true
	}
	if len(t.heap) > 0 {
		if d := t.slot(t.heap[0]).deadline; !ok || d < next {
			next, ok = d, true
		}
	}
	if ok {
		t.arm(next)
	}
	return out
}

// expire takes the call or tombstone in slot sl, whose deadline passed, out of the table: a
// call is appended to out and leaves a tombstone (a late answer may still come); a tombstone
// just goes.
func (t *callTable) expire(sl *call, now int64, out []call) []call {
	c := *sl
	t.unlink(sl)
	if c.dead {
		return out
	}
	t.bury(c.id, now)
	return append(out, c)
}

// drain removes and returns every pending call (tombstones just go), and stops the timer and
// the shared watcher.
func (t *callTable) drain() []call {
	out := make([]call, 0, t.n-t.dead)
	for i := range t.slots {
		if t.slots[i].id != 0 {
			if !t.slots[i].dead {
				out = append(out, t.slots[i])
			}
			t.slots[i] = call{}
		}
	}
	t.n, t.dead = 0, 0
	t.fifoHead, t.fifoLen = 0, 0
	t.heap = t.heap[:0]
	if t.timer != nil {
		t.timer.Stop()
	}
	t.timerOn = false
	if t.watchStop != nil {
		t.watchStop()
		t.watchStop, t.watchDone = nil, nil
	}
	return out
}

// takeCtx removes and returns the calls covered by the shared watcher of ctx, which ended,
// leaving tombstones under their ids.
func (t *callTable) takeCtx(ctx context.Context) []call {
	if t.watchDone == nil || t.watchDone != ctx.Done() {
		return nil
	}
	var out []call
	for i := range t.slots {
		if sl := &t.slots[i]; sl.id != 0 && sl.shared {
			out = append(out, *sl)
			t.unlink(sl)
		}
	}
	if len(out) > 0 {
		now := t.now()
		for _, c := range out {
			t.bury(c.id, now)
		}
	}
	t.watchDone, t.watchStop = nil, nil
	return out
}

func (t *callTable) removeHeap(i int) {
	last := len(t.heap) - 1
	if i != last {
		t.swap(i, last)
	}
	t.heap = t.heap[:last]
	if i < last {
		t.down(i)
		t.up(i)
	}
}

func (t *callTable) less(i, j int) bool {
	return t.slot(t.heap[i]).deadline < t.slot(t.heap[j]).deadline
}

func (t *callTable) swap(i, j int) {
	t.heap[i], t.heap[j] = t.heap[j], t.heap[i]
	t.slot(t.heap[i]).heapIdx = int32(i)
	t.slot(t.heap[j]).heapIdx = int32(j)
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
