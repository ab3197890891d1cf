package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/afxdp"
	"github.com/naquid/naquid/transport/mmsg"
	"github.com/naquid/naquid/transport/udp"
)

const (
	// batchSize is the batch of the batching backends (mmsg, afxdp) on both sides.
	batchSize = 64
	// readBufSize is the size of each receive buffer.
	readBufSize = 2048
	// maxDebt bounds the catch-up burst of a paced sender (see pacer).
	maxDebt = 256
	// spinBelow: a paced sender that has less than this to wait spins (yielding) instead of
	// sleeping, because sleeps overshoot by tens of microseconds.
	spinBelow = 200 * time.Microsecond
	// drainQuiet and drainMax: after a step, the receiver's count must stay unchanged for
	// drainQuiet (bounded by drainMax) before it is read, so no datagram of the step is missed.
	drainQuiet = 30 * time.Millisecond
	drainMax   = time.Second
	// afxdpOpenTries and afxdpOpenWait retry an AF_XDP setup that fails with EBUSY (a queue
	// another process just released).
	afxdpOpenTries = 40
	afxdpOpenWait  = 25 * time.Millisecond
	// exitGrace is how long after its deadline a child exits even if stuck.
	exitGrace = 5 * time.Second
)

// runChild runs a sender or receiver role until the parent says quit, stdin closes, or the
// deadline passes.
func runChild(cfg childConfig) error {
	stuck := time.AfterFunc(time.Until(cfg.Deadline)+exitGrace, func() {
		fmt.Fprintln(os.Stderr, "deadline passed: exiting")
		os.Exit(3)
	})
	defer stuck.Stop()
	ctx, cancel := context.WithDeadline(context.Background(), cfg.Deadline)
	defer cancel()
	cmds := make(chan string)
	go func() {
		defer close(cmds)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			cmds <- sc.Text()
		}
	}()
	var err error
	switch cfg.Role {
	case roleRecv:
		err = serveReceiver(ctx, cfg, cmds)
	case roleSend:
		err = serveSender(ctx, cfg, cmds)
	default:
		err = fmt.Errorf("pps: unknown role %q", cfg.Role)
	}
	if err != nil {
		fmt.Printf("%s %s\n", msgError, oneLine(err.Error()))
	}
	return err
}

// receiver is what a receive role runs: a loop counting delivered datagrams.
type receiver interface {
	Count() uint64
	Close() error
}

func serveReceiver(ctx context.Context, cfg childConfig, cmds <-chan string) error {
	r, err := openReceiver(ctx, cfg)
	if err != nil {
		return err
	}
	closeReceiver := sync.OnceValue(r.Close)
	defer closeReceiver()
	var napi []int
	if cfg.Transport == nameAFXDP || cfg.Transport == nameAsavie || onNAPILink(cfg.Transport) {
		// XDP is attached now, or the parent turned GRO on: veth does this device's receive
		// work in NAPI, on the sender's core unless NAPI runs in a thread pinned to ours.
		if napi, err = pinNAPI(cfg.Dev, cfg.CPU); err != nil {
			fmt.Printf("%s receive work not pinned, the receiver looks faster than it is: %v\n", noteWord, oneLine(err.Error()))
		}
	}
	// sample returns the datagrams received so far, the CPU time of this process and of its
	// NAPI threads, and the busy time of the receiver's core.
	sample := func() (n uint64, proc, kt, core time.Duration, err error) {
		n = r.Count()
		if proc, err = processCPU(); err != nil {
			return 0, 0, 0, 0, err
		}
		if kt, err = threadCPU(napi); err != nil {
			return 0, 0, 0, 0, err
		}
		core, err = coreBusy(cfg.CPU)
		return n, proc, kt, core, err
	}
	var statsOf any = r
	if cr, ok := r.(*connReceiver); ok {
		statsOf = cr.c
	}
	fmt.Println(msgReady)
	var n0 uint64
	var proc0, kt0, core0 time.Duration
	var diag0 map[string]uint64
	for {
		var line string
		var ok bool
		select {
		case line, ok = <-cmds:
		case <-ctx.Done():
			return fmt.Errorf("pps: receiver: %w", ctx.Err())
		}
		if !ok || line == msgQuit {
			return closeReceiver()
		}
		switch line {
		case msgStart:
			if n0, proc0, kt0, core0, err = sample(); err != nil {
				return err
			}
			diag0 = diagCounters(statsOf, cfg.Dev, cfg.CPU)
			fmt.Println(msgOK)
		case msgStop:
			drain(r)
			n1, proc1, kt1, core1, err := sample()
			if err != nil {
				return err
			}
			kt := kt1 - kt0
			fmt.Fprintf(os.Stderr, "received %d: %s\n", n1-n0, formatDiag(diag0, diagCounters(statsOf, cfg.Dev, cfg.CPU)))
			fmt.Println(formatReply(msgRecv, int64(n1-n0), (proc1 - proc0 + kt).Nanoseconds(), kt.Nanoseconds(), (core1 - core0).Nanoseconds()))
		default:
			return fmt.Errorf("pps: receiver: unknown command %q", line)
		}
	}
}

// drain waits until r's count has not changed for drainQuiet, at most drainMax.
func drain(r receiver) {
	deadline := time.Now().Add(drainMax)
	last, since := r.Count(), time.Now()
	for time.Now().Before(deadline) && time.Since(since) < drainQuiet {
		time.Sleep(drainQuiet / 6) // polling a counter the receive loop bumps: nothing to wait on
		if n := r.Count(); n != last {
			last, since = n, time.Now()
		}
	}
}

func openReceiver(ctx context.Context, cfg childConfig) (receiver, error) {
	switch cfg.Transport {
	case nameAsavie:
		return newAsavieReceiver(cfg.Dev, cfg.Local.Port(), cfg.Deadline)
	case nameBare:
		return newBareReceiver(cfg.Local, cfg.Deadline)
	}
	c, err := openConn(ctx, cfg)
	if err != nil {
		return nil, err
	}
	batch := batchSize
	if baseName(cfg.Transport) == nameUDP {
		batch = 1 // one datagram per system call
	}
	r := &connReceiver{c: c, done: make(chan struct{})}
	if err := c.SetReadDeadline(cfg.Deadline); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	go r.loop(batch)
	return r, nil
}

// openConn opens the named backend on cfg.Local.
func openConn(ctx context.Context, cfg childConfig) (transport.Conn, error) {
	switch baseName(cfg.Transport) {
	case nameUDP:
		return udp.Listen(ctx, cfg.Local, udp.Config{})
	case nameMmsg:
		// Sends are plain sendmmsg batches: GSO would coalesce the same-destination runs
		// the benchmark sends (mmsg-gso measures that).
		return mmsg.Listen(ctx, cfg.Local, mmsg.Config{DisableGSO: true})
	case nameMmsgGSO:
		return mmsg.Listen(ctx, cfg.Local, mmsg.Config{})
	case nameAFXDP:
		var err error
		for range afxdpOpenTries {
			var c *afxdp.Conn
			if c, err = afxdp.New(ctx, cfg.Local, afxdp.Config{Interface: cfg.Dev}); err == nil {
				return c, nil
			}
			if !errors.Is(err, unix.EBUSY) && !errors.Is(err, afxdp.ErrInterfaceBusy) {
				return nil, err
			}
			time.Sleep(afxdpOpenWait)
		}
		return nil, err
	}
	return nil, fmt.Errorf("pps: unknown transport %q", cfg.Transport)
}

// connReceiver counts what ReadBatch delivers.
type connReceiver struct {
	c     transport.Conn
	count atomic.Uint64
	done  chan struct{}
	err   error // the loop's error, valid after done is closed
}

func (r *connReceiver) loop(batch int) {
	defer close(r.done)
	msgs := make([]transport.Message, batch)
	for i := range msgs {
		msgs[i].Buf = make([]byte, readBufSize)
	}
	for {
		n, err := r.c.ReadBatch(msgs)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				r.err = err
			}
			return
		}
		r.count.Add(uint64(n))
	}
}

// Count returns the datagrams received so far.
func (r *connReceiver) Count() uint64 { return r.count.Load() }

// Close closes the Conn and waits for the loop.
func (r *connReceiver) Close() error {
	err := r.c.Close()
	<-r.done
	if errors.Is(err, net.ErrClosed) {
		err = nil // closed before
	}
	return errors.Join(r.err, err)
}

func serveSender(ctx context.Context, cfg childConfig, cmds <-chan string) error {
	c, err := openConn(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	stats, ok := c.(transport.Stats)
	if !ok {
		return fmt.Errorf("pps: %s has no Stats", cfg.Transport)
	}
	msgs := make([]transport.Message, batchSize)
	payload := make([]byte, cfg.Size)
	for i := range payload {
		payload[i] = byte(i)
	}
	for i := range msgs {
		msgs[i] = transport.Message{Buf: payload, Addr: cfg.Remote}
	}
	fmt.Println(msgReady)
	for {
		var line string
		var ok bool
		select {
		case line, ok = <-cmds:
		case <-ctx.Done():
			return fmt.Errorf("pps: sender: %w", ctx.Err())
		}
		if !ok || line == msgQuit {
			return nil
		}
		rate, d, err := parseRun(line)
		if err != nil {
			return err
		}
		before := stats.Stats()
		diag0 := diagCounters(c, cfg.Dev, cfg.CPU)
		cpu0, err := processCPU()
		if err != nil {
			return err
		}
		elapsed, err := send(ctx, c, msgs, cfg.Transport == nameUDP, rate, d)
		if err != nil {
			return err
		}
		cpu1, err := processCPU()
		if err != nil {
			return err
		}
		after := stats.Stats()
		fmt.Fprintf(os.Stderr, "sent %d: %s\n", after.PacketsWritten-before.PacketsWritten,
			formatDiag(diag0, diagCounters(c, cfg.Dev, cfg.CPU)))
		fmt.Println(formatReply(msgSent, int64(after.PacketsWritten-before.PacketsWritten),
			int64(after.BytesWritten-before.BytesWritten), elapsed.Nanoseconds(), (cpu1 - cpu0).Nanoseconds()))
	}
}

// send sends msgs repeatedly for d at rate datagrams per second (0: as fast as possible), one
// datagram per call when single, else up to a batch per call, and returns the time it took.
func send(ctx context.Context, c transport.Conn, msgs []transport.Message, single bool, rate float64, d time.Duration) (time.Duration, error) {
	p := newPacer(rate, len(msgs), maxDebt)
	// A bound on iterations besides the time bound: far more than any rate here needs.
	maxIter := int(d.Seconds()*1e8) + 1
	start := time.Now()
	for range maxIter {
		el := time.Since(start)
		if el >= d {
			break
		}
		n := p.Due(el)
		if n == 0 {
			if w := p.Wait(el); w > spinBelow {
				time.Sleep(w - spinBelow/2)
			} else {
				runtime.Gosched()
			}
			continue
		}
		if single {
			for i := range n {
				if _, err := c.WriteBatch(msgs[i : i+1]); err != nil {
					return 0, fmt.Errorf("pps: send: %w", err)
				}
			}
		} else if _, err := c.WriteBatch(msgs[:n]); err != nil {
			return 0, fmt.Errorf("pps: send: %w", err)
		}
		p.Sent(n)
		if ctx.Err() != nil {
			return 0, fmt.Errorf("pps: send: %w", ctx.Err())
		}
	}
	return time.Since(start), nil
}

// oneLine keeps an error message on one protocol line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
