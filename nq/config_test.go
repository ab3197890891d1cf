package nq_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
)

// TestBadInput: every misuse returns an error that names the field or the address; nothing panics.
func TestBadInput(t *testing.T) {
	ctx := context.Background()
	serverTLS := certs(t).ServerTLS()
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		err  func() error
		want string
	}{
		{"server without TLS", func() error { return (&nq.Server{}).Listen(ctx, "127.0.0.1:0") }, "TLS"},
		{"server bad address", func() error { return (&nq.Server{TLS: serverTLS}).Listen(ctx, "127.0.0.1") }, `"127.0.0.1"`},
		{"server port in use", func() error { return (&nq.Server{TLS: serverTLS}).Listen(ctx, busy.LocalAddr().String()) }, busy.LocalAddr().String()},
		{"server negative MaxConns", func() error { return (&nq.Server{TLS: serverTLS, MaxConns: -1}).Listen(ctx, "127.0.0.1:0") }, "MaxConns"},
		{"server negative MaxFrameSize", func() error {
			return (&nq.Server{TLS: serverTLS, MaxFrameSize: -1}).Listen(ctx, "127.0.0.1:0")
		}, "MaxFrameSize"},
		{"client without TLS", func() error { _, err := (&nq.Client{}).Connect("localhost:4433"); return err }, "TLS"},
		{"client no port", func() error { _, err := (&nq.Client{TLS: &tls.Config{}}).Connect("localhost"); return err }, `"localhost"`},
		{"client port 0", func() error { _, err := (&nq.Client{TLS: &tls.Config{}}).Connect("localhost:0"); return err }, "port"},
		{"client negative MaxFrameSize", func() error {
			_, err := (&nq.Client{TLS: &tls.Config{}, MaxFrameSize: -1}).Connect("localhost:1")
			return err
		}, "MaxFrameSize"},
		{"empty protocol name", func() error { return nq.NewMux().HandleRPC("", nq.RPCHandler{}) }, "protocol name"},
		{"long protocol name", func() error { return nq.NewMux().HandleRPC(strings.Repeat("x", 300), nq.RPCHandler{}) }, "protocol name"},
		{"negative timeout", func() error { return nq.NewMux().HandleRPC("rpc", nq.RPCHandler{Timeout: -time.Second}) }, "Timeout"},
		{"nil codec", func() error { return nq.HandleRecords[[]byte](nq.NewMux(), "r", nil, nq.RecordHandler[[]byte]{}) }, "codec"},
		{"raw mode name", func() error { return nq.NewMux().SetRawMode(strings.Repeat("x", 300)) }, "protocol name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.err()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one naming %s", err, tt.want)
			}
		})
	}
	srv := &nq.Server{TLS: serverTLS}
	err = srv.Listen(ctx, busy.LocalAddr().String())
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("port in use: %v, want EADDRINUSE", err)
	}
	// A failed Listen can be retried.
	if err := srv.Listen(ctx, "127.0.0.1:0"); err != nil {
		t.Fatalf("Listen after a failed one: %v", err)
	}
	srv.Close()
}

// TestLifecycleMisuse: calls on closed or unopened objects fail cleanly.
func TestLifecycleMisuse(t *testing.T) {
	e := envs(t)[0](t)
	f := startFixture(t, e, fixtureOptions{})
	cl := newClient(t, e, clientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := cl.Dial(ctx, f.addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Listen(ctx, "127.0.0.1:0"); err == nil {
		t.Fatal("a second Listen succeeded")
	}
	if _, err := conn.OpenRPC(ctx, "not-registered"); !errors.Is(err, nq.ErrUnknownProtocol) {
		t.Fatalf("unregistered protocol: %v", err)
	}
	if err := conn.RPC("rpc").Go(ctx, mPing, nil, nil); err == nil {
		t.Fatal("Go with a nil callback succeeded")
	}
	conn.Close()
	waitFor(t, conn.Done(), 5*time.Second, "finalize")
	if _, err := conn.RPC("rpc").Call(ctx, mPing, nil); !errors.Is(err, nq.ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("call on a finalized Conn: %v, want ErrClosed", err)
	}
	if err := conn.SendDatagram([]byte("x")); !errors.Is(err, nq.ErrClosed) {
		t.Fatalf("datagram on a finalized Conn: %v, want ErrClosed", err)
	}
	cl.Close()
	if _, err := cl.Connect(f.addr); !errors.Is(err, nq.ErrClosed) {
		t.Fatalf("Connect on a closed Client: %v", err)
	}
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

// TestDialFailsFastWithoutReconnect: when the close hook says NoReconnect after a failed first
// attempt, Dial returns that failure at once instead of waiting for its ctx.
func TestDialFailsFastWithoutReconnect(t *testing.T) {
	e := envs(t)[0](t)
	cl := newClient(t, e, clientOptions{onClose: func(*nq.Conn, error, int) time.Duration { return nq.NoReconnect }})
	cl.Resolver = stubDNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err := cl.Dial(ctx, "nosuchhost.test:4433")
	if !errors.Is(err, nq.ErrResolve) || !errors.Is(err, nq.ErrConnLost) {
		t.Fatalf("Dial: %v, want the resolution failure", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Dial took %v: it waited for its ctx", d)
	}
}
