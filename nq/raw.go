package nq

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/internal/wire"
)

// RawHandler handles one raw-stream protocol: plain bytes in both directions, no framing.
type RawHandler struct {
	// OnStream serves a stream the peer opened. It runs on the stream's own goroutine and owns
	// the stream: read and write it as long as needed, then Close it. A nil OnStream closes
	// peer-opened streams at once.
	OnStream func(s *RawStream)
	// OnOpen runs when a stream of this protocol opens, on either end (before OnStream); an
	// error rejects it.
	OnOpen func(s *RawStream) error
}

type rawProtocol struct{ h *RawHandler }

func (rawProtocol) kind() string { return "raw" }

func (p rawProtocol) bind(st *stream) boundStream {
	rs := &RawStream{s: st, h: p.h}
	st.proto = rs
	return rs
}

// HandleRaw registers (or replaces) the raw-stream protocol name.
func (m *Mux) HandleRaw(name string, h RawHandler) error {
	if err := validName(name); err != nil {
		return err
	}
	hc := h
	m.handle(name, rawProtocol{&hc})
	return nil
}

// OpenRaw opens a raw stream of protocol name on the current generation (waiting for one on a
// reconnecting client). The protocol must be registered with HandleRaw. The stream ends with
// its generation (unlike a Conn.RPC handle, it does not follow reconnects): a client reopens
// the streams it needs in Client.OnOpen.
func (c *Conn) OpenRaw(ctx context.Context, name string) (*RawStream, error) {
	b, err := c.open(ctx, name, "raw")
	if err != nil {
		return nil, err
	}
	return b.(*RawStream), nil
}

// RawStream is a byte stream (io.ReadWriteCloser with deadlines) over one QUIC stream. Read and
// Write may run concurrently with each other; each has one caller at a time.
type RawStream struct {
	s *stream
	h *RawHandler

	rmu    sync.Mutex
	prefix []byte // bytes read with the preamble, returned first

	mu    sync.Mutex
	value any
}

func (rs *RawStream) openHook() error {
	if rs.h.OnOpen != nil {
		return rs.h.OnOpen(rs)
	}
	return nil
}

func (rs *RawStream) run(prefix []byte) {
	if rs.s.outgoing {
		return // the opener reads and writes it itself
	}
	rs.prefix = prefix
	if rs.h.OnStream == nil {
		rs.Close()
		return
	}
	rs.h.OnStream(rs)
}

// consume is never called: raw streams have no reader loop.
func (rs *RawStream) consume(b []byte) (int, error) { return len(b), nil }

func (rs *RawStream) closed(error) {}

func (rs *RawStream) closeHook(error) {}

// Read reads bytes from the stream. It returns io.EOF after the peer closed its side.
func (rs *RawStream) Read(p []byte) (int, error) {
	rs.rmu.Lock()
	if len(rs.prefix) > 0 {
		n := copy(p, rs.prefix)
		rs.prefix = rs.prefix[n:]
		rs.rmu.Unlock()
		return n, nil
	}
	rs.rmu.Unlock()
	n, err := rs.s.qs.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = rs.wrap(err)
	}
	return n, err
}

// Write writes bytes to the stream, blocking while flow control holds them back (see
// SetWriteDeadline).
func (rs *RawStream) Write(p []byte) (int, error) {
	rs.s.drain() // the preamble, if still buffered, goes first
	n, err := rs.s.qs.Write(p)
	if err != nil {
		err = rs.wrap(err)
	}
	return n, err
}

func (rs *RawStream) wrap(err error) error {
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return err // deadlines stay recognisable (os.ErrDeadlineExceeded)
	}
	if errors.Is(err, quicgo.ErrStreamClosed) && rs.s.gen.ctx.Err() == nil {
		// A Write after the write side closed: why it closed decides the error (Close:
		// ErrClosed; a Reset or a server shutdown closing the connection: ErrConnLost).
		rs.s.wmu.Lock()
		why := rs.s.werr
		rs.s.wmu.Unlock()
		if why == nil {
			why = ErrClosed // CloseWrite
		}
		return fmt.Errorf("nq: raw stream %s: write after close: %w", rs.s.name, why)
	}
	return fmt.Errorf("nq: raw stream %s: %w", rs.s.name, rs.s.gen.classify(err))
}

// CloseWrite closes the write direction: the peer reads io.EOF after the bytes written so far.
func (rs *RawStream) CloseWrite() error {
	rs.s.drain()
	return rs.s.qs.Close()
}

// Close closes both directions: written bytes are still delivered, reading stops.
func (rs *RawStream) Close() error {
	rs.s.shutdown()
	return nil
}

// SetDeadline sets the read and write deadlines.
func (rs *RawStream) SetDeadline(t time.Time) error { return rs.s.qs.SetDeadline(t) }

// SetReadDeadline sets the read deadline; a blocked Read then fails with an error matching
// os.ErrDeadlineExceeded.
func (rs *RawStream) SetReadDeadline(t time.Time) error { return rs.s.qs.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (rs *RawStream) SetWriteDeadline(t time.Time) error { return rs.s.qs.SetWriteDeadline(t) }

// Reset aborts both directions with a cancellation code; unsent bytes are discarded.
func (rs *RawStream) Reset() {
	rs.s.abort(wire.StreamCancelled, ErrClosed)
}

// Conn returns the connection the stream belongs to.
func (rs *RawStream) Conn() *Conn { return rs.s.gen.conn }

// Name returns the stream's protocol name.
func (rs *RawStream) Name() string { return rs.s.name }

// ID returns the QUIC stream id.
func (rs *RawStream) ID() int64 { return int64(rs.s.qs.StreamID()) }

// Outgoing reports whether this end opened the stream.
func (rs *RawStream) Outgoing() bool { return rs.s.outgoing }

// Context returns a context that ends when the stream closes.
func (rs *RawStream) Context() context.Context { return rs.s.ctx }

// SetValue stores an application value on the stream.
func (rs *RawStream) SetValue(v any) {
	rs.mu.Lock()
	rs.value = v
	rs.mu.Unlock()
}

// Value returns the value stored with SetValue.
func (rs *RawStream) Value() any {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.value
}

var _ io.ReadWriteCloser = (*RawStream)(nil)
