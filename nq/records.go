package nq

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/naquid/naquid/internal/wire"
)

// Codec encodes and decodes the records of a record stream. nq frames each encoded record with
// its length, so a codec deals with one record at a time and never with partial data.
type Codec[T any] interface {
	// Append appends the encoding of v to dst.
	Append(dst []byte, v T) ([]byte, error)
	// Decode decodes one record. data is valid only during the call: a T that keeps bytes must
	// copy them.
	Decode(data []byte) (T, error)
}

// Bytes is the identity codec: records are byte slices. Decoded records are copies.
type Bytes struct{}

// Append implements Codec.
func (Bytes) Append(dst []byte, v []byte) ([]byte, error) { return append(dst, v...), nil }

// Decode implements Codec.
func (Bytes) Decode(data []byte) ([]byte, error) { return append([]byte(nil), data...), nil }

// RecordHandler handles one record protocol. Every field is optional. OnRecord runs on the
// stream's reader goroutine, one record at a time; OnOpen runs before any record. OnClose runs
// once, on the goroutine that closes the stream: when that is not the reader (Close from
// elsewhere, the connection ending), it may overlap an OnRecord still running.
type RecordHandler[T any] struct {
	// OnRecord receives each record, in order.
	OnRecord func(s *RecordStream[T], v T)
	// OnOpen runs when a stream of this protocol opens, on either end; an error rejects it.
	OnOpen func(s *RecordStream[T]) error
	// OnClose runs once when the stream closes; err says why.
	OnClose func(s *RecordStream[T], err error)
	// MaxUnsent bounds, in bytes, the stream's output waiting for the peer to read it
	// (RecordStream.Unsent): once that much waits (the last record accepted may pass it by one
	// record), Send and SendAck fail with ErrBacklogFull and send nothing, until the peer
	// catches up. 0 means DefaultMaxUnsent; a negative value means no bound.
	MaxUnsent int
}

type recordProtocol[T any] struct {
	codec Codec[T]
	h     *RecordHandler[T]
}

func (recordProtocol[T]) kind() string { return "record" }

func (p recordProtocol[T]) bind(st *stream) boundStream {
	rs := &RecordStream[T]{s: st, codec: p.codec, h: p.h}
	st.maxUnsent = unsentBound(p.h.MaxUnsent)
	st.proto = rs
	return rs
}

// HandleRecords registers (or replaces) the record protocol name on m, with codec for its
// records. Records may be empty; each is bounded by the connection's MaxFrameSize.
func HandleRecords[T any](m *Mux, name string, codec Codec[T], h RecordHandler[T]) error {
	if err := validName(name); err != nil {
		return err
	}
	if codec == nil {
		return fmt.Errorf("nq: HandleRecords %q: nil codec", name)
	}
	hc := h
	m.handle(name, recordProtocol[T]{codec: codec, h: &hc})
	return nil
}

// OpenRecords opens a record stream of protocol name on c's current generation (waiting for one
// on a reconnecting client). The protocol must be registered with HandleRecords for the same T.
// The stream ends with its generation (unlike a Conn.RPC handle, it does not follow
// reconnects): a client reopens the streams it needs in Client.OnOpen.
func OpenRecords[T any](ctx context.Context, c *Conn, name string) (*RecordStream[T], error) {
	if p, _ := c.cfg.mux.lookup(name); p != nil && p.kind() == "record" {
		if _, ok := p.(recordProtocol[T]); !ok {
			// Checked before opening: the other type's hooks must not run for this stream.
			return nil, fmt.Errorf("nq: open %q: registered with another record type: %w", name, ErrUnknownProtocol)
		}
	}
	b, err := c.open(ctx, name, "record")
	if err != nil {
		return nil, err
	}
	rs, ok := b.(*RecordStream[T])
	if !ok { // the registration changed meanwhile
		b.(interface{ Close() error }).Close()
		return nil, fmt.Errorf("nq: open %q: registered with another record type: %w", name, ErrUnknownProtocol)
	}
	return rs, nil
}

// RecordStream is a stream of length-framed records of type T, in both directions. Its methods
// are safe for concurrent use.
type RecordStream[T any] struct {
	s     *stream
	codec Codec[T]
	h     *RecordHandler[T]

	scratch []byte // encoding buffer, guarded by the stream's write lock

	mu    sync.Mutex
	value any
}

func (rs *RecordStream[T]) openHook() error {
	if rs.h.OnOpen != nil {
		return rs.h.OnOpen(rs)
	}
	return nil
}

func (rs *RecordStream[T]) run(prefix []byte) { rs.s.readLoop(prefix) }

// Send encodes v and sends it as one record. Records sent while handling received data leave
// together at the end of the handler pass; otherwise at once. Send never blocks: while the peer
// does not read, records wait in the stream's buffer, and once that holds the handler's
// MaxUnsent bytes Send fails with ErrBacklogFull (nothing sent) until the peer catches up. An
// application that pushes to slow peers paces itself (Unsent says how much waits; SendAck
// tells when the peer's transport has a record).
func (rs *RecordStream[T]) Send(v T) error {
	return rs.s.send(func(b []byte) ([]byte, error) { return rs.appendRecord(b, v) })
}

// Unsent returns how many bytes of the stream's output quic-go has not taken yet: mostly what
// waits for the peer to read, plus records of a handler pass about to leave.
func (rs *RecordStream[T]) Unsent() int { return int(rs.s.unsent()) }

// SendAck is Send with a delivery ack: acked runs once, with the framed length of the record
// (the record plus its length prefix) and a nil error, when the peer's QUIC stack has
// acknowledged every byte of it — or with an error when the connection or the stream ends
// first. An ack says the peer's transport has the bytes, not that its application read them.
// acked runs on the connection's network goroutine: keep it short. The connection's Server or
// Client must have DeliveryAcks set (ErrAcksDisabled otherwise).
func (rs *RecordStream[T]) SendAck(v T, acked func(n int, err error)) error {
	t := rs.s.gen.acks
	if t == nil {
		return ErrAcksDisabled
	}
	if acked == nil {
		return errors.New("nq: SendAck: nil callback")
	}
	id := rs.s.qs.StreamID()
	var waitErr error
	err := rs.s.send(func(b []byte) ([]byte, error) {
		start := rs.s.written // b is the write buffer: the record starts at this offset
		out, err := rs.appendRecord(b, v)
		if err == nil {
			waitErr = t.wait(id, start, start+int64(len(out)-len(b)), acked)
		}
		return out, err
	})
	if err == nil && waitErr != nil {
		acked(0, waitErr)
	}
	return err
}

// appendRecord appends v framed as a record. It runs under the stream's write lock, which also
// guards the scratch buffer the codec encodes into.
func (rs *RecordStream[T]) appendRecord(b []byte, v T) ([]byte, error) {
	enc, err := rs.codec.Append(rs.scratch[:0], v)
	if err != nil {
		return b, fmt.Errorf("nq: %s: encode record: %w", rs.s.name, err)
	}
	if len(enc) > rs.s.maxFrame {
		return b, fmt.Errorf("nq: %s: record of %d bytes over the %d-byte limit: %w", rs.s.name, len(enc), rs.s.maxFrame, ErrFrameTooLarge)
	}
	rs.scratch = enc[:0]
	return wire.AppendRecord(b, enc), nil
}

// consume delivers every complete record in b.
func (rs *RecordStream[T]) consume(b []byte) (int, error) {
	used := 0
	for used < len(b) {
		if rs.s.isClosed() {
			return len(b), nil // a handler closed the stream: drop the rest of the chunk
		}
		payload, n, err := wire.ParseRecord(b[used:], rs.s.maxFrame)
		if errors.Is(err, wire.ErrShort) {
			return used, nil
		}
		if err != nil {
			return used, err
		}
		used += n
		rs.s.framesIn++
		v, err := rs.codec.Decode(payload)
		if err != nil {
			return used, fmt.Errorf("decode record: %w: %w", wire.ErrMalformed, err)
		}
		if rs.h.OnRecord != nil {
			rs.h.OnRecord(rs, v)
		}
	}
	return used, nil
}

func (rs *RecordStream[T]) closed(error) {}

func (rs *RecordStream[T]) closeHook(err error) {
	if rs.h.OnClose != nil {
		rs.h.OnClose(rs, err)
	}
}

// Conn returns the connection the stream belongs to.
func (rs *RecordStream[T]) Conn() *Conn { return rs.s.gen.conn }

// Name returns the stream's protocol name.
func (rs *RecordStream[T]) Name() string { return rs.s.name }

// ID returns the QUIC stream id.
func (rs *RecordStream[T]) ID() int64 { return int64(rs.s.qs.StreamID()) }

// Outgoing reports whether this end opened the stream.
func (rs *RecordStream[T]) Outgoing() bool { return rs.s.outgoing }

// Context returns a context that ends when the stream closes.
func (rs *RecordStream[T]) Context() context.Context { return rs.s.ctx }

// Done returns a channel closed once the stream has closed and its close hook has run.
func (rs *RecordStream[T]) Done() <-chan struct{} { return rs.s.done }

// Flush sends what is buffered on this stream now.
func (rs *RecordStream[T]) Flush() { rs.s.flush() }

// Close flushes what is buffered and closes the stream; the peer receives every record sent
// before Close.
func (rs *RecordStream[T]) Close() error {
	rs.s.shutdown()
	return nil
}

// SetValue stores an application value on the stream.
func (rs *RecordStream[T]) SetValue(v any) {
	rs.mu.Lock()
	rs.value = v
	rs.mu.Unlock()
}

// Value returns the value stored with SetValue.
func (rs *RecordStream[T]) Value() any {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.value
}
