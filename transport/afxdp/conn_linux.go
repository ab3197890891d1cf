package afxdp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/bpf"
	"github.com/naquid/naquid/internal/batch"
	"github.com/naquid/naquid/transport"
)

// Compile-time checks of the interfaces a *Conn implements.
var (
	_ transport.Conn          = (*Conn)(nil)
	_ transport.ControlSocket = (*Conn)(nil)
	_ transport.Stats         = (*Conn)(nil)
)

// Tuning of the data path.
const (
	// batchSize is Capabilities.BatchSize: what one ring operation moves at most.
	batchSize = 64
	// kickEvery is how many frames WriteBatch queues before it asks the kernel to send them.
	kickEvery = 64
	// shadowEvery makes ReadBatch look at the shadow socket at least every shadowEvery calls
	// even while the rings keep it busy, so that datagrams the kernel passes are not starved.
	shadowEvery = 16
	// txWaitMax bounds how long WriteBatch waits for a TX frame to be freed before it drops
	// the datagrams of the write it cannot place (counted in Drops).
	txWaitMax = 10 * time.Millisecond
	// shadowBuffer is the shadow socket's receive and send buffer size.
	shadowBuffer = 4 << 20
)

// Conn is an AF_XDP transport.Conn on one interface. ReadBatch has one caller at a time; every
// other method is safe for concurrent use.
type Conn struct {
	ifname  string
	ifindex int
	mac     [6]byte
	local   netip.AddrPort
	port    uint16
	accept4 bool // serves IPv4
	accept6 bool // serves IPv6
	caps    transport.Capabilities
	info    Info
	epoch   time.Time

	prog      *bpf.Program
	socks     []*xsk
	tx        *xsk // the socket WriteBatch sends through
	waitFile  *os.File
	waitRaw   syscall.RawConn
	shadow    *net.UDPConn
	shadowRaw syscall.RawConn
	nl        *netlink
	comb      *batch.Combiner
	macs      macTable

	// life is held shared by every operation that touches the rings and exclusively by Close
	// while it tears them down.
	life   sync.RWMutex
	closed atomic.Bool

	rd reader // owned by the single reader
	wr writer // owned by the combiner's leader

	packetsRead, packetsWritten atomic.Uint64
	bytesRead, bytesWritten     atomic.Uint64
	readCalls, writeCalls       atomic.Uint64
	drops                       atomic.Uint64
	ringFull                    atomic.Uint64
	dropsBy                     [numDropReasons]atomic.Uint64
	shadowReads, shadowWrites   atomic.Uint64
	final                       unix.XDPStatistics // kernel counters at Close
}

// New opens an AF_XDP Conn on cfg.Interface for the UDP address local (port 0 picks a free port):
// it binds the shadow socket to local, loads and attaches the XDP program for that port, and
// binds an AF_XDP socket to every configured RX queue. local may be an address of the interface,
// 0.0.0.0 (IPv4 only) or [::] (IPv4 and IPv6). ctx bounds the setup only.
//
// New resolves the interface in the calling thread's network namespace. Errors match
// ErrInvalidAddress for an invalid local address; they are *ConfigError for a bad cfg, and
// otherwise *SetupError values naming the interface, queue and step, matching
// ErrInterfaceNotFound, ErrPermission, ErrQueueRange, ErrInterfaceBusy or ErrUnsupported where
// that is the cause.
func New(ctx context.Context, local netip.AddrPort, cfg Config) (_ *Conn, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if !local.IsValid() {
		return nil, fmt.Errorf("afxdp: listen %v: %w", local, ErrInvalidAddress)
	}
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	fail := func(queue int, step string, err error) *SetupError {
		return &SetupError{Interface: cfg.Interface, Queue: queue, Step: step, Kind: classify(err), Err: err}
	}
	if err := ctx.Err(); err != nil {
		return nil, fail(-1, "start", err)
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		e := fail(-1, "look up interface", err)
		e.Kind = ErrInterfaceNotFound
		return nil, e
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, &SetupError{Interface: cfg.Interface, Queue: -1, Step: "check link type", Kind: ErrUnsupported,
			Err: errors.New("not an Ethernet interface (no 6-byte hardware address)")}
	}
	nq, err := rxQueueCount(cfg.Interface)
	if err != nil {
		return nil, fail(-1, "count RX queues", err)
	}
	queues := cfg.Queues
	if len(queues) == 0 {
		queues = make([]int, nq)
		for i := range queues {
			queues[i] = i
		}
	}
	maxQueue := 0
	for _, q := range queues {
		if q >= nq {
			return nil, &SetupError{Interface: cfg.Interface, Queue: q, Step: "check queue", Kind: ErrQueueRange,
				Err: fmt.Errorf("the interface has %d RX queues (0 to %d)", nq, nq-1)}
		}
		maxQueue = max(maxQueue, q)
	}

	var accept4, accept6 bool
	switch a := local.Addr(); {
	case a.Is4():
		accept4 = true
	case a.IsUnspecified():
		accept4, accept6 = true, true
	default:
		accept6 = true
	}
	// The largest datagram fits the MTU and, with its headers, a frame after the kernel's
	// headroom. A dual-stack Conn assumes the larger IPv6 header.
	ipHeader := ipv6Len
	if !accept6 {
		ipHeader = ipv4MinLen
	}
	maxDatagram := min(ifi.MTU-ipHeader-udpLen, cfg.FrameSize-unix.XDP_PACKET_HEADROOM-ethLen-ipHeader-udpLen)
	if maxDatagram < 1 {
		return nil, fail(-1, "check MTU", fmt.Errorf("MTU %d leaves no room for a datagram", ifi.MTU))
	}

	c := &Conn{
		accept4: accept4,
		accept6: accept6,
		caps: transport.Capabilities{
			MaxDatagram: maxDatagram,
			ECN:         true,
			LocalAddr:   true,
			BatchSize:   batchSize,
		},
		ifname:  cfg.Interface,
		ifindex: ifi.Index,
		mac:     [6]byte(ifi.HardwareAddr),
		epoch:   time.Now(),
		info:    Info{Interface: cfg.Interface, Ifindex: ifi.Index, Queues: queues, MTU: ifi.MTU},
	}
	c.macs.m = make(map[netip.Addr][6]byte)
	defer func() {
		if err != nil {
			_ = c.teardown()
		}
	}()

	if err := c.listenShadow(ctx, local); err != nil {
		return nil, fail(-1, "bind shadow UDP socket to "+local.String(), err)
	}
	if c.nl, err = openNetlink(); err != nil {
		return nil, fail(-1, "open netlink socket", err)
	}

	c.prog, err = bpf.Load(bpf.Config{Ports: []uint16{c.port}, QueueCount: maxQueue + 1})
	if err != nil {
		return nil, fail(-1, "load XDP program", err)
	}
	attached, err := c.prog.Attach(ifi.Index, cfg.Attach)
	if err != nil {
		e := fail(-1, fmt.Sprintf("attach XDP program (%v mode)", cfg.Attach), err)
		switch {
		case e.Kind != nil:
		case errors.Is(err, unix.EBUSY):
			e.Kind = ErrInterfaceBusy
		case errors.Is(err, unix.ERANGE):
			// Native XDP refuses MTUs whose frames do not fit a page (veth with MTU 9000).
			e.Kind = ErrUnsupported
		}
		return nil, e
	}
	c.info.Attach = AttachDriver
	if attached == bpf.AttachGeneric {
		c.info.Attach = AttachGeneric
	}

	zeroCopy := cfg.Mode == ModeZeroCopy
	for i, q := range queues {
		p := sockParams{ifname: cfg.Interface, ifindex: ifi.Index, queue: q, rxSize: cfg.RXRingSize,
			txSize: cfg.TXRingSize, frameSize: cfg.FrameSize, zeroCopy: zeroCopy}
		if i == 0 && cfg.Mode == ModeAuto && c.info.Attach == AttachDriver {
			// Try zero-copy on the first socket; the others follow its outcome.
			p.zeroCopy = true
			s, err := openXSK(ctx, p)
			if err == nil {
				c.socks = append(c.socks, s)
				zeroCopy = true
				continue
			}
			if !errors.Is(err, ErrUnsupported) && !errors.Is(err, unix.EINVAL) {
				return nil, err
			}
			p.zeroCopy = false
		}
		s, err := openXSK(ctx, p)
		if err != nil {
			return nil, err
		}
		c.socks = append(c.socks, s)
	}
	c.info.ZeroCopy = zeroCopy
	for _, s := range c.socks {
		if err := c.prog.SetSocket(s.queue, s.fd); err != nil {
			return nil, fail(s.queue, "register socket with the XDP program", err)
		}
	}
	c.tx = c.socks[0]
	if err := c.setupWait(); err != nil {
		return nil, fail(-1, "set up waiting", err)
	}

	c.rd.init(c)
	c.wr.res = resolver{nl: c.nl, ifindex: c.ifindex, bound: c.local.Addr(), macs: &c.macs,
		hops: make(map[netip.Addr]*nextHop)}
	if c.comb, err = batch.New(c.flush, batch.Config{MaxMessages: batchSize}); err != nil {
		return nil, fail(-1, "set up write combiner", err)
	}
	return c, nil
}

// listenShadow binds the shadow socket and records the local address and port.
func (c *Conn) listenShadow(ctx context.Context, local netip.AddrPort) error {
	network := "udp4"
	switch a := local.Addr(); {
	case a.Is4():
	case a.IsUnspecified():
		network = "udp" // a dual-stack socket
	default:
		network = "udp6"
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = setupShadow(int(fd), c.accept6) })
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(ctx, network, local.String())
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Err != nil {
			err = opErr.Err
		}
		return err
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		_ = pc.Close()
		return fmt.Errorf("got a %T, want a *net.UDPConn", pc)
	}
	c.shadow = uc
	if c.shadowRaw, err = uc.SyscallConn(); err != nil {
		return err
	}
	bound := uc.LocalAddr().(*net.UDPAddr).AddrPort()
	c.local = netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port())
	c.port = bound.Port()
	return nil
}

// setupShadow sets the shadow socket's options before bind: buffers, and the control messages
// that report ECN and the local address of what it receives.
func setupShadow(fd int, v6 bool) error {
	for _, b := range []struct{ force, plain int }{
		{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF},
	} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.force, shadowBuffer) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.plain, shadowBuffer)
		}
	}
	opts := [][2]int{{unix.IPPROTO_IP, unix.IP_RECVTOS}, {unix.IPPROTO_IP, unix.IP_PKTINFO}}
	if v6 {
		opts = append(opts, [2]int{unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS}, [2]int{unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO})
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o[0], o[1], 1); err != nil {
			return fmt.Errorf("set option %d/%d: %w", o[0], o[1], err)
		}
	}
	return nil
}

// setupWait puts the AF_XDP sockets and the shadow socket in one non-blocking epoll instance and
// hands it to the Go runtime's poller, so that a reader waits on all of them by parking.
func (c *Conn) setupWait() error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return fmt.Errorf("set epoll non-blocking: %w", err)
	}
	add := func(fd int) error {
		return unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)})
	}
	for _, s := range c.socks {
		if err := add(s.fd); err != nil {
			unix.Close(epfd)
			return fmt.Errorf("epoll add queue %d socket: %w", s.queue, err)
		}
	}
	var aerr error
	if err := c.shadowRaw.Control(func(fd uintptr) { aerr = add(int(fd)) }); err != nil || aerr != nil {
		unix.Close(epfd)
		return fmt.Errorf("epoll add shadow socket: %w", errors.Join(err, aerr))
	}
	// The fd is non-blocking, so os.NewFile registers it with the runtime poller. Only files the
	// poller took accept deadlines: that is the check that waiting will park, not fail.
	c.waitFile = os.NewFile(uintptr(epfd), "afxdp-wait")
	if err := c.waitFile.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("the Go runtime cannot poll an epoll descriptor: %w: %w", err, ErrUnsupported)
	}
	if c.waitRaw, err = c.waitFile.SyscallConn(); err != nil {
		return err
	}
	return nil
}

// LocalAddr returns the bound address (with the port chosen when bound to port 0).
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// Capabilities reports MaxDatagram (bounded by the MTU and the frame size), ECN and LocalAddr
// support, no GSO (segments are split in software) and a batch size of 64.
func (c *Conn) Capabilities() transport.Capabilities { return c.caps }

// Info describes the interface, queues and modes in use.
func (c *Conn) Info() Info {
	i := c.info
	i.Queues = append([]int(nil), i.Queues...)
	return i
}

// SyscallConn returns the shadow socket's raw connection, on which socket options may be set and
// probed. Options set on it affect only datagrams that travel through the kernel.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if c.closed.Load() {
		return nil, c.errClosed("syscall conn")
	}
	return c.shadowRaw, nil
}

// SetReadDeadline sets the deadline for ReadBatch; a deadline in the past wakes a blocked reader,
// which fails with an error matching os.ErrDeadlineExceeded. The zero time means none.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.errClosed("set read deadline")
	}
	if err := c.waitFile.SetReadDeadline(t); err != nil {
		if c.closed.Load() {
			return c.errClosed("set read deadline")
		}
		return fmt.Errorf("afxdp: %s: set read deadline: %w", c.local, err)
	}
	return nil
}

func (c *Conn) errClosed(op string) error {
	return fmt.Errorf("afxdp: %s: %s: %w", c.local, op, net.ErrClosed)
}

// ReadBatch waits until at least one datagram has arrived, on any queue or on the shadow socket,
// then fills msgs with up to len(msgs) of them (Buf, N, Addr, Local, ECN). A datagram longer than
// its Buf is truncated. Malformed frames are dropped and counted in Stats().Drops. It fails only
// for the read deadline (os.ErrDeadlineExceeded) or Close (net.ErrClosed).
func (c *Conn) ReadBatch(msgs []transport.Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	c.life.RLock()
	defer c.life.RUnlock()
	if c.closed.Load() {
		return 0, c.errClosed("read")
	}
	c.readCalls.Add(1)
	r := &c.rd
	r.msgs, r.n = msgs, 0
	err := c.waitRaw.Read(r.readFn)
	n := r.n
	r.msgs = nil
	if err != nil {
		if c.closed.Load() {
			return 0, c.errClosed("read")
		}
		return 0, fmt.Errorf("afxdp: %s: read: %w", c.local, err)
	}
	return n, nil
}

// WriteBatch sends msgs in order and returns how many were sent. Writes of concurrent callers
// are combined into shared ring operations. A datagram (or segment) larger than MaxDatagram
// fails with an error matching syscall.EMSGSIZE; a destination the Conn cannot serve fails with
// ErrInvalidAddress; n then counts the messages sent before the failing one. When the TX ring
// stays full (the device does not keep up) datagrams are dropped and counted in Stats().Drops.
// After Close it fails with net.ErrClosed.
func (c *Conn) WriteBatch(msgs []transport.Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	c.life.RLock()
	defer c.life.RUnlock()
	if c.closed.Load() {
		return 0, c.errClosed("write")
	}
	return c.comb.Write(msgs)
}

// Close detaches the XDP program, closes the sockets, unmaps every ring and UMEM and wakes a
// blocked reader. Later calls fail with net.ErrClosed, a second Close included.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return c.errClosed("close")
	}
	// Closing the wait file wakes the reader; then wait for every operation to leave the rings.
	werr := c.waitFile.Close()
	c.life.Lock()
	defer c.life.Unlock()
	for _, s := range c.socks {
		if st, err := s.statistics(); err == nil {
			addStatistics(&c.final, st)
		}
	}
	err := errors.Join(werr, c.teardown())
	if err != nil {
		return fmt.Errorf("afxdp: %s: close: %w", c.local, err)
	}
	return nil
}

// teardown releases everything New set up, in reverse order. It is also New's cleanup after a
// failed step, so every field may be unset.
func (c *Conn) teardown() error {
	var errs []error
	if c.waitFile != nil && !c.closed.Load() {
		// New failed after setupWait (Close closes the file itself, first).
		errs = append(errs, c.waitFile.Close())
	}
	if c.prog != nil {
		// Detaches the program and drops the XSKMAP's references to the sockets.
		errs = append(errs, c.prog.Close())
		c.prog = nil
	}
	for _, s := range c.socks {
		if err := s.close(); err != nil {
			errs = append(errs, fmt.Errorf("queue %d: %w", s.queue, err))
		}
	}
	c.socks, c.tx = nil, nil
	if c.nl != nil {
		errs = append(errs, c.nl.close())
		c.nl = nil
	}
	if c.shadow != nil {
		errs = append(errs, c.shadow.Close())
		c.shadow = nil
	}
	return errors.Join(errs...)
}

// Stats returns the counts since New. KernelDrops adds the kernel's AF_XDP drops (no fill frame,
// full RX ring); RingFull counts full TX rings and the kernel's full-RX-ring events; RingEmpty
// counts the times the kernel found a fill ring empty. ReadCalls counts ReadBatch calls,
// WriteCalls the system calls that made the kernel send.
func (c *Conn) Stats() transport.Counters {
	k, _ := c.KernelStats()
	return transport.Counters{
		PacketsRead:    c.packetsRead.Load(),
		PacketsWritten: c.packetsWritten.Load(),
		BytesRead:      c.bytesRead.Load(),
		BytesWritten:   c.bytesWritten.Load(),
		ReadCalls:      c.readCalls.Load(),
		WriteCalls:     c.writeCalls.Load(),
		Drops:          c.drops.Load(),
		KernelDrops:    k.RXDropped + k.RXRingFull,
		RingFull:       c.ringFull.Load() + k.RXRingFull,
		RingEmpty:      k.RXFillRingEmpty,
	}
}

// KernelStats returns the kernel's counters, summed over the sockets (frozen at Close).
func (c *Conn) KernelStats() (KernelStats, error) {
	c.life.RLock()
	defer c.life.RUnlock()
	sum := c.final
	var errs []error
	if !c.closed.Load() {
		for _, s := range c.socks {
			st, err := s.statistics()
			if err != nil {
				errs = append(errs, fmt.Errorf("afxdp: %s queue %d: statistics: %w", c.ifname, s.queue, err))
				continue
			}
			addStatistics(&sum, st)
		}
	}
	return KernelStats{
		RXDropped:       sum.Rx_dropped,
		RXInvalidDescs:  sum.Rx_invalid_descs,
		TXInvalidDescs:  sum.Tx_invalid_descs,
		RXRingFull:      sum.Rx_ring_full,
		RXFillRingEmpty: sum.Rx_fill_ring_empty_descs,
		TXRingEmpty:     sum.Tx_ring_empty_descs,
	}, errors.Join(errs...)
}

func addStatistics(sum *unix.XDPStatistics, st unix.XDPStatistics) {
	sum.Rx_dropped += st.Rx_dropped
	sum.Rx_invalid_descs += st.Rx_invalid_descs
	sum.Tx_invalid_descs += st.Tx_invalid_descs
	sum.Rx_ring_full += st.Rx_ring_full
	sum.Rx_fill_ring_empty_descs += st.Rx_fill_ring_empty_descs
	sum.Tx_ring_empty_descs += st.Tx_ring_empty_descs
}

// ProgramCounters returns the XDP program's per-reason frame counts (what it redirected and why
// it passed the rest to the kernel).
func (c *Conn) ProgramCounters() (bpf.Counters, error) {
	c.life.RLock()
	defer c.life.RUnlock()
	if c.closed.Load() {
		return bpf.Counters{}, c.errClosed("program counters")
	}
	return c.prog.Counters()
}

// now returns the monotonic time since New in nanoseconds.
func (c *Conn) now() int64 { return int64(time.Since(c.epoch)) }

// serves reports whether the Conn answers datagrams sent to dst (which has no zone).
func (c *Conn) serves(dst netip.Addr) bool {
	if b := c.local.Addr(); !b.IsUnspecified() {
		return dst == b.WithZone("")
	}
	if dst.Is4() {
		return c.accept4
	}
	return c.accept6
}

// reader is the state of the single reader.
type reader struct {
	readFn   func(fd uintptr) bool // the callback of the netpoller wait, made once
	msgs     []transport.Message
	n        int
	next     int    // the socket to read first, rotating
	calls    uint64 // callback invocations
	dg       datagram
	lastIP   netip.Addr // the last source whose Ethernet address was learned
	lastMAC  [6]byte
	seen     map[netip.Addr][6]byte // what this reader told macs
	shadow   shadowReader
	shadowFn func(fd uintptr)
}

func (r *reader) init(c *Conn) {
	r.seen = make(map[netip.Addr][6]byte)
	r.readFn = func(uintptr) bool {
		r.n = c.receive(r.msgs)
		return r.n > 0
	}
	r.shadowFn = func(fd uintptr) { r.shadow.recv(int(fd)) }
}

// receive fills msgs from the RX rings and the shadow socket without waiting and returns how many
// it filled.
func (c *Conn) receive(msgs []transport.Message) int {
	r := &c.rd
	r.calls++
	n := 0
	shadowDone := false
	if r.calls%shadowEvery == 0 {
		n = c.readShadow(msgs)
		shadowDone = true
	}
	k := len(c.socks)
	for i := 0; i < k && n < len(msgs); i++ {
		n += c.readRing(c.socks[(r.next+i)%k], msgs[n:])
	}
	r.next++
	if n == 0 && !shadowDone {
		n = c.readShadow(msgs)
	}
	return n
}

// readRing moves datagrams from s's RX ring into msgs, returns their frames to the fill ring,
// and returns how many datagrams it delivered.
func (c *Conn) readRing(s *xsk, msgs []transport.Message) int {
	r := &c.rd
	n, bytes, drops := 0, 0, 0
	for n < len(msgs) {
		avail := s.rx.available(uint32(len(msgs) - n))
		if avail == 0 {
			break
		}
		for range avail {
			desc := s.rx.descs[s.rx.cachedCons&s.rx.mask]
			s.rx.cachedCons++
			reason := dropShort
			if end := desc.Addr + uint64(desc.Len); end <= uint64(len(s.umem)) && desc.Addr < end {
				reason = parseFrame(s.umem[desc.Addr:end], c.port, &r.dg)
			}
			if reason == frameOK && !c.serves(r.dg.dst.Addr()) {
				reason = dropBadAddress
			}
			if reason == frameOK {
				m := &msgs[n]
				m.N = copy(m.Buf, r.dg.payload)
				m.Addr = r.dg.src
				m.Local = r.dg.dst.Addr()
				m.ECN = r.dg.ecn
				m.SegmentSize = 0
				if a := m.Addr.Addr(); a.Is6() && a.IsLinkLocalUnicast() {
					m.Addr = netip.AddrPortFrom(a.WithZone(c.ifname), m.Addr.Port())
				}
				n++
				bytes += len(r.dg.payload)
				c.learn(r.dg.src.Addr(), r.dg.srcMAC)
			} else {
				drops++
				c.dropsBy[reason].Add(1)
			}
			// The payload was copied: the frame goes straight back to the fill ring, which
			// always has room for every RX frame.
			s.fill.addrs[s.fill.cachedProd&s.fill.mask] = desc.Addr &^ (s.frameSize - 1)
			s.fill.cachedProd++
		}
		s.rx.release()
		s.fill.submit()
	}
	if n+drops > 0 {
		s.wakeFill()
		c.packetsRead.Add(uint64(n))
		c.bytesRead.Add(uint64(bytes))
		if drops > 0 {
			c.drops.Add(uint64(drops))
		}
	}
	return n
}

// learn records that datagrams from ip arrive from Ethernet address mac, so that answers go
// straight back. It touches the shared table only when something changed.
func (c *Conn) learn(ip netip.Addr, mac [6]byte) {
	r := &c.rd
	if ip == r.lastIP && mac == r.lastMAC {
		return
	}
	r.lastIP, r.lastMAC = ip, mac
	if old, ok := r.seen[ip]; ok && old == mac {
		return
	}
	if len(r.seen) >= maxLearned {
		clear(r.seen)
	}
	r.seen[ip] = mac
	c.macs.learn(ip, mac)
}

// readShadow reads what the shadow socket holds into msgs without waiting.
func (c *Conn) readShadow(msgs []transport.Message) int {
	sh := &c.rd.shadow
	sh.prepare(msgs)
	if err := c.shadowRaw.Control(c.rd.shadowFn); err != nil {
		return 0
	}
	n := sh.finish(msgs)
	if n > 0 {
		bytes := 0
		for i := range n {
			bytes += msgs[i].N
		}
		c.packetsRead.Add(uint64(n))
		c.bytesRead.Add(uint64(bytes))
		c.shadowReads.Add(uint64(n))
	}
	return n
}

// writer is the state of the combiner's leader, which calls flush.
type writer struct {
	res resolver
	oob []byte
}

// flush sends msgs (the batch.FlushFunc): datagrams to destinations with a known Ethernet
// address go into the TX ring, the others through the shadow socket.
func (c *Conn) flush(msgs []transport.Message) (int, error) {
	if c.closed.Load() {
		return 0, c.errClosed("write")
	}
	s := c.tx
	s.reap()
	now := c.now()
	t := txBatch{c: c, s: s}
	for i := range msgs {
		m := &msgs[i]
		dst := netip.AddrPortFrom(m.Addr.Addr().Unmap(), m.Addr.Port())
		local := m.Local.Unmap()
		switch {
		case !dst.IsValid() || dst.Port() == 0 || dst.Addr().IsUnspecified():
			t.finish()
			return i, fmt.Errorf("afxdp: %s: write to %v: %w", c.local, m.Addr, ErrInvalidAddress)
		case dst.Addr().Is4() && !c.accept4, !dst.Addr().Is4() && !c.accept6:
			t.finish()
			return i, fmt.Errorf("afxdp: %s: write to %v: wrong address family: %w", c.local, m.Addr, ErrInvalidAddress)
		case local.IsValid() && local.Is4() != dst.Addr().Is4():
			t.finish()
			return i, fmt.Errorf("afxdp: %s: write to %v from %v: %w", c.local, dst, local, ErrInvalidAddress)
		}
		seg := m.SegmentSize
		if seg <= 0 || seg >= len(m.Buf) {
			seg = len(m.Buf)
		}
		if seg > c.caps.MaxDatagram {
			t.finish()
			return i, fmt.Errorf("afxdp: %s: write %d-byte datagram to %s (MaxDatagram %d): %w", c.local, seg, dst,
				c.caps.MaxDatagram, syscall.EMSGSIZE)
		}
		hop := c.wr.res.lookup(dst.Addr(), now)
		if !local.IsValid() {
			local = hop.src
		}
		if hop.shadow || !local.IsValid() {
			t.finish() // earlier frames leave first
			if err := c.sendShadow(m.Buf, seg, dst, local, m.ECN); err != nil {
				return i, err
			}
			continue
		}
		h := frameHeader{dstMAC: hop.mac, srcMAC: c.mac, src: netip.AddrPortFrom(local, c.port), dst: dst, ecn: m.ECN}
		for off := 0; ; {
			end := min(off+seg, len(m.Buf))
			t.add(&h, m.Buf[off:end])
			if off = end; off >= len(m.Buf) {
				break
			}
		}
	}
	t.finish()
	return len(msgs), nil
}

// txBatch queues frames on one socket's TX ring during a flush.
type txBatch struct {
	c                     *Conn
	s                     *xsk
	queued                int  // frames in the ring not yet handed to the kernel
	starved               bool // no TX frame was freed in time: drop the rest of this flush
	packets, bytes, drops uint64
}

// add queues one datagram, or drops it when no TX frame can be had.
func (t *txBatch) add(h *frameHeader, payload []byte) {
	s := t.s
	if t.starved || !t.frameReady() {
		t.starved = true
		t.drops++
		return
	}
	addr := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	n := buildFrame(s.umem[addr:addr+s.frameSize], h, payload)
	s.tx.descs[s.tx.cachedProd&s.tx.mask] = unix.XDPDesc{Addr: addr, Len: uint32(n)}
	s.tx.cachedProd++
	t.queued++
	t.packets++
	t.bytes += uint64(len(payload))
	if t.queued >= kickEvery {
		t.send()
	}
}

// frameReady makes sure a free TX frame and a TX ring slot are available, waiting (bounded by
// txWaitMax) for the kernel to complete earlier frames.
func (t *txBatch) frameReady() bool {
	s := t.s
	if len(s.free) > 0 && s.tx.free(1) > 0 {
		return true
	}
	t.c.ringFull.Add(1)
	start := time.Now()
	for i := 0; ; i++ {
		t.send()
		s.reap()
		if len(s.free) > 0 && s.tx.free(1) > 0 {
			return true
		}
		if t.c.closed.Load() || time.Since(start) > txWaitMax {
			return false
		}
		if i < 16 {
			runtime.Gosched()
		} else {
			time.Sleep(50 * time.Microsecond)
		}
	}
}

// send hands the queued frames to the kernel.
func (t *txBatch) send() {
	t.s.tx.submit()
	t.queued = 0
	if calls := t.s.kick(); calls > 0 {
		t.c.writeCalls.Add(uint64(calls))
	}
}

// finish sends what is queued and updates the counters.
func (t *txBatch) finish() {
	if t.queued > 0 {
		t.send()
	}
	c := t.c
	if t.packets > 0 {
		c.packetsWritten.Add(t.packets)
		c.bytesWritten.Add(t.bytes)
		t.packets, t.bytes = 0, 0
	}
	if t.drops > 0 {
		c.drops.Add(t.drops)
		t.drops = 0
	}
}

// sendShadow sends buf (split into datagrams of seg bytes) to dst through the shadow socket.
// Datagrams the kernel has no buffer for (ENOBUFS) are dropped and counted.
func (c *Conn) sendShadow(buf []byte, seg int, dst netip.AddrPort, local netip.Addr, ecn transport.ECN) error {
	c.wr.oob = appendSendControl(c.wr.oob[:0], dst.Addr().Is4(), ecn, local)
	for off := 0; ; {
		end := min(off+seg, len(buf))
		_, _, err := c.shadow.WriteMsgUDPAddrPort(buf[off:end], c.wr.oob, dst)
		c.writeCalls.Add(1)
		switch {
		case err == nil:
			c.packetsWritten.Add(1)
			c.bytesWritten.Add(uint64(end - off))
			c.shadowWrites.Add(1)
		case errors.Is(err, syscall.ENOBUFS):
			c.drops.Add(1)
		default:
			return fmt.Errorf("afxdp: %s: write %d bytes to %s through the kernel: %w", c.local, end-off, dst, err)
		}
		if off = end; off >= len(buf) {
			return nil
		}
	}
}
