package nq_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/transport"
)

// dialingEnv returns the in-memory environment with the client cut off from the server, and a
// client transport that reports when the client opens its socket (its first dial has started).
func dialingEnv(t *testing.T) (e *env, server netip.Addr, factory transport.Factory, dialing <-chan struct{}) {
	e = envs(t)[1](t)
	server = netip.MustParseAddrPort(e.serverAddr).Addr()
	e.net.Partition(e.clientLocal.Addr(), server)
	started := make(chan struct{})
	var once sync.Once
	factory = func(ctx context.Context, local netip.AddrPort) (transport.Conn, error) {
		once.Do(func() { close(started) })
		return e.clientFactory(ctx, local)
	}
	return e, server, factory, started
}

// TestResetDuringDial: a Reset asked for while the Conn is connecting is satisfied by the
// connection that opens; it does not close that connection again right after OnOpen.
func TestResetDuringDial(t *testing.T) {
	e, server, factory, dialing := dialingEnv(t)
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(req *nq.Request) { req.Reply(req.Payload) }}); err != nil {
		t.Fatal(err)
	}
	addr := startEchoServer(t, e, mux, 0)
	var mu sync.Mutex
	var closes []error
	cl := newClient(t, e, clientOptions{transport: factory, quic: patientQUIC(false),
		onClose: func(_ *nq.Conn, err error, _ int) time.Duration {
			mu.Lock()
			closes = append(closes, err)
			mu.Unlock()
			return 0
		}})
	c, err := cl.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, dialing, 10*time.Second, "the first dial")
	c.Reset()
	e.net.Heal(e.clientLocal.Addr(), server)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 3 {
		if _, err := c.RPC("rpc").Call(ctx, 1, []byte("x")); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if g := c.Generation(); g != 1 || len(closes) != 0 {
		t.Fatalf("generation %d after %d closes (%v); want the first connection still open", g, len(closes), closes)
	}
}

// TestCloseDuringDial: Close while the Conn is connecting ends the attempt like any close: the
// close hook runs once, with an error matching ErrClosed, then the finalize hook.
func TestCloseDuringDial(t *testing.T) {
	e, _, factory, dialing := dialingEnv(t)
	addr := startEchoServer(t, e, nq.NewMux(), 0)
	closed := make(chan error, 2)
	finalized := make(chan struct{})
	cl := newClient(t, e, clientOptions{transport: factory,
		onClose:    func(_ *nq.Conn, err error, _ int) time.Duration { closed <- err; return 0 },
		onFinalize: func(*nq.Conn) { close(finalized) }})
	c, err := cl.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, dialing, 10*time.Second, "the first dial")
	c.Close()
	waitFor(t, finalized, 10*time.Second, "the finalize hook")
	select {
	case err := <-closed:
		if !errors.Is(err, nq.ErrClosed) {
			t.Fatalf("close hook: %v, want an error matching ErrClosed", err)
		}
	default:
		t.Fatal("the close hook did not run before the finalize hook")
	}
	if len(closed) != 0 {
		t.Fatalf("the close hook ran again: %v", <-closed)
	}
}

// TestStreamClosedDuringOpenHook: a stream whose connection ends while its open hook runs gets
// its close hook exactly once when the open hook accepts it (and is not served).
func TestStreamClosedDuringOpenHook(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		entered, release := make(chan struct{}), make(chan struct{})
		streamClosed := make(chan error, 2)
		mux := nq.NewMux()
		if err := nq.HandleRecords(mux, "sst", nq.Bytes{}, nq.RecordHandler[[]byte]{
			OnOpen:  func(*nq.RecordStream[[]byte]) error { close(entered); <-release; return nil },
			OnClose: func(_ *nq.RecordStream[[]byte], err error) { streamClosed <- err },
		}); err != nil {
			t.Fatal(err)
		}
		connClosed := make(chan struct{})
		srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux, Transport: e.serverFactory,
			OnClose: func(*nq.Conn, error) { close(connClosed) }}
		if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		cmux := nq.NewMux()
		if err := nq.HandleRecords(cmux, "sst", nq.Bytes{}, nq.RecordHandler[[]byte]{}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := newClient(t, e, clientOptions{mux: cmux}).Dial(ctx, srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := nq.OpenRecords[[]byte](ctx, c, "sst")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send([]byte("hello")); err != nil { // the server learns of the stream
			t.Fatal(err)
		}
		waitFor(t, entered, 10*time.Second, "the server's open hook")
		c.Close()
		waitFor(t, connClosed, 10*time.Second, "the server connection's end")
		close(release)
		waitFor(t, streamClosed, 10*time.Second, "the stream's close hook")
		select {
		case err := <-streamClosed:
			t.Fatalf("the close hook ran twice (second: %v)", err)
		case <-time.After(100 * time.Millisecond):
		}
	})
}

// datagramEchoServer starts a server that sends every datagram back, and returns its address.
func datagramEchoServer(t *testing.T, e *env, onOpen func(*nq.Conn) error) string {
	t.Helper()
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{OnNotify: func(*nq.RPCStream, uint32, []byte) {}}); err != nil {
		t.Fatal(err)
	}
	srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux, Transport: e.serverFactory, OnOpen: onOpen,
		OnDatagram: func(c *nq.Conn, p []byte) { c.SendDatagram(p) }}
	if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.Addr().String()
}

// sendExpectingNoHook sends 10 datagrams on c and fails the test with msg if the hook signals
// on ran within wait (the hook is being held back, so a signal can only be a bug).
func sendExpectingNoHook(t *testing.T, c *nq.Conn, ran <-chan struct{}, wait time.Duration, msg string) {
	t.Helper()
	for range 10 {
		if err := c.SendDatagram([]byte("ping")); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-ran:
		t.Fatal(msg)
	case <-time.After(wait):
	}
}

// sendUntil sends p as a datagram every 20 ms until ready yields (datagrams are unreliable).
func sendUntil(t *testing.T, c *nq.Conn, p []byte, ready <-chan struct{}, what string) {
	t.Helper()
	for i := 0; ; i++ {
		if i == 250 {
			t.Fatalf("no %s after 5 s of datagrams", what)
		}
		if err := c.SendDatagram(p); err != nil && !errors.Is(err, nq.ErrConnLost) {
			t.Fatal(err)
		}
		select {
		case <-ready:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// hookProbe watches a client's datagram hook: how many run at once, and what the finalize hook
// sees. Its client reconnects at once and signals each open on opened.
type hookProbe struct {
	running, overlaps atomic.Int32
	finalized         chan int32 // the number of hooks running when the finalize hook ran
	opened            chan struct{}
}

func newHookProbe(t *testing.T, e *env) (*hookProbe, *nq.Client) {
	p := &hookProbe{finalized: make(chan int32, 1), opened: make(chan struct{}, 8)}
	cl := newClient(t, e, clientOptions{
		onOpen:     func(*nq.Conn) { p.opened <- struct{}{} },
		onClose:    func(*nq.Conn, error, int) time.Duration { return 0 },
		onFinalize: func(*nq.Conn) { p.finalized <- p.running.Load() },
	})
	return p, cl
}

// enter counts a hook run; call the function it returns when the run ends.
func (p *hookProbe) enter() func() {
	if p.running.Add(1) > 1 {
		p.overlaps.Add(1)
	}
	return func() { p.running.Add(-1) }
}

// closeWhileRunning closes c while a hook runs (until release is closed) and checks that the
// finalize hook waits for it, and that no two hooks ever ran at once.
func (p *hookProbe) closeWhileRunning(t *testing.T, c *nq.Conn, release chan struct{}) {
	t.Helper()
	c.Close()
	select {
	case n := <-p.finalized:
		t.Fatalf("the finalize hook ran while %d datagram hooks ran", n)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if n := waitFor(t, p.finalized, 10*time.Second, "the finalize hook"); n != 0 {
		t.Fatalf("the finalize hook ran while %d datagram hooks ran", n)
	}
	if n := p.overlaps.Load(); n != 0 {
		t.Fatalf("the datagram hook ran concurrently with itself %d times", n)
	}
}

// TestDatagramHookOneAtATime: a client's OnDatagram never runs concurrently with itself, across
// reconnects too: while the hook of one connection is still running, the next connection (which
// opens meanwhile: the close hook does not wait for it) hands it nothing; it does once the hook
// returns. Close waits for a running hook before the finalize hook.
func TestDatagramHookOneAtATime(t *testing.T) {
	e := envs(t)[1](t)
	addr := datagramEchoServer(t, e, nil)
	var calls atomic.Int32
	first, second := make(chan struct{}), make(chan struct{})
	releaseFirst, releaseSecond := make(chan struct{}), make(chan struct{})
	again := make(chan struct{}, 1)
	probe, cl := newHookProbe(t, e)
	cl.OnDatagram = func(_ *nq.Conn, p []byte) {
		defer probe.enter()()
		switch n := calls.Add(1); {
		case n == 1:
			close(first)
			<-releaseFirst
		case string(p) == "block":
			close(second)
			<-releaseSecond
		default:
			select {
			case again <- struct{}{}:
			default:
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := cl.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	sendUntil(t, c, []byte("ping"), first, "datagram hook")
	waitFor(t, probe.opened, 10*time.Second, "the first connection")
	c.Reset()
	waitFor(t, probe.opened, 10*time.Second, "a second connection while the first one's datagram hook runs")
	// The second connection's datagrams wait for the first hook.
	sendExpectingNoHook(t, c, again, 200*time.Millisecond, "the second connection's hook ran while the first one's was running")
	close(releaseFirst)
	sendUntil(t, c, []byte("ping"), again, "datagram after the first hook returned")
	// A hook running when the Conn closes holds back the finalize hook.
	sendUntil(t, c, []byte("block"), second, "blocking datagram")
	probe.closeWhileRunning(t, c, releaseSecond)
}

// TestDatagramHookOutlivesTwoConnections: a datagram hook still running after two more
// connections came and went holds back the third connection's datagrams and the finalize hook
// (a connection that ended before the hook returned used to let the next one through).
func TestDatagramHookOutlivesTwoConnections(t *testing.T) {
	e := envs(t)[1](t)
	addr := datagramEchoServer(t, e, nil)
	var calls atomic.Int32
	first, release := make(chan struct{}), make(chan struct{})
	again := make(chan struct{}, 1)
	probe, cl := newHookProbe(t, e)
	cl.OnDatagram = func(*nq.Conn, []byte) {
		defer probe.enter()()
		if calls.Add(1) == 1 {
			close(first)
			<-release
			return
		}
		select {
		case again <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := cl.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, probe.opened, 10*time.Second, "the first connection")
	sendUntil(t, c, []byte("ping"), first, "datagram hook")
	c.Reset()
	waitFor(t, probe.opened, 10*time.Second, "the second connection")
	c.Reset()
	waitFor(t, probe.opened, 10*time.Second, "the third connection")
	sendExpectingNoHook(t, c, again, 300*time.Millisecond, "the third connection's hook ran while the first one's was running")
	probe.closeWhileRunning(t, c, release)
}

// TestDatagramHookCallsAcrossReconnect: a client's OnDatagram that makes a call while its
// connection is going down waits for the next connection and completes there: the connection's
// end does not wait for the hook (it used to, and the two waited for each other for ever).
func TestDatagramHookCallsAcrossReconnect(t *testing.T) {
	e := envs(t)[1](t)
	srvConns := make(chan *nq.Conn, 4)
	addr := datagramEchoServer(t, e, func(c *nq.Conn) error { srvConns <- c; return nil })
	down := make(chan struct{})
	var downOnce sync.Once
	entered, notified := make(chan struct{}), make(chan error, 1)
	cl := newClient(t, e, clientOptions{onClose: func(*nq.Conn, error, int) time.Duration {
		downOnce.Do(func() { close(down) })
		return 0
	}})
	var once sync.Once
	cl.OnDatagram = func(c *nq.Conn, p []byte) {
		once.Do(func() {
			close(entered)
			<-down // the connection has ended: its close hook runs while this hook does
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			notified <- c.RPC("rpc").Notify(ctx, 1, p)
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := cl.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	sc := waitFor(t, srvConns, 10*time.Second, "the server's connection")
	sendUntil(t, c, []byte("go"), entered, "datagram hook")
	sc.Close()
	if err := waitFor(t, notified, 15*time.Second, "the hook's call"); err != nil {
		t.Fatalf("the hook's call across the reconnect: %v", err)
	}
	if g := c.Generation(); g < 2 {
		t.Fatalf("generation %d after the call, want the second connection", g)
	}
}

// TestOpenRecordsWrongType: opening a record protocol with a type other than the registered one
// fails with ErrUnknownProtocol before anything is opened: the registered type's open hook does
// not run.
func TestOpenRecordsWrongType(t *testing.T) {
	e := envs(t)[1](t)
	addr := startEchoServer(t, e, nq.NewMux(), 0)
	var hooks atomic.Int32
	cmux := nq.NewMux()
	if err := nq.HandleRecords(cmux, "sst", nq.Bytes{}, nq.RecordHandler[[]byte]{
		OnOpen: func(*nq.RecordStream[[]byte]) error { hooks.Add(1); return nil },
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := newClient(t, e, clientOptions{mux: cmux}).Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nq.OpenRecords[string](ctx, c, "sst"); !errors.Is(err, nq.ErrUnknownProtocol) {
		t.Fatalf("OpenRecords with the wrong type: %v, want ErrUnknownProtocol", err)
	}
	if n := hooks.Load(); n != 0 {
		t.Fatalf("the []byte protocol's open hook ran %d times", n)
	}
}
