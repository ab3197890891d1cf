package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// bareBufferSize is the bare receiver's SO_RCVBUF, the size the udp and mmsg backends ask for.
const bareBufferSize = 4 << 20

// bareReceiver is the reference for the kernel receivers: a plain UDP socket read with
// recvmmsg, batchSize datagrams a call, through the Go netpoller, and nothing else (no control
// messages, no addresses kept, no per-datagram work besides counting). No receiver built on
// recvmmsg can do less per datagram in Go, so its rate bounds what mmsg can reach on the same
// link, and its ratio to udp bounds mmsg's.
type bareReceiver struct {
	conn  *net.UDPConn
	count atomic.Uint64
	done  chan struct{}
	err   error // the loop's error, valid after done is closed
}

func newBareReceiver(local netip.AddrPort, deadline time.Time) (*bareReceiver, error) {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(local))
	if err != nil {
		return nil, fmt.Errorf("pps: bare receiver: %w", err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, errors.Join(err, c.Close())
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bareBufferSize)
	}); err != nil || serr != nil {
		return nil, errors.Join(fmt.Errorf("pps: bare receiver: SO_RCVBUFFORCE: %w", errors.Join(err, serr)), c.Close())
	}
	if err := c.SetReadDeadline(deadline); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	r := &bareReceiver{conn: c, done: make(chan struct{})}
	go r.loop(rc)
	return r, nil
}

func (r *bareReceiver) loop(rc syscall.RawConn) {
	defer close(r.done)
	bufs := make([]byte, batchSize*readBufSize)
	iovs := make([]unix.Iovec, batchSize)
	hdrs := make([]unix.Mmsghdr, batchSize)
	for i := range hdrs {
		iovs[i].Base = &bufs[i*readBufSize]
		iovs[i].SetLen(readBufSize)
		hdrs[i].Hdr.Iov = &iovs[i]
		hdrs[i].Hdr.Iovlen = 1
	}
	var n int
	var errno syscall.Errno
	read := func(fd uintptr) bool {
		r1, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)),
			unix.MSG_DONTWAIT, 0, 0)
		n, errno = int(r1), e
		return e != unix.EAGAIN
	}
	for {
		if err := rc.Read(read); err != nil {
			if !errors.Is(err, net.ErrClosed) {
				r.err = err
			}
			return
		}
		if errno != 0 {
			if errno == unix.EINTR {
				continue
			}
			r.err = fmt.Errorf("pps: bare receiver: recvmmsg: %w", errno)
			return
		}
		r.count.Add(uint64(n))
	}
}

// Count returns the datagrams received so far.
func (r *bareReceiver) Count() uint64 { return r.count.Load() }

// Close closes the socket and waits for the loop.
func (r *bareReceiver) Close() error {
	err := r.conn.Close()
	<-r.done
	return errors.Join(r.err, err)
}
