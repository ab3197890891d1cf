package nq_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
)

// TestClosedByThisSideIsErrClosed: what this side's application closed fails with ErrClosed, not
// ErrConnLost (which is for connections lost otherwise): a raw stream's Write after its Close or
// CloseWrite, and SendDatagram on a Conn after its Close.
func TestClosedByThisSideIsErrClosed(t *testing.T) {
	e := envs(t)[1](t)
	mux := echoMux(t, "")
	addr := startEchoServer(t, e, mux, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn := rawClient(ctx, t, e, addr, clientOptions{})
	for _, how := range []string{"Close", "CloseWrite"} {
		s, err := conn.OpenRaw(ctx, "raw")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if how == "Close" {
			s.Close()
		} else {
			s.CloseWrite()
		}
		_, err = s.Write([]byte("after"))
		if !errors.Is(err, nq.ErrClosed) || errors.Is(err, nq.ErrConnLost) {
			t.Errorf("raw Write after %s: %v, want ErrClosed (not ErrConnLost)", how, err)
		}
		s.Close()
	}
	conn.Close()
	<-conn.Done()
	if err := conn.SendDatagram([]byte("x")); !errors.Is(err, nq.ErrClosed) || errors.Is(err, nq.ErrConnLost) {
		t.Errorf("SendDatagram after Close: %v, want ErrClosed (not ErrConnLost)", err)
	}
}

// TestEarlyStreamGeneration: a stream opened in 0-RTT reports generation 0 until its handshake
// completes, then the Conn's generation number, without a data race on the way (run with -race).
func TestEarlyStreamGeneration(t *testing.T) {
	e := slowLinkEnv(t)
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(r *nq.Request) { r.Reply(nil) }}); err != nil {
		t.Fatal(err)
	}
	srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux, Transport: e.serverFactory, Allow0RTT: true}
	if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cl, closed := earlyClient(t, e, 100*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := cl.Dial(ctx, srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.RPC("rpc").Call(ctx, 1, nil); err != nil { // the session ticket arrives
		t.Fatal(err)
	}
	conn.Reset()
	waitFor(t, closed, 10*time.Second, "the reset")
	s, err := conn.RPC("rpc").Stream(nq.Idempotent(ctx))
	if err != nil {
		t.Fatal(err)
	}
	// Read the generation while the handshake completes (a data race before, seen by -race).
	stop, seen := make(chan struct{}), make(chan map[uint64]int, 1)
	go func() {
		counts := map[uint64]int{}
		for {
			counts[s.Generation()]++
			select {
			case <-stop:
				seen <- counts
				return
			default:
			}
		}
	}()
	if _, err := conn.RPC("rpc").Call(ctx, 1, nil); err != nil { // a 1-RTT call: the handshake is done
		t.Fatal(err)
	}
	close(stop)
	counts := <-seen
	t.Logf("generations seen: %v", counts)
	for g := range counts {
		if g != 0 && g != 2 {
			t.Errorf("stream generation %d seen around the 0-RTT handshake, want 0, then 2", g)
		}
	}
	if g := s.Generation(); g != 2 || conn.Generation() != 2 {
		t.Errorf("stream generation %d, Conn generation %d after the handshake, want 2", g, conn.Generation())
	}
}

// TestRawWriteAfterReset: a raw stream that a Reset closed (the application did not close it)
// fails later Writes as a lost connection does, with ErrConnLost, not ErrClosed.
func TestRawWriteAfterReset(t *testing.T) {
	e := envs(t)[1](t)
	smux := nq.NewMux()
	if err := smux.HandleRaw("raw", nq.RawHandler{OnStream: func(s *nq.RawStream) {
		buf := make([]byte, 1024)
		for {
			if _, err := s.Read(buf); err != nil {
				return
			}
		}
	}}); err != nil {
		t.Fatal(err)
	}
	addr := startEchoServer(t, e, smux, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn := rawClient(ctx, t, e, addr, clientOptions{onClose: func(*nq.Conn, error, int) time.Duration { return nq.NoReconnect }})
	s, err := conn.OpenRaw(ctx, "raw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	conn.Reset()
	waitFor(t, s.Context().Done(), 10*time.Second, "the reset to close the stream")
	_, err = s.Write([]byte("after"))
	if !errors.Is(err, nq.ErrConnLost) || errors.Is(err, nq.ErrClosed) {
		t.Fatalf("raw Write after Reset: %v, want ErrConnLost (not ErrClosed)", err)
	}
}

// TestServerConnEndedByPeer: on a server Conn whose client closed the connection, calls and
// datagrams fail with ErrConnLost (the peer's close), not ErrClosed (which says this side's
// application closed it).
func TestServerConnEndedByPeer(t *testing.T) {
	e := envs(t)[1](t)
	srvConns, ended := make(chan *nq.Conn, 1), make(chan struct{})
	srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: echoMux(t, ""), Transport: e.serverFactory,
		OnOpen:  func(c *nq.Conn) error { srvConns <- c; return nil },
		OnClose: func(*nq.Conn, error) { close(ended) }}
	if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := newClient(t, e, clientOptions{}).Dial(ctx, srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc := waitFor(t, srvConns, 10*time.Second, "the server's connection")
	conn.Close()
	waitFor(t, ended, 10*time.Second, "the server's close hook")
	<-sc.Done()
	if err := sc.SendDatagram([]byte("x")); !errors.Is(err, nq.ErrConnLost) || errors.Is(err, nq.ErrClosed) {
		t.Errorf("SendDatagram on a server Conn the peer closed: %v, want ErrConnLost", err)
	}
	if _, err := sc.OpenRaw(ctx, "raw"); !errors.Is(err, nq.ErrConnLost) || errors.Is(err, nq.ErrClosed) {
		t.Errorf("OpenRaw on a server Conn the peer closed: %v, want ErrConnLost", err)
	}
}

// TestCallsAfterCloseFail: once Close has returned, calls, waits and datagrams fail with ErrClosed
// at once, although the connection is still closing (they used to go through until Done).
func TestCallsAfterCloseFail(t *testing.T) {
	e := envs(t)[1](t)
	f := startFixture(t, e, fixtureOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := newClient(t, e, clientOptions{})
	for _, op := range []string{"WaitOpen", "SendDatagram", "Call", "OpenRPC"} {
		conn, err := cl.Dial(ctx, f.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		switch op {
		case "WaitOpen":
			err = conn.WaitOpen(ctx)
		case "SendDatagram":
			err = conn.SendDatagram([]byte("x"))
		case "Call":
			_, err = conn.RPC("rpc").Call(ctx, mPing, nil)
		case "OpenRPC":
			_, err = conn.OpenRPC(ctx, "rpc")
		}
		if !errors.Is(err, nq.ErrClosed) {
			t.Errorf("%s right after Close: %v, want ErrClosed", op, err)
		}
		<-conn.Done()
	}
}

// TestHandleCallWaitBounded: a call through a Conn.RPC handle with a ctx without deadline, made
// while the client waits to reconnect, fails with ErrTimeout after the protocol's Timeout (it
// used to wait for the next connection however long that took).
func TestHandleCallWaitBounded(t *testing.T) {
	e := envs(t)[1](t)
	f := startFixture(t, e, fixtureOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{Timeout: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{}, 1)
	conn, err := newClient(t, e, clientOptions{mux: mux, onClose: func(*nq.Conn, error, int) time.Duration {
		closed <- struct{}{}
		return time.Minute // reconnects much later than the test waits
	}}).Dial(ctx, f.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.RPC("rpc").Call(ctx, mClose, []byte("conn")); err != nil { // the server closes it
		t.Fatal(err)
	}
	waitFor(t, closed, 10*time.Second, "the close hook")
	res := make(chan error, 1)
	go func() {
		_, err := conn.RPC("rpc").Call(context.Background(), mPing, nil)
		res <- err
	}()
	if err := waitFor(t, res, 10*time.Second, "the call while reconnecting"); !errors.Is(err, nq.ErrTimeout) {
		t.Fatalf("call while reconnecting: %v, want ErrTimeout", err)
	}
}

// rawClient dials addr with a client (options o) whose Mux serves the raw protocol "raw".
func rawClient(ctx context.Context, t *testing.T, e *env, addr string, o clientOptions) *nq.Conn {
	t.Helper()
	o.mux = nq.NewMux()
	if err := o.mux.HandleRaw("raw", nq.RawHandler{}); err != nil {
		t.Fatal(err)
	}
	conn, err := newClient(t, e, o).Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}
