package quic

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/naquid/naquid/transport"
)

// fakeConn is a minimal transport.Conn for unit tests: datagrams queued with deliver are read by
// ReadBatch; writes are recorded (copied) or fail with writeErr. It supports deadlines in the past
// (enough to wake a reader) and Close.
type fakeConn struct {
	caps  transport.Capabilities
	local netip.AddrPort

	in     chan transport.Message
	wake   chan struct{} // closed by a past deadline or Close
	closed chan struct{}

	mu        sync.Mutex
	wakeOnce  *sync.Once
	rec       bool
	writes    []transport.Message
	writeErr  error
	closeOnce sync.Once
}

func newFakeConn(caps transport.Capabilities, local netip.AddrPort) *fakeConn {
	return &fakeConn{
		caps:     caps,
		local:    local,
		in:       make(chan transport.Message, 64),
		wake:     make(chan struct{}),
		closed:   make(chan struct{}),
		wakeOnce: new(sync.Once),
	}
}

// deliver queues a datagram for ReadBatch. m.Buf is the payload.
func (f *fakeConn) deliver(m transport.Message) { f.in <- m }

func (f *fakeConn) fill(dst *transport.Message, src transport.Message) {
	dst.N = copy(dst.Buf, src.Buf)
	dst.Addr, dst.Local, dst.ECN, dst.SegmentSize = src.Addr, src.Local, src.ECN, 0
}

func (f *fakeConn) ReadBatch(msgs []transport.Message) (int, error) {
	f.mu.Lock()
	wake := f.wake
	f.mu.Unlock()
	select {
	case <-f.closed:
		return 0, net.ErrClosed
	case <-wake:
		return 0, os.ErrDeadlineExceeded
	case m := <-f.in:
		f.fill(&msgs[0], m)
	}
	n := 1
	for n < len(msgs) {
		select {
		case m := <-f.in:
			f.fill(&msgs[n], m)
			n++
		default:
			return n, nil
		}
	}
	return n, nil
}

func (f *fakeConn) WriteBatch(msgs []transport.Message) (int, error) {
	select {
	case <-f.closed:
		return 0, net.ErrClosed
	default:
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.writeErr != nil {
		return 0, f.writeErr
	}
	if f.rec {
		for _, m := range msgs {
			m.Buf = append([]byte(nil), m.Buf...)
			f.writes = append(f.writes, m)
		}
	}
	return len(msgs), nil
}

// record turns on recording of writes (off by default so allocation tests see none).
func (f *fakeConn) record() {
	f.mu.Lock()
	f.rec = true
	f.mu.Unlock()
}

func (f *fakeConn) written() []transport.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]transport.Message(nil), f.writes...)
}

func (f *fakeConn) setWriteErr(err error) {
	f.mu.Lock()
	f.writeErr = err
	f.mu.Unlock()
}

func (f *fakeConn) LocalAddr() netip.AddrPort            { return f.local }
func (f *fakeConn) Capabilities() transport.Capabilities { return f.caps }

func (f *fakeConn) SetReadDeadline(t time.Time) error {
	select {
	case <-f.closed:
		return net.ErrClosed
	default:
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case t.IsZero():
		f.wake, f.wakeOnce = make(chan struct{}), new(sync.Once)
	case !t.After(time.Now()):
		once, ch := f.wakeOnce, f.wake
		once.Do(func() { close(ch) })
	}
	return nil
}

func (f *fakeConn) Close() error {
	err := net.ErrClosed
	f.closeOnce.Do(func() {
		close(f.closed)
		err = nil
	})
	return err
}

var _ transport.Conn = (*fakeConn)(nil)
