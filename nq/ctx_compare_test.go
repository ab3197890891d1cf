package nq_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
)

// tagCtx is a context whose type is not comparable (a map field): == on two of them panics.
type tagCtx struct {
	context.Context
	tags map[string]string
}

// TestGoWithUncomparableCtx: calls made with contexts of a type == cannot compare work, share
// the stream's watcher when they are cancelled together, and all fail with the ctx's error when
// it is cancelled.
func TestGoWithUncomparableCtx(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		hold := make(chan *nq.Request, 8)
		mux := nq.NewMux()
		if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(req *nq.Request) {
			if req.Method == 2 {
				hold <- req // never answered
				return
			}
			req.Reply(req.Payload)
		}}); err != nil {
			t.Fatal(err)
		}
		addr := startEchoServer(t, e, mux, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := newClient(t, e, clientOptions{}).Dial(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
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
