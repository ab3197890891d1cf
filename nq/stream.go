package nq

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/internal/wire"
)

// flushThreshold is the write-buffer size past which a stream flushes at once instead of waiting
// for the end of the handler pass.
const flushThreshold = 32 << 10

// readChunk is the initial read buffer of a stream; it grows up to the frame limit as needed.
const readChunk = 4 << 10

// Bounds on what a peer that does not read its answers can make a connection hold. Past
// backlogLimit of unsent output on an RPC stream, the stream's reader holds new requests (and
// the notifications behind them) back instead of running their handlers, and goes on reading
// (the answers to its own calls may be behind them). Once the frames held on the connection's
// streams together pass heldFloor (or twice the largest frame), the stream that holds one more
// is reset with ErrPeerNotReading. Holding rather than pausing the reader keeps two peers that call each other
// heavily on one stream from each waiting for the other to read.
const (
	backlogLimit = 256 << 10
	heldFloor    = 4 << 20
)

// errPeerFinished closes a stream the peer finished (FIN). It matches ErrClosed (the stream is
// closed; calls made on it now fail) and ErrConnLost (calls that were pending on it are lost).
var errPeerFinished error = peerFinished{}

// errConnEnding fails writes on the streams of a connection that is closing gracefully for a
// reason other than the application's Close (a Reset, a server shutdown): like a lost
// connection, it matches ErrConnLost.
var errConnEnding error = connEnding{}

type connEnding struct{}

func (connEnding) Error() string        { return "nq: connection closing" }
func (connEnding) Is(target error) bool { return target == ErrConnLost }

type peerFinished struct{}

func (peerFinished) Error() string { return "nq: stream closed by the peer" }

func (peerFinished) Is(target error) bool {
	return target == ErrClosed || target == net.ErrClosed || target == ErrConnLost
}

// protoHandler is what a stream kind (RPC, records) plugs into the common stream machinery.
type protoHandler interface {
	// consume parses and dispatches every complete frame at the start of b and returns how many
	// bytes it used. It returns wire.ErrShort-free errors only for protocol violations.
	consume(b []byte) (int, error)
	// closed runs once when the stream ends, after the close hook: it fails what is pending.
	closed(err error)
	// closeHook runs the application's close hook, if it has one.
	closeHook(err error)
}

// stream is the machinery shared by every stream kind: the QUIC stream, the batched write
// buffer and the reader loop.
//
// Writes append to wbuf. While the stream's reader is inside a handler pass (dispatching the
// frames of one received chunk), appends are left for the end of the pass, so the replies to a
// burst of requests leave together; outside a pass the writer flushes at once. A flush hands
// the bytes to quic-go with TryWriteAll, which never blocks; when flow control is exhausted a
// goroutine finishes the write with a blocking Write, and later flushes queue behind it.
type stream struct {
	gen      *generation
	qs       *quicgo.Stream
	name     string
	outgoing bool
	maxFrame int
	proto    protoHandler

	ctx    context.Context
	cancel context.CancelFunc

	// framesIn counts the frames the reader parsed since the end of its last handler pass; the
	// pass's end adds them to the connection's count (one atomic add per pass, not per frame).
	// passRequests counts the requests it dispatched; the pass's end adds them to requestsIn.
	framesIn     uint64
	passRequests int64

	wmu       sync.Mutex
	written   int64  // bytes appended to the stream so far: the QUIC offset of the next append
	framesOut uint64 // frames in wbuf, added to the connection's count when wbuf is handed on
	// requestsIn counts the requests dispatched by ended handler passes, requestsAnswered the
	// answers given (RPC streams; for the server's drain).
	requestsIn, requestsAnswered int64
	// heldReqs counts the requests an RPC stream's reader holds back (RPCStream.hold): pending
	// too, for the server's drain.
	heldReqs   int64
	wbuf       []byte
	inPass     bool
	werr       error         // sticky: later writes fail with it (set by a failure or a close)
	callErr    error         // sticky: later calls (not answers) fail with it (the peer finished)
	failed     bool          // a write to quic-go failed: nothing more is sent
	flushMu    sync.Mutex    // taken before wmu; guards what follows
	spare      []byte        // the buffer handed to quic-go last, emptied for reuse as wbuf
	blocked    bool          // a blocking write is in progress; flushes leave the buffer to it
	finned     bool          // FIN sent or pending (finish ran)
	finPending bool          // finish came during a blocking write: send FIN when it is done
	unblocked  chan struct{} // closed when the blocking write ends (made when it starts)

	// blockedLen is the size of the buffer a blocking write is handing to quic-go, 0 when none
	// runs (written under flushMu); with wbuf it is the stream's unsent output.
	blockedLen atomic.Int64
	// unanswered counts the RPC requests dispatched to the handler and not answered yet;
	// maxUnanswered (RPCHandler.MaxUnanswered, 0 for no bound) is set before the reader starts.
	unanswered    atomic.Int64
	maxUnanswered int64
	// maxUnsent bounds the unsent output past which what the application pushes (Notify, record
	// sends) is refused with ErrBacklogFull; 0 for no bound. Set before the stream is used.
	maxUnsent int64
	// finWait is set by a reader that waits, after the peer's FIN, for the last answers: the
	// answer that leaves none unanswered signals wake.
	finWait atomic.Bool
	// wakeReader is set by a reader that holds frames back until the stream is no longer
	// congested; whoever ends that wakes the reader with a read deadline in the past.
	wakeReader atomic.Bool
	wake       chan struct{} // also signalled by such a wake (capacity 1), for a reader not in Read

	opened   atomic.Bool // the open hook accepted the stream
	hooked   atomic.Bool // the close hook has run (or is running)
	closing  atomic.Bool
	done     chan struct{}
	closeErr error
}

func newStream(g *generation, qs *quicgo.Stream, name string, outgoing bool) *stream {
	ctx, cancel := context.WithCancel(g.ctx)
	return &stream{
		gen:      g,
		qs:       qs,
		name:     name,
		outgoing: outgoing,
		maxFrame: g.conn.cfg.maxFrame,
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
		wake:     make(chan struct{}, 1),
	}
}

// write appends one encoded frame via appendFn under the write lock and flushes according to the
// batching rules. appendFn must only append to the slice it is given, and return it unchanged
// with an error when it cannot encode.
func (s *stream) write(appendFn func([]byte) ([]byte, error)) error {
	s.wmu.Lock()
	return s.appendLocked(appendFn)
}

// send is write for what the application starts (Notify, records): it is refused with
// ErrBacklogFull while the stream's unsent output is at its bound.
func (s *stream) send(appendFn func([]byte) ([]byte, error)) error {
	s.wmu.Lock()
	if err := s.backlogFullLocked(); err != nil {
		s.wmu.Unlock()
		return err
	}
	return s.appendLocked(appendFn)
}

// backlogFullLocked returns an error matching ErrBacklogFull when the stream's unsent output has
// reached maxUnsent (and the stream can still be written: otherwise the write reports why not).
// Output waits for the peer only while a blocking write runs; before that, what the buffer
// holds is a handler pass's frames, about to leave. The write lock is held.
func (s *stream) backlogFullLocked() error {
	if s.maxUnsent <= 0 || s.werr != nil {
		return nil
	}
	blocked := s.blockedLen.Load()
	if blocked == 0 {
		return nil
	}
	if n := int64(len(s.wbuf)) + blocked; n >= s.maxUnsent {
		return fmt.Errorf("nq: %s: %d bytes wait for the peer to read, at the %d-byte bound: %w", s.name, n, s.maxUnsent, ErrBacklogFull)
	}
	return nil
}

// answer writes the answer to a request unless answered says it was given already (then it
// returns ErrAnswered). answered is set and the answer counted under the write lock, so each
// request gets one answer however many goroutines try.
func (s *stream) answer(answered *atomic.Bool, appendFn func([]byte) ([]byte, error)) error {
	s.wmu.Lock()
	if answered.Load() {
		s.wmu.Unlock()
		return ErrAnswered
	}
	answered.Store(true)
	s.requestsAnswered++
	left := s.unanswered.Add(-1)
	err := s.appendLocked(appendFn)
	s.outputShrank() // an answer may end the congestion a holding reader waits out
	if left == 0 && s.finWait.Load() {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return err
}

// requestsPending returns how many dispatched requests wait for their answer, and whether a
// handler pass is running (the requests it dispatches are counted when it ends).
func (s *stream) requestsPending() (n int64, inPass bool) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return max(s.requestsIn-s.requestsAnswered, 0) + max(s.heldReqs, 0), s.inPass
}

// addHeldRequests counts requests the reader holds back (d > 0) or releases (d < 0).
func (s *stream) addHeldRequests(d int64) {
	s.wmu.Lock()
	s.heldReqs += d
	s.wmu.Unlock()
}

// dropHeldRequests forgets the held requests of a stream that closed: they will not be answered.
func (s *stream) dropHeldRequests() {
	s.wmu.Lock()
	s.heldReqs = 0
	s.wmu.Unlock()
}

// appendLocked is write's body, entered with the write lock held; it releases the lock.
func (s *stream) appendLocked(appendFn func([]byte) ([]byte, error)) error {
	if s.werr != nil {
		err := s.werr
		s.wmu.Unlock()
		return err
	}
	var err error
	before := len(s.wbuf)
	if s.wbuf, err = appendFn(s.wbuf); err != nil {
		s.wmu.Unlock()
		return err
	}
	s.commit(before)
	return nil
}

// commit finishes a frame appended to wbuf under the write lock (before is the buffer's length
// before the append): it counts the bytes and the frame, releases the lock, and flushes now or
// leaves the frame for the end of the handler pass.
func (s *stream) commit(before int) {
	s.written += int64(len(s.wbuf) - before)
	s.framesOut++
	deferToPass := s.inPass && len(s.wbuf) < flushThreshold
	s.wmu.Unlock()
	if !deferToPass {
		s.flush()
	}
}

// flush hands everything buffered to quic-go without blocking the caller.
func (s *stream) flush() {
	s.flushMu.Lock()
	s.wmu.Lock()
	s.flushLocked()
}

// flushLocked is flush entered with flushMu and the write lock held; it releases both.
func (s *stream) flushLocked() {
	buf := s.wbuf
	if s.blocked || len(buf) == 0 || s.failed {
		s.wmu.Unlock()
		s.flushMu.Unlock()
		return
	}
	s.handOn()
	s.wmu.Unlock()

	err := s.qs.TryWriteAll(buf)
	if errors.Is(err, quicgo.ErrWouldBlock) {
		s.blocked = true
		s.blockedLen.Store(int64(len(buf)))
		s.unblocked = make(chan struct{})
		s.flushMu.Unlock()
		go s.blockingWrite(buf)
		return
	}
	s.keepSpare(buf)
	s.flushMu.Unlock()
	if err != nil {
		s.failWrites(err)
		return
	}
	s.outputShrank()
}

// blockingWrite finishes a flush that flow control held back, then sends with blocking writes
// whatever was buffered meanwhile, in order, until the buffer is empty; then normal flushing
// resumes (or the FIN a shutdown left for it goes out).
func (s *stream) blockingWrite(buf []byte) {
	for {
		err := s.writeInSlices(buf)
		s.flushMu.Lock()
		s.keepSpare(buf)
		if err != nil {
			s.blocked = false
			s.blockedLen.Store(0)
			close(s.unblocked)
			s.flushMu.Unlock()
			s.failWrites(err)
			return
		}
		s.wmu.Lock()
		buf = s.wbuf
		s.blockedLen.Store(int64(len(buf)))
		if len(buf) == 0 {
			s.wmu.Unlock()
			s.blocked = false
			close(s.unblocked)
			fin := s.finPending
			s.flushMu.Unlock()
			if fin {
				s.qs.Close()
			}
			s.outputShrank()
			return
		}
		s.handOn()
		s.wmu.Unlock()
		s.flushMu.Unlock()
		s.outputShrank()
	}
}

// blockSlice is the most a blocking write hands quic-go at once.
const blockSlice = 64 << 10

// writeInSlices hands buf to quic-go with blocking writes of at most blockSlice bytes, lowering
// blockedLen as each is accepted, so that Unsent, the bounds on it and a reader holding frames
// back follow the peer's reading before the whole buffer has gone.
func (s *stream) writeInSlices(buf []byte) error {
	for len(buf) > 0 {
		n := min(len(buf), blockSlice)
		if _, err := s.qs.Write(buf[:n]); err != nil {
			return err
		}
		buf = buf[n:]
		if len(buf) > 0 {
			s.blockedLen.Store(int64(len(buf)))
			s.outputShrank()
		}
	}
	return nil
}

// unsent returns the stream's output that quic-go has not accepted yet.
func (s *stream) unsent() int64 {
	s.wmu.Lock()
	n := len(s.wbuf)
	s.wmu.Unlock()
	return int64(n) + s.blockedLen.Load()
}

// overBacklog reports whether the stream's unsent output is over its backlog limit. Output is
// unsent only while a blocking write waits for the peer, so the common case is one atomic load.
func (s *stream) overBacklog() bool {
	blocked := s.blockedLen.Load()
	if blocked == 0 {
		return false
	}
	return blocked > backlogLimit || s.unsent() > backlogLimit
}

// tooManyUnanswered reports whether the handler holds its bound of the stream's requests
// unanswered (RPCHandler.MaxUnanswered).
func (s *stream) tooManyUnanswered() bool {
	return s.maxUnanswered > 0 && s.unanswered.Load() >= s.maxUnanswered
}

// congested reports whether an RPC stream's reader holds the peer's new requests back: unsent
// output over the backlog limit, or the handler holding its bound of requests unanswered.
func (s *stream) congested() bool { return s.tooManyUnanswered() || s.overBacklog() }

// outputShrank wakes a reader that holds frames back until the stream is no longer congested,
// if it no longer is (after output left or an answer was given): a read deadline in the past
// ends its wait in Read, and a signal on wake its wait in drainAtPeerFIN.
func (s *stream) outputShrank() {
	if s.wakeReader.Load() && !s.congested() && s.wakeReader.CompareAndSwap(true, false) {
		_ = s.qs.SetReadDeadline(time.Now())
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// handOn starts an empty write buffer (the spare one, if kept) in place of wbuf, which the caller
// has taken to hand to quic-go, and counts its frames as sent. Both locks are held.
func (s *stream) handOn() {
	s.wbuf = s.spare[:0]
	s.spare = nil
	s.gen.conn.framesSent.Add(s.framesOut)
	s.framesOut = 0
}

// drain flushes and waits until nothing buffered remains behind a blocking write, so that
// bytes written directly to the QUIC stream afterwards cannot overtake buffered ones (the
// preamble of a raw stream).
func (s *stream) drain() {
	for {
		s.flush()
		s.flushMu.Lock()
		if !s.blocked {
			s.flushMu.Unlock()
			return
		}
		ch := s.unblocked
		s.flushMu.Unlock()
		<-ch
	}
}

// keepSpare keeps buf, which quic-go has copied, for reuse as the next write buffer. flushMu is
// held.
func (s *stream) keepSpare(buf []byte) {
	if cap(buf) > 4*flushThreshold {
		return // do not keep a huge buffer around after a burst
	}
	if s.spare == nil {
		s.spare = buf[:0]
	}
}

// failWrites records a write failure and closes the stream. The close (hooks, pending calls)
// runs on its own goroutine: the failure surfaces inside whatever goroutine wrote, which may be
// the application's, holding its own locks.
func (s *stream) failWrites(err error) {
	cerr := s.gen.classify(err)
	s.wmu.Lock()
	if s.werr == nil {
		s.werr = cerr
	}
	s.failed = true
	s.wbuf = s.wbuf[:0]
	s.framesOut = 0
	s.wmu.Unlock()
	go s.close(cerr)
}

// setPass marks the start or the end of a handler pass. Ending a pass counts the frames it
// parsed and flushes.
func (s *stream) setPass(in bool) {
	if in {
		s.wmu.Lock()
		s.inPass = true
		s.wmu.Unlock()
		return
	}
	if s.framesIn > 0 {
		s.gen.conn.framesRecv.Add(s.framesIn)
		s.framesIn = 0
	}
	s.flushMu.Lock()
	s.wmu.Lock()
	s.inPass = false
	s.requestsIn += s.passRequests
	s.passRequests = 0
	s.flushLocked()
}

// readLoop reads the stream until it ends, handing complete frames to the protocol handler.
// prefix holds bytes already read after the preamble.
func (s *stream) readLoop(prefix []byte) {
	buf := make([]byte, max(readChunk, len(prefix)))
	end := copy(buf, prefix)
	start := 0
	woken := false // a wake from outputShrank: held frames may run now
	for {
		if end > start || woken {
			woken = false
			s.setPass(true)
			n, err := s.proto.consume(buf[start:end])
			s.setPass(false)
			if err != nil {
				s.protocolError(err)
				return
			}
			start += n
		}
		if start == end {
			start, end = 0, 0
		} else if start > 0 && (end == len(buf) || start > len(buf)/2) {
			end = copy(buf, buf[start:end])
			start = 0
		}
		if end == len(buf) {
			// A frame larger than the buffer: grow, up to what the largest frame needs
			// (consume rejects frames over the limit), so that a frame that never completes
			// holds no more than that.
			size := 2 * len(buf)
			if limit := s.maxFrame + wire.MaxFrameHeaderLen; size > limit && limit > len(buf) {
				size = limit
			}
			nb := make([]byte, size)
			copy(nb, buf[:end])
			buf = nb
		}
		n, err := s.qs.Read(buf[end:])
		end += n
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Only outputShrank sets a deadline on a stream past its preamble.
			_ = s.qs.SetReadDeadline(time.Time{})
			woken = true
			continue
		}
		if err != nil {
			if end > start {
				s.setPass(true)
				m, perr := s.proto.consume(buf[start:end])
				s.setPass(false)
				if perr != nil {
					s.protocolError(perr)
					return
				}
				if start+m != end && errors.Is(err, io.EOF) {
					s.protocolError(io.ErrUnexpectedEOF)
					return
				}
			}
			if errors.Is(err, io.EOF) {
				// The peer finished writing: run what it sent that is still held back, wait
				// for the answers its requests are still owed (unless it stopped reading
				// too), then answer with our FIN once what we have buffered is out, so a peer
				// closing the connection gracefully knows everything arrived.
				if rs, ok := s.proto.(*RPCStream); ok && (rs.holding() || s.unanswered.Load() > 0) {
					rs.peerFinished()
					rs.drainAtPeerFIN()
				}
				s.finish()
				s.close(errPeerFinished)
			} else {
				s.close(s.gen.classify(err))
			}
			return
		}
	}
}

// protocolError closes the stream after the peer broke the protocol.
func (s *stream) protocolError(err error) {
	code := wire.StreamProtocolError
	cerr := error(ErrProtocol)
	switch {
	case errors.Is(err, wire.ErrFrameTooLarge):
		code = wire.StreamFrameTooLarge
		cerr = ErrFrameTooLarge
	case errors.Is(err, ErrPeerNotReading):
		code = wire.StreamNotReading
		cerr = ErrPeerNotReading
	case errors.Is(err, ErrTooManyRequests):
		code = wire.StreamTooManyRequests
		cerr = ErrTooManyRequests
	}
	s.gen.conn.log.Debug("nq: stream protocol error", "stream", s.qs.StreamID(), "protocol", s.name, "err", err)
	s.abort(code, errors.Join(cerr, err))
}

// abort resets both directions of the stream with code and closes it locally with err.
func (s *stream) abort(code wire.StreamCode, err error) {
	if t := s.gen.acks; t != nil {
		t.failStream(s.qs.StreamID(), err)
	}
	s.qs.CancelRead(quicgo.StreamErrorCode(code))
	s.qs.CancelWrite(quicgo.StreamErrorCode(code))
	s.close(err)
}

// finish ends the write direction cleanly: later writes fail with ErrClosed, what is buffered
// goes out, then FIN (after a blocked write has finished, if one is running). Reading goes on.
func (s *stream) finish() { s.finishWith(ErrClosed) }

// finishWith is finish with werr as the error of later writes.
func (s *stream) finishWith(werr error) {
	s.wmu.Lock()
	if s.werr == nil {
		s.werr = werr // later writes fail; what is buffered still goes out
	}
	s.wmu.Unlock()
	s.flush()
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	if s.finned {
		return
	}
	s.finned = true
	if s.blocked {
		s.finPending = true
		return
	}
	s.qs.Close()
}

// shutdown is the application's Close: finish writing, stop reading, close.
func (s *stream) shutdown() {
	s.finish()
	s.qs.CancelRead(quicgo.StreamErrorCode(wire.StreamClosed))
	s.close(ErrClosed)
}

// close ends the stream once: it runs the protocol's close logic (hook, then pending calls).
// A second call returns at once (it may come from inside a hook); wait on s.done to know the
// close has finished.
func (s *stream) close(err error) {
	s.wmu.Lock()
	if s.closing.Load() {
		s.wmu.Unlock()
		return
	}
	s.closeErr = err
	if s.werr == nil {
		s.werr = err
	}
	s.closing.Store(true)
	s.wmu.Unlock()
	s.cancel()
	if rs, ok := s.proto.(*RPCStream); ok {
		rs.releaseHeld()
	}
	// Stop reading too: what arrives from now on would only be discarded, and the peer (one
	// that sent STOP_SENDING, say) would otherwise go on sending.
	s.qs.CancelRead(quicgo.StreamErrorCode(wire.StreamClosed))
	if t := s.gen.acks; t != nil {
		if !errors.Is(err, ErrClosed) {
			t.failStream(s.qs.StreamID(), err) // reset or broken: the bytes in flight are lost
		}
		t.forget(s.qs.StreamID()) // writes have stopped (werr is set)
	}
	s.runCloseHook(err)
	s.proto.closed(err)
	// Leave the registry only now: a connection teardown that finds the stream still listed
	// waits for this close to finish before running the connection's close hook.
	s.gen.removeStream(s)
	close(s.done)
}

// runCloseHook runs the close hook once, and only for a stream its open hook accepted. The close
// calls it, and so does markOpened for a stream that closed while its open hook ran (the close
// found it not yet open).
func (s *stream) runCloseHook(err error) {
	if s.opened.Load() && s.hooked.CompareAndSwap(false, true) {
		s.proto.closeHook(err)
	}
}

// markOpened records that the open hook accepted the stream. If the stream closed meanwhile (the
// connection went down, or the hook itself closed it), the close hook runs now and markOpened
// returns the close error: the stream must not be served.
func (s *stream) markOpened() error {
	s.opened.Store(true)
	if !s.closing.Load() {
		return nil
	}
	s.wmu.Lock()
	err := s.closeErr
	s.wmu.Unlock()
	s.runCloseHook(err)
	return err
}

// isClosed reports whether the stream has started closing.
func (s *stream) isClosed() bool { return s.closing.Load() }
