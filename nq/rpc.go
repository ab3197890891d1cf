package nq

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/naquid/naquid/internal/wire"
)

// RPCStream is one RPC stream of one connection generation. Both ends call, notify and reply on
// it; calls are multiplexed by message id, so any number may be in flight. It ends with its
// connection generation (a reconnect gives new streams; use Conn.RPC for a handle that follows
// reconnects). Its methods are safe for concurrent use.
type RPCStream struct {
	s       *stream
	h       *RPCHandler
	timeout time.Duration

	// calls and nextID are guarded by the stream's write lock (s.wmu): a call is filed and its
	// request appended under one lock.
	calls    callTable
	nextID   uint64
	srv      *Server   // the server the stream belongs to; nil on a client
	requests []Request // unused Request records, taken by the reader one at a time
	reuse    *Request  // a record answered during its handler, to reuse (RPCHandler.ReuseRequests)
	// held holds whole request and notification frames that arrived while the stream's unsent
	// output was over its backlog limit (the peer not reading its answers); they run, in order,
	// once it drops. Only the reader touches it.
	held []byte
	// heldAcct is what held counts against the connection's budget (generation.heldBytes); the
	// stream's close gives it back and leaves it at closedHeld, after which nothing is counted.
	heldAcct atomic.Int64

	mu    sync.Mutex // guards value
	value any
}

// Request is a request received on an RPC stream. Answer it exactly once, with Reply or Fail,
// from the handler or later from any goroutine.
type Request struct {
	// Method is the method number the caller chose.
	Method uint32
	// Payload is the request payload. It is valid only until the handler returns: copy it to
	// keep it.
	Payload []byte

	stream   *RPCStream
	msgid    uint64
	early    bool
	answered atomic.Bool // set under the stream's write lock; read without it to decide on reuse
}

func newRPCStream(st *stream, h *RPCHandler) *RPCStream {
	r := &RPCStream{
		s:       st,
		h:       h,
		timeout: h.callTimeout(),
		srv:     st.gen.conn.server,
	}
	r.calls = newCallTable(r.expire, max(r.timeout, minQuarantine))
	st.maxUnanswered = h.maxUnanswered()
	st.maxUnsent = unsentBound(h.MaxUnsent)
	st.proto = r
	return r
}

func (r *RPCStream) openHook() error {
	if r.h.OnOpen != nil {
		return r.h.OnOpen(r)
	}
	return nil
}

func (r *RPCStream) run(prefix []byte) { r.s.readLoop(prefix) }

// Conn returns the connection the stream belongs to.
func (r *RPCStream) Conn() *Conn { return r.s.gen.conn }

// Name returns the stream's protocol name.
func (r *RPCStream) Name() string { return r.s.name }

// ID returns the QUIC stream id (it changes across reconnects).
func (r *RPCStream) ID() int64 { return int64(r.s.qs.StreamID()) }

// Outgoing reports whether this end opened the stream.
func (r *RPCStream) Outgoing() bool { return r.s.outgoing }

// Generation returns the connection generation the stream belongs to: the value of
// Conn.Generation while that connection is up, 0 while it is still completing a 0-RTT handshake.
func (r *RPCStream) Generation() uint64 { return r.s.gen.n.Load() }

// Context returns a context that ends when the stream closes.
func (r *RPCStream) Context() context.Context { return r.s.ctx }

// Done returns a channel closed once the stream has closed and its close hook has run.
func (r *RPCStream) Done() <-chan struct{} { return r.s.done }

// Err returns why the stream closed, or nil while it is open.
func (r *RPCStream) Err() error {
	select {
	case <-r.s.done:
		return r.s.closeErr
	default:
		return nil
	}
}

// SetValue stores an application value on the stream (for example in the open hook).
func (r *RPCStream) SetValue(v any) {
	r.mu.Lock()
	r.value = v
	r.mu.Unlock()
}

// Value returns the value stored with SetValue.
func (r *RPCStream) Value() any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.value
}

// Close flushes what is buffered, closes the stream and fails its pending calls with ErrClosed.
// The peer receives every frame written before Close, then sees the stream close.
func (r *RPCStream) Close() error {
	r.s.shutdown()
	return nil
}

// Flush sends what is buffered on this stream now instead of at the end of the handler pass.
func (r *RPCStream) Flush() { r.s.flush() }

// Call sends a request and waits for its answer: the reply payload, a *RemoteError, ErrTimeout
// (the ctx deadline passed or, when ctx has no deadline, the handler's Timeout), ErrConnLost,
// ErrClosed, ErrRejected, ErrPeerNotReading or ErrTooManyRequests (the peer reset the stream
// for those), or the ctx's error when it is cancelled.
func (r *RPCStream) Call(ctx context.Context, method uint32, payload []byte) ([]byte, error) {
	w := newWaiter()
	id, err := r.start(ctx, method, payload, nil, w)
	if err != nil {
		w.release()
		return nil, err
	}
	select {
	case <-w.ch:
	case <-ctx.Done():
		r.s.wmu.Lock()
		c, mine := r.calls.abandonWaiter(id, w)
		r.s.wmu.Unlock()
		if mine {
			r.finish(c, nil, r.ctxError(ctx, method))
		}
		<-w.ch
	}
	reply, err := w.reply, w.err
	w.release()
	return reply, err
}

// Go sends a request and returns at once; done runs exactly once with the answer (same results
// as Call), on the stream's reader goroutine for replies or on a timer or closing goroutine
// otherwise. The reply slice is valid only during done. If Go returns an error, done is never
// called.
func (r *RPCStream) Go(ctx context.Context, method uint32, payload []byte, done func(reply []byte, err error)) error {
	if done == nil {
		return errors.New("nq: Go: nil callback")
	}
	_, err := r.start(ctx, method, payload, done, nil)
	return err
}

func (r *RPCStream) ctxError(ctx context.Context, method uint32) error {
	return fmt.Errorf("nq: call %s/%d: %w", r.s.name, method, ctxErrOf(ctx))
}

// Notify sends a one-way message. It never blocks: while the peer does not read, messages wait
// in the stream's buffer, and once that holds the handler's MaxUnsent bytes Notify fails with
// ErrBacklogFull (nothing sent) until the peer catches up.
func (r *RPCStream) Notify(method uint32, payload []byte) error {
	if err := r.checkPayload(payload); err != nil {
		return err
	}
	return r.s.send(func(b []byte) ([]byte, error) { return wire.AppendNotify(b, method, payload), nil })
}

// Unsent returns how many bytes of the stream's output quic-go has not taken yet: mostly what
// waits for the peer to read (flow control), plus frames of a handler pass about to leave. A
// server pushing state can skip updates for a peer that lags. Notify is refused once the
// output waiting for the peer reaches the handler's MaxUnsent (ErrBacklogFull).
func (r *RPCStream) Unsent() int { return int(r.s.unsent()) }

func (r *RPCStream) checkPayload(p []byte) error {
	if len(p) > r.s.maxFrame {
		return fmt.Errorf("nq: %s: payload of %d bytes over the %d-byte limit: %w", r.s.name, len(p), r.s.maxFrame, ErrFrameTooLarge)
	}
	return nil
}

// start files a call under a fresh message id with its deadline and appends the request to the
// stream, under one lock, and returns the id. A blocking call (Call) comes with its waiter w and
// watches ctx itself; a callback call (Go) comes with done, and the stream watches ctx for it.
func (r *RPCStream) start(ctx context.Context, method uint32, payload []byte, done func([]byte, error), w *waiter) (uint64, error) {
	if err := r.checkPayload(payload); err != nil {
		return 0, err
	}
	if ctx.Err() != nil {
		return 0, r.ctxError(ctx, method)
	}
	if g := r.s.gen; g.early.Load() && !g.confirmed() && !isIdempotent(ctx) {
		// Only idempotent calls travel in 0-RTT data; this one waits for the handshake.
		if err := g.waitConfirmed(ctx); err != nil {
			return 0, fmt.Errorf("nq: call %s/%d: %w", r.s.name, method, err)
		}
	}
	c := call{method: method, cb: done, w: w}
	s := r.s
	s.wmu.Lock()
	if err := cmp.Or(s.werr, s.callErr); err != nil {
		s.wmu.Unlock()
		return 0, fmt.Errorf("nq: call %s/%d: %w", s.name, method, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		// The caller's deadline replaces the handler's default (and spares a clock read).
		c.deadline, c.ctxDL = r.calls.at(dl), true
	} else {
		c.deadline = r.calls.now() + int64(r.timeout)
	}
	c.id = r.calls.allocID(r.nextID)
	r.nextID = c.id
	id := c.id
	if done != nil && ctx.Done() != nil {
		switch {
		case r.calls.watchDone == ctx.Done():
			// The same ctx, or one cancelled with it. (Done channels, not contexts, are
			// compared: a context of a type that is not comparable would panic here.)
			c.shared = true
		case r.calls.watchDone == nil:
			c.shared = true
			r.calls.watchDone = ctx.Done()
			r.calls.watchStop = context.AfterFunc(ctx, func() { r.ctxDone(ctx) })
		default:
			own := &waiter{}
			c.w = own
			own.stop = context.AfterFunc(ctx, func() {
				s.wmu.Lock()
				c, mine := r.calls.abandonWaiter(id, own)
				s.wmu.Unlock()
				if mine {
					r.finish(c, nil, r.ctxError(ctx, method))
				}
			})
		}
	}
	r.calls.add(c)
	before := len(s.wbuf)
	var err error
	if s.wbuf, err = wire.AppendRequest(s.wbuf, method, id, payload); err != nil {
		r.calls.remove(id)
		s.wmu.Unlock()
		if c.w != nil && c.w.stop != nil {
			c.w.stop()
		}
		return 0, fmt.Errorf("nq: call %s/%d: %w", s.name, method, err)
	}
	s.commit(before)
	return id, nil
}

// expire fails the calls whose deadline passed.
func (r *RPCStream) expire() {
	r.s.wmu.Lock()
	expired := r.calls.expired(r.calls.now())
	r.s.wmu.Unlock()
	for _, c := range expired {
		if c.ctxDL {
			r.finish(c, nil, fmt.Errorf("nq: call %s/%d at its ctx deadline: %w", r.s.name, c.method, ErrTimeout))
		} else {
			r.finish(c, nil, fmt.Errorf("nq: call %s/%d after %v: %w", r.s.name, c.method, r.timeout, ErrTimeout))
		}
	}
}

// ctxDone fails the calls made with ctx, which was cancelled or reached its deadline.
func (r *RPCStream) ctxDone(ctx context.Context) {
	r.s.wmu.Lock()
	calls := r.calls.takeCtx(ctx)
	r.s.wmu.Unlock()
	for _, c := range calls {
		r.finish(c, nil, r.ctxError(ctx, c.method))
	}
}

// complete finishes the pending call id with (reply, err) and reports whether it was pending.
func (r *RPCStream) complete(id uint64, reply []byte, err error) bool {
	r.s.wmu.Lock()
	c, ok := r.calls.remove(id)
	r.s.wmu.Unlock()
	if ok {
		r.finish(c, reply, err)
	}
	return ok
}

// finish delivers the result of a call that was just removed from the table.
func (r *RPCStream) finish(c call, reply []byte, err error) {
	if c.w != nil && c.w.stop != nil {
		c.w.stop()
	}
	if c.cb != nil {
		c.cb(reply, err)
		return
	}
	if err == nil {
		c.w.reply = append([]byte{}, reply...)
	}
	c.w.err = err
	c.w.ch <- struct{}{}
}

// consume dispatches every complete frame in b.
func (r *RPCStream) consume(b []byte) (int, error) {
	var pass passFlags
	if len(r.held) > 0 {
		r.release()
	}
	used := 0
	var f wire.Frame
	for used < len(b) {
		if r.s.isClosed() {
			return len(b), nil // a handler closed the stream: drop the rest of the chunk
		}
		n, err := f.Decode(b[used:], r.s.maxFrame)
		if errors.Is(err, wire.ErrShort) {
			break
		}
		if err != nil {
			return used, err
		}
		frame := b[used : used+n]
		used += n
		r.s.framesIn++
		switch f.Kind {
		case wire.KindRequest, wire.KindNotify:
			// A request is held while the stream is congested (its output backed up, or its
			// handler holding its bound of requests unanswered); a notification only behind a
			// held request (its handler's output, if any, is the application's).
			if len(r.held) > 0 || (f.Kind == wire.KindRequest && r.s.congested()) {
				if err := r.hold(f.Kind, frame, &pass); err != nil {
					return used, err
				}
				continue
			}
			r.dispatch(f, &pass)
		case wire.KindReply:
			r.complete(f.MsgID, f.Payload, nil)
		case wire.KindError:
			code, msg, data, perr := wire.ParseErrorPayload(f.Payload)
			if perr != nil {
				return used, perr
			}
			r.complete(f.MsgID, nil, &RemoteError{Code: code, Message: msg, Data: append([]byte(nil), data...)})
		}
	}
	r.releaseNow()
	return used, nil
}

// releaseNow runs held frames while the output has room, and reports whether some are still
// held: then a wake from the writer side has been asked for, before the last look at the
// backlog, so that a drop in between is not missed.
func (r *RPCStream) releaseNow() bool {
	for len(r.held) > 0 && !r.s.isClosed() {
		r.s.wakeReader.Store(true)
		if r.s.congested() {
			return true
		}
		r.s.wakeReader.Store(false)
		r.release()
	}
	return false
}

// holding reports whether the reader holds frames back. Only the reader calls it.
func (r *RPCStream) holding() bool { return len(r.held) > 0 }

// drainAtPeerFIN runs every held frame, as the peer reads and the handler answers, and waits
// until the handler has answered every request it was given (answers it gives later, from
// another goroutine, still reach the peer before this side's FIN). The reader calls it when the
// peer has finished its side. It returns early if the stream closes or the peer stops reading
// (STOP_SENDING: no answer can reach it).
func (r *RPCStream) drainAtPeerFIN() {
	r.s.finWait.Store(true) // before the look at unanswered, so that the last answer wakes us
	defer r.s.finWait.Store(false)
	for {
		r.s.setPass(true)
		more := r.releaseNow()
		r.s.setPass(false)
		if !more && r.s.unanswered.Load() <= 0 {
			return
		}
		select {
		case <-r.s.wake:
		case <-r.s.qs.Context().Done():
			return
		case <-r.s.ctx.Done():
			return
		}
	}
}

// dispatch runs the handler of a request or notification frame.
func (r *RPCStream) dispatch(f wire.Frame, pass *passFlags) {
	if f.Kind == wire.KindRequest {
		r.dispatchRequest(f, pass)
	} else if r.h.OnNotify != nil {
		r.h.OnNotify(r, f.Method, f.Payload)
	}
}

// heldLimit is how many bytes of frames a connection's RPC streams hold back, together, before
// the one that would hold more is reset.
func (r *RPCStream) heldLimit() int64 {
	return int64(max(heldFloor, 2*(r.s.maxFrame+wire.MaxFrameHeaderLen)))
}

// Flags stored in the byte before each held frame: what the connection was when it arrived.
const (
	heldEarly    = 1 << iota // it came in 0-RTT data (Request.Early)
	heldDraining             // the server was already shutting down (it gets CodeShuttingDown)
)

// hold keeps a request or notification frame, with the pass's flags as they were on its
// arrival, to run once the stream is no longer congested; or fails with ErrPeerNotReading (or
// ErrTooManyRequests, when only unanswered requests congest the stream) when the connection
// holds too much already.
func (r *RPCStream) hold(kind wire.Kind, frame []byte, pass *passFlags) error {
	g, n := r.s.gen, int64(1+len(frame))
	for {
		total := g.heldBytes.Load()
		if total+n > r.heldLimit() {
			if !r.s.overBacklog() && r.s.tooManyUnanswered() {
				return fmt.Errorf("%w: %d requests unanswered on the stream, %d bytes of requests held on the connection",
					ErrTooManyRequests, r.s.unanswered.Load(), total)
			}
			return fmt.Errorf("%w: %d bytes of output unsent on the stream, %d bytes of requests held on the connection",
				ErrPeerNotReading, r.s.unsent(), total)
		}
		if g.heldBytes.CompareAndSwap(total, total+n) {
			break
		}
	}
	if r.heldAcct.Add(n) < 0 {
		g.heldBytes.Add(-n) // the stream has closed: it no longer counts
	}
	var flags byte
	if kind == wire.KindRequest {
		r.readPassFlags(pass)
		if pass.early {
			flags |= heldEarly
		}
		if pass.draining {
			flags |= heldDraining
		}
		r.s.addHeldRequests(1)
	}
	r.held = append(append(r.held, flags), frame...)
	g.conn.framesHeld.Add(1)
	return nil
}

// heldKeep is the capacity of an emptied held buffer worth keeping for the next time.
const heldKeep = 64 << 10

// release runs held frames in order until none is left, the stream closes, or it is congested
// again.
func (r *RPCStream) release() {
	used := 0
	var f wire.Frame
	for used < len(r.held) && !r.s.isClosed() && !r.s.congested() {
		flags := r.held[used]
		n, err := f.Decode(r.held[used+1:], r.s.maxFrame)
		if err != nil {
			break // cannot happen: only whole frames that decoded are held
		}
		used += 1 + n
		if f.Kind == wire.KindRequest {
			r.s.addHeldRequests(-1)
		}
		pass := passFlags{read: true, early: flags&heldEarly != 0, draining: flags&heldDraining != 0}
		r.dispatch(f, &pass)
	}
	if r.s.isClosed() {
		used = len(r.held)
	}
	if r.heldAcct.Add(-int64(used)) >= 0 {
		r.s.gen.heldBytes.Add(-int64(used))
	}
	r.held = r.held[:copy(r.held, r.held[used:])]
	if len(r.held) == 0 && cap(r.held) > heldKeep {
		r.held = nil
	}
}

// closedHeld marks heldAcct once the stream has closed: far enough below zero that no amount
// held later brings it back up.
const closedHeld = math.MinInt64 / 2

// releaseHeld gives what the stream holds back to the connection's budget when the stream
// closes (before its close hook runs): the held frames will never run. The reader drops them.
func (r *RPCStream) releaseHeld() {
	if n := r.heldAcct.Swap(closedHeld); n > 0 {
		r.s.gen.heldBytes.Add(-n)
	}
	r.s.dropHeldRequests() // none of them will be answered
}

// passFlags are facts about the connection that the requests of one received chunk share, read
// when the chunk's first request is dispatched rather than for every request.
type passFlags struct {
	read     bool
	early    bool // the chunk arrived before the handshake completed (0-RTT)
	draining bool // the server is shutting down
}

// readPassFlags fills pass once per received chunk.
func (r *RPCStream) readPassFlags(pass *passFlags) {
	if !pass.read {
		pass.read = true
		pass.early = r.s.gen.early.Load() && !r.s.gen.confirmed()
		pass.draining = r.srv != nil && r.srv.draining.Load()
	}
}

func (r *RPCStream) dispatchRequest(f wire.Frame, pass *passFlags) {
	r.readPassFlags(pass)
	if r.h.OnRequest == nil {
		r.writeError(f.MsgID, &RemoteError{Code: CodeNoHandler, Message: "no request handler for " + r.s.name})
		return
	}
	if pass.draining {
		// Shutdown sets draining, then waits until no stream is inside a handler pass and
		// every request counted is answered: a pass either saw draining when it read its
		// flags (inside the pass) or its requests are counted when it ends.
		r.writeError(f.MsgID, &RemoteError{Code: CodeShuttingDown, Message: "server shutting down"})
		return
	}
	req := r.newRequest()
	req.Method, req.Payload, req.stream, req.msgid, req.early = f.Method, f.Payload, r, f.MsgID, pass.early
	r.s.passRequests++
	r.s.unanswered.Add(1)
	r.h.OnRequest(req)
	if r.h.ReuseRequests && req.answered.Load() {
		// Answered (the answering goroutine no longer touches the record once it has set
		// answered) and the handler has returned: the handler promised not to keep it.
		r.reuse = req
	}
}

// requestBatch is how many Request records the reader allocates at once. Records are not
// reused unless the handler allows it (a handler may keep its Request), so a Request kept alive
// keeps its batch alive: a few KiB at most.
const requestBatch = 32

// newRequest returns an unanswered Request record; only the stream's reader calls it.
func (r *RPCStream) newRequest() *Request {
	if req := r.reuse; req != nil {
		r.reuse = nil
		req.answered.Store(false)
		return req
	}
	if len(r.requests) == 0 {
		r.requests = make([]Request, requestBatch)
	}
	req := &r.requests[0]
	r.requests = r.requests[1:]
	return req
}

func (r *RPCStream) writeError(msgid uint64, e *RemoteError) error {
	return r.s.write(func(b []byte) ([]byte, error) { return wire.AppendError(b, msgid, e.Code, e.Message, e.Data) })
}

// closed fails every pending call (the stream ran the close hook first).
func (r *RPCStream) closed(err error) { r.failCalls(err) }

// peerFinished runs when the peer has finished its side while frames are still held: the
// stream stays open for their answers, but the peer will answer no call, so the pending calls
// fail now and new ones fail at once.
func (r *RPCStream) peerFinished() {
	r.s.wmu.Lock()
	r.s.callErr = errPeerFinished
	r.s.wmu.Unlock()
	r.failCalls(errPeerFinished)
}

// failCalls fails every pending call with err.
func (r *RPCStream) failCalls(err error) {
	r.s.wmu.Lock()
	pending := r.calls.drain()
	r.s.wmu.Unlock()
	for _, c := range pending {
		r.finish(c, nil, fmt.Errorf("nq: call on %s: %w", r.s.name, err))
	}
}

func (r *RPCStream) closeHook(err error) {
	if r.h.OnClose != nil {
		r.h.OnClose(r, err)
	}
}

// Early reports whether the request arrived before the handshake completed, in 0-RTT data
// (Server.Allow0RTT): an attacker may have replayed it. nq clients send only calls marked with
// Idempotent that way.
func (req *Request) Early() bool { return req.early }

// Stream returns the stream the request arrived on.
func (req *Request) Stream() *RPCStream { return req.stream }

// Conn returns the connection the request arrived on.
func (req *Request) Conn() *Conn { return req.stream.s.gen.conn }

// Context returns a context that ends when the request's stream closes.
func (req *Request) Context() context.Context { return req.stream.s.ctx }

// Reply answers the request with payload. It returns ErrAnswered if the request was already
// answered, or the stream's close error if the stream has closed.
func (req *Request) Reply(payload []byte) error {
	if err := req.stream.checkPayload(payload); err != nil {
		return err
	}
	id := req.msgid
	return req.stream.s.answer(&req.answered, func(b []byte) ([]byte, error) { return wire.AppendReply(b, id, payload) })
}

// Fail answers the request with an error. A *RemoteError (found with errors.As) travels as is;
// any other error travels as a RemoteError with code CodeUnhandled and the error's text, cut to
// fit the stream's frame limit. A RemoteError whose encoding is over that limit is not sent: Fail
// returns an error matching ErrFrameTooLarge and the request stays unanswered.
func (req *Request) Fail(err error) error {
	var re *RemoteError
	if !errors.As(err, &re) {
		msg := "unknown error"
		if err != nil {
			msg = err.Error()
		}
		re = &RemoteError{Code: CodeUnhandled, Message: fitMessage(msg, req.stream.s.maxFrame-errorOverhead)}
	}
	if re.Code < wire.MinErrorCode || re.Code > wire.MaxErrorCode {
		return fmt.Errorf("nq: Fail: code %d outside [%d, %d]", re.Code, int64(wire.MinErrorCode), int64(wire.MaxErrorCode))
	}
	if n := wire.ErrorPayloadLen(re.Code, re.Message, re.Data); n > req.stream.s.maxFrame {
		return fmt.Errorf("nq: Fail on %s: error payload of %d bytes over the %d-byte limit: %w", req.stream.s.name, n, req.stream.s.maxFrame, ErrFrameTooLarge)
	}
	id := req.msgid
	return req.stream.s.answer(&req.answered, func(b []byte) ([]byte, error) {
		return wire.AppendError(b, id, re.Code, re.Message, re.Data)
	})
}

// errorOverhead bounds what an error payload adds to its message: two varints (code and length)
// of at most 8 bytes each.
const errorOverhead = 16

// fitMessage returns msg as sent on the wire (invalid UTF-8 replaced), cut at a character
// boundary to at most limit bytes.
func fitMessage(msg string, limit int) string {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) <= limit {
		return msg
	}
	limit = max(limit, 0)
	for limit > 0 && !utf8.RuneStart(msg[limit]) {
		limit--
	}
	return msg[:limit]
}
