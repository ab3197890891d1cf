package mmsg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/internal/batch"
	"github.com/naquid/naquid/transport"
)

// groSlotSize is the size of one receive slot when GRO is on: the largest coalesced datagram.
const groSlotSize = 64 << 10

// ENOBUFS handling: a send that fails with ENOBUFS waits for the socket to become writable at
// most enobufsRetries times, each bounded by enobufsWait, and the packet is then dropped and
// counted.
const (
	enobufsRetries = 3
	enobufsWait    = 10 * time.Millisecond
)

// Conn is a UDP socket read with recvmmsg and written with sendmmsg. Create it with Listen.
type Conn struct {
	udp   *net.UDPConn
	rc    syscall.RawConn
	local netip.AddrPort
	v6    bool // AF_INET6 socket
	caps  transport.Capabilities
	log   *slog.Logger
	comb  *batch.Combiner

	gso      atomic.Bool // GSO used for sends
	gsoErr   atomic.Pointer[GSODisabledError]
	closed   atomic.Bool
	counters struct {
		packetsRead, packetsWritten atomic.Uint64
		bytesRead, bytesWritten     atomic.Uint64
		readCalls, writeCalls       atomic.Uint64
		drops, kernelDrops          atomic.Uint64
		// coalesced counts reads that returned several datagrams as one (GRO); tests and
		// benchmarks look at it.
		coalesced atomic.Uint64
	}

	r reader // used by the one reader at a time
	w writer // used by the combiner's leader
}

// reader is the preallocated state of ReadBatch.
type reader struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	oob   []byte // oobSize per slot

	// GRO: slots of groSlotSize; datagrams of slots[cur:got] not yet delivered, from datagram
	// next of slot cur on.
	gro       bool
	slots     [][]byte
	meta      []slotMeta
	cur, got  int
	nextInCur int

	fn   func(fd uintptr) bool // doRead, bound once so that reads do not allocate
	want int                   // slots to read
	n    int                   // slots read
	err  error
}

// slotMeta is what one received slot holds.
type slotMeta struct {
	from  netip.AddrPort
	local netip.Addr
	ecn   transport.ECN
	seg   int
	n     int
}

// writer is the preallocated state of the combiner's flush.
type writer struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	oob   []byte // oobSize per packet
	pk    []packet
	bufs  [][]byte

	fn       func(fd uintptr) bool                                      // doWrite, bound once
	sys      func(fd uintptr, hdrs []unix.Mmsghdr) (int, syscall.Errno) // sendmmsg; tests wrap it
	from, to int                                                        // hdrs[from:to] to send
	n        int                                                        // packets sent by the last call
	errno    syscall.Errno
	nobufs   int  // ENOBUFS waits for the current packet
	deadline bool // a write deadline is set for an ENOBUFS wait
}

// Listen opens a UDP socket bound to local (port 0 picks a free port; an IPv4 address gives an
// IPv4 socket, an IPv6 address an IPv6 one, the unspecified IPv6 address or the zero Addr a
// dual-stack one) and returns a Conn reading and writing it in batches. ctx bounds the setup
// only.
func Listen(ctx context.Context, local netip.AddrPort, cfg Config) (*Conn, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if envBool("NQ_DISABLE_GSO") {
		cfg.DisableGSO = true
	}
	if envBool("NQ_DISABLE_GRO") {
		cfg.DisableGRO = true
	}

	network, address := "udp", local.String()
	switch a := local.Addr(); {
	case !a.IsValid():
		address = ":" + strconv.Itoa(int(local.Port()))
	case a.Unmap().Is4():
		network, address = "udp4", netip.AddrPortFrom(a.Unmap(), local.Port()).String()
	case !a.IsUnspecified():
		network = "udp6"
	}
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("mmsg: listen %s: %w", local, err)
	}
	udp := pc.(*net.UDPConn)
	c, err := newConn(udp, cfg)
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("mmsg: listen %s: %w", local, err)
	}
	return c, nil
}

func newConn(udp *net.UDPConn, cfg Config) (*Conn, error) {
	rc, err := udp.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("raw conn: %w", err)
	}
	c := &Conn{
		udp:   udp,
		rc:    rc,
		local: udp.LocalAddr().(*net.UDPAddr).AddrPort(),
		log:   cfg.Logger,
	}
	c.local = netip.AddrPortFrom(c.local.Addr().Unmap(), c.local.Port())

	var gsoOK, groOK, v6only bool
	var setupErr error
	err = rc.Control(func(fd uintptr) {
		gsoOK, groOK, v6only, setupErr = c.setup(int(fd), cfg)
	})
	if err == nil {
		err = setupErr
	}
	if err != nil {
		return nil, err
	}

	maxDatagram := maxGSOBytes // IPv4, or dual-stack: the IPv4 limit
	if c.v6 && v6only {
		maxDatagram = 65535 - 8
	}
	c.caps = transport.Capabilities{
		MaxDatagram: maxDatagram,
		GSO:         gsoOK,
		ECN:         true,
		LocalAddr:   true,
		BatchSize:   cfg.BatchSize,
	}
	c.gso.Store(gsoOK)

	n := cfg.BatchSize
	c.r = reader{
		hdrs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		oob:   make([]byte, n*oobSize),
		gro:   groOK,
	}
	if groOK {
		slab := make([]byte, n*groSlotSize)
		c.r.slots = make([][]byte, n)
		c.r.meta = make([]slotMeta, n)
		for i := range c.r.slots {
			c.r.slots[i] = slab[i*groSlotSize : (i+1)*groSlotSize : (i+1)*groSlotSize]
			c.r.iovs[i] = unix.Iovec{Base: &c.r.slots[i][0]}
			c.r.iovs[i].SetLen(groSlotSize)
		}
	}
	for i := range c.r.hdrs {
		h := &c.r.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&c.r.names[i]))
		h.Iov = &c.r.iovs[i]
		h.SetIovlen(1)
		h.Control = &c.r.oob[i*oobSize]
	}
	c.r.fn = c.doRead

	c.w = writer{
		hdrs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, 2*n),
		names: make([]unix.RawSockaddrInet6, n),
		oob:   make([]byte, n*oobSize),
		pk:    make([]packet, n),
		bufs:  make([][]byte, 2*n),
	}
	c.w.fn = c.doWrite
	c.w.sys = sendmmsg

	c.comb, err = batch.New(c.flush, batch.Config{MaxMessages: n})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.ReadBuffer == 0 {
		c.ReadBuffer = DefaultSocketBuffer
	}
	if c.WriteBuffer == 0 {
		c.WriteBuffer = DefaultSocketBuffer
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// setup sets the socket options on fd and reports what the kernel supports.
func (c *Conn) setup(fd int, cfg Config) (gso, gro, v6only bool, err error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return false, false, false, fmt.Errorf("getsockname: %w", err)
	}
	_, c.v6 = sa.(*unix.SockaddrInet6)
	if c.v6 {
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		if err != nil {
			return false, false, false, fmt.Errorf("getsockopt IPV6_V6ONLY: %w", err)
		}
		v6only = v != 0
	}
	setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, cfg.ReadBuffer)
	setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, cfg.WriteBuffer)

	type opt struct {
		level, name int
		what        string
	}
	opts := []opt{{unix.SOL_SOCKET, unix.SO_RXQ_OVFL, "SO_RXQ_OVFL"}}
	if !c.v6 || !v6only {
		opts = append(opts, opt{unix.IPPROTO_IP, unix.IP_PKTINFO, "IP_PKTINFO"},
			opt{unix.IPPROTO_IP, unix.IP_RECVTOS, "IP_RECVTOS"})
	}
	if c.v6 {
		opts = append(opts, opt{unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO"},
			opt{unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS, "IPV6_RECVTCLASS"})
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.name, 1); err != nil {
			return false, false, false, fmt.Errorf("setsockopt %s: %w", o.what, err)
		}
	}
	if !cfg.DisableGSO {
		_, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		gso = err == nil
	}
	if !cfg.DisableGRO && kernelAtLeast(5, 12) {
		gro = unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	}
	return gso, gro, v6only, nil
}

// setBuffer asks for a socket buffer of size bytes, past the system limit when the process may
// (CAP_NET_ADMIN), else up to it. Failures leave the default size: a smaller buffer only costs
// drops under bursts, which Stats.KernelDrops shows.
func setBuffer(fd, force, plain, size int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) == nil {
		return
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size)
}

// LocalAddr returns the bound local address.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// Capabilities reports MaxDatagram (65507, or 65527 on an IPv6-only socket), GSO when the kernel
// segments UDP (and it was not disabled), ECN, LocalAddr and BatchSize.
func (c *Conn) Capabilities() transport.Capabilities { return c.caps }

// SetReadDeadline sets the deadline for ReadBatch.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if err := c.udp.SetReadDeadline(t); err != nil {
		return fmt.Errorf("mmsg: set read deadline: %w", err)
	}
	return nil
}

// SyscallConn returns the socket's raw conn, for setting and probing socket options. Reading or
// writing through it bypasses the Conn.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// GSODisabled returns the *GSODisabledError that turned GSO off for this Conn, or nil while GSO
// is on or was never used.
func (c *Conn) GSODisabled() error {
	if e := c.gsoErr.Load(); e != nil {
		return e
	}
	return nil
}

// Stats returns the Conn's counters. WriteCalls counts send system calls (sendmmsg, or
// sendmsg/sendto for a lone packet; including those that found the socket buffer full),
// ReadCalls recvmmsg calls; Drops counts datagrams dropped after
// ENOBUFS persisted and the excess of truncated coalesced reads; KernelDrops is the socket's
// SO_RXQ_OVFL count.
func (c *Conn) Stats() transport.Counters {
	s := &c.counters
	return transport.Counters{
		PacketsRead:    s.packetsRead.Load(),
		PacketsWritten: s.packetsWritten.Load(),
		BytesRead:      s.bytesRead.Load(),
		BytesWritten:   s.bytesWritten.Load(),
		ReadCalls:      s.readCalls.Load(),
		WriteCalls:     s.writeCalls.Load(),
		Drops:          s.drops.Load(),
		KernelDrops:    s.kernelDrops.Load(),
	}
}

// Close closes the socket and wakes a blocked reader and writer.
func (c *Conn) Close() error {
	c.closed.Store(true)
	if err := c.udp.Close(); err != nil {
		return fmt.Errorf("mmsg: close %s: %w", c.local, err)
	}
	return nil
}

// ReadBatch reads datagrams into msgs: at most one recvmmsg, none when datagrams of an earlier
// coalesced read are still to be delivered.
func (c *Conn) ReadBatch(msgs []transport.Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	if c.closed.Load() {
		return 0, fmt.Errorf("mmsg: read %s: %w", c.local, net.ErrClosed)
	}
	r := &c.r
	if r.gro && r.cur < r.got {
		return c.deliver(msgs), nil
	}
	r.want = min(len(msgs), len(r.hdrs))
	for i := 0; i < r.want; i++ {
		if !r.gro {
			b := msgs[i].Buf
			r.iovs[i] = unix.Iovec{}
			if len(b) > 0 {
				r.iovs[i].Base = &b[0]
				r.iovs[i].SetLen(len(b))
			}
		}
		h := &r.hdrs[i]
		h.Len = 0
		h.Hdr.Namelen = unix.SizeofSockaddrInet6
		h.Hdr.SetControllen(oobSize)
		h.Hdr.Flags = 0
	}
	r.n, r.err = 0, nil
	err := c.rc.Read(r.fn)
	if !r.gro {
		clear(r.iovs[:r.want]) // keep no reference to the caller's buffers
	}
	if err == nil {
		err = r.err
	}
	if err != nil {
		return 0, fmt.Errorf("mmsg: read %s: %w", c.local, err)
	}

	s := &c.counters
	for i := 0; i < r.n; i++ {
		h := &r.hdrs[i]
		rx := parseControl(r.oob[i*oobSize : i*oobSize+min(int(h.Hdr.Controllen), oobSize)])
		if rx.hasDrops && uint64(rx.drops) > s.kernelDrops.Load() {
			s.kernelDrops.Store(uint64(rx.drops))
		}
		from := decodeSockaddr(&r.names[i], h.Hdr.Namelen)
		n := int(h.Len)
		if r.gro {
			if h.Hdr.Flags&unix.MSG_TRUNC != 0 && rx.seg > 0 {
				// A coalesced read larger than the slot: deliver the whole segments only.
				whole := n / rx.seg * rx.seg
				s.drops.Add(1)
				n = whole
			}
			r.meta[i] = slotMeta{from: from, local: rx.local, ecn: rx.ecn, seg: rx.seg, n: n}
			if datagramCount(n, rx.seg) > 1 {
				s.coalesced.Add(1)
			}
			continue
		}
		m := &msgs[i]
		m.N = min(n, len(m.Buf))
		m.Addr, m.Local, m.ECN, m.SegmentSize = from, rx.local, rx.ecn, 0
		s.bytesRead.Add(uint64(m.N))
	}
	if r.gro {
		r.cur, r.got, r.nextInCur = 0, r.n, 0
		return c.deliver(msgs), nil
	}
	s.packetsRead.Add(uint64(r.n))
	return r.n, nil
}

// deliver hands datagrams of the received GRO slots to msgs.
func (c *Conn) deliver(msgs []transport.Message) int {
	r := &c.r
	filled := 0
	for r.cur < r.got && filled < len(msgs) {
		m := &r.meta[r.cur]
		k, next := splitDatagrams(r.slots[r.cur][:m.n], m.seg, r.nextInCur, msgs[filled:], m.from, m.local, m.ecn)
		for _, d := range msgs[filled : filled+k] {
			c.counters.bytesRead.Add(uint64(d.N))
		}
		filled += k
		r.nextInCur = next
		if next >= datagramCount(m.n, m.seg) {
			r.cur++
			r.nextInCur = 0
		}
	}
	c.counters.packetsRead.Add(uint64(filled))
	return filled
}

// doRead is the RawConn.Read callback: one non-blocking recvmmsg.
func (c *Conn) doRead(fd uintptr) bool {
	r := &c.r
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])),
			uintptr(r.want), unix.MSG_DONTWAIT, 0, 0)
		c.counters.readCalls.Add(1)
		switch e {
		case 0:
			r.n = int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			r.err = os.NewSyscallError("recvmmsg", e)
			return true
		}
	}
}

// WriteBatch sends msgs, combined with the writes of concurrent callers into few sendmmsg calls.
func (c *Conn) WriteBatch(msgs []transport.Message) (int, error) {
	if c.closed.Load() {
		return 0, fmt.Errorf("mmsg: write %s: %w", c.local, net.ErrClosed)
	}
	return c.comb.Write(msgs)
}

// flush is the combiner's FlushFunc: it sends msgs with as few sendmmsg calls as it can. It
// runs on one goroutine at a time.
func (c *Conn) flush(msgs []transport.Message) (int, error) {
	w := &c.w
	defer func() { // keep no reference to the writers' buffers
		clear(w.bufs)
		clear(w.iovs)
	}()
	p := pos{}
	noGSOBefore := 0
	for p.msg < len(msgs) {
		lim := planLimits{gso: c.gso.Load(), noGSOBefore: noGSOBefore, maxDatagram: c.caps.MaxDatagram}
		np, next, bad := plan(msgs, p, lim, w.pk, w.bufs)
		c.fill(msgs, np)
		replan := false
		for i := 0; i < np && !replan; {
			k, err := c.send(i, np)
			if err != nil { // the socket is closed or broken
				return w.pk[i].start.msg, fmt.Errorf("mmsg: write %s: %w", c.local, err)
			}
			c.account(i, i+k)
			i += k
			if i == np || w.errno == 0 {
				continue
			}
			pk := &w.pk[i]
			switch {
			case w.errno == unix.EIO && pk.seg > 0:
				c.disableGSO(w.errno)
				p, replan = pk.start, true
			case (w.errno == unix.EINVAL || w.errno == unix.EMSGSIZE) && pk.seg > 0:
				// Segment larger than the route allows, or other GSO limits: send these
				// datagrams one by one, which gives each its own result.
				noGSOBefore = pk.end.msg
				if pk.end.off > 0 {
					noGSOBefore++
				}
				p, replan = pk.start, true
			case w.errno == unix.ENOBUFS:
				c.counters.drops.Add(uint64(pk.count))
				i++
			default:
				m := &msgs[pk.start.msg]
				return pk.start.msg, fmt.Errorf("mmsg: write %d bytes to %s: %w", len(m.Buf), m.Addr,
					os.NewSyscallError("sendmmsg", w.errno))
			}
		}
		if replan {
			continue
		}
		p = next
		if bad != nil {
			return p.msg, bad
		}
	}
	return len(msgs), nil
}

// fill turns the first np planned packets into mmsghdrs.
func (c *Conn) fill(msgs []transport.Message, np int) {
	w := &c.w
	for j := 0; j < np; j++ {
		pk := &w.pk[j]
		m := &msgs[pk.start.msg]
		for k := pk.iov0; k < pk.iov1; k++ {
			w.iovs[k] = unix.Iovec{}
			if b := w.bufs[k]; len(b) > 0 {
				w.iovs[k].Base = &b[0]
				w.iovs[k].SetLen(len(b))
			}
		}
		h := &w.hdrs[j]
		h.Len = 0
		h.Hdr = unix.Msghdr{}
		if l := encodeSockaddr(&w.names[j], m.Addr, c.v6); l > 0 {
			h.Hdr.Name = (*byte)(unsafe.Pointer(&w.names[j]))
			h.Hdr.Namelen = l
		}
		h.Hdr.Iov = &w.iovs[pk.iov0]
		h.Hdr.SetIovlen(pk.iov1 - pk.iov0)
		oob := appendControl(w.oob[j*oobSize:j*oobSize:(j+1)*oobSize], m.Addr, m.Local, m.ECN, pk.seg)
		if len(oob) > 0 {
			h.Hdr.Control = &oob[0]
			h.Hdr.SetControllen(len(oob))
		}
	}
}

// send sends hdrs[from:to] with one sendmmsg, waiting through the netpoller while the socket
// buffer is full. It returns the number of packets sent; when fewer than to-from, w.errno is
// the error of the first unsent one. err is set only when the socket is closed or broken.
func (c *Conn) send(from, to int) (int, error) {
	w := &c.w
	w.from, w.to, w.n, w.errno, w.nobufs = from, to, 0, 0, 0
	err := c.rc.Write(w.fn)
	if w.deadline {
		w.deadline = false
		_ = c.udp.SetWriteDeadline(time.Time{})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// ENOBUFS persisted: report it for the current packet, which flush drops.
			w.n, w.errno, err = 0, unix.ENOBUFS, nil
		}
	}
	return w.n, err
}

// doWrite is the RawConn.Write callback: one non-blocking sendmmsg.
func (c *Conn) doWrite(fd uintptr) bool {
	w := &c.w
	for {
		n, e := w.sys(fd, w.hdrs[w.from:w.to])
		c.counters.writeCalls.Add(1)
		switch e {
		case 0:
			w.n, w.errno = n, 0
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case unix.ENOBUFS:
			if w.nobufs < enobufsRetries {
				w.nobufs++
				if !w.deadline {
					w.deadline = true
					_ = c.udp.SetWriteDeadline(time.Now().Add(enobufsWait))
				}
				return false
			}
		}
		w.n, w.errno = 0, e
		return true
	}
}

// sendmmsg sends hdrs (not empty) with one non-blocking system call: sendmmsg for several,
// and for one the cheaper sendto (no control data, one buffer) or sendmsg, which the kernel
// serves with less work than a sendmmsg of one. It returns the number sent; when fewer than
// len(hdrs), the error of the first unsent one.
func sendmmsg(fd uintptr, hdrs []unix.Mmsghdr) (int, syscall.Errno) {
	var e syscall.Errno
	switch h := &hdrs[0].Hdr; {
	case len(hdrs) > 1:
		var n uintptr
		n, _, e = unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)),
			unix.MSG_DONTWAIT, 0, 0)
		if e == 0 {
			return int(n), 0
		}
		return 0, e
	case h.Controllen == 0 && h.Iovlen == 1:
		_, _, e = unix.Syscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(h.Iov.Base)), uintptr(h.Iov.Len),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(h.Name)), uintptr(h.Namelen))
	default:
		_, _, e = unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(h)), unix.MSG_DONTWAIT)
	}
	if e != 0 {
		return 0, e
	}
	return 1, 0
}

// account counts the packets hdrs[from:to] as sent.
func (c *Conn) account(from, to int) {
	s := &c.counters
	for _, pk := range c.w.pk[from:to] {
		s.packetsWritten.Add(uint64(pk.count))
		s.bytesWritten.Add(uint64(pk.size))
	}
}

// disableGSO turns GSO off after a GSO send failed with errno, and logs it once.
func (c *Conn) disableGSO(errno syscall.Errno) {
	e := &GSODisabledError{Local: c.local, Err: os.NewSyscallError("sendmmsg", errno)}
	if c.gsoErr.CompareAndSwap(nil, e) {
		c.gso.Store(false)
		c.log.Warn("mmsg: UDP GSO disabled", "local", c.local.String(), "err", e)
	}
}

// envBool reports whether the environment variable is set to a true value.
func envBool(name string) bool {
	v, err := strconv.ParseBool(os.Getenv(name))
	return err == nil && v
}

// kernelAtLeast reports whether the running kernel's version is at least major.minor.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	ma, mi, ok := parseKernelVersion(unix.ByteSliceToString(u.Release[:]))
	return ok && (ma > major || ma == major && mi >= minor)
}

// parseKernelVersion reads "major.minor" from the front of a kernel release string such as
// "6.18.44-fc-v669".
func parseKernelVersion(release string) (major, minor int, ok bool) {
	ma, rest, found := strings.Cut(release, ".")
	if !found {
		return 0, 0, false
	}
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	var err1, err2 error
	major, err1 = strconv.Atoi(ma)
	minor, err2 = strconv.Atoi(rest[:end])
	return major, minor, err1 == nil && err2 == nil
}
