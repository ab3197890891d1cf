package nq_test

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/tools/certs/devcert"
)

// heldServer starts a loopback server with MaxHandshakes 1 whose first handshake stops in the TLS
// layer (GetConfigForClient) until release is called; entered is closed once it stopped there.
func heldServer(t *testing.T, allow0RTT bool) (srv *nq.Server, entered <-chan struct{}, release func()) {
	t.Helper()
	hold, in := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	var once sync.Once
	conf := certs(t).ServerTLS()
	conf.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		if calls.Add(1) == 1 {
			close(in)
			select {
			case <-hold:
			case <-time.After(15 * time.Second): // a bug must fail the test, not hang it
			}
		}
		return nil, nil
	}
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(r *nq.Request) { r.Reply(r.Payload) }}); err != nil {
		t.Fatal(err)
	}
	srv = &nq.Server{TLS: conf, Mux: mux, QUIC: patientQUIC(true), MaxHandshakes: 1, Allow0RTT: allow0RTT}
	if err := srv.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	release = func() { once.Do(func() { close(hold) }) }
	t.Cleanup(func() {
		release()
		srv.Close()
	})
	return srv, in, release
}

// refusedByServer reports whether err is the CONNECTION_REFUSED a server sends past MaxHandshakes.
func refusedByServer(err error) bool {
	var te *quicgo.TransportError
	return errors.As(err, &te) && te.Remote && te.ErrorCode == quicgo.ConnectionRefused
}

// TestMaxHandshakesRefusesThenAdmits holds one handshake open on a server with MaxHandshakes 1: a
// second client is refused with CONNECTION_REFUSED (counted in the server's stats), keeps
// retrying with its back-off, and connects once the first handshake has completed. It runs with
// the plain listener (Accept after the handshake) and the 0-RTT one (Accept before it).
func TestMaxHandshakesRefusesThenAdmits(t *testing.T) {
	for _, allow0RTT := range []bool{false, true} {
		name := map[bool]string{false: "listener", true: "early-listener"}[allow0RTT]
		t.Run(name, func(t *testing.T) {
			srv, entered, release := heldServer(t, allow0RTT)
			addr := srv.Addr().String()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			t.Cleanup(cancel)
			e := &env{name: "udp"}

			first := newClient(t, e, clientOptions{quic: patientQUIC(false)})
			a, err := first.Connect(addr)
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, entered, 10*time.Second, "the first handshake to reach the server's TLS layer")
			if st := srv.Stats(); st.Handshakes != 1 {
				t.Fatalf("Stats().Handshakes = %d with one handshake held, want 1", st.Handshakes)
			}

			refused := make(chan error, 1)
			var attempts atomic.Int32
			second := newClient(t, e, clientOptions{quic: patientQUIC(false),
				onClose: func(_ *nq.Conn, err error, _ int) time.Duration {
					attempts.Add(1)
					select {
					case refused <- err:
					default:
					}
					return 20 * time.Millisecond
				}})
			b, err := second.Connect(addr)
			if err != nil {
				t.Fatal(err)
			}
			err = waitFor(t, refused, 10*time.Second, "the second client's first attempt to fail")
			if !refusedByServer(err) || !errors.Is(err, nq.ErrConnLost) {
				t.Fatalf("second client's attempt ended with %v; want the server's CONNECTION_REFUSED, matching ErrConnLost", err)
			}
			if st := srv.Stats(); st.HandshakesRefused == 0 || st.Conns != 0 {
				t.Fatalf("after a refusal: Stats() = %+v, want HandshakesRefused > 0 and no connection", st)
			}

			release()
			for i, c := range []*nq.Conn{a, b} {
				if err := c.WaitOpen(ctx); err != nil {
					t.Fatalf("client %d after the first handshake was released: %v", i+1, err)
				}
				if reply, err := c.RPC("rpc").Call(ctx, mPing, []byte("hi")); err != nil || string(reply) != "hi" {
					t.Fatalf("call of client %d: %q, %v", i+1, reply, err)
				}
			}
			if !eventually(10*time.Second, func() bool { return srv.Stats().Handshakes == 0 }) {
				t.Fatalf("Stats().Handshakes = %d with both handshakes done, want 0", srv.Stats().Handshakes)
			}
			t.Logf("second client: %d refused attempts before it connected; server refused %d",
				attempts.Load(), srv.Stats().HandshakesRefused)
		})
	}
}

// TestMaxHandshakesFailedHandshakeFreesSlot checks that a handshake that fails (the client does
// not trust the server's certificate) gives its slot back: with MaxHandshakes 1, a good client
// connects afterwards without being refused.
func TestMaxHandshakesFailedHandshakeFreesSlot(t *testing.T) {
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(r *nq.Request) { r.Reply(r.Payload) }}); err != nil {
		t.Fatal(err)
	}
	srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux, QUIC: patientQUIC(true), MaxHandshakes: 1}
	if err := srv.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	addr := srv.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)

	other, err := devcert.New(devcert.Options{Hosts: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	bad := &nq.Client{TLS: other.ClientTLS("localhost"), QUIC: patientQUIC(false),
		OnClose: func(*nq.Conn, error, int) time.Duration { return nq.NoReconnect }}
	t.Cleanup(func() { bad.Close() })
	if _, err := bad.Dial(ctx, addr); err == nil {
		t.Fatal("a client with an unknown CA connected")
	}
	if !eventually(10*time.Second, func() bool { return srv.Stats().Handshakes == 0 }) {
		t.Fatalf("Stats().Handshakes = %d after the failed handshake, want 0", srv.Stats().Handshakes)
	}

	var refusals atomic.Int32
	good := newClient(t, &env{name: "udp"}, clientOptions{quic: patientQUIC(false),
		onClose: func(_ *nq.Conn, err error, _ int) time.Duration {
			if refusedByServer(err) {
				refusals.Add(1)
			}
			return 20 * time.Millisecond
		}})
	c, err := good.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RPC("rpc").Call(ctx, mPing, nil); err != nil {
		t.Fatal(err)
	}
	if n, st := refusals.Load(), srv.Stats(); n != 0 || st.HandshakesRefused != 0 {
		t.Fatalf("good client refused %d times (server counted %d): the failed handshake kept its slot", n, st.HandshakesRefused)
	}
}

// TestDefaultBackoffAfterRefusal checks that a server busy with handshakes (CONNECTION_REFUSED)
// is retried within 1 s however many attempts failed, while other failures keep backing off.
func TestDefaultBackoffAfterRefusal(t *testing.T) {
	refused := &nq.CloseError{Remote: true, Err: &quicgo.TransportError{ErrorCode: quicgo.ConnectionRefused, Remote: true}}
	lost := &nq.CloseError{Err: errors.New("handshake timeout")}
	for attempt := 1; attempt <= 20; attempt++ {
		if d := nq.DefaultBackoff(refused, attempt); d <= 0 || d > time.Second {
			t.Errorf("DefaultBackoff(refused, %d) = %v, want within (0, 1s]", attempt, d)
		}
	}
	if d := nq.DefaultBackoff(lost, 10); d < 5*time.Second {
		t.Errorf("DefaultBackoff(lost, 10) = %v, want the usual back-off (>= 5s)", d)
	}
}
