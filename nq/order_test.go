package nq_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
)

// TestCloseOrder: when a connection is lost, each stream's close hook runs first, then its
// pending calls fail, and only then the connection's close hook — even when a stream hook is
// slow and the stream's reader saw the loss before the connection's owner did.
func TestCloseOrder(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		f := startFixture(t, e, fixtureOptions{})
		var mu sync.Mutex
		var events []string
		record := func(ev string) {
			mu.Lock()
			events = append(events, ev)
			mu.Unlock()
		}
		closed := make(chan struct{})
		mux := nq.NewMux()
		if err := mux.HandleRPC("rpc", nq.RPCHandler{OnClose: func(*nq.RPCStream, error) {
			time.Sleep(50 * time.Millisecond) // a slow hook: the connection's hook must wait for it
			record("stream-hook")
		}}); err != nil {
			t.Fatal(err)
		}
		cl := newClient(t, e, clientOptions{mux: mux, onClose: func(*nq.Conn, error, int) time.Duration {
			record("conn-hook")
			close(closed)
			return nq.NoReconnect
		}})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := cl.Dial(ctx, f.addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.RPC("rpc").Go(ctx, mSleep, sleepPayload(time.Hour), func(_ []byte, err error) {
			record("call-failed")
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.RPC("rpc").Call(ctx, mPing, nil); err != nil {
			t.Fatal(err)
		}
		f.srv.Close()
		waitFor(t, closed, 10*time.Second, "the connection's close hook")
		mu.Lock()
		defer mu.Unlock()
		if want := []string{"stream-hook", "call-failed", "conn-hook"}; !slices.Equal(events, want) {
			t.Fatalf("events %v, want %v", events, want)
		}
	})
}

// TestRefusedConnectionsAreNotAnnounced: a connection over MaxConns gets neither OnOpen nor
// OnClose on the server.
func TestRefusedConnectionsAreNotAnnounced(t *testing.T) {
	e := envs(t)[0](t)
	var mu sync.Mutex
	opens, closes := 0, 0
	opened := make(chan struct{}, 1)
	srv := &nq.Server{TLS: certs(t).ServerTLS(), MaxConns: 1,
		OnOpen:  func(*nq.Conn) error { mu.Lock(); opens++; mu.Unlock(); opened <- struct{}{}; return nil },
		OnClose: func(*nq.Conn, error) { mu.Lock(); closes++; mu.Unlock() },
	}
	if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := newClient(t, e, clientOptions{}).Dial(ctx, srv.Addr().String()); err != nil {
		t.Fatal(err)
	}
	// The client's handshake can finish before the server has taken the connection in: wait
	// for the server's side, so the second connection is the one over the cap.
	waitFor(t, opened, 5*time.Second, "the server to accept the first connection")
	refused := make(chan error, 1)
	cl2 := newClient(t, e, clientOptions{onClose: func(_ *nq.Conn, err error, _ int) time.Duration {
		refused <- err
		return nq.NoReconnect
	}})
	if _, err := cl2.Connect(srv.Addr().String()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, refused, 5*time.Second, "the refusal")
	srv.Close()
	mu.Lock()
	defer mu.Unlock()
	if opens != 1 || closes != 1 {
		t.Fatalf("opens %d, closes %d; want 1 and 1 (the refused connection unannounced)", opens, closes)
	}
}
