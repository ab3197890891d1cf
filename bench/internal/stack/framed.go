package stack

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/naquid/naquid/bench/internal/measure"
)

// The stream peers' framing: a 2-byte big-endian payload length, then the payload. An 8-byte
// call is a 10-byte frame (nq's request frame for the same call is about 11 bytes).
const (
	frameHeader = 2
	// bufSize is the bufio buffer of each direction of a framed connection, on both ends.
	bufSize = 4096
)

// stream is what a framed connection runs over: a TCP or TLS connection, a QUIC stream, an
// smux stream.
type stream interface {
	io.ReadWriter
	SetDeadline(t time.Time) error
}

// appendFrame writes one frame of payload to bw.
func writeFrame(bw *bufio.Writer, payload []byte) error {
	var h [frameHeader]byte
	binary.BigEndian.PutUint16(h[:], uint16(len(payload)))
	if _, err := bw.Write(h[:]); err != nil {
		return err
	}
	_, err := bw.Write(payload)
	return err
}

// frameBuffered reports whether br holds a complete frame, so reading it will not block.
func frameBuffered(br *bufio.Reader) bool {
	b := br.Buffered()
	if b < frameHeader {
		return false
	}
	h, _ := br.Peek(frameHeader)
	return b >= frameHeader+int(binary.BigEndian.Uint16(h))
}

// skipFrame reads one frame from br and throws its payload away.
func skipFrame(br *bufio.Reader) error {
	h, err := br.Peek(frameHeader)
	if err != nil {
		return err
	}
	n := frameHeader + int(binary.BigEndian.Uint16(h))
	_, err = br.Discard(n)
	return err
}

// echoFramed answers every frame read from s with the same frame until s fails, flushing its
// answers when no complete frame is left in the read buffer.
func echoFramed(s io.ReadWriter) error {
	br := bufio.NewReaderSize(s, bufSize)
	bw := bufio.NewWriterSize(s, bufSize)
	for {
		if bw.Buffered() > 0 && !frameBuffered(br) {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		h, err := br.Peek(frameHeader)
		if err != nil {
			return err
		}
		n := frameHeader + int(binary.BigEndian.Uint16(h))
		if n <= br.Size() {
			f, err := br.Peek(n)
			if err != nil {
				return err
			}
			if _, err := bw.Write(f); err != nil {
				return err
			}
			if _, err := br.Discard(n); err != nil {
				return err
			}
			continue
		}
		// A frame larger than the read buffer: copy it through.
		if _, err := io.CopyN(bw, br, int64(n)); err != nil {
			return err
		}
	}
}

// framedConn is the client end of a stream peer: one long-lived stream, opened on first use.
type framedConn struct {
	open  func(ctx context.Context) (stream, error)
	close func() error

	wmu      sync.Mutex // guards s, br, bw, reading, readDone and the writes
	s        stream
	br       *bufio.Reader
	bw       *bufio.Writer
	reading  bool // the Send reader goroutine runs
	readDone chan struct{}

	qmu   sync.Mutex    // guards queue and err; never held while doing I/O
	queue []func(error) // Send callbacks, in call order (answers arrive in order)
	err   error         // the Send path failed for good
}

func newFramedConn(open func(ctx context.Context) (stream, error), close func() error) *framedConn {
	return &framedConn{open: open, close: close}
}

// streamLocked opens the stream if needed; c.wmu is held.
func (c *framedConn) streamLocked(ctx context.Context) error {
	if c.s != nil {
		return nil
	}
	s, err := c.open(ctx)
	if err != nil {
		return err
	}
	c.s = s
	c.br = bufio.NewReaderSize(s, bufSize)
	c.bw = bufio.NewWriterSize(s, bufSize)
	return nil
}

// Pipeline implements Conn with one goroutine: it writes the first w calls, then for every
// answer read writes the next call, and flushes whenever no complete answer is left buffered.
func (c *framedConn) Pipeline(ctx context.Context, n, w int, payload []byte, rec *measure.Shard) (int64, error) {
	if err := checkPipeline(n, w, payload); err != nil {
		return 0, err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.reading {
		return 0, errors.New("stack: Pipeline on a connection used for Send")
	}
	if err := c.streamLocked(ctx); err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	s, br, bw := c.s, c.br, c.bw
	stop := context.AfterFunc(ctx, func() { _ = s.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			_ = s.SetDeadline(time.Time{})
		}
	}()

	base := time.Now()
	sentAt := make([]time.Duration, w) // ring of issue times, oldest first
	head, sent, recv := 0, 0, 0
	// fail counts every call the error cuts off as failed, as the other stacks do: those in
	// flight, and the one being written (writing).
	fail := func(err error, writing bool) (int64, error) {
		lost := sent - recv
		if writing {
			lost++
		}
		for range lost {
			rec.Error()
		}
		return int64(recv), ctxErr(ctx, err)
	}
	now := time.Since(base)
	for sent < min(w, n) {
		if err := writeFrame(bw, payload); err != nil {
			return fail(err, true)
		}
		sentAt[sent] = now
		sent++
	}
	if err := bw.Flush(); err != nil {
		return fail(err, false)
	}
	for recv < n {
		if err := skipFrame(br); err != nil {
			return fail(err, false)
		}
		now = time.Since(base)
		rec.Record(now - sentAt[head])
		recv++
		if sent < n {
			if err := writeFrame(bw, payload); err != nil {
				return fail(err, true)
			}
			sentAt[head] = now // the slot just freed is the newest now
			sent++
		}
		head = (head + 1) % w
		if bw.Buffered() > 0 && !frameBuffered(br) {
			if err := bw.Flush(); err != nil {
				return fail(err, false)
			}
		}
	}
	return int64(recv), nil
}

// ping makes one call and waits for its answer.
func (c *framedConn) ping(ctx context.Context) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.streamLocked(ctx); err != nil {
		return err
	}
	s := c.s
	stop := context.AfterFunc(ctx, func() { _ = s.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			_ = s.SetDeadline(time.Time{})
		}
	}()
	if err := writeFrame(c.bw, []byte{0}); err != nil {
		return ctxErr(ctx, err)
	}
	if err := c.bw.Flush(); err != nil {
		return ctxErr(ctx, err)
	}
	if err := skipFrame(c.br); err != nil {
		return ctxErr(ctx, err)
	}
	return nil
}

// ctxErr prefers the ctx's error when ctx ended (the deadline we set caused err).
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("stack: calls stopped: %w", ctx.Err())
	}
	return fmt.Errorf("stack: calls: %w", err)
}

// Send implements Conn: it writes and flushes one call; a reader goroutine, started by the first
// Send, runs the callbacks in order as answers arrive.
func (c *framedConn) Send(payload []byte, done func(error)) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("stack: payload of %d bytes over %d", len(payload), MaxPayload)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.streamLocked(context.Background()); err != nil {
		return err
	}
	c.qmu.Lock()
	if c.err != nil {
		err := c.err
		c.qmu.Unlock()
		return err
	}
	c.queue = append(c.queue, done)
	c.qmu.Unlock()
	if !c.reading {
		c.reading = true
		c.readDone = make(chan struct{})
		go c.readLoop(c.br)
	}
	err := writeFrame(c.bw, payload)
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		// The reader, woken by the deadline, fails every queued call (this one included), so
		// done still runs exactly once; the caller sees the error too.
		c.qmu.Lock()
		if c.err == nil {
			c.err = fmt.Errorf("stack: send: %w", err)
		}
		c.qmu.Unlock()
		_ = c.s.SetDeadline(time.Unix(1, 0))
	}
	return nil
}

func (c *framedConn) readLoop(br *bufio.Reader) {
	defer close(c.readDone)
	for {
		err := skipFrame(br)
		c.qmu.Lock()
		if err != nil || len(c.queue) == 0 {
			if c.err == nil {
				c.err = fmt.Errorf("stack: read: %w", err)
				if err == nil {
					c.err = errors.New("stack: answer to no call")
				}
			}
			q := c.queue
			c.queue = nil
			rerr := c.err
			c.qmu.Unlock()
			for _, f := range q {
				f(rerr)
			}
			if err == nil {
				_ = c.close()
			}
			return
		}
		f := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		c.qmu.Unlock()
		f(nil)
	}
}

// Close closes the connection; pending Send callbacks run with an error.
func (c *framedConn) Close() error {
	err := c.close()
	c.wmu.Lock()
	done := c.readDone
	c.wmu.Unlock()
	if done != nil {
		<-done
	}
	return err
}
