package nq_test

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/transport/memconn"
)

// TestZeroRTT: after a first connection, a reconnect to a server that allows 0-RTT sends a call
// marked Idempotent with the handshake (the server sees it as Early), while an unmarked call
// waits for the handshake (not Early); both succeed and the reconnect used 0-RTT. It runs on an
// in-memory link with 20 ms of latency each way, so the handshake lasts long enough for the
// server to see 0-RTT data before it completes (on loopback the window is microseconds).
func TestZeroRTT(t *testing.T) {
	e := slowLinkEnv(t)
	early := make(chan bool, 8)
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(req *nq.Request) {
		if req.Method == mWhoAmI {
			early <- req.Early()
		}
		req.Reply(nil)
	}}); err != nil {
		t.Fatal(err)
	}
	srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux, Transport: e.serverFactory, Allow0RTT: true}
	if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	type open struct {
		gen      uint64
		used0RTT bool
	}
	opened := make(chan open, 4)
	closed := make(chan struct{}, 4)
	cl := newClient(t, e, clientOptions{
		onOpen: func(c *nq.Conn) { opened <- open{c.Generation(), c.ConnectionState().Used0RTT} },
		// Wait before reconnecting, so the test can queue a call for the next handshake.
		onClose: func(*nq.Conn, error, int) time.Duration {
			closed <- struct{}{}
			return 200 * time.Millisecond
		},
	})
	cl.Allow0RTT = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := cl.Dial(ctx, srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	rpc := conn.RPC("rpc")
	if _, err := rpc.Call(ctx, mWhoAmI, nil); err != nil {
		t.Fatal(err)
	}
	if <-early {
		t.Fatal("a call on an established connection was Early")
	}
	if first := waitFor(t, opened, 5*time.Second, "the first open"); first.used0RTT {
		t.Fatal("the first connection used 0-RTT")
	}
	conn.Reset()
	waitFor(t, closed, 5*time.Second, "the reset")
	results := make(chan error, 2)
	go func() { _, err := rpc.Call(nq.Idempotent(ctx), mWhoAmI, nil); results <- err }()
	if err := waitFor(t, results, 5*time.Second, "the idempotent call"); err != nil {
		t.Fatalf("idempotent call: %v", err)
	}
	if !waitFor(t, early, 5*time.Second, "the server's view") {
		t.Fatal("the idempotent call did not travel in 0-RTT data")
	}
	second := waitFor(t, opened, 5*time.Second, "the reconnect")
	if second.gen != 2 || !second.used0RTT {
		t.Fatalf("reconnect: generation %d, used 0-RTT %v", second.gen, second.used0RTT)
	}
	if _, err := rpc.Call(ctx, mWhoAmI, nil); err != nil {
		t.Fatal(err)
	}
	if <-early {
		t.Fatal("an unmarked call was Early")
	}
}

// TestZeroRTTRejected: when the server a client reconnects to refuses its 0-RTT data (0-RTT is
// off there, or the session cannot be resumed), a call on the refused connection's stream fails
// with an error matching Err0RTTRejected (and ErrConnLost), while the same call made through the
// Conn.RPC handle (Call, or Go) is sent again on the confirmed connection and succeeds; the
// server runs each call once.
func TestZeroRTTRejected(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sameKeys bool // the new server resumes the session, with 0-RTT off
		useGo    bool
	}{{"0-RTT off, Call", true, false}, {"new ticket keys, Go", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := slowLinkEnv(t)
			var handled atomic.Int64
			mux := nq.NewMux()
			if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(req *nq.Request) {
				handled.Add(1)
				req.Reply(nil)
			}}); err != nil {
				t.Fatal(err)
			}
			serve := func(key byte, allow0RTT bool) *nq.Server {
				tlsConf := certs(t).ServerTLS()
				tlsConf.SetSessionTicketKeys([][32]byte{{key}})
				srv := &nq.Server{TLS: tlsConf, Mux: mux, Transport: e.serverFactory, Allow0RTT: allow0RTT}
				if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { srv.Close() })
				return srv
			}
			first := serve(1, true)
			cl, closed := earlyClient(t, e, 200*time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			conn, err := cl.Dial(ctx, first.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			rpc := conn.RPC("rpc")
			if _, err := rpc.Call(ctx, mPing, nil); err != nil { // the session ticket arrives with it
				t.Fatal(err)
			}
			first.Close()
			waitFor(t, closed, 10*time.Second, "the first server's close")
			key := byte(2)
			if tc.sameKeys {
				key = 1
			}
			serve(key, false)
			early := nq.Idempotent(ctx)
			stream, err := rpc.Stream(early) // the refused connection's stream, opened in 0-RTT
			if err != nil {
				t.Fatal(err)
			}
			before := handled.Load()
			viaHandle := make(chan error, 1)
			if tc.useGo {
				if err := rpc.Go(early, mPing, nil, func(_ []byte, err error) { viaHandle <- err }); err != nil {
					t.Fatal(err)
				}
			} else {
				go func() { _, err := rpc.Call(early, mPing, nil); viaHandle <- err }()
			}
			_, err = stream.Call(early, mPing, nil)
			if !errors.Is(err, nq.Err0RTTRejected) || !errors.Is(err, nq.ErrConnLost) {
				t.Fatalf("call on the refused connection's stream: %v, want Err0RTTRejected and ErrConnLost", err)
			}
			if err := waitFor(t, viaHandle, 10*time.Second, "the handle's call"); err != nil {
				t.Fatalf("the handle's call, sent again after the refusal: %v", err)
			}
			if n := handled.Load() - before; n != 1 {
				t.Fatalf("the server ran %d calls, want the handle's once (the refused data is not run)", n)
			}
		})
	}
}

// slowLinkEnv returns an in-memory network with 20 ms of latency each way between the client and
// the server, so that a 0-RTT handshake lasts long enough to be seen (on loopback the window is
// microseconds).
func slowLinkEnv(t *testing.T) *env {
	e := lossyEnv(t, 0)
	for _, dir := range [][2]string{{"192.0.2.2", "192.0.2.1"}, {"192.0.2.1", "192.0.2.2"}} {
		if err := e.net.SetLink(netip.MustParseAddr(dir[0]), netip.MustParseAddr(dir[1]), memconn.LinkConfig{Latency: 20 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// earlyClient returns a client that sends idempotent calls in 0-RTT data and waits wait before
// each reconnect; closed receives a value at each close.
func earlyClient(t *testing.T, e *env, wait time.Duration) (*nq.Client, <-chan struct{}) {
	closed := make(chan struct{}, 4)
	cl := newClient(t, e, clientOptions{onClose: func(*nq.Conn, error, int) time.Duration {
		closed <- struct{}{}
		return wait
	}})
	cl.Allow0RTT = true
	return cl, closed
}
