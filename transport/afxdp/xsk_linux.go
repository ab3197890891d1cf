package afxdp

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ring is one AF_XDP ring mapped from the kernel: fill and completion rings carry UMEM frame
// addresses (addrs), RX and TX rings carry descriptors (descs). Indices run freely and wrap at
// 2^32; the slot of index i is i&mask.
//
// The producer and consumer indices live in shared memory and are read and written atomically
// (Go's atomics order the surrounding plain accesses to the slots, as the kernel's
// acquire/release pairs expect). cachedProd and cachedCons are private copies, so that the shared
// indices are touched once per batch.
type ring struct {
	prod, cons *atomic.Uint32
	flags      *atomic.Uint32
	mask, size uint32
	cachedProd uint32
	cachedCons uint32
	addrs      []uint64
	descs      []unix.XDPDesc
	mem        []byte // the mapping
}

// free returns how many slots, up to n, a producer may fill.
func (r *ring) free(n uint32) uint32 {
	f := r.size - (r.cachedProd - r.cachedCons)
	if f < n {
		r.cachedCons = r.cons.Load()
		f = r.size - (r.cachedProd - r.cachedCons)
	}
	return min(f, n)
}

// submit publishes the slots a producer filled.
func (r *ring) submit() { r.prod.Store(r.cachedProd) }

// available returns how many entries, up to n, a consumer may read.
func (r *ring) available(n uint32) uint32 {
	a := r.cachedProd - r.cachedCons
	if a < n {
		r.cachedProd = r.prod.Load()
		a = r.cachedProd - r.cachedCons
	}
	return min(a, n)
}

// release hands the entries a consumer read back to the producer.
func (r *ring) release() { r.cons.Store(r.cachedCons) }

// needsWakeup reports whether the kernel asked for a system call to process this ring.
func (r *ring) needsWakeup() bool { return r.flags.Load()&unix.XDP_RING_NEED_WAKEUP != 0 }

// xsk is one AF_XDP socket bound to one RX queue, with its own UMEM: RX frames (the first
// rxFrames) circulate through the fill and RX rings; TX frames (the rest) through the free stack,
// the TX ring and the completion ring.
type xsk struct {
	fd        int
	queue     int
	zeroCopy  bool
	umem      []byte
	frameSize uint64
	fill      ring
	comp      ring
	rx        ring
	tx        ring
	// free is the stack of TX frame addresses not in the TX ring, the kernel or the
	// completion ring. Only the writer (the combiner's leader) uses it.
	free []uint64
}

// sockParams are the parameters of one socket.
type sockParams struct {
	ifname    string
	ifindex   int
	queue     int
	rxSize    int
	txSize    int
	frameSize int
	zeroCopy  bool
}

// setupErr builds the *SetupError of a failed step.
func (p *sockParams) setupErr(step string, err error) *SetupError {
	return &SetupError{Interface: p.ifname, Queue: p.queue, Step: step, Kind: classify(err), Err: err}
}

// bindRetry bounds the retries of a bind that fails with EBUSY: the kernel releases a queue a few
// milliseconds after the socket that held it is gone.
const (
	bindRetryFirst = time.Millisecond
	bindRetryMax   = 32 * time.Millisecond
	bindRetryTotal = 2 * time.Second
)

// openXSK creates, maps, fills and binds one AF_XDP socket. On error everything it made is
// undone.
func openXSK(ctx context.Context, p sockParams) (_ *xsk, err error) {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, p.setupErr("create AF_XDP socket", err)
	}
	s := &xsk{fd: fd, queue: p.queue, zeroCopy: p.zeroCopy, frameSize: uint64(p.frameSize)}
	defer func() {
		if err != nil {
			_ = s.close()
		}
	}()
	// In copy mode every frame in flight is an skb charged to the socket's send buffer; the
	// default (~208 KiB, ~85 large frames) makes the kernel answer EAGAIN long before the TX
	// ring is full. Size it for the whole ring (best effort: FORCE needs CAP_NET_ADMIN).
	sndbuf := max(4<<20, 2*p.txSize*p.frameSize)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sndbuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf)
	}
	frames := p.rxSize + p.txSize
	s.umem, err = unix.Mmap(-1, 0, frames*p.frameSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, p.setupErr(fmt.Sprintf("map %d-byte UMEM", frames*p.frameSize), err)
	}
	reg := unix.XDPUmemReg{
		Addr: uint64(uintptr(unsafe.Pointer(&s.umem[0]))),
		Len:  uint64(len(s.umem)),
		Size: uint32(p.frameSize),
	}
	if err := setsockopt(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		e := p.setupErr(fmt.Sprintf("register %d-byte UMEM", len(s.umem)), err)
		if errors.Is(err, unix.ENOBUFS) {
			// Without CAP_IPC_LOCK the UMEM counts against RLIMIT_MEMLOCK.
			e.Kind = ErrPermission
			e.Err = fmt.Errorf("%w: the UMEM exceeds RLIMIT_MEMLOCK (grant CAP_IPC_LOCK, raise the limit, or "+
				"use smaller rings)", err)
		}
		return nil, e
	}
	for _, o := range []struct {
		opt  int
		name string
		size int
	}{
		{unix.XDP_UMEM_FILL_RING, "fill", p.rxSize},
		{unix.XDP_UMEM_COMPLETION_RING, "completion", p.txSize},
		{unix.XDP_RX_RING, "RX", p.rxSize},
		{unix.XDP_TX_RING, "TX", p.txSize},
	} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, o.opt, o.size); err != nil {
			return nil, p.setupErr(fmt.Sprintf("size %s ring to %d", o.name, o.size), err)
		}
	}
	var off unix.XDPMmapOffsets
	offLen := uint32(unsafe.Sizeof(off))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS,
		uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&offLen)), 0); e != 0 {
		return nil, p.setupErr("get ring offsets", e)
	}
	if offLen < uint32(unsafe.Sizeof(off)) {
		return nil, p.setupErr("get ring offsets", fmt.Errorf("kernel without ring flags (Linux 5.4 needed): %w", unix.EOPNOTSUPP))
	}
	for _, m := range []struct {
		r     *ring
		name  string
		off   unix.XDPRingOffset
		pgoff int64
		size  int
		desc  bool
	}{
		{&s.fill, "fill", off.Fr, unix.XDP_UMEM_PGOFF_FILL_RING, p.rxSize, false},
		{&s.comp, "completion", off.Cr, unix.XDP_UMEM_PGOFF_COMPLETION_RING, p.txSize, false},
		{&s.rx, "RX", off.Rx, unix.XDP_PGOFF_RX_RING, p.rxSize, true},
		{&s.tx, "TX", off.Tx, unix.XDP_PGOFF_TX_RING, p.txSize, true},
	} {
		if err := mapRing(fd, m.r, m.off, m.pgoff, m.size, m.desc); err != nil {
			return nil, p.setupErr("map "+m.name+" ring", err)
		}
	}
	// RX frames go to the fill ring; TX frames to the free stack.
	for i := range p.rxSize {
		s.fill.addrs[(s.fill.cachedProd+uint32(i))&s.fill.mask] = uint64(i) * s.frameSize
	}
	s.fill.cachedProd += uint32(p.rxSize)
	s.fill.submit()
	s.free = make([]uint64, 0, p.txSize)
	for i := frames - 1; i >= p.rxSize; i-- {
		s.free = append(s.free, uint64(i)*s.frameSize)
	}
	// Let one wake-up send the whole TX ring where the kernel allows it (Linux 6.17+); the
	// default budget (32 frames per system call) applies elsewhere.
	_ = unix.SetsockoptInt(fd, unix.SOL_XDP, unix.XDP_MAX_TX_SKB_BUDGET, p.txSize)

	flags := uint16(unix.XDP_USE_NEED_WAKEUP)
	if p.zeroCopy {
		flags |= unix.XDP_ZEROCOPY
	} else {
		flags |= unix.XDP_COPY
	}
	sa := &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(p.ifindex), QueueID: uint32(p.queue)}
	wait := bindRetryFirst
	deadline := time.Now().Add(bindRetryTotal)
	for {
		err := unix.Bind(fd, sa)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			mode := "copy"
			if p.zeroCopy {
				mode = "zero-copy"
			}
			return nil, p.setupErr(fmt.Sprintf("bind (%s mode)", mode), err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, p.setupErr("bind", fmt.Errorf("queue busy until the context ended: %w", ctx.Err()))
		case <-t.C:
		}
		wait = min(2*wait, bindRetryMax)
	}
	return s, nil
}

// setsockopt sets a SOL_XDP option from a struct.
func setsockopt(fd, opt int, p unsafe.Pointer, size uintptr) error {
	if _, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt),
		uintptr(p), size, 0); e != 0 {
		return e
	}
	return nil
}

// mapRing maps one ring of fd and points r at it.
func mapRing(fd int, r *ring, off unix.XDPRingOffset, pgoff int64, size int, desc bool) error {
	entry := uint64(unsafe.Sizeof(uint64(0)))
	if desc {
		entry = uint64(unsafe.Sizeof(unix.XDPDesc{}))
	}
	mem, err := unix.Mmap(fd, pgoff, int(off.Desc+uint64(size)*entry), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return err
	}
	r.mem = mem
	r.prod = (*atomic.Uint32)(unsafe.Pointer(&mem[off.Producer]))
	r.cons = (*atomic.Uint32)(unsafe.Pointer(&mem[off.Consumer]))
	r.flags = (*atomic.Uint32)(unsafe.Pointer(&mem[off.Flags]))
	r.size, r.mask = uint32(size), uint32(size-1)
	if desc {
		r.descs = unsafe.Slice((*unix.XDPDesc)(unsafe.Pointer(&mem[off.Desc])), size)
	} else {
		r.addrs = unsafe.Slice((*uint64)(unsafe.Pointer(&mem[off.Desc])), size)
	}
	// Start from the kernel's indices (0 on a fresh socket).
	r.cachedProd, r.cachedCons = r.prod.Load(), r.cons.Load()
	return nil
}

// reap moves completed TX frames back to the free stack and returns how many there were.
func (s *xsk) reap() int {
	n := s.comp.available(s.comp.size)
	for range n {
		s.free = append(s.free, s.comp.addrs[s.comp.cachedCons&s.comp.mask]&^(s.frameSize-1))
		s.comp.cachedCons++
	}
	if n > 0 {
		s.comp.release()
	}
	return int(n)
}

// kick asks the kernel to send what the TX ring holds, when it wants to be asked (always in copy
// mode). In copy mode the kernel sends a bounded number of frames per call and answers EAGAIN
// when more are left; kick repeats until the ring is empty or the kernel stops making progress.
// It returns the number of system calls made.
func (s *xsk) kick() int {
	calls := 0
	for range maxKicks {
		if !s.tx.needsWakeup() {
			return calls
		}
		before := s.tx.cons.Load()
		if before == s.tx.cachedProd {
			return calls
		}
		_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		calls++
		switch e {
		case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS:
		default:
			// ENETDOWN and the like: the frames stay queued for a later kick.
			return calls
		}
		if s.tx.cons.Load() == before {
			return calls
		}
	}
	return calls
}

// maxKicks bounds the system calls of one kick: enough for a full ring at the kernel's default
// budget of 32 frames per call.
const maxKicks = MaxRingSize/32 + 1

// wakeFill tells the kernel that the fill ring has frames again, when it asked to be told (zero
// copy mode; never in copy mode).
func (s *xsk) wakeFill() {
	if s.fill.needsWakeup() {
		_, _, _ = unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	}
}

// statistics returns the kernel's counters for the socket.
func (s *xsk) statistics() (unix.XDPStatistics, error) {
	var st unix.XDPStatistics
	n := uint32(unsafe.Sizeof(st))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(s.fd), unix.SOL_XDP, unix.XDP_STATISTICS,
		uintptr(unsafe.Pointer(&st)), uintptr(unsafe.Pointer(&n)), 0); e != 0 {
		return st, e
	}
	return st, nil
}

// close closes the socket and unmaps its rings and UMEM. The kernel frees the socket only once
// both are done; it is safe on a partly set up socket.
func (s *xsk) close() error {
	var errs []error
	if s.fd >= 0 {
		if err := unix.Close(s.fd); err != nil {
			errs = append(errs, fmt.Errorf("close socket: %w", err))
		}
		s.fd = -1
	}
	for _, r := range []*ring{&s.fill, &s.comp, &s.rx, &s.tx} {
		if r.mem != nil {
			if err := unix.Munmap(r.mem); err != nil {
				errs = append(errs, fmt.Errorf("unmap ring: %w", err))
			}
			*r = ring{}
		}
	}
	if s.umem != nil {
		if err := unix.Munmap(s.umem); err != nil {
			errs = append(errs, fmt.Errorf("unmap UMEM: %w", err))
		}
		s.umem = nil
	}
	return errors.Join(errs...)
}

// classify maps a system error to the package's sentinel for it, or nil.
func classify(err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return ErrPermission
	case errors.Is(err, unix.ENODEV):
		return ErrInterfaceNotFound
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EAFNOSUPPORT),
		errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, ebpf.ErrNotSupported):
		return ErrUnsupported
	}
	return nil
}
