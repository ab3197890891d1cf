package nq

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/internal/wire"
)

// preambleTimeout bounds how long a peer may take to name the protocol of a stream it opened.
const preambleTimeout = 10 * time.Second

var connIDs atomic.Uint64

// connConfig is what a Conn takes from its Server or Client.
type connConfig struct {
	mux      *Mux
	maxFrame int
	log      *slog.Logger
}

// Conn is one logical connection. On a client it survives reconnects: each successful handshake
// starts a new generation (Generation counts them), and the Conn lives until Close. On a server
// it is one QUIC connection, from the open hook to the close hook.
//
// Its methods are safe for concurrent use.
type Conn struct {
	id     uint64
	client *Client
	server *Server
	cfg    connConfig
	log    *slog.Logger

	framesSent atomic.Uint64
	framesRecv atomic.Uint64
	framesHeld atomic.Uint64

	ctx    context.Context // ends when the Conn is finalized (client) or closed (server)
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	gen  *generation
	genN uint64
	up   chan struct{} // closed while a generation is up; replaced when it goes down
	// early is a client generation whose 0-RTT handshake is still running: idempotent calls may
	// use it. earlyUp is closed while it is set.
	early   *generation
	earlyUp chan struct{}
	// parked: a client Conn whose close hook said NoReconnect waits for Reset or Close;
	// parkedCh is closed while it does.
	parked   bool
	parkedCh chan struct{}
	rpcs     map[string]*RPC
	value    any
	ended    bool // finalized (client) or closed (server)
	remote   string
	lastErr  error       // why the last connection attempt or generation ended
	closeReq atomic.Bool // Close was called

	// client only
	addr      string
	wake      chan struct{}
	resetReq  atomic.Bool
	dialMu    sync.Mutex
	dialAbort context.CancelFunc
	closing   chan struct{} // closed by the first Close: waits for a connection give up
	closeOnce sync.Once
	// datagramsDone is closed when the datagram hook goroutine of the latest generation ends
	// (nil: none started); used by the supervising goroutine only.
	datagramsDone chan struct{}
}

func newConn(cfg connConfig, client *Client, server *Server) *Conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{
		id:       connIDs.Add(1),
		client:   client,
		server:   server,
		cfg:      cfg,
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
		up:       make(chan struct{}),
		earlyUp:  make(chan struct{}),
		parkedCh: make(chan struct{}),
		wake:     make(chan struct{}, 1),
		closing:  make(chan struct{}),
	}
	c.log = cfg.log.With("conn", c.id)
	return c
}

// IsClient reports whether this is the client end.
func (c *Conn) IsClient() bool { return c.client != nil }

// Context returns a context that ends when the Conn is finalized (client) or closed (server).
func (c *Conn) Context() context.Context { return c.ctx }

// Done returns a channel closed after the Conn has ended: after the finalize hook on a client,
// after the close hook on a server.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Generation returns how many times the connection has opened (1 after the first handshake).
func (c *Conn) Generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.genN
}

// RemoteAddr returns the peer's address on the current path (it changes when a client
// migrates), or the last one known while no generation is up ("" before the first handshake).
func (c *Conn) RemoteAddr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != nil && c.client == nil {
		// The peer's address changes when it migrates. (A client's migration changes only its
		// own address: it keeps the one read when the connection opened, as reading quic-go's
		// while Migrate switches paths would race with quic-go's connection loop.)
		return c.gen.qc.RemoteAddr().String()
	}
	return c.remote
}

// SetValue stores an application value on the Conn. On a client it persists across reconnects.
func (c *Conn) SetValue(v any) {
	c.mu.Lock()
	c.value = v
	c.mu.Unlock()
}

// Value returns the value stored with SetValue.
func (c *Conn) Value() any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.value
}

// live returns the generation that is up, or nil.
func (c *Conn) live() *generation {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// IsOpen reports whether a generation is up (handshake done, not yet closed).
func (c *Conn) IsOpen() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen != nil
}

// WaitOpen blocks until a generation is up, the Conn is closed or ends (ErrClosed as soon as
// Close is called; on a server Conn, how its connection ended) or ctx ends.
func (c *Conn) WaitOpen(ctx context.Context) error {
	_, err := c.current(ctx)
	return err
}

// current returns the generation that is up, waiting for one.
func (c *Conn) current(ctx context.Context) (*generation, error) {
	for {
		if c.closeReq.Load() {
			// Close was called: calls made after it fail, even while the connection is still
			// closing (the calls already in flight get their answers).
			return nil, fmt.Errorf("nq: conn %d: %w", c.id, ErrClosed)
		}
		c.mu.Lock()
		g, up, ended, early, earlyUp := c.gen, c.up, c.ended, c.early, c.earlyUp
		parked, parkedCh, last := c.parked, c.parkedCh, c.lastErr
		c.mu.Unlock()
		if g != nil {
			return g, nil
		}
		if parked {
			return nil, fmt.Errorf("nq: conn %d: not reconnecting (NoReconnect) after: %w", c.id, errors.Join(ErrConnLost, last))
		}
		if early != nil && early.refused.Load() {
			// Its 0-RTT data was refused: wait for its handshake (up) like any other call.
			early, earlyUp = nil, nil
		}
		if early != nil && isIdempotent(ctx) {
			return early, nil
		}
		if ended {
			return nil, fmt.Errorf("nq: conn %d: %w", c.id, c.endedErr(last))
		}
		if c.server != nil {
			return nil, fmt.Errorf("nq: conn %d: %w", c.id, ErrConnLost)
		}
		if !isIdempotent(ctx) {
			earlyUp = nil
		}
		select {
		case <-up:
		case <-earlyUp:
		case <-parkedCh:
		case <-c.closing:
		case <-c.done:
		case <-ctx.Done():
			return nil, c.ctxErr(ctx)
		}
	}
}

// endedErr is why a Conn that ended (or whose Close was called) takes no more calls: ErrClosed
// on a client (only Close ends one); on a server, how its connection ended (last): a
// *CloseError matching ErrClosed when this side's application closed it, ErrConnLost otherwise.
func (c *Conn) endedErr(last error) error {
	if c.server != nil && last != nil {
		return last
	}
	return ErrClosed
}

// ctxErr reports a ctx that ended while waiting for the connection (a deadline is ErrTimeout),
// with why the last attempt failed, if one did.
func (c *Conn) ctxErr(ctx context.Context) error {
	err := ctxErrOf(ctx)
	c.mu.Lock()
	last := c.lastErr
	c.mu.Unlock()
	if last != nil {
		return fmt.Errorf("nq: conn %d: waiting for the connection (last attempt: %v): %w", c.id, last, err)
	}
	return fmt.Errorf("nq: conn %d: waiting for the connection: %w", c.id, err)
}

// Flush sends everything buffered on every stream of the connection now.
func (c *Conn) Flush() {
	g := c.live()
	if g == nil {
		return
	}
	for _, s := range g.snapshot() {
		s.flush()
	}
}

// RPC returns the handle of the RPC protocol name on this connection: calls made through it use
// a stream of that protocol that this side opens, on first use and again after each reconnect
// (a server's handle opens its own stream even when the client opened one of that protocol; to
// push on the client's stream, use the RPCStream a request came on: Request.Stream). The handle
// stays valid for the life of the Conn.
func (c *Conn) RPC(name string) *RPC {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rpcs == nil {
		c.rpcs = make(map[string]*RPC)
	}
	h := c.rpcs[name]
	if h == nil {
		h = &RPC{conn: c, name: name}
		c.rpcs[name] = h
	}
	return h
}

// Close ends the Conn. On a client it stops reconnecting, closes the current connection (the
// close hook runs, then the finalize hook) and returns at once; wait on Done to know it ended.
// On a server it closes the connection; the close hook follows. Calls, opens and datagrams
// made after Close fail with ErrClosed; those already in flight still get their answers while
// the connection closes gracefully.
func (c *Conn) Close() error {
	c.closeReq.Store(true) // calls from now on fail with ErrClosed
	if c.client != nil {
		c.closeOnce.Do(func() { close(c.closing) })
		c.abortDial()
		c.signal()
		return nil
	}
	g := c.live()
	if g != nil {
		g.closeGraceful(wire.ConnClosedByApp, "closed by application")
	}
	return nil
}

// Reset closes the current connection of a client Conn and reconnects (after the wait the close
// hook returns). While the client waits to reconnect, Reset reconnects at once. On a server
// Conn it does nothing. It returns at once: the close follows on the Conn's goroutine. What the
// reset cuts off fails as a lost connection does (ErrConnLost, not ErrClosed, which is for
// Close).
func (c *Conn) Reset() {
	if c.client == nil {
		return
	}
	c.resetReq.Store(true)
	c.signal()
}

func (c *Conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Conn) abortDial() {
	c.dialMu.Lock()
	if c.dialAbort != nil {
		c.dialAbort()
	}
	c.dialMu.Unlock()
}

// ConnectionState returns the TLS and QUIC state of the current generation (the zero value while
// none is up): whether the handshake resumed a session (TLS.DidResume), used 0-RTT, and more.
func (c *Conn) ConnectionState() quicgo.ConnectionState {
	g := c.live()
	if g == nil {
		return quicgo.ConnectionState{}
	}
	return g.qc.ConnectionState()
}

// Stats is a snapshot of a connection's counters.
type Stats struct {
	// Generation is the number of handshakes so far (see Conn.Generation).
	Generation uint64
	// Open reports whether a generation is up; the QUIC figures below are zero when it is not.
	Open bool
	// MinRTT, LatestRTT and SmoothedRTT are the RTT estimates; RTTVar is the mean deviation.
	MinRTT, LatestRTT, SmoothedRTT, RTTVar time.Duration
	// Packets and bytes of the current generation (bytes are QUIC payload bytes).
	PacketsSent, PacketsReceived, PacketsLost uint64
	BytesSent, BytesReceived, BytesLost       uint64
	// FramesSent and FramesReceived count RPC frames and records over the life of the Conn.
	FramesSent, FramesReceived uint64
	// FramesHeld counts the requests (and notifications behind them) whose handlers waited
	// because more than 256 KiB of output to the peer was unsent on their stream (the peer reads
	// slower than it asks; see ErrPeerNotReading) or its handler held RPCHandler.MaxUnanswered
	// requests unanswered (see ErrTooManyRequests).
	FramesHeld uint64
}

// Stats returns the connection's counters.
func (c *Conn) Stats() Stats {
	c.mu.Lock()
	g, n := c.gen, c.genN
	c.mu.Unlock()
	st := Stats{Generation: n, FramesSent: c.framesSent.Load(), FramesReceived: c.framesRecv.Load(),
		FramesHeld: c.framesHeld.Load()}
	if g != nil {
		qs := g.qc.ConnectionStats()
		st.Open = true
		st.MinRTT, st.LatestRTT, st.SmoothedRTT, st.RTTVar = qs.MinRTT, qs.LatestRTT, qs.SmoothedRTT, qs.MeanDeviation
		st.PacketsSent, st.PacketsReceived, st.PacketsLost = qs.PacketsSent, qs.PacketsReceived, qs.PacketsLost
		st.BytesSent, st.BytesReceived, st.BytesLost = qs.BytesSent, qs.BytesReceived, qs.BytesLost
	}
	return st
}

// begin makes g the current generation.
func (c *Conn) begin(g *generation) {
	remote := g.qc.RemoteAddr().String()
	c.resetReq.Store(false) // a Reset asked for while connecting is this new connection
	c.mu.Lock()
	c.genN++
	g.n.Store(c.genN)
	g.log = c.log.With("remote", remote, "gen", c.genN)
	c.gen = g
	c.remote = remote
	close(c.up)
	c.mu.Unlock()
	g.log.Debug("nq: connection open")
}

// end marks g, the current generation, as ending and clears it: calls from now on wait for the
// next generation (or fail, on a server or a closed Conn) instead of failing on this one.
func (c *Conn) end(g *generation) {
	g.ending.Store(true)
	c.mu.Lock()
	c.gen = nil
	c.up = make(chan struct{})
	c.mu.Unlock()
}

// markEnded records that the Conn is over and releases its waiters.
func (c *Conn) markEnded() {
	c.mu.Lock()
	c.ended = true
	c.mu.Unlock()
	c.cancel()
	close(c.done)
}

// generation is one QUIC connection of a Conn.
type generation struct {
	conn *Conn
	n    atomic.Uint64 // the Conn's generation number, set when it opens (0 before: in 0-RTT)
	qc   *quicgo.Conn
	ctx  context.Context
	log  *slog.Logger

	acks   *ackTracker // delivery acks, when the connection traces them
	early  atomic.Bool // the generation may carry 0-RTT data (before its handshake completes)
	ending atomic.Bool // the connection is closing: new calls wait for the next generation
	// refused: the server refused its 0-RTT data; no new call goes early on it (they wait for
	// the handshake).
	refused atomic.Bool

	datagramsDone chan struct{} // closed when the datagram hook's goroutine ends (nil: none)
	// heldBytes is the size of the frames its RPC streams hold back (RPCStream.hold).
	heldBytes atomic.Int64
	// datagramBytes counts the payload bytes of the datagrams sent on it.
	datagramBytes atomic.Uint64

	mu        sync.Mutex
	sockets   []*clientSocket // sockets this connection migrated to, closed when it ends
	empty     chan struct{}   // closed when no stream is left (made by emptied)
	streams   map[*stream]struct{}
	down      bool
	downCause error
}

func newGeneration(c *Conn, qc *quicgo.Conn) *generation {
	g := &generation{conn: c, qc: qc, ctx: qc.Context(), log: c.log, streams: make(map[*stream]struct{})}
	g.acks, _ = qc.QlogTrace().(*ackTracker)
	return g
}

func (g *generation) addStream(s *stream) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.down {
		return false
	}
	g.streams[s] = struct{}{}
	return true
}

// keepSocket records a socket the generation migrated to; false if it already ended.
func (g *generation) keepSocket(s *clientSocket) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.down {
		return false
	}
	g.sockets = append(g.sockets, s)
	return true
}

// takeSockets returns the migration sockets, once the generation is down.
func (g *generation) takeSockets() []*clientSocket {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.sockets
	g.sockets = nil
	return s
}

func (g *generation) removeStream(s *stream) {
	g.mu.Lock()
	delete(g.streams, s)
	if g.empty != nil && len(g.streams) == 0 {
		select {
		case <-g.empty:
		default:
			close(g.empty)
		}
	}
	g.mu.Unlock()
}

func (g *generation) snapshot() []*stream {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]*stream, 0, len(g.streams))
	for s := range g.streams {
		out = append(out, s)
	}
	return out
}

func (g *generation) downErr() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.downCause != nil {
		return g.downCause
	}
	return ErrConnLost
}

// maxCloseReason bounds the reason phrase of a CONNECTION_CLOSE nq sends: a longer one (an
// OnOpen error's text, say) could not fit the packet, and the peer would see an idle timeout
// instead of the close.
const maxCloseReason = 256

// closeLocal closes the QUIC connection with an application code and reason (cut to
// maxCloseReason bytes); the generation's owner sees the connection end and tears it down.
func (g *generation) closeLocal(code wire.ConnCode, reason string) {
	_ = g.qc.CloseWithError(quicgo.ApplicationErrorCode(code), fitMessage(reason, maxCloseReason))
}

// A graceful close lingers again while the connection still sends what was written before it:
// at least lingerRenewMin bytes, and lingerRenewRate bytes a second, in the last linger (datagram
// payloads not counted; keep-alives, the probes sent to a peer that has gone and the
// acknowledgements of all but a very chatty peer stay below), and no longer than closeLingerLimit
// after the close.
const (
	closeLingerLimit = 5 * time.Second
	lingerRenewMin   = 4 << 10
	lingerRenewRate  = 20 << 10
)

// closeGraceful closes the connection without losing what was written before: every stream
// sends what it has buffered and then FIN, and the peer (an nq peer answers FIN with FIN once
// its own replies are out) closes its side; the CONNECTION_CLOSE, which would discard data still
// unsent, goes out once every stream has closed, or, when the peer does not answer, after a
// linger of four smoothed RTTs (50 ms to 2 s). A burst on a slow path takes more than a few
// round trips to leave, so the linger starts again as long as the connection still sends at a
// data rate (see lingerRenewRate), and ends closeLingerLimit after the close at the latest. Raw
// streams are closed at once: their reader is the application.
func (g *generation) closeGraceful(code wire.ConnCode, reason string) {
	// Writes from now on fail: with ErrClosed when the application closes the Conn, otherwise
	// (a reset, a server shutting down) as calls on a lost connection do.
	werr := errConnEnding
	if code == wire.ConnClosedByApp {
		werr = ErrClosed
	}
	for _, s := range g.snapshot() {
		if _, raw := s.proto.(*RawStream); raw {
			s.finishWith(werr) // the application's later Writes fail with werr
			s.shutdown()
			continue
		}
		s.finishWith(werr)
	}
	go func() {
		defer g.closeLocal(code, reason)
		deadline := time.Now().Add(closeLingerLimit)
		mark := g.bytesSentBesidesDatagrams()
		for {
			linger := min(max(4*g.qc.ConnectionStats().SmoothedRTT, 50*time.Millisecond), 2*time.Second, time.Until(deadline))
			if linger <= 0 {
				return
			}
			timer := time.NewTimer(linger)
			select {
			case <-g.emptied():
				timer.Stop()
				return
			case <-g.ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
			sent := g.bytesSentBesidesDatagrams()
			if sent-mark < max(lingerRenewMin, int64(lingerRenewRate*linger.Seconds())) {
				return // the peer does not answer, and nothing written before the close is leaving
			}
			mark = sent
		}
	}()
}

// bytesSentBesidesDatagrams is what the connection has sent but for datagram payloads: stream
// data, acknowledgements and the rest. A datagram is counted when queued, before quic-go sends
// it, so the difference may dip.
func (g *generation) bytesSentBesidesDatagrams() int64 {
	return int64(g.qc.ConnectionStats().BytesSent) - int64(g.datagramBytes.Load())
}

// emptied returns a channel closed once no stream is left open.
func (g *generation) emptied() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.empty == nil {
		g.empty = make(chan struct{})
		if len(g.streams) == 0 {
			close(g.empty)
		}
	}
	return g.empty
}

// closeError turns the reason the QUIC connection ended into the CloseError the hooks see.
func (g *generation) closeError(cause error) *CloseError {
	ce := &CloseError{Err: cause}
	var ae *quicgo.ApplicationError
	if errors.As(cause, &ae) {
		ce.Remote = ae.Remote
		ce.Code = uint64(ae.ErrorCode)
		ce.Reason = ae.ErrorMessage
		code := wire.ConnCode(ae.ErrorCode)
		switch {
		case code == wire.ConnRejected:
			ce.kind = ErrRejected // refused by the server's open hook, MaxConns (either side's view)
		case ae.Remote && code == wire.ConnServerShutdown:
			ce.kind = ErrServerShutdown
		case !ae.Remote && (code == wire.ConnClosedByApp || code == wire.ConnServerShutdown):
			ce.kind = ErrClosed // this end's application closed it (Close, Server.Shutdown)
		}
		return ce
	}
	var ie *quicgo.IdleTimeoutError
	var te *quicgo.TransportError
	switch {
	case errors.As(cause, &ie):
	case errors.As(cause, &te):
		ce.Remote = te.Remote
	}
	return ce
}

// classify maps an error from a quic-go stream or connection call to nq's errors.
func (g *generation) classify(err error) error {
	var se *quicgo.StreamError
	if errors.As(err, &se) {
		switch wire.StreamCode(se.ErrorCode) {
		case wire.StreamRejected:
			return fmt.Errorf("nq: stream %d: %w", se.StreamID, ErrRejected)
		case wire.StreamUnknownProtocol:
			return fmt.Errorf("nq: stream %d: %w", se.StreamID, ErrUnknownProtocol)
		case wire.StreamProtocolError:
			return fmt.Errorf("nq: stream %d: %w", se.StreamID, ErrProtocol)
		case wire.StreamFrameTooLarge:
			return fmt.Errorf("nq: stream %d: %w", se.StreamID, ErrFrameTooLarge)
		case wire.StreamNotReading:
			return fmt.Errorf("nq: stream %d: %w", se.StreamID, ErrPeerNotReading)
		case wire.StreamTooManyRequests:
			return fmt.Errorf("nq: stream %d: %w", se.StreamID, ErrTooManyRequests)
		default:
			return fmt.Errorf("nq: stream %d reset (code %d): %w", se.StreamID, se.ErrorCode, ErrClosed)
		}
	}
	if isConnError(err) {
		return g.closeError(err)
	}
	if g.ctx.Err() != nil {
		return g.closeError(context.Cause(g.ctx))
	}
	if errors.Is(err, io.EOF) {
		return ErrClosed
	}
	if errors.Is(err, quicgo.Err0RTTRejected) {
		g.refused.Store(true) // noticed on a stream before the handshake completed
		return fmt.Errorf("%w: %w", Err0RTTRejected, ErrConnLost)
	}
	if errors.Is(err, quicgo.ErrStreamClosed) {
		// A write after this side closed the stream (Close or CloseWrite).
		return fmt.Errorf("nq: write after close: %w", ErrClosed)
	}
	return errors.Join(ErrConnLost, err)
}

// isConnError reports whether err is quic-go's report that the whole connection ended.
func isConnError(err error) bool {
	var (
		ae *quicgo.ApplicationError
		te *quicgo.TransportError
		ie *quicgo.IdleTimeoutError
		he *quicgo.HandshakeTimeoutError
		sr *quicgo.StatelessResetError
		vn *quicgo.VersionNegotiationError
	)
	return errors.As(err, &ae) || errors.As(err, &te) || errors.As(err, &ie) ||
		errors.As(err, &he) || errors.As(err, &sr) || errors.As(err, &vn)
}

// teardown runs once after the QUIC connection ended: every stream closes (its hook, then its
// pending calls), and the close error is returned for the connection's close hook.
func (g *generation) teardown() *CloseError {
	<-g.qc.Context().Done()
	ce := g.closeError(context.Cause(g.qc.Context()))
	g.mu.Lock()
	g.down = true
	g.downCause = ce
	streams := make([]*stream, 0, len(g.streams))
	for s := range g.streams {
		streams = append(streams, s)
	}
	g.mu.Unlock()
	for _, s := range streams {
		s.close(ce)
		<-s.done
	}
	if g.acks != nil {
		g.acks.fail(ce)
	}
	if g.datagramsDone != nil && g.conn.server != nil {
		<-g.datagramsDone // a server's datagram hook returns before the close hooks run
	}
	g.log.Debug("nq: connection closed", "err", ce)
	return ce
}

// acceptLoop serves the streams the peer opens until the connection ends.
func (g *generation) acceptLoop() {
	for {
		qs, err := g.qc.AcceptStream(g.ctx)
		if err != nil {
			return
		}
		go g.serveIncoming(qs)
	}
}
