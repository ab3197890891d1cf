package nq_test

// Go port of naquid's end-to-end suite (shared/NAQUID.md section 7), run over kernel UDP on
// loopback and over the in-memory network.

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/transport/memconn"
)

func TestRPC(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		f := startFixture(t, e, fixtureOptions{})
		type notification struct {
			stream *nq.RPCStream
			method uint32
			data   string
		}
		notifies := make(chan notification, 4)
		peerStreams := make(chan *nq.RPCStream, 4)
		closedStreams := make(chan *nq.RPCStream, 8)
		serverCalls := make(chan string, 4)
		mux := nq.NewMux()
		err := mux.HandleRPC("rpc", nq.RPCHandler{
			OnRequest: func(req *nq.Request) {
				if req.Method != mServerRequest {
					req.Fail(&nq.RemoteError{Code: -2, Message: "unexpected method"})
					return
				}
				if v := req.Stream().Value(); v != 0x1234 {
					t.Errorf("server stream value = %v, want 0x1234", v)
				}
				serverCalls <- string(req.Payload)
				req.Reply(append([]byte("from client:"), req.Payload...))
			},
			OnNotify: func(s *nq.RPCStream, method uint32, payload []byte) {
				notifies <- notification{s, method, string(payload)}
			},
			OnOpen: func(s *nq.RPCStream) error {
				if !s.Outgoing() {
					s.SetValue(0x1234)
					peerStreams <- s
				}
				return nil
			},
			OnClose: func(s *nq.RPCStream, err error) { closedStreams <- s },
		})
		if err != nil {
			t.Fatal(err)
		}
		cl := newClient(t, e, clientOptions{mux: mux})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := cl.Dial(ctx, f.addr)
		if err != nil {
			t.Fatal(err)
		}
		a, err := conn.OpenRPC(ctx, "rpc")
		if err != nil {
			t.Fatal(err)
		}
		b, err := conn.OpenRPC(ctx, "rpc")
		if err != nil {
			t.Fatal(err)
		}

		// ping: an 8-byte payload comes back identical.
		now := be64(uint64(time.Now().UnixNano()))
		reply, err := a.Call(ctx, mPing, now)
		if err != nil {
			t.Fatalf("ping: %v", err)
		}
		mustEqual(t, reply, now, "ping reply")

		// raise: code and message survive intact.
		raise := binary.BigEndian.AppendUint32(nil, uint32(0xFFFFFFFF-998)) // int32 -999
		raise = append(raise, "test failure reason"...)
		_, err = a.Call(ctx, mRaise, raise)
		var re *nq.RemoteError
		if !errors.As(err, &re) || re.Code != -999 || re.Message != "test failure reason" {
			t.Fatalf("raise: got %v, want RemoteError{-999, test failure reason}", err)
		}

		// close: the empty reply arrives before the stream closes, then the close hook runs.
		reply, err = a.Call(ctx, mClose, []byte("stream"))
		if err != nil || len(reply) != 0 {
			t.Fatalf("close stream: reply %q, err %v; want an empty reply", reply, err)
		}
		if s := waitFor(t, closedStreams, 5*time.Second, "stream A's close hook"); s != a {
			t.Fatalf("close hook for stream %d, want stream A (%d)", s.ID(), a.ID())
		}
		if _, err := a.Call(ctx, mPing, now); !errors.Is(err, nq.ErrClosed) {
			t.Fatalf("call on closed stream: %v, want ErrClosed", err)
		}

		// notify: the server notifies with method 0x7FFF, then replies.
		reply, err = b.Call(ctx, mNotifyText, []byte("notify this plz"))
		if err != nil || string(reply) != "notify success" {
			t.Fatalf("notify text: reply %q, err %v", reply, err)
		}
		n := waitFor(t, notifies, 5*time.Second, "the notify")
		if n.stream != b || n.method != mTextNotify || n.data != "notify this plz" {
			t.Fatalf("notify: stream %v method %#x data %q", n.stream.ID(), n.method, n.data)
		}

		// server stream: the server opens a stream to the client and calls it.
		reply, err = b.Call(ctx, mServerStream, []byte("rpc|create stream"))
		if err != nil || len(reply) != 0 {
			t.Fatalf("server stream: reply %q, err %v", reply, err)
		}
		ps := waitFor(t, peerStreams, 5*time.Second, "the server-initiated stream")
		if ps.Outgoing() || ps == a || ps == b {
			t.Fatal("server-initiated stream is not a new peer-initiated stream")
		}
		if got := waitFor(t, serverCalls, 5*time.Second, "the server's call"); got != "from server:create stream" {
			t.Fatalf("server call payload %q", got)
		}
		if err := waitFor(t, f.serverStreamResult, 5*time.Second, "the server's verdict"); err != nil {
			t.Fatalf("server side of server stream: %v", err)
		}
		// An alarm set on the server-initiated stream fires.
		fired := make(chan struct{})
		ps.AfterFunc(100*time.Millisecond, func() { close(fired) })
		waitFor(t, fired, 5*time.Second, "the alarm on the server-initiated stream")
		conn.Close()
		waitFor(t, conn.Done(), 5*time.Second, "finalize")
	})
}

func TestTimeout(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		f := startFixture(t, e, fixtureOptions{})
		mux := nq.NewMux()
		if err := mux.HandleRPC("rpc", nq.RPCHandler{Timeout: 2 * time.Second}); err != nil {
			t.Fatal(err)
		}
		cl := newClient(t, e, clientOptions{mux: mux})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := cl.Dial(ctx, f.addr)
		if err != nil {
			t.Fatal(err)
		}
		rpc := conn.RPC("rpc")
		if _, err := rpc.Stream(ctx); err != nil {
			t.Fatal(err)
		}
		// No deadline on the ctx: the handler's 2 s default applies (and bounds these calls).
		noDeadline := context.Background()
		if _, err := rpc.Call(noDeadline, mSleep, sleepPayload(time.Second)); err != nil {
			t.Fatalf("sleep 1s with a 2s default: %v", err)
		}
		start := time.Now()
		_, err = rpc.Call(noDeadline, mSleep, sleepPayload(3*time.Second))
		took := time.Since(start)
		if !errors.Is(err, nq.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("sleep 3s with a 2s default: %v, want ErrTimeout", err)
		}
		if took < 1900*time.Millisecond || took > 2900*time.Millisecond {
			t.Fatalf("timeout after %v, want about 2s", took)
		}
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		if _, err := rpc.Call(cctx, mSleep, sleepPayload(3*time.Second)); err != nil {
			t.Fatalf("sleep 3s with a 5s ctx deadline: %v", err)
		}
	})
}

func TestReconnectClient(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		f := startFixture(t, e, fixtureOptions{})
		const value = 0x5678
		var (
			mu        sync.Mutex
			opens     int
			closes    []error
			lastClose time.Time
			gaps      []time.Duration
			finalized = make(chan int, 2)
			firstErr  = make(chan error, 1)
		)
		cl := newClient(t, e, clientOptions{
			onOpen: func(c *nq.Conn) {
				mu.Lock()
				defer mu.Unlock()
				opens++
				if opens == 1 {
					c.SetValue(value)
					rpc := c.RPC("rpc")
					go func() {
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						defer cancel()
						reply, err := rpc.Call(ctx, mClose, []byte("conn"))
						if err == nil && len(reply) != 0 {
							err = errors.New("close conn: non-empty reply")
						}
						firstErr <- err
					}()
					return
				}
				gaps = append(gaps, time.Since(lastClose))
				if v := c.Value(); v != value {
					t.Errorf("open #%d: value %v, want %#x", opens, v, value)
				}
				if opens < 5 {
					c.Reset()
				} else {
					c.Close()
				}
			},
			onClose: func(c *nq.Conn, err error, attempt int) time.Duration {
				mu.Lock()
				defer mu.Unlock()
				closes = append(closes, err)
				lastClose = time.Now()
				if v := c.Value(); v != value {
					t.Errorf("close #%d: value %v, want %#x", len(closes), v, value)
				}
				return time.Second
			},
			onFinalize: func(c *nq.Conn) {
				mu.Lock()
				defer mu.Unlock()
				if v := c.Value(); v != value {
					t.Errorf("finalize: value %v, want %#x", v, value)
				}
				finalized <- len(closes)
			},
		})
		conn, err := cl.Connect(f.addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := waitFor(t, firstErr, 10*time.Second, "the Close(conn) reply"); err != nil {
			t.Fatalf("Close(conn): %v", err)
		}
		if n := waitFor(t, finalized, 15*time.Second, "finalize"); n != 5 {
			t.Fatalf("finalize after %d closes, want 5", n)
		}
		waitFor(t, conn.Done(), 5*time.Second, "Done")
		mu.Lock()
		defer mu.Unlock()
		var ce *nq.CloseError
		if !errors.As(closes[0], &ce) || !ce.Remote {
			t.Errorf("close #1: %v, want a remote close", closes[0])
		}
		for i := 1; i < 4; i++ {
			if !errors.As(closes[i], &ce) || ce.Remote || !errors.Is(closes[i], nq.ErrConnLost) {
				t.Errorf("close #%d: %v, want a local reset", i+1, closes[i])
			}
		}
		if !errors.Is(closes[4], nq.ErrClosed) {
			t.Errorf("close #5: %v, want ErrClosed", closes[4])
		}
		for i, g := range gaps {
			if g < 900*time.Millisecond || g > 1500*time.Millisecond {
				t.Errorf("reconnect #%d after %v, want 0.9-1.5s", i+1, g)
			}
		}
		if len(gaps) != 4 {
			t.Errorf("%d reconnects, want 4", len(gaps))
		}
		if select1 := len(finalized); select1 != 0 {
			t.Errorf("finalize ran more than once")
		}
	})
}

func TestReconnectServer(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		f := startFixture(t, e, fixtureOptions{rejectConns: 2, rejectStreams: 2})
		var (
			mu          sync.Mutex
			closes      []error
			rejected    int
			lost        int
			succeeded   = make(chan uint64, 1)
			streamClose atomic.Int32
			openers     sync.WaitGroup
		)
		mux := nq.NewMux()
		if err := mux.HandleRPC("rpc", nq.RPCHandler{
			OnClose: func(*nq.RPCStream, error) { streamClose.Add(1) },
		}); err != nil {
			t.Fatal(err)
		}
		cl := newClient(t, e, clientOptions{
			mux: mux,
			onOpen: func(c *nq.Conn) {
				openers.Add(1)
				go func() {
					defer openers.Done()
					ctx, cancel := context.WithTimeout(c.Context(), 10*time.Second)
					defer cancel()
					for i := 0; i < 8; i++ {
						// The goroutine of a connection the server rejects may open its
						// stream on the next connection (Conn.OpenRPC follows reconnects);
						// that open counts against the new connection's stream rejections
						// like any other, so it is carried through the same way.
						s, err := c.OpenRPC(ctx, "rpc")
						if err == nil {
							var reply []byte
							stamp := be64(uint64(time.Now().UnixNano()))
							reply, err = s.Call(ctx, mSetupReject, stamp)
							if err == nil {
								if string(reply) != string(stamp) {
									t.Errorf("SetupReject reply %x, want %x", reply, stamp)
								}
								select {
								case succeeded <- s.Generation():
								default: // another goroutine got through first
								}
								return
							}
						}
						mu.Lock()
						switch {
						case errors.Is(err, nq.ErrRejected) && !errors.Is(err, nq.ErrConnLost):
							rejected++
						case errors.Is(err, nq.ErrConnLost):
							lost++
							mu.Unlock()
							return // this connection is gone; the next open starts over
						default:
							t.Errorf("unexpected call error: %v", err)
						}
						mu.Unlock()
					}
				}()
			},
			onClose: func(c *nq.Conn, err error, attempt int) time.Duration {
				mu.Lock()
				closes = append(closes, err)
				mu.Unlock()
				return 100 * time.Millisecond
			},
		})
		if _, err := cl.Connect(f.addr); err != nil {
			t.Fatal(err)
		}
		gen := waitFor(t, succeeded, 15*time.Second, "a successful call")
		// Every opener has counted what it saw once all have returned.
		done := make(chan struct{})
		go func() { openers.Wait(); close(done) }()
		waitFor(t, done, 15*time.Second, "the openers")
		mu.Lock()
		defer mu.Unlock()
		if gen != 3 || len(closes) != 2 {
			t.Fatalf("success on generation %d after %d closes, want generation 3 after 2", gen, len(closes))
		}
		for i, err := range closes {
			if !errors.Is(err, nq.ErrRejected) {
				t.Errorf("close #%d: %v, want ErrRejected", i+1, err)
			}
		}
		if rejected != 2 {
			t.Errorf("%d streams rejected on the accepted connection, want 2", rejected)
		}
		if lost > 2 {
			t.Errorf("%d calls lost with rejected connections, want at most 2", lost)
		}
	})
}

func TestShutdown(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		f := startFixture(t, e, fixtureOptions{})
		closed := make(chan error, 4)
		cl := newClient(t, e, clientOptions{
			onClose: func(c *nq.Conn, err error, attempt int) time.Duration {
				closed <- err
				return nq.NoReconnect
			},
		})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := cl.Dial(ctx, f.addr)
		if err != nil {
			t.Fatal(err)
		}
		rpc := conn.RPC("rpc")
		if _, err := rpc.Call(ctx, mPing, nil); err != nil {
			t.Fatal(err)
		}
		// Calls in flight when Shutdown starts get their replies.
		const inFlight = 8
		results := make(chan error, inFlight)
		for range inFlight {
			if err := rpc.Go(ctx, mSleep, sleepPayload(300*time.Millisecond), func(_ []byte, err error) { results <- err }); err != nil {
				t.Fatal(err)
			}
		}
		// The requests have reached the server when a ping sent after them is answered.
		if _, err := rpc.Call(ctx, mPing, nil); err != nil {
			t.Fatal(err)
		}
		shutdownDone := make(chan error, 1)
		go func() { shutdownDone <- f.srv.Shutdown(ctx) }()
		// New calls are refused with an error that says the server is shutting down.
		var refused error
		for refused == nil {
			_, refused = rpc.Call(ctx, mPing, nil)
		}
		if !errors.Is(refused, nq.ErrServerShutdown) {
			t.Fatalf("call during shutdown: %v, want ErrServerShutdown", refused)
		}
		for range inFlight {
			if err := waitFor(t, results, 10*time.Second, "an in-flight reply"); err != nil {
				t.Fatalf("in-flight call: %v", err)
			}
		}
		if err := waitFor(t, shutdownDone, 10*time.Second, "Shutdown"); err != nil {
			t.Fatalf("Shutdown: %v, want nil (drained)", err)
		}
		cerr := waitFor(t, closed, 10*time.Second, "the close hook")
		if !errors.Is(cerr, nq.ErrServerShutdown) || !errors.Is(cerr, nq.ErrConnLost) {
			t.Fatalf("close hook: %v, want ErrServerShutdown", cerr)
		}
		// The default back-off does not hammer a draining server.
		for attempt := 1; attempt <= 3; attempt++ {
			if d := nq.DefaultBackoff(cerr, attempt); d < 500*time.Millisecond {
				t.Errorf("DefaultBackoff(shutdown, %d) = %v, want >= 500ms", attempt, d)
			}
		}
	})
}

func TestShutdownDeadline(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		f := startFixture(t, e, fixtureOptions{})
		cl := newClient(t, e, clientOptions{})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := cl.Dial(ctx, f.addr)
		if err != nil {
			t.Fatal(err)
		}
		rpc := conn.RPC("rpc")
		slow := make(chan error, 1)
		if err := rpc.Go(ctx, mSleep, sleepPayload(10*time.Second), func(_ []byte, err error) { slow <- err }); err != nil {
			t.Fatal(err)
		}
		if _, err := rpc.Call(ctx, mPing, nil); err != nil {
			t.Fatal(err)
		}
		sctx, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer scancel()
		err = f.srv.Shutdown(sctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown with a request still running: %v, want DeadlineExceeded", err)
		}
		if err := waitFor(t, slow, 10*time.Second, "the cut-off call"); !errors.Is(err, nq.ErrConnLost) {
			t.Fatalf("call cut off by shutdown: %v, want ErrConnLost", err)
		}
		// A new connection is refused.
		cl2 := newClient(t, e, clientOptions{onClose: func(*nq.Conn, error, int) time.Duration { return nq.NoReconnect }})
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		defer dcancel()
		if _, err := cl2.Dial(dctx, f.addr); err == nil {
			t.Fatal("dial after shutdown succeeded")
		}
	})
}

func TestChaos(t *testing.T) {
	n, err := memconn.NewNetwork(memconn.Config{Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	e := &env{
		name:          "memconn-chaos",
		serverAddr:    "192.0.2.1:4433",
		clientLocal:   netip.MustParseAddrPort("192.0.2.2:0"),
		serverFactory: n.Factory(),
		clientFactory: n.Factory(),
		net:           n,
	}
	f := startFixture(t, e, fixtureOptions{})
	// The client's writes: 10 succeed, then 10 fail, repeating.
	if err := n.SetLink(e.clientLocal.Addr(), netip.MustParseAddrPort(f.addr).Addr(), memconn.LinkConfig{WriteErrorsAfter: 10, WriteErrors: 10}); err != nil {
		t.Fatal(err)
	}
	var closes atomic.Int32
	cl := newClient(t, e, clientOptions{
		onClose: func(*nq.Conn, error, int) time.Duration { closes.Add(1); return 20 * time.Millisecond },
	})
	conn, err := cl.Connect(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	rpc := conn.RPC("rpc")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ok := 0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for ok < 6 {
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := rpc.Call(pctx, mPing, be64(uint64(time.Now().UnixNano())))
		pcancel()
		if err == nil {
			ok++
			if ok == 6 {
				break
			}
		} else if ctx.Err() != nil {
			t.Fatalf("only %d pings answered: %v", ok, err)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("only %d pings answered in time", ok)
		}
	}
	t.Logf("6 pings answered through %d disconnects", closes.Load())
}
