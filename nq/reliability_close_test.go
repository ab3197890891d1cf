package nq_test

import (
	"bytes"
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/transport/memconn"
)

// TestReliabilityReplyBeforeClose: a server handler that sends a burst, replies and then closes
// the connection. Everything written before Close must reach the client before the connection
// ends (the design's "every call completes exactly once", and Conn.Close is graceful), even on
// a path where the burst needs several round trips to drain. (A close used to go out after a
// fixed linger and quic-go discarded what had not been sent; closeGraceful now waits for the
// peer to finish every stream.)
func TestReliabilityReplyBeforeClose(t *testing.T) {
	for _, tc := range []struct {
		name  string
		burst int // notifies of 32 KiB before the reply
		link  memconn.LinkConfig
	}{
		// More than the first flights of slow start carry: the burst needs several round trips.
		{"burst over 40 ms", 16, memconn.LinkConfig{Latency: 40 * time.Millisecond}},
		// Under the client's flow-control window, so it all goes to quic-go at once, then leaves
		// at 100 kB/s for about 2 s: a linger counted from the close alone cut it.
		{"burst over a slow link", 6, memconn.LinkConfig{Latency: 40 * time.Millisecond, Bandwidth: 100_000, QueueBytes: 1 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) { replyBeforeClose(t, tc.burst, tc.link) })
	}
}

func replyBeforeClose(t *testing.T, burst int, link memconn.LinkConfig) {
	n, err := memconn.NewNetwork(memconn.Config{Seed: 3, Link: link})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	const size = 32 << 10
	mux := nq.NewMux()
	err = mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(req *nq.Request) {
		for i := range burst {
			req.Stream().Notify(uint32(100+i), bytes.Repeat([]byte{byte(i)}, size))
		}
		req.Reply([]byte("bye"))
		req.Conn().Close()
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux, Transport: n.Factory(), QUIC: patientQUIC(true)}
	if err := srv.Listen(context.Background(), "192.0.2.1:4433"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	var notifies atomic.Int32
	cmux := nq.NewMux()
	if err := cmux.HandleRPC("rpc", nq.RPCHandler{OnNotify: func(*nq.RPCStream, uint32, []byte) { notifies.Add(1) }}); err != nil {
		t.Fatal(err)
	}
	e := &env{clientLocal: netip.MustParseAddrPort("192.0.2.2:0"), clientFactory: n.Factory(), net: n}
	cl := newClient(t, e, clientOptions{mux: cmux, quic: patientQUIC(false),
		onClose: func(*nq.Conn, error, int) time.Duration { return nq.NoReconnect }})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := cl.Dial(ctx, srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RPC("rpc").Call(ctx, mPing, nil)
	if err != nil || string(reply) != "bye" {
		t.Errorf("the reply written before Close: %q, %v; want \"bye\" (%d of %d notifies written before it arrived)",
			reply, err, notifies.Load(), burst)
	}
}
