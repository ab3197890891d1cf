package nq_test

import (
	"bytes"
	"context"
	"net/netip"
	"sync"
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

// TestCloseWithVanishedPeerIsPrompt: a server closing a connection whose client has vanished
// (partitioned away) while the application still sends it datagrams closes after one linger:
// the linger is renewed only while what was written before the close still leaves, and
// datagrams, acknowledgements and probes do not count.
func TestCloseWithVanishedPeerIsPrompt(t *testing.T) {
	n, err := memconn.NewNetwork(memconn.Config{Seed: 5, Link: memconn.LinkConfig{Latency: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	conns := make(chan *nq.Conn, 1)
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(req *nq.Request) {
		conns <- req.Conn()
		req.Reply(nil)
	}}); err != nil {
		t.Fatal(err)
	}
	srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux, Transport: n.Factory(), QUIC: patientQUIC(true),
		OnDatagram: func(*nq.Conn, []byte) {}}
	if err := srv.Listen(context.Background(), "192.0.2.1:4433"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	e := &env{clientLocal: netip.MustParseAddrPort("192.0.2.2:0"), clientFactory: n.Factory(), net: n}
	cl := newClient(t, e, clientOptions{quic: patientQUIC(false),
		onClose: func(*nq.Conn, error, int) time.Duration { return nq.NoReconnect }})
	cl.OnDatagram = func(*nq.Conn, []byte) {}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := cl.Dial(ctx, srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.RPC("rpc").Call(ctx, mPing, nil); err != nil {
		t.Fatal(err)
	}
	sc := <-conns
	n.Partition(netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // game state at 60 Hz to a player who is gone
		tick := time.NewTicker(16 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_ = sc.SendDatagram(make([]byte, 100))
			}
		}
	})
	start := time.Now()
	srv.Close()
	took := time.Since(start)
	close(stop)
	wg.Wait()
	// One linger is 50 ms here; a linger renewed by the datagrams lasted 5 s.
	if took > 2*time.Second {
		t.Errorf("Server.Close took %v with a vanished client", took)
	}
}
