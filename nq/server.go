package nq

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/internal/wire"
	"github.com/naquid/naquid/quic"
	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/udp"
)

// ErrServerClosed is returned by Serve after Shutdown or Close, and by Listen on a server that
// was closed (also when Close or Shutdown ran while Listen was opening the socket).
var ErrServerClosed = errors.New("nq: server closed")

// Server accepts QUIC connections and serves the protocols of its Mux on them. Set the fields,
// then call Listen or Serve; the fields must not change afterwards.
type Server struct {
	// TLS is the server's TLS configuration (certificates). Required. The ALPN protocol
	// quic.ALPN is added to NextProtos when NextProtos is empty. Session tickets are encrypted
	// with keys crypto/tls draws at random for each Config: for clients to resume (no
	// certificate signature per reconnect) after the server process restarts, give every
	// instance the same keys with TLS.SetSessionTicketKeys, and rotate them.
	TLS *tls.Config
	// Mux serves the streams clients open. nil serves nothing: every stream is refused with
	// ErrUnknownProtocol.
	Mux *Mux
	// Transport opens the packet socket. nil means kernel UDP (transport/udp).
	Transport transport.Factory
	// QUIC is the quic-go configuration. nil means quic.ServerConfig().
	QUIC *quicgo.Config
	// MaxConns caps the number of open connections; a connection over the cap is closed right
	// after its handshake with ErrRejected (connections are admitted in the order quic-go hands
	// them over, about the order their handshakes complete). The refusal comes after the handshake, so its client has seen its
	// connection open (its OnOpen ran, Dial may have returned), and each refused attempt costs
	// the server a full handshake: DefaultBackoff makes a refused client wait longer after each
	// refusal (up to 10 s), and MaxHandshakes bounds the handshake work itself. 0 means no cap.
	MaxConns int
	// MaxFrameSize bounds RPC frame payloads in both directions. 0 means 1 MiB.
	MaxFrameSize int
	// RetryAbove is the rate of new connection attempts per second above which the server
	// makes clients prove their address with a QUIC Retry round trip before it spends any CPU on
	// their handshake (spoofed-source floods then cost it almost nothing; legitimate clients pay
	// one extra round trip while the rate stays high). Initial packets without a token from one
	// address within 100 ms count as one attempt (a first flight may span two packets). 0 means
	// 500/s; a negative value never sends Retry.
	RetryAbove int
	// TokenKey encrypts the address-validation tokens the server hands its clients (QUIC
	// NEW_TOKEN); a client that presents a valid one on its next attempt skips the Retry round
	// trip (RetryAbove) and counts as validated (MaxHandshakes). nil means a random key per
	// Listen, so tokens die with the process: give restarted (or sibling) instances the same key
	// for a reconnect storm after a restart to skip Retry.
	TokenKey *quicgo.TokenGeneratorKey
	// StatelessResetKey lets the server answer packets of connections it does not know (those
	// of a previous instance that crashed or lost its state) with a QUIC stateless reset, so
	// their clients learn at their next packet that the connection is gone and reconnect,
	// instead of waiting for their idle timeout. quic-go answers packets longer than 42 bytes
	// only, so that resets cannot loop: a client that sends nothing but keep-alives (about 25
	// bytes) is not reset and still waits for its idle timeout (5.5 s with quic.ClientConfig);
	// one that makes a call or sends a datagram learns within a round trip. nil sends no resets. For resets after a restart, every instance behind the
	// address must use the same key (and keep it secret: whoever has it can reset the server's
	// connections).
	StatelessResetKey *quicgo.StatelessResetKey
	// MaxHandshakes caps the handshakes in progress at once. A connection attempt beyond the
	// cap is refused at its first packet with QUIC's CONNECTION_REFUSED, before the server spends
	// any handshake CPU on it (it counts in ServerStats.HandshakesRefused); nq clients treat that
	// as a lost connection and retry after their back-off (DefaultBackoff: 50-100 ms, doubling to
	// 0.5-1 s at most). This keeps a burst of logins from taking the CPU the established
	// connections need, at the cost of the new logins' latency. Attempts from addresses not yet
	// validated (no Retry or address token) may hold at most half of the slots; once they do,
	// further ones are asked to prove their address with a Retry first (whatever RetryAbove says;
	// with a negative RetryAbove they are refused instead), so a flood from spoofed addresses
	// cannot take the slots that real clients need. A slot is held from the attempt's first packet
	// until its handshake completes or fails; an attempt that never completes (a forged Initial)
	// holds it until the handshake idle timeout (3 s with quic.ServerConfig). Since a handshake
	// holds its slot for about one round trip plus its CPU time, N slots admit at most about
	// N / RTT handshakes per second. The default, 0, means 64 per GOMAXPROCS (128 at least):
	// 128 slots at 50 ms admit ~2,500 handshakes/s, more than 2 cores can run (~2,000), so
	// logins after a restart are limited by CPU, not by the cap. A server that must keep its
	// established players' latency through login floods sets a small cap (about 4 per core:
	// see docs/RELIABILITY.md for what that costs new logins). A negative value means no cap.
	MaxHandshakes int
	// OnOpen runs when a connection's handshake has completed, before its streams are served.
	// Returning an error closes the connection; the client sees ErrRejected.
	OnOpen func(c *Conn) error
	// OnClose runs once when a connection that OnOpen accepted ends (after its streams' close
	// hooks and the failure of their pending calls), with the reason. Hooks must not call
	// Server.Close or Shutdown, which wait for them; start those on another goroutine. A request
	// handler of the connection may still be running (its Reply then fails with ErrConnLost),
	// and c.Context() is done before OnClose runs: a handler that adds the connection to shared
	// state (a player to a room) should check c.Context().Err() under the same lock OnClose
	// takes to remove it, or the player may stay after OnClose ran.
	OnClose func(c *Conn, err error)
	// OnDatagram receives the RFC 9221 datagrams clients send, one at a time per connection, on
	// a goroutine of that connection; p is the caller's to keep. nil ignores datagrams.
	OnDatagram func(c *Conn, p []byte)
	// Allow0RTT accepts 0-RTT data from resuming clients (Client.Allow0RTT): their first calls
	// arrive with the handshake, a round trip earlier, but can be replayed by an attacker. nq
	// clients send only calls marked with Idempotent that way; a handler can tell such a request
	// by Request.Early and refuse what must not run twice. With it, OnOpen may run before the
	// handshake completes.
	Allow0RTT bool
	// DeliveryAcks lets sends ask for a delivery ack (RecordStream.SendAck). It traces the
	// connection's packets, which costs 10-15% of throughput, so it is off by default.
	DeliveryAcks bool
	// QlogDir, when set, is the directory each connection writes its qlog trace to, created if
	// missing: one file per connection (each reconnect a new one), named
	// <original destination connection id>_<client|server>.sqlog (the same id on both ends),
	// for qvis and other qlog tools. Tracing costs CPU (about a quarter of the request rate).
	QlogDir string
	// Logger receives debug and error logs, each with the connection id, remote address and
	// generation. nil discards them.
	Logger *slog.Logger

	mu      sync.Mutex
	started bool
	ready   bool // Listen opened the socket and the listener (the fields below are set)
	closed  bool
	tconn   transport.Conn
	pc      net.PacketConn
	tr      *quicgo.Transport
	ln      listener
	conns   map[*Conn]struct{}
	nconns  atomic.Int64
	cfg     connConfig
	wg      sync.WaitGroup
	stopped chan struct{}

	attempts   attemptRate
	retries    atomic.Uint64
	handshakes handshakeGate
	counters   serverCounters

	draining atomic.Bool
}

// Listen binds addr ("host:port" with an IP literal host, port 0 for any) and starts accepting
// connections in the background. It returns once the socket is bound. A server listens once: a
// closed server's Listen fails with ErrServerClosed.
func (s *Server) Listen(ctx context.Context, addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("nq: server address %q: %w", addr, err)
	}
	if s.TLS == nil {
		return errors.New("nq: Server.TLS is nil: a server needs a certificate")
	}
	if s.MaxConns < 0 {
		return fmt.Errorf("nq: Server.MaxConns %d is negative", s.MaxConns)
	}
	if s.MaxFrameSize < 0 {
		return fmt.Errorf("nq: Server.MaxFrameSize %d is negative", s.MaxFrameSize)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("nq: server listen %s: %w", ap, ErrServerClosed)
	}
	if s.started {
		s.mu.Unlock()
		return errors.New("nq: server already started")
	}
	s.started = true
	s.mu.Unlock()
	if err := s.listen(ctx, ap); err != nil {
		s.mu.Lock()
		s.started = false // a failed Listen may be retried
		s.mu.Unlock()
		return err
	}
	go s.acceptLoop(s.ln)
	return nil
}

// listen opens the socket and the QUIC listener on ap.
func (s *Server) listen(ctx context.Context, ap netip.AddrPort) error {

	s.cfg = connConfig{mux: s.Mux, maxFrame: s.MaxFrameSize, log: s.Logger}
	fillConnConfig(&s.cfg)
	factory := s.Transport
	if factory == nil {
		factory = udp.Factory(udp.Config{})
	}
	tc, err := factory(ctx, ap)
	if err != nil {
		return fmt.Errorf("nq: server listen %s: %w", ap, err)
	}
	pc, err := quic.PacketConn(tc)
	if err != nil {
		tc.Close()
		return fmt.Errorf("nq: server listen %s: %w", ap, err)
	}
	s.handshakes.setLimit(s.MaxHandshakes)
	tr := &quicgo.Transport{Conn: pc, VerifySourceAddress: s.verifySource, ConnContext: s.connContext,
		TokenGeneratorKey: s.TokenKey, StatelessResetKey: s.StatelessResetKey}
	qconf := s.QUIC
	if qconf == nil {
		qconf = quic.ServerConfig()
	}
	if tr := tracer(s.DeliveryAcks, s.QlogDir); tr != nil {
		qconf = qconf.Clone()
		qconf.Tracer = tr
	}
	var ln listener
	if s.Allow0RTT {
		qconf = qconf.Clone()
		qconf.Allow0RTT = true
		ln, err = tr.ListenEarly(withALPN(s.TLS), qconf)
	} else {
		ln, err = tr.Listen(withALPN(s.TLS), qconf)
	}
	if err != nil {
		tr.Close()
		pc.Close()
		return fmt.Errorf("nq: server listen %s: %w", ap, err)
	}
	s.mu.Lock()
	if s.closed {
		// Close or Shutdown ran while the socket was being opened: it left the closing to us.
		s.mu.Unlock()
		ln.Close()
		closeSocket(s.cfg.log, tr, pc, tc)
		return fmt.Errorf("nq: server listen %s: %w", ap, ErrServerClosed)
	}
	s.tconn, s.pc, s.tr, s.ln = tc, pc, tr, ln
	s.conns = make(map[*Conn]struct{})
	s.stopped = make(chan struct{})
	s.ready = true
	s.wg.Add(1) // the accept loop, started by Listen; before a Close can wait for it
	s.mu.Unlock()
	return nil
}

// Serve is Listen followed by waiting until the server is shut down or closed, or ctx ends
// (which closes it). It returns ErrServerClosed after Shutdown or Close.
func (s *Server) Serve(ctx context.Context, addr string) error {
	if err := s.Listen(ctx, addr); err != nil {
		return err
	}
	select {
	case <-s.stopped:
	case <-ctx.Done():
		s.Close()
	}
	return ErrServerClosed
}

// Addr returns the bound address (useful after listening on port 0), or the zero value before
// Listen.
func (s *Server) Addr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tconn == nil {
		return netip.AddrPort{}
	}
	return s.tconn.LocalAddr()
}

// verifySource is quic-go's hook for connection attempts from unvalidated addresses: it asks for
// a Retry while attempts arrive faster than RetryAbove per second, or while unvalidated attempts
// hold their share of the handshake slots (MaxHandshakes).
func (s *Server) verifySource(addr net.Addr) bool {
	limit := s.RetryAbove
	switch {
	case limit < 0:
		return false
	case limit == 0:
		limit = 500
	}
	var rate int
	if ua, ok := addr.(*net.UDPAddr); ok {
		rate = s.attempts.addFrom(ua.AddrPort(), time.Now())
	} else {
		rate = s.attempts.add(time.Now())
	}
	if rate > limit || s.handshakes.unverifiedFull() {
		s.retries.Add(1)
		return true
	}
	return false
}

// errHandshakeLimit refuses a connection attempt beyond MaxHandshakes (the client sees QUIC's
// CONNECTION_REFUSED).
var errHandshakeLimit = errors.New("nq: too many handshakes in progress")

// connContext is quic-go's hook for each new connection attempt, called on the server's receive
// loop once the attempt passed address validation (verifySource): it takes a handshake slot or
// refuses the attempt. The slot travels in the connection's context (qc.Context derives from the
// returned one); it is given back when the handshake completes (serveConn) or, failing that, when
// the context ends.
func (s *Server) connContext(ctx context.Context, info *quicgo.ClientInfo) (context.Context, error) {
	slot := s.handshakes.acquire(info.AddrVerified)
	if slot == nil {
		return nil, errHandshakeLimit
	}
	slot.stop = context.AfterFunc(ctx, slot.release)
	return context.WithValue(ctx, handshakeSlotKey{}, slot), nil
}

// handshakeDone gives back qc's handshake slot once its handshake completes (at once unless the
// listener accepts connections before that, with Allow0RTT). If the connection ends first, the
// slot's context hook gives it back.
func (s *Server) handshakeDone(qc *quicgo.Conn) {
	slot, ok := qc.Context().Value(handshakeSlotKey{}).(*handshakeSlot)
	if !ok {
		return
	}
	select {
	case <-qc.HandshakeComplete():
		slot.complete()
		return
	default:
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-qc.HandshakeComplete():
			slot.complete()
		case <-qc.Context().Done():
		}
	}()
}

// The default MaxHandshakes: defaultHandshakesPerProc per GOMAXPROCS, minDefaultHandshakes at
// least.
const (
	defaultHandshakesPerProc = 64
	minDefaultHandshakes     = 128
)

// handshakeGate counts the handshakes in progress and enforces MaxHandshakes. The zero value
// counts without a cap.
type handshakeGate struct {
	limit, unverifiedLimit int64 // 0: no cap; set before the listener starts
	total, unverified      atomic.Int64
	refused                atomic.Uint64
}

// setLimit applies Server.MaxHandshakes (see there for the default).
func (g *handshakeGate) setLimit(n int) {
	switch {
	case n < 0:
		g.limit = 0
	case n == 0:
		g.limit = int64(max(defaultHandshakesPerProc*runtime.GOMAXPROCS(0), minDefaultHandshakes))
	default:
		g.limit = int64(n)
	}
	g.unverifiedLimit = (g.limit + 1) / 2
}

// unverifiedFull reports whether attempts from unvalidated addresses hold all the slots they may.
func (g *handshakeGate) unverifiedFull() bool {
	return g.limit > 0 && g.unverified.Load() >= g.unverifiedLimit
}

// acquire takes a slot, or returns nil (and counts a refusal) when none is free. It is called
// from quic-go's receive loop only, so the counts can only fall between the check and the add.
func (g *handshakeGate) acquire(verified bool) *handshakeSlot {
	if g.limit > 0 && (g.total.Load() >= g.limit || !verified && g.unverified.Load() >= g.unverifiedLimit) {
		g.refused.Add(1)
		return nil
	}
	g.total.Add(1)
	if !verified {
		g.unverified.Add(1)
	}
	return &handshakeSlot{gate: g, verified: verified}
}

// handshakeSlotKey keys a connection's *handshakeSlot in its context.
type handshakeSlotKey struct{}

// handshakeSlot is one handshake in progress; it is given back exactly once.
type handshakeSlot struct {
	gate     *handshakeGate
	verified bool
	stop     func() bool // unregisters the context hook; set by connContext
	done     atomic.Bool
}

// complete gives the slot back when the handshake completed, and drops the context hook.
func (h *handshakeSlot) complete() {
	h.stop()
	h.release()
}

// release gives the slot back; calls after the first do nothing.
func (h *handshakeSlot) release() {
	if !h.done.CompareAndSwap(false, true) {
		return
	}
	h.gate.total.Add(-1)
	if !h.verified {
		h.gate.unverified.Add(-1)
	}
}

// attemptRate counts events over the last second, in two one-second buckets (the previous
// bucket weighted by how much of it still lies within the last second).
type attemptRate struct {
	mu        sync.Mutex
	bucket    int64 // unix second of cur
	cur, prev int
	recent    [8]recentSource // the last sources counted by addFrom, a ring
	next      int
}

// recentSource is a source addFrom counted, and when.
type recentSource struct {
	addr netip.AddrPort
	at   int64 // unix nanoseconds
}

// sameAttemptWindow is how close together Initial packets from one address must arrive to
// count as one connection attempt (a client's first flight may span two packets, as with Go's
// default post-quantum key share, and quic-go asks about each).
const sameAttemptWindow = 100 * time.Millisecond

// addFrom counts an Initial packet from addr as a new attempt unless one of the last few
// attempts came from addr within sameAttemptWindow, and returns the rate.
func (r *attemptRate) addFrom(addr netip.AddrPort, now time.Time) int {
	at := now.UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.recent {
		if p.addr == addr && at-p.at < int64(sameAttemptWindow) && at >= p.at {
			return r.countLocked(now, 0)
		}
	}
	r.recent[r.next] = recentSource{addr, at}
	r.next = (r.next + 1) % len(r.recent)
	return r.countLocked(now, 1)
}

// add counts an event and returns the rate.
func (r *attemptRate) add(now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.countLocked(now, 1)
}

// countLocked moves the buckets to now, adds n events and returns the rate; r.mu is held.
func (r *attemptRate) countLocked(now time.Time, n int) int {
	sec := now.Unix()
	switch {
	case sec == r.bucket:
	case sec == r.bucket+1:
		r.prev, r.cur, r.bucket = r.cur, 0, sec
	default:
		r.prev, r.cur, r.bucket = 0, 0, sec
	}
	r.cur += n
	frac := 1 - float64(now.Nanosecond())/1e9
	return r.cur + int(float64(r.prev)*frac)
}

// NumConns returns the number of open connections within MaxConns (a connection over it, being
// refused, does not count).
func (s *Server) NumConns() int { return int(s.nconns.Load()) }

// listener is what Server needs of quic-go's Listener and EarlyListener.
type listener interface {
	Accept(context.Context) (*quicgo.Conn, error)
	Close() error
}

func (s *Server) acceptLoop(ln listener) {
	defer s.wg.Done()
	for {
		qc, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		// The cap is decided here, in the order quic-go hands connections over: decided on each
		// connection's goroutine, it went to whichever the scheduler ran first (often the newer:
		// Go runs the goroutine started last first), so a client told it was connected could be
		// refused in favour of one that came after it. Only this loop adds to nconns, so the
		// count can only have fallen between the check and the add.
		full := s.MaxConns > 0 && s.nconns.Load() >= int64(s.MaxConns)
		if !full {
			s.nconns.Add(1)
		}
		// Never block here: quic-go's accept queue is small and refuses handshakes once full.
		s.wg.Add(1)
		go s.serveConn(qc, full)
	}
}

// serveConn runs one accepted connection; full says it is over MaxConns (it is refused and was
// not counted in nconns).
func (s *Server) serveConn(qc *quicgo.Conn, full bool) {
	defer s.wg.Done()
	s.handshakeDone(qc)
	c := newConn(s.cfg, nil, s)
	g := newGeneration(c, qc)
	g.early.Store(s.Allow0RTT)
	c.begin(g)

	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.conns[c] = struct{}{}
	}
	s.mu.Unlock()
	s.counters.accepted.Add(1)
	// Only a connection the server accepted is announced to the application: OnOpen and OnClose
	// bracket it; a refused one is closed without either.
	accepted := false
	switch {
	case closed || s.draining.Load():
		s.counters.refused.Add(1)
		g.closeLocal(wire.ConnServerShutdown, "server shutting down")
	case full:
		s.counters.refused.Add(1)
		g.closeLocal(wire.ConnRejected, "server full")
	case s.OnOpen != nil:
		if err := s.OnOpen(c); err != nil {
			s.counters.refused.Add(1)
			g.closeLocal(wire.ConnRejected, err.Error())
		} else {
			accepted = true
		}
	default:
		accepted = true
	}
	if accepted {
		if s.OnDatagram != nil {
			g.receiveDatagrams(s.OnDatagram, nil)
		}
		g.acceptLoop()
	}
	<-qc.Context().Done()
	c.end(g) // calls from now on see the connection gone, not a dying generation
	ce := g.teardown()
	c.cancel() // alarms stop before the close hook
	if !full {
		s.nconns.Add(-1) // the close hook (and what it signals) sees the connection gone
	}
	if accepted && s.OnClose != nil {
		s.OnClose(c, ce)
	}
	s.mu.Lock()
	delete(s.conns, c)
	s.counters.addClosed(c)
	s.mu.Unlock()
	if ce != nil {
		c.mu.Lock()
		c.lastErr = ce // how it ended: later calls and datagrams fail with it
		c.mu.Unlock()
	}
	c.markEnded()
}

// serverCounters accumulates what closed connections did; open ones are added at read time.
type serverCounters struct {
	accepted, refused atomic.Uint64
	// guarded by Server.mu
	closedFramesSent, closedFramesRecv, closedFramesHeld uint64
}

func (sc *serverCounters) addClosed(c *Conn) {
	sc.closedFramesSent += c.framesSent.Load()
	sc.closedFramesRecv += c.framesRecv.Load()
	sc.closedFramesHeld += c.framesHeld.Load()
}

// ServerStats is a snapshot of a server's counters (cumulative since Listen, except where noted).
type ServerStats struct {
	// Conns is the number of open connections (a gauge; as NumConns, those being refused over
	// MaxConns do not count).
	Conns int
	// Accepted counts handshakes completed; Refused those then closed by MaxConns, OnOpen or a
	// shutdown.
	Accepted, Refused uint64
	// Retries counts the Initial packets the server asked to answer with a QUIC Retry (see
	// RetryAbove and MaxHandshakes). quic-go sends Retries, and the CONNECTION_REFUSED answers
	// counted in HandshakesRefused, from one goroutine with a queue of 8 (4 for refusals) and
	// drops what does not fit, so under a burst fewer leave than are counted.
	Retries uint64
	// Handshakes is the number of handshakes in progress (a gauge; see MaxHandshakes).
	Handshakes int
	// HandshakesRefused counts the connection attempts' Initial packets refused with
	// CONNECTION_REFUSED because MaxHandshakes handshakes were in progress (a client whose first
	// flight spans two packets, as with Go's default post-quantum key share, counts twice).
	HandshakesRefused uint64
	// InFlight is the number of requests being handled, not yet answered (a gauge).
	InFlight int64
	// FramesSent and FramesReceived count RPC frames and records over every connection.
	FramesSent, FramesReceived uint64
	// FramesHeld counts requests (and notifications behind them) held back over every connection
	// (Stats.FramesHeld): a rising count means some peer's output is backed up (a peer that asks
	// faster than it reads, or large answers or pushes on a slow path) or a handler holds its
	// MaxUnanswered requests; Conn.Stats().FramesHeld tells which connection.
	FramesHeld uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	s.mu.Lock()
	st := ServerStats{
		FramesSent:     s.counters.closedFramesSent,
		FramesReceived: s.counters.closedFramesRecv,
		FramesHeld:     s.counters.closedFramesHeld,
	}
	for c := range s.conns {
		st.FramesSent += c.framesSent.Load()
		st.FramesReceived += c.framesRecv.Load()
		st.FramesHeld += c.framesHeld.Load()
	}
	s.mu.Unlock()
	st.Conns = int(s.nconns.Load())
	st.Accepted, st.Refused = s.counters.accepted.Load(), s.counters.refused.Load()
	st.Retries = s.retries.Load()
	st.Handshakes = int(s.handshakes.total.Load())
	st.HandshakesRefused = s.handshakes.refused.Load()
	st.InFlight = s.inFlight()
	return st
}

// TransportStats returns the counters of the server's packet transport, and false when the
// server is not listening or the transport keeps none: a backend without transport.Stats, or
// kernel UDP, whose socket quic-go reads and writes itself.
func (s *Server) TransportStats() (transport.Counters, bool) {
	s.mu.Lock()
	tc, pc := s.tconn, s.pc
	s.mu.Unlock()
	return liveCounters(tc, pc)
}

// liveCounters returns the counters of tc, the transport behind pc, if it keeps them: not when
// pc is the kernel socket itself (quic.PacketConn hands kernel UDP to quic-go untouched, so
// the transport's own counters never move).
func liveCounters(tc transport.Conn, pc net.PacketConn) (transport.Counters, bool) {
	if _, kernel := pc.(*net.UDPConn); kernel {
		return transport.Counters{}, false
	}
	if st, ok := tc.(transport.Stats); ok {
		return st.Stats(), true
	}
	return transport.Counters{}, false
}

// inFlight sums the requests being handled, not yet answered, over the open streams.
func (s *Server) inFlight() int64 {
	s.mu.Lock()
	conns := slices.Collect(maps.Keys(s.conns))
	s.mu.Unlock()
	var n int64
	for _, c := range conns {
		g := c.live()
		if g == nil {
			continue
		}
		for _, st := range g.snapshot() {
			if _, ok := st.proto.(*RPCStream); ok {
				// A stream inside a handler pass counts its requests when the pass ends:
				// count it as one at least.
				pending, inPass := st.requestsPending()
				if inPass {
					pending = max(pending, 1)
				}
				n += pending
			}
		}
	}
	return n
}

// drainPoll is how often Shutdown looks whether the requests in flight are done.
const drainPoll = 2 * time.Millisecond

// Shutdown drains the server: new connections and new calls are refused (calls fail with a
// *RemoteError matching ErrServerShutdown), requests already being handled get their answers,
// and once none is left, or when ctx ends, every connection is closed with the shutdown code
// (clients' close hooks see ErrServerShutdown; their calls that ctx cut off fail with
// ErrConnLost) and the socket is released. It returns nil when everything drained, or an error
// wrapping ctx's error that says how many requests were cut off.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.started || s.closed {
		s.mu.Unlock()
		s.closeAll(wire.ConnServerShutdown, "server shutting down") // marks it closed, if not yet
		return nil
	}
	s.mu.Unlock()
	s.draining.Store(true)
	var drainErr error
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for n := s.inFlight(); n > 0 && drainErr == nil; n = s.inFlight() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			drainErr = fmt.Errorf("nq: shutdown: %d requests still unanswered: %w", n, ctx.Err())
		}
	}
	s.closeAll(wire.ConnServerShutdown, "server shutting down")
	return drainErr
}

// Close closes every connection at once (clients see ErrServerShutdown) and releases the socket.
func (s *Server) Close() error {
	s.closeAll(wire.ConnServerShutdown, "server closed")
	return nil
}

func (s *Server) closeAll(code wire.ConnCode, reason string) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true // a server closed before it listened never will
	if !s.started || !s.ready {
		// Listen is still opening the socket; it closes what it opened when it sees closed.
		s.mu.Unlock()
		return
	}
	conns := slices.Collect(maps.Keys(s.conns))
	ln, tr, pc, tc := s.ln, s.tr, s.pc, s.tconn
	s.mu.Unlock()
	ln.Close()
	for _, c := range conns {
		g := c.live()
		if g != nil {
			g.closeGraceful(code, reason)
		}
	}
	s.wg.Wait()
	closeSocket(s.cfg.log, tr, pc, tc)
	close(s.stopped)
}

// closeSocket closes a quic.Transport and the sockets under it (the adapter, then the transport
// Conn, which is already closed when the adapter owned it).
func closeSocket(log *slog.Logger, tr *quicgo.Transport, pc net.PacketConn, tc transport.Conn) {
	tr.Close()
	if err := pc.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		log.Debug("nq: closing socket", "err", err)
	}
	if err := tc.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		log.Debug("nq: closing socket", "err", err)
	}
}

// withALPN returns conf with quic.ALPN offered when it names no protocol.
func withALPN(conf *tls.Config) *tls.Config {
	if len(conf.NextProtos) > 0 {
		return conf
	}
	c := conf.Clone()
	c.NextProtos = []string{quic.ALPN}
	return c
}

func fillConnConfig(cfg *connConfig) {
	if cfg.maxFrame == 0 {
		cfg.maxFrame = wire.DefaultMaxPayload
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	if cfg.mux == nil {
		cfg.mux = &Mux{}
	}
}
