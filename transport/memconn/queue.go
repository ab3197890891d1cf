package memconn

import (
	"net/netip"
	"sync"
	"time"

	"github.com/naquid/naquid/transport"
)

// packet is one datagram in flight or waiting in a receive queue.
type packet struct {
	buf  []byte // len is the payload length; cap is the network's MaxDatagram
	src  netip.AddrPort
	dst  netip.AddrPort
	ecn  transport.ECN
	at   time.Time // delivery time (delay queue only)
	seq  uint64    // tie-breaker that keeps equal delivery times in send order
	link *link
}

// packetPool recycles packets and their buffers, so steady-state delivery allocates nothing.
type packetPool struct {
	size int
	pool sync.Pool
}

func newPacketPool(size int) *packetPool {
	pp := &packetPool{size: size}
	pp.pool.New = func() any { return &packet{buf: make([]byte, 0, size)} }
	return pp
}

// get returns a packet holding a copy of payload.
func (pp *packetPool) get(payload []byte) *packet {
	p := pp.pool.Get().(*packet)
	p.buf = append(p.buf[:0], payload...)
	return p
}

func (pp *packetPool) put(p *packet) {
	p.link = nil
	pp.pool.Put(p)
}

// delayQueue is a binary min-heap of packets ordered by (at, seq).
type delayQueue struct {
	h []*packet
}

func (q *delayQueue) len() int { return len(q.h) }

func (q *delayQueue) less(i, j int) bool {
	a, b := q.h[i], q.h[j]
	if !a.at.Equal(b.at) {
		return a.at.Before(b.at)
	}
	return a.seq < b.seq
}

func (q *delayQueue) push(p *packet) {
	q.h = append(q.h, p)
	for i := len(q.h) - 1; i > 0; {
		parent := (i - 1) / 2
		if !q.less(i, parent) {
			break
		}
		q.h[i], q.h[parent] = q.h[parent], q.h[i]
		i = parent
	}
}

// peek returns the earliest packet; the queue must not be empty.
func (q *delayQueue) peek() *packet { return q.h[0] }

// pop removes and returns the earliest packet; the queue must not be empty.
func (q *delayQueue) pop() *packet {
	top := q.h[0]
	last := len(q.h) - 1
	q.h[0] = q.h[last]
	q.h[last] = nil
	q.h = q.h[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < last && q.less(l, m) {
			m = l
		}
		if r < last && q.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		q.h[i], q.h[m] = q.h[m], q.h[i]
		i = m
	}
	return top
}

// drain removes every packet, handing each to f.
func (q *delayQueue) drain(f func(*packet)) {
	for i, p := range q.h {
		f(p)
		q.h[i] = nil
	}
	q.h = q.h[:0]
}

// ring is a bounded FIFO of packets: a Conn's receive queue.
type ring struct {
	buf  []*packet
	head int
	n    int
}

func newRing(size int) ring { return ring{buf: make([]*packet, size)} }

func (r *ring) full() bool { return r.n == len(r.buf) }

func (r *ring) push(p *packet) {
	r.buf[(r.head+r.n)%len(r.buf)] = p
	r.n++
}

func (r *ring) pop() *packet {
	p := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return p
}
