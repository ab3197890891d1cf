package quic

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/transport"
)

// errMalformedControl reports a control message quic-go (or another caller) attached to a write
// that cannot be parsed.
var errMalformedControl = fmt.Errorf("malformed control message: %w", syscall.EINVAL)

// adapter presents a transport.Conn to quic-go as an OOB-capable UDP socket with batch reads.
// See PacketConn for the behaviour it promises.
type adapter struct {
	c     transport.Conn
	caps  transport.Capabilities
	local *net.UDPAddr    // LocalAddr's answer; never mutated
	ctl   syscall.RawConn // where socket options go
	sink  *net.UDPConn    // the private option-sink socket behind ctl, or nil

	closed atomic.Bool
	wpool  sync.Pool // *[1]transport.Message, one per concurrent write

	// readMu serialises readers; it guards everything below.
	readMu sync.Mutex
	rmsgs  []transport.Message  // reused by ReadBatch
	rone   [1]transport.Message // reused by single reads
	addrs  *addrCache           // remote address -> *net.UDPAddr handed out
}

var (
	_ quicgo.OOBCapablePacketConn = (*adapter)(nil)
	_ interface {
		ReadBatch(ms []ipv4.Message, flags int) (int, error)
	} = (*adapter)(nil)
)

// newAdapter wraps c. On error c is left open.
func newAdapter(c transport.Conn) (net.PacketConn, error) {
	a := &adapter{
		c:     c,
		caps:  c.Capabilities(),
		local: net.UDPAddrFromAddrPort(c.LocalAddr()),
		addrs: newAddrCache(addrCacheGeneration),
	}
	a.wpool.New = func() any { return new([1]transport.Message) }
	if cs, ok := c.(transport.ControlSocket); ok {
		rc, err := cs.SyscallConn()
		if err != nil {
			return nil, fmt.Errorf("control socket: %w", err)
		}
		a.ctl = rc
		return a, nil
	}
	sink, rc, err := openSink()
	if err != nil {
		return nil, err
	}
	a.sink, a.ctl = sink, rc
	return a, nil
}

// openSink opens the private option-sink socket: a UDP socket on 127.0.0.1 that quic-go sets and
// probes options on (DF, ECN, GSO support, buffer sizes) and that nobody reads or writes. It is
// connected to its own address, so the kernel drops anything another socket sends to it and its
// receive buffer stays empty whatever size quic-go gives it.
func openSink() (*net.UDPConn, syscall.RawConn, error) {
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, nil, fmt.Errorf("open option sink: %w", err)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, nil, fmt.Errorf("option sink: %w", err)
	}
	self := &unix.SockaddrInet4{Port: uc.LocalAddr().(*net.UDPAddr).Port, Addr: [4]byte{127, 0, 0, 1}}
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = unix.Connect(int(fd), self) }); err != nil {
		cerr = err
	}
	if cerr != nil {
		uc.Close()
		return nil, nil, fmt.Errorf("option sink: connect to itself: %w", cerr)
	}
	return uc, rc, nil
}

func (a *adapter) opErr(op string, err error) error {
	return &opError{op: op, local: a.local, err: err}
}

// ReadBatch reads at least one datagram into ms[i].Buffers[0] (each message must have exactly one
// buffer) and sets N, Addr, OOB[:NN] (ECN and packet-info control messages, see PacketConn) and
// Flags (MSG_CTRUNC when OOB was too short). flags is ignored. It returns the number of messages
// filled.
func (a *adapter) ReadBatch(ms []ipv4.Message, _ int) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	a.readMu.Lock()
	defer a.readMu.Unlock()
	if a.closed.Load() {
		return 0, a.opErr("read", net.ErrClosed)
	}
	if cap(a.rmsgs) < len(ms) {
		a.rmsgs = make([]transport.Message, len(ms))
	}
	rm := a.rmsgs[:len(ms)]
	for i := range ms {
		if len(ms[i].Buffers) != 1 {
			clear(rm[:i]) // keep no reference to the caller's buffers
			return 0, a.opErr("read", fmt.Errorf("message %d has %d buffers, want 1: %w", i, len(ms[i].Buffers), syscall.EINVAL))
		}
		rm[i] = transport.Message{Buf: ms[i].Buffers[0]}
	}
	n, err := a.c.ReadBatch(rm)
	n = max(0, min(n, len(ms)))
	for i := range n {
		m, r := &ms[i], &rm[i]
		m.N = r.N
		m.Addr = a.addrs.get(r.Addr)
		var trunc bool
		m.NN, trunc = a.control(m.OOB, r)
		m.Flags = 0
		if trunc {
			m.Flags = unix.MSG_CTRUNC
		}
	}
	clear(rm) // keep no reference to the caller's buffers
	if err != nil {
		return n, a.opErr("read", err)
	}
	return n, nil
}

// control encodes the control messages for received message r into oob. trunc reports that oob
// was too short for all of them.
func (a *adapter) control(oob []byte, r *transport.Message) (n int, trunc bool) {
	var local netip.Addr
	if a.caps.LocalAddr {
		local = r.Local
	}
	n, ok := rxControl(oob, r.Addr, local, a.caps.ECN, r.ECN)
	return n, !ok
}

// readOne reads one datagram into b. The caller holds readMu; the result is in a.rone[0], whose
// Buf the caller must clear.
func (a *adapter) readOne(b []byte) error {
	if a.closed.Load() {
		return a.opErr("read", net.ErrClosed)
	}
	a.rone[0] = transport.Message{Buf: b}
	n, err := a.c.ReadBatch(a.rone[:])
	if err != nil {
		a.rone[0].Buf = nil
		return a.opErr("read", err)
	}
	if n != 1 {
		a.rone[0].Buf = nil
		return a.opErr("read", fmt.Errorf("transport returned %d messages for a batch of 1", n))
	}
	return nil
}

// ReadFrom reads one datagram into p (net.PacketConn). addr is a cached *net.UDPAddr.
func (a *adapter) ReadFrom(p []byte) (n int, addr net.Addr, err error) {
	a.readMu.Lock()
	defer a.readMu.Unlock()
	if err := a.readOne(p); err != nil {
		return 0, nil, err
	}
	r := &a.rone[0]
	n, ua := r.N, a.addrs.get(r.Addr)
	r.Buf = nil
	return n, ua, nil
}

// ReadMsgUDP reads one datagram into b and its control messages (as ReadBatch) into oob.
func (a *adapter) ReadMsgUDP(b, oob []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	a.readMu.Lock()
	defer a.readMu.Unlock()
	if err := a.readOne(b); err != nil {
		return 0, 0, 0, nil, err
	}
	r := &a.rone[0]
	oobn, trunc := a.control(oob, r)
	if trunc {
		flags = unix.MSG_CTRUNC
	}
	n, addr = r.N, a.addrs.get(r.Addr)
	r.Buf = nil
	return n, oobn, flags, addr, nil
}

// WriteMsgUDP sends b to addr. oob may carry UDP_SEGMENT (b is then a GSO run the transport sends
// as several datagrams), IP_TOS / IPV6_TCLASS (ECN codepoint) and IP_PKTINFO / IPV6_PKTINFO
// (source address). It returns len(b) and len(oob) on success.
func (a *adapter) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error) {
	if a.closed.Load() {
		return 0, 0, a.opErr("write", net.ErrClosed)
	}
	if addr == nil {
		return 0, 0, a.opErr("write", fmt.Errorf("no destination address: %w", syscall.EDESTADDRREQ))
	}
	ap := addr.AddrPort()
	if !ap.Addr().IsValid() {
		return 0, 0, a.opErr("write", fmt.Errorf("invalid destination address %v: %w", addr, syscall.EINVAL))
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	wm := a.wpool.Get().(*[1]transport.Message)
	wm[0] = transport.Message{Buf: b, Addr: ap}
	if err = txControl(oob, &wm[0]); err == nil {
		var sent int
		sent, err = a.c.WriteBatch(wm[:])
		if err == nil && sent != 1 {
			err = io.ErrShortWrite
		}
	}
	wm[0] = transport.Message{}
	a.wpool.Put(wm)
	if err != nil {
		return 0, 0, a.opErr("write", err)
	}
	return len(b), len(oob), nil
}

// WriteTo sends p to addr (net.PacketConn). addr should be a *net.UDPAddr; other net.Addr values
// are parsed from their String form.
func (a *adapter) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		if addr == nil {
			return 0, a.opErr("write", fmt.Errorf("no destination address: %w", syscall.EDESTADDRREQ))
		}
		ap, err := netip.ParseAddrPort(addr.String())
		if err != nil {
			return 0, a.opErr("write", fmt.Errorf("destination %q: %w", addr.String(), err))
		}
		ua = net.UDPAddrFromAddrPort(ap)
	}
	n, _, err := a.WriteMsgUDP(p, nil, ua)
	return n, err
}

// LocalAddr returns the transport's local address as a *net.UDPAddr.
func (a *adapter) LocalAddr() net.Addr { return a.local }

// SetReadDeadline sets the transport's read deadline; a past time wakes a blocked reader.
func (a *adapter) SetReadDeadline(t time.Time) error {
	if err := a.c.SetReadDeadline(t); err != nil {
		return a.opErr("set read deadline", err)
	}
	return nil
}

// SetWriteDeadline accepts only the zero time: transports have no write deadlines (writes never
// block on the network: back-pressure is absorbed by the transport).
func (a *adapter) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		return nil
	}
	return a.opErr("set write deadline", errors.ErrUnsupported)
}

// SetDeadline sets the read deadline and then behaves as SetWriteDeadline.
func (a *adapter) SetDeadline(t time.Time) error {
	if err := a.SetReadDeadline(t); err != nil {
		return err
	}
	return a.SetWriteDeadline(t)
}

// SyscallConn returns the control socket: the transport's (transport.ControlSocket) or the
// private option sink. It is for setting and probing options only; never read or write it.
func (a *adapter) SyscallConn() (syscall.RawConn, error) {
	if a.closed.Load() {
		return nil, a.opErr("syscall conn", net.ErrClosed)
	}
	return a.ctl, nil
}

// SetReadBuffer sets SO_RCVBUF on the control socket. On a backend's own socket this sizes its
// kernel receive queue; on the option sink it only answers quic-go's buffer check.
func (a *adapter) SetReadBuffer(bytes int) error {
	return a.setInt(unix.SO_RCVBUF, "SO_RCVBUF", bytes)
}

// SetWriteBuffer sets SO_SNDBUF on the control socket, like SetReadBuffer.
func (a *adapter) SetWriteBuffer(bytes int) error {
	return a.setInt(unix.SO_SNDBUF, "SO_SNDBUF", bytes)
}

func (a *adapter) setInt(opt int, name string, v int) error {
	if a.closed.Load() {
		return a.opErr("set "+name, net.ErrClosed)
	}
	var serr error
	if err := a.ctl.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, v) }); err != nil {
		serr = err
	}
	if serr != nil {
		return a.opErr("set "+name, serr)
	}
	return nil
}

// Close closes the transport and the option sink. Later calls fail with net.ErrClosed.
func (a *adapter) Close() error {
	if !a.closed.CompareAndSwap(false, true) {
		return a.opErr("close", net.ErrClosed)
	}
	err := a.c.Close()
	if a.sink != nil {
		err = errors.Join(err, a.sink.Close())
	}
	if err != nil {
		return a.opErr("close", err)
	}
	return nil
}

// opError is the error the adapter returns from reads and writes. It names the operation and the
// local address, unwraps to the transport's error, and implements net.Error the way *net.OpError
// does for deadlines (quic-go checks Temporary by type assertion, without errors.As).
type opError struct {
	op    string
	local net.Addr
	err   error
}

func (e *opError) Error() string {
	return "quic: " + e.op + " " + e.local.String() + ": " + e.err.Error()
}

func (e *opError) Unwrap() error { return e.err }

// Timeout reports whether the operation failed because the read deadline passed.
func (e *opError) Timeout() bool { return errors.Is(e.err, os.ErrDeadlineExceeded) }

// Temporary reports whether retrying may succeed: true only for deadlines, as for *net.OpError.
func (e *opError) Temporary() bool { return e.Timeout() }

var _ net.Error = (*opError)(nil)
