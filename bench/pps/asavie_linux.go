package main

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/asavie/xdp"
	"github.com/cilium/ebpf/link"
)

// asavieOptions sizes the asavie socket like ours (2048 RX and fill slots), with frames for the
// fill ring and a few spare; it only receives, so its TX ring stays small.
var asavieOptions = xdp.SocketOptions{
	NumFrames:              4096,
	FrameSize:              2048,
	FillRingNumDescs:       2048,
	CompletionRingNumDescs: 64,
	RxRingNumDescs:         2048,
	TxRingNumDescs:         64,
}

// Bind retries: right after another process let go of the queue, bind fails with EBUSY for a
// while. asavie's errors do not wrap the errno, so every bind error is retried.
const (
	asavieBindTries = 40
	asavieBindWait  = 25 * time.Millisecond
	// asaviePollMs is the poll timeout of the receive loop, so that it notices the stop flag.
	asaviePollMs = 100
)

// asavieReceiver receives with github.com/asavie/xdp v0.3.3 the way its documentation shows
// (fill, poll, receive), with its own XDP program attached through a BPF link. That program
// redirects every frame of the queue, ARP included, hence the permanent neighbour entries of
// the topology. For each frame it checks the headers and copies the payload out, the minimum an
// application needs (our afxdp also verifies checksums).
type asavieReceiver struct {
	prog  *xdp.Program
	link  link.Link
	xsk   *xdp.Socket
	port  uint16
	count atomic.Uint64
	stop  atomic.Bool
	done  chan struct{}
	err   error // the receive loop's error, valid after done is closed
}

func newAsavieReceiver(dev string, port uint16, deadline time.Time) (_ *asavieReceiver, err error) {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return nil, fmt.Errorf("asavie: %w", err)
	}
	const queue = 0
	r := &asavieReceiver{port: port, done: make(chan struct{})}
	defer func() {
		if err != nil {
			err = errors.Join(err, r.release())
		}
	}()
	if r.prog, err = xdp.NewProgram(queue + 1); err != nil {
		return nil, fmt.Errorf("asavie: program: %w", err)
	}
	if r.link, err = link.AttachXDP(link.XDPOptions{Program: r.prog.Program, Interface: ifi.Index}); err != nil {
		return nil, fmt.Errorf("asavie: attach to %s: %w", dev, err)
	}
	for i := range asavieBindTries {
		r.xsk, err = xdp.NewSocket(ifi.Index, queue, &asavieOptions)
		if err == nil {
			break
		}
		if i == asavieBindTries-1 {
			return nil, fmt.Errorf("asavie: socket on %s queue %d: %w", dev, queue, err)
		}
		time.Sleep(asavieBindWait)
	}
	if err = r.prog.Register(queue, r.xsk.FD()); err != nil {
		return nil, fmt.Errorf("asavie: register socket: %w", err)
	}
	go r.loop(deadline)
	return r, nil
}

// loop receives until Close or the deadline.
func (r *asavieReceiver) loop(deadline time.Time) {
	defer close(r.done)
	buf := make([]byte, 2048)
	for !r.stop.Load() && time.Now().Before(deadline) {
		r.xsk.Fill(r.xsk.GetDescs(r.xsk.NumFreeFillSlots()))
		n, _, err := r.xsk.Poll(asaviePollMs)
		if err != nil {
			r.err = fmt.Errorf("asavie: poll: %w", err)
			return
		}
		if n == 0 {
			continue
		}
		got := 0
		for _, d := range r.xsk.Receive(n) {
			if p, ok := udp4Payload(r.xsk.GetFrame(d), r.port); ok {
				copy(buf, p)
				got++
			}
		}
		r.count.Add(uint64(got))
	}
}

// Count returns the datagrams received so far.
func (r *asavieReceiver) Count() uint64 { return r.count.Load() }

// Close stops the loop and releases the socket, the link and the program.
func (r *asavieReceiver) Close() error {
	r.stop.Store(true)
	<-r.done
	return errors.Join(r.err, r.release())
}

// release frees what setup created. asavie's Close does not unmap the rings, so the socket
// lives until the process exits; the process exits right after.
func (r *asavieReceiver) release() error {
	var errs []error
	if r.xsk != nil {
		errs = append(errs, r.xsk.Close())
		r.xsk = nil
	}
	if r.link != nil {
		errs = append(errs, r.link.Close())
		r.link = nil
	}
	if r.prog != nil {
		errs = append(errs, r.prog.Close())
		r.prog = nil
	}
	return errors.Join(errs...)
}
