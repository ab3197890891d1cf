package memconn

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/naquid/naquid/transport"
)

// batchSize is reported in Capabilities.BatchSize. Memory has no syscalls to amortize; 64 keeps
// callers' batches in line with the kernel backends.
const batchSize = 64

// Compile-time checks of the interfaces Conn implements.
var (
	_ transport.Conn  = (*Conn)(nil)
	_ transport.Stats = (*Conn)(nil)
)

// Conn is an endpoint of a Network bound to one address and port. It implements transport.Conn
// and transport.Stats. ReadBatch has one caller at a time; every other method is safe for
// concurrent use.
type Conn struct {
	net      *Network
	local    netip.AddrPort
	wildcard bool
	udpAddr  *net.UDPAddr // for error values
	caps     transport.Capabilities

	gone bool // removed from the network; guarded by net.mu

	done   chan struct{} // closed by Close
	notify chan struct{} // a datagram arrived (capacity 1)

	mu       sync.Mutex
	closed   bool
	q        ring
	deadline time.Time
	dlTimer  *time.Timer
	dlCh     chan struct{} // closed when the deadline has passed
	expired  bool          // dlCh is closed

	packetsRead, packetsWritten atomic.Uint64
	bytesRead, bytesWritten     atomic.Uint64
	readCalls, writeCalls       atomic.Uint64
	drops, ringFull, ringEmpty  atomic.Uint64
}

func newConn(n *Network, local netip.AddrPort) *Conn {
	return &Conn{
		net:      n,
		local:    local,
		wildcard: local.Addr().IsUnspecified(),
		udpAddr:  net.UDPAddrFromAddrPort(local),
		caps: transport.Capabilities{
			MaxDatagram: n.maxDgram,
			ECN:         true,
			LocalAddr:   true,
			BatchSize:   batchSize,
		},
		done:   make(chan struct{}),
		notify: make(chan struct{}, 1),
		q:      newRing(n.queueLen),
		dlCh:   make(chan struct{}),
	}
}

// LocalAddr returns the address and port the Conn is bound to.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// Capabilities reports ECN and local-address support, no GSO (segmented writes are split in
// software), the network's MaxDatagram and a batch size of 64.
func (c *Conn) Capabilities() transport.Capabilities { return c.caps }

// Stats returns the Conn's counters. Drops counts datagrams this Conn wrote that the network
// dropped at send time (partition, path limit, loss, bandwidth queue) plus datagrams dropped at
// this Conn's full receive queue; RingFull counts the latter, RingEmpty counts reads that found
// the receive queue empty and waited.
func (c *Conn) Stats() transport.Counters {
	return transport.Counters{
		PacketsRead:    c.packetsRead.Load(),
		PacketsWritten: c.packetsWritten.Load(),
		BytesRead:      c.bytesRead.Load(),
		BytesWritten:   c.bytesWritten.Load(),
		ReadCalls:      c.readCalls.Load(),
		WriteCalls:     c.writeCalls.Load(),
		Drops:          c.drops.Load(),
		RingFull:       c.ringFull.Load(),
		RingEmpty:      c.ringEmpty.Load(),
	}
}

// ReadBatch blocks until at least one datagram has arrived, the read deadline passes (an error
// matching os.ErrDeadlineExceeded) or the Conn is closed (net.ErrClosed), then fills up to
// len(msgs) messages: Buf[:N] holds the payload (truncated to len(Buf)), Addr the sender, Local
// the address the datagram was sent to, ECN the codepoint it was sent with.
func (c *Conn) ReadBatch(msgs []transport.Message) (int, error) {
	c.readCalls.Add(1)
	if len(msgs) == 0 {
		return 0, nil
	}
	c.mu.Lock()
	waited := false
	for c.q.n == 0 {
		if c.closed {
			c.mu.Unlock()
			return 0, c.opError("read", nil, net.ErrClosed)
		}
		if c.expired {
			c.mu.Unlock()
			return 0, c.opError("read", nil, os.ErrDeadlineExceeded)
		}
		if !waited {
			c.ringEmpty.Add(1)
			waited = true
		}
		dl := c.dlCh
		c.mu.Unlock()
		select {
		case <-c.notify:
		case <-dl:
		case <-c.done:
		}
		c.mu.Lock()
	}
	n, bytes := 0, 0
	for n < len(msgs) && c.q.n > 0 {
		p := c.q.pop()
		m := &msgs[n]
		m.N = copy(m.Buf, p.buf)
		m.Addr = p.src
		m.Local = p.dst.Addr()
		m.ECN = p.ecn
		m.SegmentSize = 0
		bytes += m.N
		n++
		c.net.pool.put(p)
	}
	c.mu.Unlock()
	c.packetsRead.Add(uint64(n))
	c.bytesRead.Add(uint64(bytes))
	return n, nil
}

// WriteBatch sends msgs in order through the network and returns how many were sent. Payloads are
// copied before it returns. A message with SegmentSize > 0 and < len(Buf) is split into datagrams
// of SegmentSize bytes (the last possibly shorter). A datagram larger than the network's
// MaxDatagram fails the message with an error matching syscall.EMSGSIZE; a write-error burst
// (LinkConfig.WriteErrors) fails it with the configured error; an invalid destination (no address,
// or port 0) fails with an error matching syscall.EINVAL. Faults and unreachable destinations
// drop datagrams silently, as UDP does. WriteBatch never blocks on the receiver.
func (c *Conn) WriteBatch(msgs []transport.Message) (int, error) {
	c.writeCalls.Add(1)
	n := c.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if c.gone {
		return 0, c.opError("write", nil, net.ErrClosed)
	}
	now := time.Now()
	n.runDueLocked(now)
	for i := range msgs {
		m := &msgs[i]
		dst := normAddrPort(m.Addr)
		if !dst.Addr().IsValid() || dst.Port() == 0 {
			return i, c.opError("write", &dst, fmt.Errorf("invalid destination: %w", syscall.EINVAL))
		}
		seg := m.SegmentSize
		if seg <= 0 || seg > len(m.Buf) {
			seg = len(m.Buf)
		}
		src := c.sourceFor(m.Local, dst.Addr())
		l := n.linkLocked(linkKey{src.Addr(), dst.Addr()})
		if seg > n.maxDgram {
			l.stats.SizeErrors++
			return i, c.opError("write", &dst,
				fmt.Errorf("datagram of %d bytes exceeds the maximum of %d: %w", seg, n.maxDgram, syscall.EMSGSIZE))
		}
		if l.writeFails() {
			l.stats.WriteErrors++
			return i, c.opError("write", &dst, l.cfg.WriteError)
		}
		buf := m.Buf
		for {
			k := min(seg, len(buf))
			n.sendLocked(now, l, c, src, dst, buf[:k], m.ECN)
			c.packetsWritten.Add(1)
			c.bytesWritten.Add(uint64(k))
			buf = buf[k:]
			if len(buf) == 0 {
				break
			}
		}
	}
	return len(msgs), nil
}

// sourceFor returns the source address of a datagram to dst: the bound address, or for a Conn
// bound to an unspecified address, local when it is set, else the loopback address of dst's
// family.
func (c *Conn) sourceFor(local, dst netip.Addr) netip.AddrPort {
	if !c.wildcard {
		return c.local
	}
	local = normAddr(local)
	if !local.IsValid() || local.IsUnspecified() {
		local = loopback(dst)
	}
	return netip.AddrPortFrom(local, c.local.Port())
}

// SetReadDeadline sets the deadline for ReadBatch. A deadline in the past wakes a blocked reader
// at once; the zero time removes the deadline.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("set read deadline", nil, net.ErrClosed)
	}
	c.deadline = t
	if c.dlTimer != nil {
		c.dlTimer.Stop()
	}
	var d time.Duration
	if !t.IsZero() {
		d = time.Until(t)
	}
	if !t.IsZero() && d <= 0 {
		c.expireLocked()
		return nil
	}
	if c.expired {
		c.expired = false
		c.dlCh = make(chan struct{})
	}
	if t.IsZero() {
		return nil
	}
	if c.dlTimer == nil {
		c.dlTimer = time.AfterFunc(d, c.onDeadline)
	} else {
		c.dlTimer.Reset(d)
	}
	return nil
}

// onDeadline runs when the deadline timer fires. It re-checks the deadline, so a firing made stale
// by a later SetReadDeadline does nothing.
func (c *Conn) onDeadline() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.deadline.IsZero() {
		return
	}
	if d := time.Until(c.deadline); d > 0 {
		c.dlTimer.Reset(d)
		return
	}
	c.expireLocked()
}

func (c *Conn) expireLocked() {
	if !c.expired {
		c.expired = true
		close(c.dlCh)
	}
}

// Close unbinds the Conn, discards its receive queue and wakes a blocked reader. Later calls fail
// with an error matching net.ErrClosed; a second Close returns nil.
func (c *Conn) Close() error {
	n := c.net
	n.mu.Lock()
	if c.gone {
		n.mu.Unlock()
		return nil
	}
	c.gone = true
	delete(n.conns, c.local)
	if a := c.local.Addr(); !a.IsUnspecified() {
		k := portKey{a.Is4(), c.local.Port()}
		if n.specific[k]--; n.specific[k] == 0 {
			delete(n.specific, k)
		}
	}
	n.mu.Unlock()

	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	close(c.done)
	if c.dlTimer != nil {
		c.dlTimer.Stop()
	}
	for c.q.n > 0 {
		n.pool.put(c.q.pop())
	}
	return nil
}

// enqueue appends p to the receive queue; it reports false when the queue is full. Called with
// net.mu held, and only for a Conn still bound (Close unbinds under net.mu before closing).
func (c *Conn) enqueue(p *packet) bool {
	c.mu.Lock()
	if c.q.full() {
		c.mu.Unlock()
		c.drops.Add(1)
		c.ringFull.Add(1)
		return false
	}
	c.q.push(p)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
	return true
}

// opError wraps err as a *net.OpError naming the Conn (and the destination, when given), so that
// callers see a net.Error whose Timeout reports deadline expiry.
func (c *Conn) opError(op string, dst *netip.AddrPort, err error) error {
	e := &net.OpError{Op: op, Net: "memconn", Err: err}
	if dst != nil {
		e.Source = c.udpAddr
		e.Addr = net.UDPAddrFromAddrPort(*dst)
	} else {
		e.Addr = c.udpAddr
	}
	return e
}
