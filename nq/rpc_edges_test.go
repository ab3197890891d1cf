package nq_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/transport/memconn"
)

// tagCtx is a context whose type is not comparable (a map field): == on two of them panics.
type tagCtx struct {
	context.Context
	tags map[string]string
}

// rpcServerConn starts a server whose "rpc" protocol runs onRequest (nil: echo the payload),
// with the frame limit maxFrame (0: the default), and returns a client Conn dialled to it.
func rpcServerConn(t *testing.T, e *env, ctx context.Context, onRequest func(*nq.Request), maxFrame int) *nq.Conn {
	t.Helper()
	if onRequest == nil {
		onRequest = func(req *nq.Request) { req.Reply(req.Payload) }
	}
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: onRequest}); err != nil {
		t.Fatal(err)
	}
	addr := startEchoServer(t, e, mux, maxFrame)
	cl := newClient(t, e, clientOptions{})
	cl.MaxFrameSize = maxFrame
	c, err := cl.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestGoWithUncomparableCtx: calls made with contexts of a type == cannot compare work, share
// the stream's watcher when they are cancelled together, and all fail with the ctx's error when
// it is cancelled.
func TestGoWithUncomparableCtx(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		hold := make(chan *nq.Request, 8)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c := rpcServerConn(t, e, ctx, func(req *nq.Request) {
			if req.Method == 2 {
				hold <- req // never answered
				return
			}
			req.Reply(req.Payload)
		}, 0)
		rpc := c.RPC("rpc")
		loop, stop := context.WithCancel(ctx)
		results := make(chan error, 4)
		for i := range 4 {
			tctx := tagCtx{loop, map[string]string{"call": string(rune('a' + i))}}
			method := uint32(1 + i%2) // answered, held, answered, held
			if err := rpc.Go(tctx, method, []byte("x"), func(_ []byte, err error) { results <- err }); err != nil {
				t.Fatal(err)
			}
		}
		for range 2 {
			if err := <-results; err != nil {
				t.Fatalf("answered call: %v", err)
			}
		}
		<-hold
		<-hold
		stop()
		for range 2 {
			if err := <-results; !errors.Is(err, context.Canceled) {
				t.Fatalf("held call after its ctx was cancelled: %v, want context.Canceled", err)
			}
		}
	})
}

// TestOpenDeadlineIsTimeout: an open that waits for the peer's stream limit until its ctx
// deadline fails with ErrTimeout (which also matches context.DeadlineExceeded), as a call does.
func TestOpenDeadlineIsTimeout(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		mux := nq.NewMux()
		if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(req *nq.Request) { req.Reply(nil) }}); err != nil {
			t.Fatal(err)
		}
		qconf := patientQUIC(true)
		qconf.MaxIncomingStreams = 1
		srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux, Transport: e.serverFactory, QUIC: qconf}
		if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := newClient(t, e, clientOptions{}).Dial(ctx, srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.OpenRPC(ctx, "rpc"); err != nil { // the one stream the server allows
			t.Fatal(err)
		}
		short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancelShort()
		_, err = c.OpenRPC(short, "rpc")
		if !errors.Is(err, nq.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("open past the stream limit: %v, want ErrTimeout", err)
		}
	})
}

// TestCallsDuringReset: calls made through a Conn's RPC handle while Reset closes the current
// connection go to the next one; a call caught by the close fails as on a lost connection
// (ErrConnLost), never as if the application had closed the Conn.
func TestCallsDuringReset(t *testing.T) {
	n, err := memconn.NewNetwork(memconn.Config{Seed: 5, Link: memconn.LinkConfig{Latency: 10 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	e := &env{name: "memconn-10ms", serverAddr: "192.0.2.1:4433", clientLocal: netip.MustParseAddrPort("192.0.2.2:0"),
		serverFactory: n.Factory(), clientFactory: n.Factory(), net: n}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := rpcServerConn(t, e, ctx, nil, 0)
	rpc := c.RPC("rpc")
	if _, err := rpc.Call(ctx, 1, nil); err != nil {
		t.Fatal(err)
	}
	gen := c.Generation()
	c.Reset()
	lost := 0
	for i := 0; c.Generation() == gen || i < 5; i++ {
		if i == 1000 {
			t.Fatalf("still on generation %d after %d calls", gen, i)
		}
		reply, err := rpc.Call(ctx, 1, []byte("x"))
		switch {
		case err == nil && string(reply) == "x":
		case errors.Is(err, nq.ErrConnLost):
			lost++
		default:
			t.Fatalf("call %d during the reset: %q, %v; want the reply or ErrConnLost", i, reply, err)
		}
	}
	if lost > 1 {
		t.Errorf("%d calls failed with the old connection, want at most the one racing the reset", lost)
	}
}
