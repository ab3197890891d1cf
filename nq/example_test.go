package nq_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/tools/certs/devcert"
)

// A server with one RPC protocol, "echo", whose handler answers every request with its payload.
// Shutdown drains it: new calls are refused, calls being handled get their answers, then every
// connection closes.
func ExampleServer() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	certs, err := devcert.New(devcert.Options{}) // a development CA and a leaf for localhost
	if err != nil {
		fmt.Println(err)
		return
	}

	mux := nq.NewMux()
	if err := mux.HandleRPC("echo", nq.RPCHandler{
		OnRequest: func(req *nq.Request) { req.Reply(req.Payload) },
	}); err != nil {
		fmt.Println(err)
		return
	}
	srv := &nq.Server{TLS: certs.ServerTLS(), Mux: mux}
	if err := srv.Listen(ctx, "127.0.0.1:0"); err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	// A client to try it. Both ends register the protocols they use.
	cmux := nq.NewMux()
	if err := cmux.HandleRPC("echo", nq.RPCHandler{}); err != nil {
		fmt.Println(err)
		return
	}
	client := &nq.Client{TLS: certs.ClientTLS("localhost"), Mux: cmux}
	defer client.Close()
	conn, err := client.Dial(ctx, srv.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	reply, err := conn.RPC("echo").Call(ctx, 1, []byte("hello"))
	fmt.Printf("reply %q, err %v\n", reply, err)
	fmt.Println("open connections:", srv.Stats().Conns)

	fmt.Println("shutdown:", srv.Shutdown(ctx))
	// Output:
	// reply "hello", err <nil>
	// open connections: 1
	// shutdown: <nil>
}

// A client Conn reconnects by itself and outlives its QUIC connections: each handshake starts a
// new generation. OnClose chooses the wait before reconnecting (here none); Reset forces a
// reconnect; Close ends the Conn for good.
func ExampleClient() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	certs, err := devcert.New(devcert.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &nq.Server{TLS: certs.ServerTLS()}
	if err := srv.Listen(ctx, "127.0.0.1:0"); err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	opened := make(chan uint64, 2)
	client := &nq.Client{
		TLS:    certs.ClientTLS("localhost"),
		OnOpen: func(c *nq.Conn) { opened <- c.Generation() },
		OnClose: func(c *nq.Conn, err error, attempt int) time.Duration {
			return 0 // reconnect at once; nq.DefaultBackoff is the default
		},
		OnFinalize: func(c *nq.Conn) { fmt.Println("finalized") },
	}
	defer client.Close()
	conn, err := client.Connect(srv.Addr().String()) // connects in the background
	if err != nil {
		fmt.Println(err)
		return
	}
	for i := range 2 {
		select {
		case gen := <-opened:
			fmt.Println("open, generation", gen)
		case <-ctx.Done():
			fmt.Println("no connection:", ctx.Err())
			return
		}
		if i == 0 {
			conn.Reset() // close this connection and reconnect
		}
	}
	conn.Close()
	<-conn.Done() // after the finalize hook
	// Output:
	// open, generation 1
	// open, generation 2
	// finalized
}

// Calls through a Conn's RPC handle: the reply, or the error the server's handler failed the
// request with (a *nq.RemoteError carrying its code and message).
func ExampleRPC_Call() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	certs, err := devcert.New(devcert.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	const (
		methodGreet = 1
		methodBuy   = 2
	)
	mux := nq.NewMux()
	if err := mux.HandleRPC("shop", nq.RPCHandler{
		OnRequest: func(req *nq.Request) {
			switch req.Method {
			case methodGreet:
				req.Reply(append([]byte("hello, "), req.Payload...))
			case methodBuy:
				req.Fail(&nq.RemoteError{Code: 402, Message: "not enough gold"})
			default:
				req.Fail(fmt.Errorf("unknown method %d", req.Method))
			}
		},
	}); err != nil {
		fmt.Println(err)
		return
	}
	srv := &nq.Server{TLS: certs.ServerTLS(), Mux: mux}
	if err := srv.Listen(ctx, "127.0.0.1:0"); err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	cmux := nq.NewMux()
	if err := cmux.HandleRPC("shop", nq.RPCHandler{Timeout: 2 * time.Second}); err != nil {
		fmt.Println(err)
		return
	}
	client := &nq.Client{TLS: certs.ClientTLS("localhost"), Mux: cmux}
	defer client.Close()
	conn, err := client.Dial(ctx, srv.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}

	shop := conn.RPC("shop") // valid for the life of the Conn, across reconnects
	reply, err := shop.Call(ctx, methodGreet, []byte("player"))
	fmt.Printf("%s (err %v)\n", reply, err)

	_, err = shop.Call(ctx, methodBuy, []byte("sword"))
	var re *nq.RemoteError
	if errors.As(err, &re) {
		fmt.Println("refused:", re.Code, re.Message)
	}
	// Output:
	// hello, player (err <nil>)
	// refused: 402 not enough gold
}

// A record stream carries length-framed records in both directions; the codec here is nq.Bytes
// (records are byte slices). The client opens the stream; the server answers each record with
// an upper-case copy. Records arrive whole and in order, empty ones included.
func ExampleHandleRecords() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	certs, err := devcert.New(devcert.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := nq.NewMux()
	if err := nq.HandleRecords(mux, "chat", nq.Bytes{}, nq.RecordHandler[[]byte]{
		OnRecord: func(s *nq.RecordStream[[]byte], rec []byte) { s.Send(bytes.ToUpper(rec)) },
	}); err != nil {
		fmt.Println(err)
		return
	}
	srv := &nq.Server{TLS: certs.ServerTLS(), Mux: mux}
	if err := srv.Listen(ctx, "127.0.0.1:0"); err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	got := make(chan []byte, 3)
	cmux := nq.NewMux()
	if err := nq.HandleRecords(cmux, "chat", nq.Bytes{}, nq.RecordHandler[[]byte]{
		OnRecord: func(_ *nq.RecordStream[[]byte], rec []byte) { got <- rec },
	}); err != nil {
		fmt.Println(err)
		return
	}
	client := &nq.Client{TLS: certs.ClientTLS("localhost"), Mux: cmux}
	defer client.Close()
	conn, err := client.Dial(ctx, srv.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	chat, err := nq.OpenRecords[[]byte](ctx, conn, "chat")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer chat.Close()
	for _, msg := range []string{"gg", "", "well played"} {
		if err := chat.Send([]byte(msg)); err != nil {
			fmt.Println(err)
			return
		}
	}
	for range 3 {
		select {
		case rec := <-got:
			fmt.Printf("%q\n", rec)
		case <-ctx.Done():
			fmt.Println("no answer:", ctx.Err())
			return
		}
	}
	// Output:
	// "GG"
	// ""
	// "WELL PLAYED"
}

// Datagrams (RFC 9221) are unreliable and unordered, for state that the next one supersedes
// (positions, snapshots). The server echoes each datagram; the client sends until an echo comes
// back, as an application would for a datagram it needs acknowledged.
func ExampleConn_SendDatagram() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	certs, err := devcert.New(devcert.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &nq.Server{
		TLS: certs.ServerTLS(),
		OnDatagram: func(c *nq.Conn, p []byte) {
			c.SendDatagram(append([]byte("seen "), p...))
		},
	}
	if err := srv.Listen(ctx, "127.0.0.1:0"); err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	echoes := make(chan []byte, 16)
	client := &nq.Client{
		TLS: certs.ClientTLS("localhost"),
		OnDatagram: func(c *nq.Conn, p []byte) {
			select {
			case echoes <- p:
			default: // drop what nobody waits for, as datagrams may be
			}
		},
	}
	defer client.Close()
	conn, err := client.Dial(ctx, srv.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}

	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := conn.SendDatagram([]byte("x=10 y=20")); err != nil {
			fmt.Println(err)
			return
		}
		select {
		case p := <-echoes:
			fmt.Printf("%s\n", p)
		case <-tick.C:
			continue // lost: send again
		case <-ctx.Done():
			fmt.Println("no echo:", ctx.Err())
			return
		}
		break
	}

	var tooLarge *nq.DatagramTooLargeError
	err = conn.SendDatagram(make([]byte, 64<<10))
	fmt.Println("64 KiB datagram too large:", errors.As(err, &tooLarge))
	// Output:
	// seen x=10 y=20
	// 64 KiB datagram too large: true
}
