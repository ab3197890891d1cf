package transporttest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/naquid/naquid/transport"
)

// pipeNet is a minimal in-memory network used to test the suite itself: a correct transport must
// pass Run, and a lossy one must fail with a clear message.
type pipeNet struct {
	mu        sync.Mutex
	conns     map[netip.AddrPort]*pipeConn
	nextPort  uint16
	dropEvery int // drop every dropEvery-th datagram; 0: none
	written   int
}

func newPipeNet(dropEvery int) *pipeNet {
	return &pipeNet{conns: map[netip.AddrPort]*pipeConn{}, nextPort: 1000, dropEvery: dropEvery}
}

// factory opens a pipeConn; the address's port is always chosen by the network.
func (pn *pipeNet) factory(_ context.Context, local netip.AddrPort) (transport.Conn, error) {
	pn.mu.Lock()
	defer pn.mu.Unlock()
	pn.nextPort++
	c := &pipeConn{
		net:    pn,
		addr:   netip.AddrPortFrom(local.Addr(), pn.nextPort),
		inbox:  make(chan pipePacket, 4096),
		closed: make(chan struct{}),
		wake:   make(chan struct{}),
	}
	pn.conns[c.addr] = c
	return c, nil
}

type pipePacket struct {
	data []byte
	from netip.AddrPort
	ecn  transport.ECN
}

const pipeMaxDatagram = 9000

type pipeConn struct {
	net       *pipeNet
	addr      netip.AddrPort
	inbox     chan pipePacket
	closed    chan struct{}
	closeOnce sync.Once

	mu       sync.Mutex
	deadline time.Time
	timer    *time.Timer
	wake     chan struct{} // closed when the deadline changes or passes
}

func (c *pipeConn) LocalAddr() netip.AddrPort { return c.addr }

func (c *pipeConn) Capabilities() transport.Capabilities {
	return transport.Capabilities{MaxDatagram: pipeMaxDatagram, ECN: true, LocalAddr: true, BatchSize: 64}
}

func (c *pipeConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func (c *pipeConn) SetReadDeadline(t time.Time) error {
	if c.isClosed() {
		return fmt.Errorf("pipe: %w", net.ErrClosed)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.deadline = t
	close(c.wake)
	wake := make(chan struct{})
	c.wake = wake
	if d := time.Until(t); !t.IsZero() && d > 0 {
		c.timer = time.AfterFunc(d, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.wake == wake {
				close(wake)
				c.wake = make(chan struct{})
			}
		})
	}
	return nil
}

func (c *pipeConn) ReadBatch(msgs []transport.Message) (int, error) {
	for {
		c.mu.Lock()
		dl, wake := c.deadline, c.wake
		c.mu.Unlock()
		if c.isClosed() {
			return 0, fmt.Errorf("pipe: read: %w", net.ErrClosed)
		}
		if !dl.IsZero() && !time.Now().Before(dl) {
			return 0, fmt.Errorf("pipe: read: %w", os.ErrDeadlineExceeded)
		}
		select {
		case p := <-c.inbox:
			n := 0
			for {
				m := &msgs[n]
				m.N = copy(m.Buf, p.data)
				m.Addr, m.Local, m.ECN, m.SegmentSize = p.from, c.addr.Addr(), p.ecn, 0
				n++
				if n == len(msgs) {
					return n, nil
				}
				select {
				case p = <-c.inbox:
					continue
				default:
				}
				return n, nil
			}
		case <-c.closed:
		case <-wake:
		}
	}
}

func (c *pipeConn) WriteBatch(msgs []transport.Message) (int, error) {
	for i, m := range msgs {
		if c.isClosed() {
			return i, fmt.Errorf("pipe: write: %w", net.ErrClosed)
		}
		seg := m.SegmentSize
		if seg <= 0 || seg >= len(m.Buf) {
			seg = len(m.Buf)
		}
		if seg > pipeMaxDatagram {
			return i, fmt.Errorf("pipe: write %d bytes: %w", seg, syscall.EMSGSIZE)
		}
		for off := 0; off < len(m.Buf) || off == 0; off += seg {
			data := append([]byte(nil), m.Buf[off:min(off+seg, len(m.Buf))]...)
			c.deliver(m.Addr, pipePacket{data: data, from: c.addr, ecn: m.ECN})
			if len(m.Buf) == 0 {
				break
			}
		}
	}
	return len(msgs), nil
}

func (c *pipeConn) deliver(to netip.AddrPort, p pipePacket) {
	pn := c.net
	pn.mu.Lock()
	dst := pn.conns[to]
	pn.written++
	drop := pn.dropEvery > 0 && pn.written%pn.dropEvery == 0
	pn.mu.Unlock()
	if dst == nil || drop || dst.isClosed() {
		return
	}
	select {
	case dst.inbox <- p:
	default: // full: dropped, like a socket buffer
	}
}

func (c *pipeConn) Close() error {
	err := fmt.Errorf("pipe: close: %w", net.ErrClosed)
	c.closeOnce.Do(func() {
		close(c.closed)
		c.net.mu.Lock()
		delete(c.net.conns, c.addr)
		c.net.mu.Unlock()
		err = nil
	})
	return err
}
