// Package batch combines writes from many goroutines into few system calls (group commit).
//
// A packet-I/O backend (transport/mmsg, transport/afxdp) is written to by one goroutine per QUIC
// connection. Each write alone would cost one system call or ring kick. A Combiner sits in front
// of that call: a writer appends its request to a pending queue; if no flush is running, the
// writer becomes the leader and hands everything pending to one FlushFunc call, routes each
// writer's own result back to it, and wakes it. Writers that arrive while a flush runs queue up
// and are served by the next round, so the batch grows by itself with load. There is no timer
// and no background goroutine, payloads are never copied, and a steady stream of writes
// allocates nothing.
//
// A leader keeps flushing for others for at most Config.MaxRounds rounds after its own messages
// are done, then hands leadership to the oldest waiting writer, so no writer is held back for
// long doing other writers' work.
package batch

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/naquid/naquid/transport"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxMessages = 64
	DefaultMaxRounds   = 4
)

// FlushFunc sends msgs in order and reports how far it got: n messages were sent; when
// n < len(msgs), err is the failure of msgs[n] (which was not sent, or not completely), and
// msgs[n+1:] were not attempted. It may use as many system calls as it needs. The Combiner
// calls it from one goroutine at a time; it must not keep msgs or their buffers after returning,
// and must not panic (the writers waiting on the flush would wait forever).
type FlushFunc func(msgs []transport.Message) (n int, err error)

// Config tunes a Combiner. The zero value is ready to use.
type Config struct {
	// MaxMessages caps the messages handed to one FlushFunc call. A write with more messages is
	// flushed over several calls, in order. Default DefaultMaxMessages (64).
	MaxMessages int
	// MaxRounds caps the flushes a writer performs for other writers after its own messages
	// are done, before it hands leadership to the oldest waiting writer. Default
	// DefaultMaxRounds (4).
	MaxRounds int
}

func (c Config) validate() error {
	if c.MaxMessages < 0 {
		return fmt.Errorf("batch: Config.MaxMessages %d is negative", c.MaxMessages)
	}
	if c.MaxRounds < 0 {
		return fmt.Errorf("batch: Config.MaxRounds %d is negative", c.MaxRounds)
	}
	return nil
}

// errShortFlush is reported to the writer of the first unsent message when a FlushFunc broke its
// contract by sending fewer messages than given without saying why.
var errShortFlush = fmt.Errorf("batch: flush sent fewer messages than given without an error: %w", io.ErrShortWrite)

// Combiner merges concurrent writes into few FlushFunc calls. It is safe for concurrent use;
// create it with New.
type Combiner struct {
	flush     FlushFunc
	maxMsgs   int
	maxRounds int
	pool      sync.Pool // *request

	mu      sync.Mutex
	leading bool       // a writer is the leader (flushing, or about to)
	queue   []*request // pending requests are queue[head:], oldest first
	head    int

	// enqueued, when set (tests only), is called with the number of pending requests each time
	// a writer starts waiting, with mu held.
	enqueued func(pending int)

	// Leader-only state; the leadership hand-off orders accesses.
	flat  []transport.Message // messages of the current round, when it has several requests
	round []*request          // requests of the current round, oldest first
	takes []int               // messages taken from each request of the round
}

// request is one Write in flight. The leader updates sent, err, done and lead; the writer reads
// them after it is woken through wake (or, as leader, itself).
type request struct {
	msgs []transport.Message
	sent int
	err  error
	done bool // finished: sent and err are final
	lead bool // woken to become the leader
	wake chan struct{}
}

// New returns a Combiner that sends through flush.
func New(flush FlushFunc, cfg Config) (*Combiner, error) {
	if flush == nil {
		return nil, errors.New("batch: nil FlushFunc")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.MaxMessages == 0 {
		cfg.MaxMessages = DefaultMaxMessages
	}
	if cfg.MaxRounds == 0 {
		cfg.MaxRounds = DefaultMaxRounds
	}
	c := &Combiner{
		flush:     flush,
		maxMsgs:   cfg.MaxMessages,
		maxRounds: cfg.MaxRounds,
		flat:      make([]transport.Message, cfg.MaxMessages),
		round:     make([]*request, 0, cfg.MaxMessages),
		takes:     make([]int, 0, cfg.MaxMessages),
	}
	c.pool.New = func() any { return &request{wake: make(chan struct{}, 1)} }
	return c, nil
}

// Write sends msgs, combined with the messages of concurrent writers, and returns how many were
// sent: all of them, or those before the first failing message together with that message's
// error. Messages of one Write are sent in order and no message after a failed one is sent.
// Write keeps no reference to msgs after it returns.
func (c *Combiner) Write(msgs []transport.Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	r := c.pool.Get().(*request)
	r.msgs, r.sent, r.err, r.done, r.lead = msgs, 0, nil, false, false

	c.mu.Lock()
	c.queue = append(c.queue, r)
	if c.leading {
		if c.enqueued != nil {
			c.enqueued(len(c.queue) - c.head)
		}
		c.mu.Unlock()
		<-r.wake
		if !r.lead {
			return c.finish(r)
		}
		c.mu.Lock()
	}
	c.leading = true
	c.lead(r)
	return c.finish(r)
}

// finish returns r's result and recycles r.
func (c *Combiner) finish(r *request) (int, error) {
	n, err := r.sent, r.err
	r.msgs, r.err = nil, nil
	c.pool.Put(r)
	return n, err
}

// lead flushes rounds until self is done and either nobody is waiting or self has flushed
// MaxRounds rounds for others; then it gives up leadership, to the oldest waiter if there is one.
// It is called with mu held and returns with mu released.
func (c *Combiner) lead(self *request) {
	extra := 0
	for {
		// Take whole requests from the head of the queue, up to maxMsgs messages; the last one
		// may be taken in part.
		c.round, c.takes = c.round[:0], c.takes[:0]
		total := 0
		for i := c.head; i < len(c.queue) && total < c.maxMsgs; i++ {
			r := c.queue[i]
			take := min(len(r.msgs)-r.sent, c.maxMsgs-total)
			c.round = append(c.round, r)
			c.takes = append(c.takes, take)
			total += take
		}
		c.mu.Unlock()

		var msgs []transport.Message
		if len(c.round) == 1 {
			r := c.round[0]
			msgs = r.msgs[r.sent : r.sent+total]
		} else {
			msgs = c.flat[:0]
			for i, r := range c.round {
				msgs = append(msgs, r.msgs[r.sent:r.sent+c.takes[i]]...)
			}
		}
		n, err := c.flush(msgs)
		if len(c.round) > 1 {
			clear(msgs) // drop references to the writers' buffers
		}
		if n < 0 {
			n = 0
		}
		if n < total && err == nil {
			err = errShortFlush
		}

		// Route results. Finished requests are a prefix of the round, hence of the queue.
		finished := 0
		for i, r := range c.round {
			take := c.takes[i]
			if n >= take {
				n -= take
				r.sent += take
				if r.sent < len(r.msgs) {
					break // taken in part; the rest goes in a later round
				}
			} else {
				r.sent += n
				r.err = err
			}
			r.done = true
			finished++
			if r.err != nil {
				break // the rest of the round was not attempted
			}
		}

		c.wakeFinished(self, finished)

		c.mu.Lock()
		c.head += finished
		c.compact()
		if self.done {
			if c.head == len(c.queue) {
				c.leading = false
				c.mu.Unlock()
				return
			}
			if extra >= c.maxRounds {
				next := c.queue[c.head]
				next.lead = true
				c.mu.Unlock()
				next.wake <- struct{}{}
				return
			}
			extra++
		}
	}
}

// wakeFinished wakes the writers of the first finished requests of the round, except self. The
// requests must not be touched afterwards: their writers recycle them.
func (c *Combiner) wakeFinished(self *request, finished int) {
	for _, r := range c.round[:finished] {
		if r != self {
			r.wake <- struct{}{}
		}
	}
}

// compact drops finished requests from the front of the queue, keeping its backing array. It
// is called with mu held.
func (c *Combiner) compact() {
	switch {
	case c.head == len(c.queue):
		clear(c.queue)
		c.queue, c.head = c.queue[:0], 0
	case c.head > cap(c.queue)/2:
		n := copy(c.queue, c.queue[c.head:])
		clear(c.queue[n:])
		c.queue, c.head = c.queue[:n], 0
	}
}
