package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/bench/internal/measure"
	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/quic"
	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/mmsg"
	"github.com/naquid/naquid/transport/udp"
)

// RPCName is the nq protocol the benchmark calls; the server answers every request on it with
// the request's payload.
const RPCName = "echo"

// echoMethod is the method number of the benchmark's calls.
const echoMethod = 1

// nqStack is naquid: an nq.Server with one RPC protocol, and nq.Clients each carrying
// Config.PerSocket connections on one socket; every connection calls over one RPC stream.
type nqStack struct {
	cfg  Config
	name string
}

func newNQ(cfg Config) (*nqStack, error) {
	_, serr := cfg.serverFactory()
	_, cerr := cfg.clientFactory()
	if serr != nil && cerr != nil {
		return nil, serr // neither side can run
	}
	name := cfg.Transport
	if name == "" {
		name = "udp"
	}
	return &nqStack{cfg: cfg, name: NQ + "/" + name}, nil
}

// TransportFactory returns the nq transport named name ("" is udp) on kernel sockets; for afxdp,
// which needs an interface, it returns an error matching ErrNeedsFactory.
func TransportFactory(name string) (transport.Factory, error) {
	switch name {
	case "", "udp":
		return udp.Factory(udp.Config{}), nil
	case "mmsg":
		return mmsg.Factory(mmsg.Config{}), nil
	case "afxdp":
		return nil, fmt.Errorf("stack nq: %w", ErrNeedsFactory)
	}
	return nil, fmt.Errorf("stack nq: unknown transport %q", name)
}

// serverFactory is the nq server's transport: ServerFactory, else Transport's default.
func (c Config) serverFactory() (transport.Factory, error) {
	if c.ServerFactory != nil {
		return c.ServerFactory, nil
	}
	return TransportFactory(c.Transport)
}

// clientFactory is the nq clients' transport: ClientFactory, else Transport's default.
func (c Config) clientFactory() (transport.Factory, error) {
	if c.ClientFactory != nil {
		return c.ClientFactory, nil
	}
	return TransportFactory(c.Transport)
}

func (s *nqStack) Name() string { return s.name }

// NewNQServer returns an nq echo server configured as the benchmark's (not yet listening).
func NewNQServer(cfg Config) (*nq.Server, error) {
	if err := cfg.validate(NQ); err != nil {
		return nil, err
	}
	f, err := cfg.serverFactory()
	if err != nil {
		return nil, err
	}
	conf, err := cfg.Certs.ServerTLS()
	if err != nil {
		return nil, fmt.Errorf("stack nq: %w", err)
	}
	mux := nq.NewMux()
	err = mux.HandleRPC(RPCName, nq.RPCHandler{
		OnRequest: func(req *nq.Request) {
			_ = req.Reply(req.Payload) // fails only when the stream closed meanwhile
		},
		ReuseRequests: true, // the handler answers before returning and keeps nothing
	})
	if err != nil {
		return nil, fmt.Errorf("stack nq: %w", err)
	}
	return &nq.Server{TLS: conf, Mux: mux, Transport: f}, nil
}

// NewNQClient returns an nq client configured as the benchmark's: the echo protocol registered
// with the call timeout, resumption as cfg says, onClose as its reconnect policy (nil: nq's
// default back-off).
func NewNQClient(cfg Config, onClose func(c *nq.Conn, err error, attempt int) time.Duration) (*nq.Client, error) {
	if err := cfg.validate(NQ); err != nil {
		return nil, err
	}
	f, err := cfg.clientFactory()
	if err != nil {
		return nil, err
	}
	mux := nq.NewMux()
	if err := mux.HandleRPC(RPCName, nq.RPCHandler{Timeout: cfg.callTimeout()}); err != nil {
		return nil, fmt.Errorf("stack nq: %w", err)
	}
	conf := cfg.Certs.ClientTLS()
	conf.SessionTicketsDisabled = cfg.DisableResumption
	// One nq.Client stands for PerSocket players here: keep an address-validation token for each
	// of its connections (nq's default store keeps 4 per server, plenty for one player).
	qc := quic.ClientConfig()
	qc.TokenStore = quicgo.NewLRUTokenStore(4, max(cfg.PerSocket, 4))
	return &nq.Client{TLS: conf, Mux: mux, Transport: f, QUIC: qc, OnClose: onClose}, nil
}

func (s *nqStack) Listen(ctx context.Context, addr string) (Server, error) {
	srv, err := NewNQServer(s.cfg)
	if err != nil {
		return nil, err
	}
	if err := srv.Listen(ctx, addr); err != nil {
		return nil, fmt.Errorf("stack %s: %w", s.name, err)
	}
	return nqServer{srv}, nil
}

type nqServer struct{ srv *nq.Server }

func (s nqServer) Addr() string { return s.srv.Addr().String() }
func (s nqServer) Close() error { return s.srv.Close() }

func (s *nqStack) NewDialer() (Dialer, error) {
	return &nqDialer{stack: s}, nil
}

// nqDialer spreads its connections over nq.Clients, Config.PerSocket per client.
type nqDialer struct {
	stack *nqStack

	mu       sync.Mutex
	closed   bool
	clients  []*nq.Client
	users    int   // connections on the last client
	failures int   // connection attempts that ended (refused, lost, timed out)
	firstErr error // the first of them
}

// onClose counts every ended connection attempt and reconnects with nq's default back-off: a
// benchmark connection refused during a burst of handshakes must still come up.
func (d *nqDialer) onClose(_ *nq.Conn, err error, attempt int) time.Duration {
	d.mu.Lock()
	d.failures++
	if d.firstErr == nil {
		d.firstErr = err
	}
	d.mu.Unlock()
	return nq.DefaultBackoff(err, attempt)
}

// Diagnostics reports the connection attempts that failed, if any.
func (d *nqDialer) Diagnostics() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failures == 0 {
		return ""
	}
	return fmt.Sprintf("%d nq connection attempts ended before the run was over (first: %v)", d.failures, d.firstErr)
}

func (d *nqDialer) client() (*nq.Client, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("stack nq: dialer: %w", net.ErrClosed)
	}
	if len(d.clients) > 0 && d.users < d.stack.cfg.perSocket() {
		d.users++
		return d.clients[len(d.clients)-1], nil
	}
	cl, err := NewNQClient(d.stack.cfg, d.onClose)
	if err != nil {
		return nil, err
	}
	d.clients = append(d.clients, cl)
	d.users = 1
	return cl, nil
}

func (d *nqDialer) Dial(ctx context.Context, addr string) (Conn, error) {
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return nil, fmt.Errorf("stack nq: dial %q: %w", addr, err)
	}
	cl, err := d.client()
	if err != nil {
		return nil, err
	}
	c, err := cl.Dial(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("stack %s: %w", d.stack.name, err)
	}
	return &nqConn{c: c, rpc: c.RPC(RPCName)}, nil
}

func (d *nqDialer) Close() error {
	d.mu.Lock()
	d.closed = true
	clients := d.clients
	d.clients = nil
	d.mu.Unlock()
	var errs []error
	for _, cl := range clients {
		errs = append(errs, cl.Close())
	}
	return errors.Join(errs...)
}

type nqConn struct {
	c   *nq.Conn
	rpc *nq.RPC
}

// Pipeline keeps w calls in flight with nq's callback form: each of w lanes issues its next call
// from the previous call's callback, on the stream's reader goroutine, so the calls issued while
// a batch of answers is being read leave together when the reader's pass ends.
func (c *nqConn) Pipeline(ctx context.Context, n, w int, payload []byte, rec *measure.Shard) (int64, error) {
	if err := checkPipeline(n, w, payload); err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	rs, err := c.rpc.Stream(ctx)
	if err != nil {
		return 0, err
	}
	p := &nqPipeline{ctx: ctx, rs: rs, n: int64(n), payload: payload, rec: rec, done: make(chan struct{})}
	p.base = time.Now()
	lanes := make([]nqLane, min(w, n))
	for i := range lanes {
		l := &lanes[i]
		l.p = p
		l.cb = l.answered
		if p.issued.Add(1) > p.n {
			break
		}
		if !l.issue(time.Since(p.base)) {
			break
		}
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		p.fail(fmt.Errorf("stack nq: pipeline stopped: %w", ctx.Err()))
	}
	if p.stopped.Load() {
		// The calls still in flight end too (with ctx's error at the latest: they were made
		// with it) and are counted as failed before the result is read.
		p.inflight.Wait()
	}
	p.mu.Lock()
	err = p.err
	p.mu.Unlock()
	return p.answered.Load(), err
}

type nqPipeline struct {
	ctx      context.Context // the calls are made with it
	rs       *nq.RPCStream
	n        int64
	payload  []byte
	rec      *measure.Shard
	base     time.Time
	issued   atomic.Int64
	answered atomic.Int64

	stopped  atomic.Bool    // no more calls are issued
	inflight sync.WaitGroup // calls issued and not yet answered or failed
	mu       sync.Mutex
	err      error
	once     sync.Once
	done     chan struct{}
}

func (p *nqPipeline) fail(err error) {
	p.stopped.Store(true)
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
	p.once.Do(func() { close(p.done) })
}

// nqLane is one slot of the window: one call in flight at a time.
type nqLane struct {
	p     *nqPipeline
	start time.Duration
	cb    func([]byte, error) // l.answered, bound once
}

func (l *nqLane) issue(now time.Duration) bool {
	l.start = now
	l.p.inflight.Add(1)
	if err := l.p.rs.Go(l.p.ctx, echoMethod, l.p.payload, l.cb); err != nil {
		l.p.inflight.Done()
		l.p.rec.Error()
		l.p.fail(err)
		return false
	}
	return true
}

func (l *nqLane) answered(_ []byte, err error) {
	p := l.p
	defer p.inflight.Done() // after the next call, if any, is issued
	if err != nil {
		p.rec.Error()
		p.fail(err)
		return
	}
	now := time.Since(p.base)
	p.rec.Record(now - l.start)
	if p.answered.Add(1) == p.n {
		p.once.Do(func() { close(p.done) })
		return
	}
	if !p.stopped.Load() && p.issued.Add(1) <= p.n {
		l.issue(now)
	}
}

func (c *nqConn) Send(payload []byte, done func(error)) error {
	return c.rpc.Go(context.Background(), echoMethod, payload, func(_ []byte, err error) { done(err) })
}

func (c *nqConn) Close() error {
	err := c.c.Close()
	<-c.c.Done()
	return err
}
