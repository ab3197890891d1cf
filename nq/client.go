package nq

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/internal/wire"
	"github.com/naquid/naquid/quic"
	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/udp"
)

// NoReconnect, returned by Client.OnClose, leaves the Conn disconnected until Reset (reconnect)
// or Close (finalize).
const NoReconnect time.Duration = -1

// Client dials Conns that reconnect by themselves. Set the fields before the first Connect or
// Dial; they must not change afterwards. All Conns of a Client share one packet socket per
// address family. No hook may call Client.Close, which waits for the hooks: start it on another
// goroutine.
type Client struct {
	// TLS is the client's TLS configuration. Required: set RootCAs to trust the server's CA
	// (the chain and host are always verified unless InsecureSkipVerify is set). ServerName
	// defaults to the dialed host; the ALPN protocol quic.ALPN is added when NextProtos is empty;
	// a session cache is added when ClientSessionCache is nil, so reconnects resume. A session
	// ticket survives a reconnect attempt that fails without a TLS error (a timeout, a refusal, a
	// server shutting down), so that the next attempt still resumes; crypto/tls alone would drop
	// it after any failed resumed handshake.
	TLS *tls.Config
	// Mux serves the streams the server opens. nil refuses them (ErrUnknownProtocol); calls on
	// streams opened with Conn.RPC or Conn.OpenRPC need the protocol in the Mux.
	Mux *Mux
	// Transport opens the packet socket. nil means kernel UDP (transport/udp).
	Transport transport.Factory
	// QUIC is the quic-go configuration. nil means quic.ClientConfig(). After a connection
	// attempt whose handshake timed out, the next one waits twice as long (HandshakeIdleTimeout
	// doubled per timeout in a row, up to 4 times the configured value, back to it once a
	// connection opens), as TCP backs off its SYN retransmissions: a server slowed by a burst of
	// logins then finishes the handshakes it has started instead of seeing them abandoned and
	// begun again.
	QUIC *quicgo.Config
	// LocalAddr is the local address to bind. The zero value binds 0.0.0.0:0 for IPv4 servers
	// and [::]:0 for IPv6 servers.
	LocalAddr netip.AddrPort
	// MaxFrameSize bounds RPC frame payloads in both directions. 0 means 1 MiB.
	MaxFrameSize int
	// Resolver looks up host names. nil means net.DefaultResolver. Point its Dial at your own
	// DNS servers to bypass the system's. Every connection attempt resolves the host again (nq
	// keeps no cache of its own), so a reconnect follows a DNS change.
	Resolver *net.Resolver
	// LookupNetIP, when set, replaces Resolver: it returns the addresses of host.
	LookupNetIP func(ctx context.Context, host string) ([]netip.Addr, error)
	// PreferIPv6 picks an IPv6 address when the host has both; by default IPv4 is preferred.
	PreferIPv6 bool
	// OnOpen runs after each successful handshake (every reconnect included), before the
	// server's streams are served. It is the place to restore session state on each new
	// connection (a login call, say): calls made from it go out on the new connection, but a
	// server that, before answering, waits for a stream it opened to be served here would wait
	// for OnOpen to return. A connection the server then refuses (its OnOpen, MaxConns) has
	// opened too: OnOpen runs, and the close hook follows with ErrRejected.
	OnOpen func(c *Conn)
	// OnClose runs once per ended connection attempt (after the streams' close hooks and the
	// failure of their pending calls) and returns how long to wait before reconnecting, or
	// NoReconnect. attempt counts the attempts since the last successful open (1 for the first
	// close after an open; a connection the server refused at once, ErrRejected, is an attempt,
	// not an open). nil means DefaultBackoff. Its return value is ignored when the
	// close was caused by Conn.Close.
	OnClose func(c *Conn, err error, attempt int) time.Duration
	// OnFinalize runs once when a Conn ends for good, after Conn.Close. Hooks must not call
	// Client.Close, which waits for them; start it on another goroutine.
	OnFinalize func(c *Conn)
	// OnDatagram receives the RFC 9221 datagrams the server sends, one at a time per Conn (never
	// concurrently with itself, across reconnects too), on a goroutine of that Conn; p is the
	// caller's to keep. It stays in force across reconnects. It may still be running when a
	// connection's close hook (OnClose) runs, so that it may make calls that wait for the next
	// connection; it has returned before OnFinalize runs. nil ignores datagrams.
	OnDatagram func(c *Conn, p []byte)
	// Allow0RTT lets reconnects to a server that allows it (Server.Allow0RTT) send calls marked
	// with Idempotent in 0-RTT data, before the handshake completes: a round trip sooner, at the
	// risk of replay. Unmarked calls wait for the handshake. If the server refuses the 0-RTT
	// data, the calls that went with it fail (ErrConnLost) and may be retried.
	Allow0RTT bool
	// DeliveryAcks lets sends ask for a delivery ack (RecordStream.SendAck). It traces the
	// connection's packets, which costs 10-15% of throughput, so it is off by default.
	DeliveryAcks bool
	// QlogDir, when set, is the directory each connection writes its qlog trace to, created if
	// missing: one file per connection (each reconnect a new one), named
	// <original destination connection id>_<client|server>.sqlog (the same id on both ends),
	// for qvis and other qlog tools. Tracing costs CPU (about a quarter of the request rate).
	QlogDir string
	// Logger receives debug logs with the connection id, remote address and generation. nil
	// discards them.
	Logger *slog.Logger

	mu      sync.Mutex
	inited  bool
	closed  bool
	cfg     connConfig
	tls     *tls.Config
	quic    *quicgo.Config
	sockets map[bool]*clientSocket // by "is IPv4"
	conns   map[*Conn]struct{}
	wg      sync.WaitGroup

	dials, dialFailures, opens, closes atomic.Uint64
	// frames of finalized Conns, so the totals never go down; guarded by mu
	finalFramesSent, finalFramesRecv, finalFramesHeld uint64
}

// ClientStats is a snapshot of a client's counters (cumulative, except where noted).
type ClientStats struct {
	// Conns is the number of Conns not yet finalized (a gauge); Open those with a generation up.
	Conns, Open int
	// Dials counts connection attempts, DialFailures those that failed (resolution, handshake).
	Dials, DialFailures uint64
	// Opens counts successful handshakes (first connections and reconnects); Closes the ends of
	// established connections.
	Opens, Closes uint64
	// FramesSent and FramesReceived count RPC frames and records over every Conn.
	FramesSent, FramesReceived uint64
	// FramesHeld counts requests (and notifications behind them) held back over every Conn
	// (Stats.FramesHeld).
	FramesHeld uint64
}

// TransportStats returns the summed counters of the client's packet sockets, and false when no
// socket is open yet or the transport keeps none: a backend without transport.Stats, or kernel
// UDP, whose sockets quic-go reads and writes itself.
func (cl *Client) TransportStats() (transport.Counters, bool) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var sum transport.Counters
	found := false
	for _, s := range cl.sockets {
		st, ok := liveCounters(s.tc, s.pc)
		if !ok {
			continue
		}
		found = true
		sum.Add(st)
	}
	return sum, found
}

// Stats returns the client's counters.
func (cl *Client) Stats() ClientStats {
	st := ClientStats{
		Dials: cl.dials.Load(), DialFailures: cl.dialFailures.Load(),
		Opens: cl.opens.Load(), Closes: cl.closes.Load(),
	}
	cl.mu.Lock()
	conns := make([]*Conn, 0, len(cl.conns))
	for c := range cl.conns {
		conns = append(conns, c)
		st.FramesSent += c.framesSent.Load()
		st.FramesReceived += c.framesRecv.Load()
		st.FramesHeld += c.framesHeld.Load()
	}
	st.FramesSent += cl.finalFramesSent
	st.FramesReceived += cl.finalFramesRecv
	st.FramesHeld += cl.finalFramesHeld
	cl.mu.Unlock()
	st.Conns = len(conns)
	for _, c := range conns {
		if c.IsOpen() {
			st.Open++
		}
	}
	return st
}

type clientSocket struct {
	tc transport.Conn
	pc net.PacketConn
	tr *quicgo.Transport
}

// DefaultBackoff is the reconnect policy used when Client.OnClose is nil: exponential back-off
// from 100 ms doubling per attempt up to 10 s, with jitter (a random wait between half and all of
// it). A server shutting down or refusing the connection is given at least 1 s before the jitter
// (so 0.5 to 1 s after a first attempt). A server busy with handshakes (QUIC's
// CONNECTION_REFUSED, sent past Server.MaxHandshakes before any handshake work) is busy for as
// long as a burst of logins lasts: the wait then grows to 1 s at most, so that the client does
// not sit out slots that have come free.
func DefaultBackoff(err error, attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := 100 * time.Millisecond << min(attempt-1, 7)
	d = min(d, 10*time.Second)
	switch {
	case errors.Is(err, ErrServerShutdown) || errors.Is(err, ErrRejected):
		d = max(d, time.Second)
	case refusedBusy(err):
		d = min(d, time.Second)
	}
	return d/2 + rand.N(d/2+1)
}

// refusedBusy reports whether err is a server's CONNECTION_REFUSED: a transient refusal (nq's
// Server.MaxHandshakes, or quic-go's full accept queue).
func refusedBusy(err error) bool {
	var te *quicgo.TransportError
	return errors.As(err, &te) && te.Remote && te.ErrorCode == quicgo.ConnectionRefused
}

func (cl *Client) init() error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.closed {
		return fmt.Errorf("nq: client: %w", ErrClosed)
	}
	if cl.inited {
		return nil
	}
	if cl.TLS == nil {
		return errors.New("nq: Client.TLS is nil: set RootCAs (and ServerName if needed)")
	}
	if cl.MaxFrameSize < 0 {
		return fmt.Errorf("nq: Client.MaxFrameSize %d is negative", cl.MaxFrameSize)
	}
	cl.cfg = connConfig{mux: cl.Mux, maxFrame: cl.MaxFrameSize, log: cl.Logger}
	fillConnConfig(&cl.cfg)
	if cl.TLS.InsecureSkipVerify {
		log := cl.Logger
		if log == nil {
			log = slog.Default()
		}
		log.Warn("nq: Client.TLS.InsecureSkipVerify is set: the server's certificate is not verified; never use this in production")
	}
	cl.tls = withALPN(cl.TLS)
	if cl.tls.ClientSessionCache == nil {
		if cl.tls == cl.TLS {
			cl.tls = cl.tls.Clone()
		}
		cl.tls.ClientSessionCache = tls.NewLRUClientSessionCache(0)
	}
	cl.quic = cl.QUIC
	if cl.quic == nil {
		cl.quic = quic.ClientConfig() // once: its token store serves every reconnect
	}
	if tr := tracer(cl.DeliveryAcks, cl.QlogDir); tr != nil {
		cl.quic = cl.quic.Clone()
		cl.quic.Tracer = tr
	}
	cl.sockets = make(map[bool]*clientSocket)
	cl.conns = make(map[*Conn]struct{})
	cl.inited = true
	return nil
}

// Connect starts a Conn to addr ("host:port") and returns it at once; it connects in the
// background, and reconnects after each close as OnClose decides, until Close. Use WaitOpen to
// wait for the first handshake.
func (cl *Client) Connect(addr string) (*Conn, error) {
	if _, _, err := splitAddr(addr); err != nil {
		return nil, err
	}
	if err := cl.init(); err != nil {
		return nil, err
	}
	c := newConn(cl.cfg, cl, nil)
	c.addr = addr
	cl.mu.Lock()
	if cl.closed {
		cl.mu.Unlock()
		return nil, fmt.Errorf("nq: client: %w", ErrClosed)
	}
	cl.conns[c] = struct{}{}
	cl.wg.Add(1)
	cl.mu.Unlock()
	go c.supervise()
	return c, nil
}

// Dial is Connect followed by WaitOpen. If ctx ends first, the Conn is closed and the error
// says why the connection did not open. A server refuses connections (its OnOpen, MaxConns)
// right after their handshake, so Dial may return a Conn whose first connection is then refused:
// the close hook sees ErrRejected.
func (cl *Client) Dial(ctx context.Context, addr string) (*Conn, error) {
	c, err := cl.Connect(addr)
	if err != nil {
		return nil, err
	}
	if err := c.WaitOpen(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("nq: dial %s: %w", addr, err)
	}
	return c, nil
}

// Close closes every Conn of the client (their close and finalize hooks run), waits for them to
// end, and releases the sockets.
func (cl *Client) Close() error {
	cl.mu.Lock()
	if cl.closed {
		cl.mu.Unlock()
		return nil
	}
	cl.closed = true
	conns := make([]*Conn, 0, len(cl.conns))
	for c := range cl.conns {
		conns = append(conns, c)
	}
	cl.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	cl.wg.Wait()
	cl.mu.Lock()
	sockets := cl.sockets
	cl.sockets = nil
	cl.mu.Unlock()
	for _, s := range sockets {
		s.close(cl.cfg.log)
	}
	return nil
}

func splitAddr(addr string) (string, uint16, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("nq: address %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("nq: address %q: port %q is not in 1..65535", addr, ps)
	}
	if host == "" {
		return "", 0, fmt.Errorf("nq: address %q: empty host", addr)
	}
	return host, uint16(port), nil
}

// openSocket opens a packet socket on local with the client's transport, under a quic-go
// Transport.
func (cl *Client) openSocket(ctx context.Context, local netip.AddrPort) (*clientSocket, error) {
	factory := cl.Transport
	if factory == nil {
		factory = udp.Factory(udp.Config{})
	}
	tc, err := factory(ctx, local)
	if err != nil {
		return nil, fmt.Errorf("nq: client socket %s: %w", local, err)
	}
	pc, err := quic.PacketConn(tc)
	if err != nil {
		tc.Close()
		return nil, fmt.Errorf("nq: client socket %s: %w", local, err)
	}
	return &clientSocket{tc: tc, pc: pc, tr: &quicgo.Transport{Conn: pc}}, nil
}

func (s *clientSocket) close(log *slog.Logger) { closeSocket(log, s.tr, s.pc, s.tc) }

// socket returns the client's shared socket for the address family, opening it on first use.
func (cl *Client) socket(ctx context.Context, v4 bool) (*clientSocket, error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.closed {
		return nil, fmt.Errorf("nq: client: %w", ErrClosed)
	}
	if s := cl.sockets[v4]; s != nil {
		return s, nil
	}
	local := cl.LocalAddr
	if !local.IsValid() {
		if v4 {
			local = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
		} else {
			local = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
		}
	}
	s, err := cl.openSocket(ctx, local)
	if err != nil {
		return nil, err
	}
	cl.sockets[v4] = s
	return s, nil
}

// Resolve turns host (a name or an IP literal) into one address, preferring IPv4 unless
// PreferIPv6 is set and falling back to the other family. Failures match ErrResolve.
func (cl *Client) Resolve(ctx context.Context, host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap(), nil
	}
	var ips []netip.Addr
	var err error
	switch {
	case cl.LookupNetIP != nil:
		ips, err = cl.LookupNetIP(ctx, host)
	case cl.Resolver != nil:
		ips, err = cl.Resolver.LookupNetIP(ctx, "ip", host)
	default:
		ips, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("nq: resolve %q: %w: %w", host, ErrResolve, err)
	}
	var first4, first6 netip.Addr
	for _, ip := range ips {
		ip = ip.Unmap()
		switch {
		case ip.Is4() && !first4.IsValid():
			first4 = ip
		case ip.Is6() && !first6.IsValid():
			first6 = ip
		}
	}
	pick := []netip.Addr{first4, first6}
	if cl.PreferIPv6 {
		pick[0], pick[1] = first6, first4
	}
	for _, ip := range pick {
		if ip.IsValid() {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("nq: resolve %q: no address: %w", host, ErrResolve)
}

// patienceDoublings bounds how often consecutive handshake timeouts double the next attempt's
// handshake idle timeout: at most 4 times the configured one (12 s with quic.ClientConfig).
const patienceDoublings = 2

// quicDefaultHandshakeIdle is quic-go's HandshakeIdleTimeout when its Config leaves it 0.
const quicDefaultHandshakeIdle = 5 * time.Second

// handshakePatience returns the handshake idle timeout of an attempt that follows timeouts
// consecutive handshake timeouts: base doubled for each, at most patienceDoublings times. Like
// TCP's SYN back-off, it lets a server slowed by a burst of logins (a restart of a busy shard)
// finish the handshakes it has started instead of seeing them abandoned and begun again.
func handshakePatience(base time.Duration, timeouts int) time.Duration {
	if base <= 0 {
		base = quicDefaultHandshakeIdle
	}
	return base << min(max(timeouts, 0), patienceDoublings)
}

// isHandshakeTimeout reports whether a connection attempt failed because its handshake heard
// nothing for too long.
func isHandshakeTimeout(err error) bool {
	var idle *quicgo.IdleTimeoutError
	var hs *quicgo.HandshakeTimeoutError
	return errors.As(err, &idle) || errors.As(err, &hs)
}

// dial makes one connection attempt; timeouts is the number of handshake timeouts in a row
// before it (handshakePatience). The attempt's session cache guard is settled here, except after
// a successful 0-RTT dial, whose handshake completes later (serveEarly settles it then).
func (cl *Client) dial(ctx context.Context, addr string, timeouts int) (*quicgo.Conn, *ticketGuard, error) {
	host, port, err := splitAddr(addr)
	if err != nil {
		return nil, nil, err
	}
	ip, err := cl.Resolve(ctx, host)
	if err != nil {
		return nil, nil, &CloseError{Err: err, kind: ErrResolve}
	}
	s, err := cl.socket(ctx, ip.Is4())
	if err != nil {
		return nil, nil, err
	}
	conf := cl.tls.Clone()
	if conf.ServerName == "" {
		conf.ServerName = host
	}
	tickets := newTicketGuard(cl.tls.ClientSessionCache)
	conf.ClientSessionCache = tickets
	qconf := cl.quic
	if timeouts > 0 {
		qconf = qconf.Clone()
		qconf.HandshakeIdleTimeout = handshakePatience(cl.quic.HandshakeIdleTimeout, timeouts)
	}
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, port))
	var qc *quicgo.Conn
	if cl.Allow0RTT {
		qc, err = s.tr.DialEarly(ctx, to, conf, qconf)
	} else {
		qc, err = s.tr.Dial(ctx, to, conf, qconf)
	}
	if err != nil || !cl.Allow0RTT {
		tickets.settle(err)
	}
	if errors.Is(err, quicgo.ErrTransportClosed) {
		cl.dropSocket(ip.Is4(), s) // the socket broke: the next attempt opens a new one
	}
	return qc, tickets, err
}

// dropSocket forgets a broken shared socket (if it is still the current one) and closes it.
// Connections still on it were lost with it.
func (cl *Client) dropSocket(v4 bool, s *clientSocket) {
	cl.mu.Lock()
	if cl.sockets[v4] != s {
		cl.mu.Unlock()
		return
	}
	delete(cl.sockets, v4)
	cl.mu.Unlock()
	s.close(cl.cfg.log)
}

// supervise runs a client Conn: connect, serve, close, wait, reconnect — until Close.
func (c *Conn) supervise() {
	cl := c.client
	defer cl.wg.Done()
	attempt := 0
	timeouts := 0 // handshake timeouts in a row
	for !c.closeReq.Load() {
		c.resetReq.Store(false)
		ctx, cancel := context.WithCancel(context.Background())
		c.dialMu.Lock()
		c.dialAbort = cancel
		c.dialMu.Unlock()
		if c.closeReq.Load() {
			cancel()
		}
		cl.dials.Add(1)
		qc, tickets, err := cl.dial(ctx, c.addr, timeouts)
		c.dialMu.Lock()
		c.dialAbort = nil
		c.dialMu.Unlock()
		cancel()

		var closeErr error
		if err == nil {
			var opened bool
			closeErr, opened = c.serveGeneration(qc, tickets)
			switch {
			case opened && errors.Is(closeErr, ErrRejected):
				// Refused right after its handshake (the server's OnOpen or MaxConns): the
				// back-off keeps growing, as for a failed attempt, instead of starting over.
				timeouts = 0
			case opened:
				attempt, timeouts = 0, 0
			case isHandshakeTimeout(closeErr): // a 0-RTT attempt whose handshake timed out
				timeouts++
			}
		} else {
			if isHandshakeTimeout(err) {
				timeouts++
			}
			cl.dialFailures.Add(1)
			var ce *CloseError
			switch {
			case c.closeReq.Load():
				// Close interrupted the dial: the attempt ends as a connection Close ends
				// (OnClose sees ErrClosed; the loop stops after it).
				ce = &CloseError{Reason: "closed while connecting", Err: err, kind: ErrClosed}
			case !errors.As(err, &ce):
				ce = &CloseError{Err: err}
			}
			c.log.Debug("nq: connect failed", "addr", c.addr, "err", err)
			closeErr = ce
		}
		attempt++
		c.mu.Lock()
		c.lastErr = closeErr
		c.mu.Unlock()
		wait := time.Duration(0)
		if cl.OnClose != nil {
			wait = cl.OnClose(c, closeErr, attempt)
		} else {
			wait = DefaultBackoff(closeErr, attempt)
		}
		if c.closeReq.Load() {
			break
		}
		if !c.waitReconnect(wait) {
			break
		}
	}
	c.finalize()
}

// serveGeneration runs one established connection until it ends and returns the close error.
func (c *Conn) serveGeneration(qc *quicgo.Conn, tickets *ticketGuard) (closeErr error, opened bool) {
	g := newGeneration(c, qc)
	if c.client.Allow0RTT && !g.confirmed() {
		if ce := c.serveEarly(g, tickets); ce != nil {
			c.client.dialFailures.Add(1)
			return ce, false
		}
	}
	tickets.settle(nil) // the handshake completed (a no-op after a 1-RTT dial, settled then)
	c.client.opens.Add(1)
	defer c.client.closes.Add(1)
	c.begin(g)
	if c.client.OnOpen != nil {
		c.client.OnOpen(c)
	}
	if c.client.OnDatagram != nil {
		g.receiveDatagrams(c.client.OnDatagram, c.datagramsDone)
		c.datagramsDone = g.datagramsDone
	}
	accepted := make(chan struct{})
	go func() {
		g.acceptLoop()
		close(accepted)
	}()
	var code wire.ConnCode
	var reason string // set when the application closes or resets the connection
wait:
	for {
		switch {
		case c.closeReq.Load():
			code, reason = wire.ConnClosedByApp, "closed by application"
			break wait
		case c.resetReq.Swap(false):
			code, reason = wire.ConnNoError, "reset by application"
			break wait
		}
		select {
		case <-qc.Context().Done():
			break wait
		case <-c.wake:
		}
	}
	c.end(g) // calls from now on wait for the next generation instead of failing on this one
	if reason != "" {
		g.closeGraceful(code, reason)
	}
	<-accepted
	ce := g.teardown()
	for _, s := range g.takeSockets() {
		s.close(c.log)
	}
	return ce, true
}

// serveEarly runs a generation while its 0-RTT handshake completes: idempotent calls may use it
// meanwhile. It returns nil once the handshake is done (the generation then opens as usual), or
// the close error if the connection ended first.
func (c *Conn) serveEarly(g *generation, tickets *ticketGuard) *CloseError {
	g.early.Store(true)
	c.mu.Lock()
	c.early = g
	close(c.earlyUp)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.early = nil
		c.earlyUp = make(chan struct{})
		c.mu.Unlock()
	}()
	for done := false; !done; {
		select {
		case <-g.qc.HandshakeComplete():
			done = true
		case <-g.qc.Context().Done():
			done = true
		case <-c.wake:
			if c.closeReq.Load() {
				g.closeLocal(wire.ConnClosedByApp, "closed by application")
			}
		}
	}
	if g.qc.Context().Err() != nil {
		tickets.settle(context.Cause(g.qc.Context()))
		return g.teardown()
	}
	if !g.qc.ConnectionState().Used0RTT {
		// The server refused the 0-RTT data: what was sent with it is void, and calls made
		// from now on (the failed ones made again) wait for the confirmed connection.
		g.refused.Store(true)
		for _, s := range g.snapshot() {
			s.close(fmt.Errorf("%w: %w", Err0RTTRejected, ErrConnLost))
			<-s.done
		}
		if _, err := g.qc.NextConnection(context.Background()); err != nil {
			return g.teardown()
		}
	}
	return nil
}

// Migrate moves a client Conn's current connection to a new local socket bound to local (the
// zero value: the same address as the client's socket, a new port), the way a phone moves from
// Wi-Fi to cellular: the new path is validated, then used; streams, calls in flight and the
// generation carry on. The old socket stays open (the client's other Conns share it). The new
// socket is closed when this connection ends, and reconnects dial from Client.LocalAddr again: a
// client that may lose the interface of a specific LocalAddr binds a wildcard one (the kernel
// then routes each new connection), or uses a new Client. If the connection ends while the new
// path is being validated, Migrate fails at once with ErrConnLost.
func (c *Conn) Migrate(ctx context.Context, local netip.AddrPort) error {
	if c.client == nil {
		return errors.New("nq: Migrate: only a client connection migrates")
	}
	g := c.live()
	if g == nil {
		return fmt.Errorf("nq: Migrate: %w", ErrConnLost)
	}
	if !local.IsValid() {
		local = c.client.LocalAddr
		if !local.IsValid() {
			local = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
			if remote, err := netip.ParseAddrPort(c.RemoteAddr()); err == nil && remote.Addr().Unmap().Is6() {
				local = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
			}
		}
		local = netip.AddrPortFrom(local.Addr(), 0)
	}
	sock, err := c.client.openSocket(ctx, local)
	if err != nil {
		return fmt.Errorf("nq: Migrate: %w", err)
	}
	if !g.keepSocket(sock) {
		sock.close(c.log)
		return fmt.Errorf("nq: Migrate: %w", ErrConnLost)
	}
	path, err := g.qc.AddPath(sock.tr)
	if err != nil {
		return fmt.Errorf("nq: Migrate to %s: %w", sock.tc.LocalAddr(), err)
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(g.ctx, cancel) // the connection ending ends the probe
	defer stop()
	if err := path.Probe(pctx); err != nil {
		path.Close()
		if g.ctx.Err() != nil {
			err = g.closeError(context.Cause(g.ctx))
		}
		return fmt.Errorf("nq: Migrate to %s: probe: %w", sock.tc.LocalAddr(), err)
	}
	if err := path.Switch(); err != nil {
		path.Close()
		return fmt.Errorf("nq: Migrate to %s: switch: %w", sock.tc.LocalAddr(), err)
	}
	g.log.Debug("nq: migrated", "local", sock.tc.LocalAddr())
	return nil
}

// waitReconnect waits before the next attempt; it returns false when the Conn was closed.
func (c *Conn) waitReconnect(wait time.Duration) bool {
	if c.resetReq.Load() {
		return true
	}
	var timer <-chan time.Time
	if wait >= 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timer = t.C
	} else {
		// No reconnect is planned: callers waiting for a connection fail now, not at their ctx.
		c.mu.Lock()
		c.parked = true
		close(c.parkedCh)
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			c.parked = false
			c.parkedCh = make(chan struct{})
			c.mu.Unlock()
		}()
	}
	for {
		select {
		case <-timer:
			return !c.closeReq.Load()
		case <-c.wake:
			if c.closeReq.Load() {
				return false
			}
			if c.resetReq.Load() {
				return true
			}
		}
	}
}

// finalize ends a client Conn for good.
func (c *Conn) finalize() {
	cl := c.client
	c.cancel() // alarms stop before the finalize hook
	if c.datagramsDone != nil {
		<-c.datagramsDone // the datagram hook returns before the finalize hook
	}
	if cl.OnFinalize != nil {
		cl.OnFinalize(c)
	}
	cl.mu.Lock()
	delete(cl.conns, c)
	cl.finalFramesSent += c.framesSent.Load()
	cl.finalFramesRecv += c.framesRecv.Load()
	cl.finalFramesHeld += c.framesHeld.Load()
	cl.mu.Unlock()
	c.markEnded()
}
