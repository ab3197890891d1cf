package nq_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/naquid/naquid/nq"
)

// stubDNS is a DNS server on 127.0.0.1 that knows one name: A 127.0.0.1 and AAAA ::1 for
// "game.test", NXDOMAIN for everything else.
func stubDNS(t *testing.T) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp, ok := answerDNS(buf[:n]); ok {
				pc.WriteTo(resp, from)
			}
		}
	}()
	addr := pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

func answerDNS(query []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	known := strings.EqualFold(q.Name.String(), "game.test.")
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeSuccess}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	hdr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
	if known && q.Type == dnsmessage.TypeA {
		b.AResource(hdr, dnsmessage.AResource{A: [4]byte{127, 0, 0, 1}})
	}
	if known && q.Type == dnsmessage.TypeAAAA {
		b.AAAAResource(hdr, dnsmessage.AAAAResource{AAAA: netip.IPv6Loopback().As16()})
	}
	resp, err := b.Finish()
	return resp, err == nil
}

// TestResolver ports naquid's resolver spec against a stub DNS server: an unknown name gives the
// close hook one ErrResolve and no connection; IPv4 and IPv6 preferences pick the right family;
// a known name dials.
func TestResolver(t *testing.T) {
	e := envs(t)[0](t)
	f := startFixture(t, e, fixtureOptions{})
	resolver := stubDNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	closes := make(chan error, 4)
	var opens atomic.Int32
	cl := newClient(t, e, clientOptions{
		onOpen: func(*nq.Conn) { opens.Add(1) },
		onClose: func(_ *nq.Conn, err error, _ int) time.Duration {
			closes <- err
			return nq.NoReconnect
		},
	})
	cl.Resolver = resolver
	conn, err := cl.Connect("nosuchhost.test:4433")
	if err != nil {
		t.Fatal(err)
	}
	if err := waitFor(t, closes, 5*time.Second, "the close hook"); !errors.Is(err, nq.ErrResolve) {
		t.Fatalf("close hook: %v, want ErrResolve", err)
	}
	conn.Close()
	waitFor(t, conn.Done(), 5*time.Second, "finalize")
	if len(closes) != 0 || opens.Load() != 0 {
		t.Fatalf("%d more close hooks and %d opens, want none", len(closes), opens.Load())
	}

	if ip, err := cl.Resolve(ctx, "game.test"); err != nil || !ip.Is4() {
		t.Fatalf("IPv4 preferred: %v, %v", ip, err)
	}
	if _, err := cl.Resolve(ctx, "nosuchhost.test"); !errors.Is(err, nq.ErrResolve) {
		t.Fatalf("unknown name: %v, want ErrResolve", err)
	}
	cl6 := newClient(t, e, clientOptions{})
	cl6.Resolver, cl6.PreferIPv6 = resolver, true
	if ip, err := cl6.Resolve(ctx, "game.test"); err != nil || !ip.Is6() || ip.Is4In6() {
		t.Fatalf("IPv6 preferred: %v, %v", ip, err)
	}

	ok := newClient(t, e, clientOptions{})
	ok.Resolver = resolver
	_, port, _ := net.SplitHostPort(f.addr)
	c, err := ok.Dial(ctx, net.JoinHostPort("game.test", port))
	if err != nil {
		t.Fatalf("dial game.test: %v", err)
	}
	if _, err := c.RPC("rpc").Call(ctx, mPing, nil); err != nil {
		t.Fatal(err)
	}
}

// countingSigner counts the server's certificate signatures.
type countingSigner struct {
	crypto.Signer
	n *atomic.Int32
}

func (s countingSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.n.Add(1)
	return s.Signer.Sign(rand, digest, opts)
}

// listenCountingSigns starts a server on addr answering "rpc" calls, whose certificate
// signatures are counted in signs; configure (when not nil) adjusts it before it listens.
func listenCountingSigns(t *testing.T, e *env, addr string, signs *atomic.Int32, configure func(*nq.Server)) *nq.Server {
	t.Helper()
	serverTLS := certs(t).ServerTLS()
	cert := serverTLS.Certificates[0]
	cert.PrivateKey = countingSigner{cert.PrivateKey.(crypto.Signer), signs}
	serverTLS.Certificates = []tls.Certificate{cert}
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(r *nq.Request) { r.Reply(nil) }}); err != nil {
		t.Fatal(err)
	}
	srv := &nq.Server{TLS: serverTLS, Mux: mux, Transport: e.serverFactory}
	if configure != nil {
		configure(srv)
	}
	if err := srv.Listen(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// TestResumption: a reconnect resumes the TLS session, and a resumed handshake costs the server
// no certificate signature.
func TestResumption(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		var signs atomic.Int32
		srv := listenCountingSigns(t, e, e.serverAddr, &signs, nil)

		type state struct {
			gen     uint64
			resumed bool
		}
		opened := make(chan state, 4)
		cl := newClient(t, e, clientOptions{
			onOpen:  func(c *nq.Conn) { opened <- state{c.Generation(), c.ConnectionState().TLS.DidResume} },
			onClose: func(*nq.Conn, error, int) time.Duration { return 0 },
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c1, err := cl.Dial(ctx, srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		first := waitFor(t, opened, 5*time.Second, "the first handshake")
		if first.resumed || signs.Load() != 1 {
			t.Fatalf("first handshake: resumed %v, %d signatures; want a full handshake with 1", first.resumed, signs.Load())
		}
		// The session ticket follows the handshake; a call's round trip makes sure it arrived.
		if _, err := c1.RPC("rpc").Call(ctx, mPing, nil); err != nil {
			t.Fatal(err)
		}
		c, err := cl.Dial(ctx, srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		second := waitFor(t, opened, 5*time.Second, "the second connection")
		if !second.resumed {
			t.Fatal("a second connection to the same server did not resume")
		}
		c.Reset()
		third := waitFor(t, opened, 5*time.Second, "the reconnect")
		if !third.resumed || third.gen != 2 {
			t.Fatalf("reconnect: generation %d resumed %v; want generation 2, resumed", third.gen, third.resumed)
		}
		if n := signs.Load(); n != 1 {
			t.Fatalf("%d certificate signatures for 1 full and 2 resumed handshakes, want 1", n)
		}
	})
}

// dialAndCall dials addr and makes one call on the Conn, so that what the server sends after
// the handshake (session ticket, address token) has arrived when it returns.
func dialAndCall(t *testing.T, ctx context.Context, cl *nq.Client, addr string) *nq.Conn {
	t.Helper()
	c, err := cl.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RPC("rpc").Call(ctx, mPing, nil); err != nil {
		t.Fatal(err)
	}
	return c
}

// awaitClosed waits until ch is closed, at most d (a client hook must not hang a failed test).
func awaitClosed(ch <-chan struct{}, d time.Duration) {
	select {
	case <-ch:
	case <-time.After(d):
	}
}

// TestResumptionAfterFailedAttempt: a reconnect attempt that fails without a TLS error (here it
// times out: the server is down) keeps the session ticket, so the attempt after it, to the
// restarted server with the same ticket keys, resumes and costs that server no signature.
// (crypto/tls drops the ticket after any failed resumed handshake; nq holds that back.)
func TestResumptionAfterFailedAttempt(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		var ticketKey [32]byte
		copy(ticketKey[:], "naquid ticket key for one test!!")
		var signs atomic.Int32
		listen := func(addr string) *nq.Server {
			return listenCountingSigns(t, e, addr, &signs, func(s *nq.Server) {
				s.TLS.SetSessionTicketKeys([][32]byte{ticketKey})
			})
		}
		srv := listen(e.serverAddr)
		addr := srv.Addr().String()

		opened := make(chan bool, 4) // DidResume of each handshake
		failed := make(chan error, 1)
		restarted := make(chan struct{})
		var serverDown atomic.Bool
		quicConf := patientQUIC(false)
		quicConf.HandshakeIdleTimeout = 500 * time.Millisecond // a dead server is found quickly
		cl := newClient(t, e, clientOptions{
			quic:   quicConf,
			onOpen: func(c *nq.Conn) { opened <- c.ConnectionState().TLS.DidResume },
			onClose: func(_ *nq.Conn, err error, attempt int) time.Duration {
				if serverDown.Load() && attempt >= 2 {
					// A reconnect attempt failed while no server listened: hold the next one
					// until the server is back.
					select {
					case failed <- err:
					default:
					}
					awaitClosed(restarted, 10*time.Second)
				}
				return 0
			},
		})
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		c := dialAndCall(t, ctx, cl, addr)
		if waitFor(t, opened, 5*time.Second, "the first handshake") {
			t.Fatal("the first handshake resumed a session nobody had")
		}
		serverDown.Store(true)
		srv.Close()
		err := waitFor(t, failed, 10*time.Second, "a reconnect attempt to fail while the server is down")
		var idle *quicgo.IdleTimeoutError
		var hs *quicgo.HandshakeTimeoutError
		if !errors.As(err, &idle) && !errors.As(err, &hs) {
			t.Fatalf("the attempt to a server that is down failed with %v, want a timeout", err)
		}
		before := signs.Load()
		listen(addr)
		close(restarted)
		if !waitFor(t, opened, 10*time.Second, "the reconnect to the restarted server") {
			t.Fatal("the reconnect after a timed-out attempt made a full handshake: the ticket was dropped")
		}
		if n := signs.Load() - before; n != 0 {
			t.Fatalf("the restarted server made %d certificate signatures for a resumed handshake", n)
		}
		if _, err := c.RPC("rpc").Call(ctx, mPing, nil); err != nil {
			t.Fatal(err)
		}
	})
}

// TestTokenKey: a server restarted with the same TokenKey accepts the address-validation token
// its predecessor gave a client, so the client's reconnect skips the Retry round trip; with a
// new key the token is void and the reconnect is sent through Retry.
func TestTokenKey(t *testing.T) {
	for _, tt := range []struct {
		name      string
		sameKey   bool
		wantRetry bool
	}{
		{"same key", true, false},
		{"new key", false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			forEachEnv(t, func(t *testing.T, e *env) {
				var signs atomic.Int32
				first := &quicgo.TokenGeneratorKey{1}
				listen := func(addr string, key *quicgo.TokenGeneratorKey) *nq.Server {
					return listenCountingSigns(t, e, addr, &signs, func(s *nq.Server) {
						s.TokenKey = key
						s.RetryAbove = 1 // a second unvalidated attempt within a second gets Retry
					})
				}
				srv := listen(e.serverAddr, first)
				addr := srv.Addr().String()
				opened := make(chan struct{}, 4)
				proceed := make(chan struct{}) // closed when the client may reconnect
				var restarting atomic.Bool
				cl := newClient(t, e, clientOptions{
					onOpen: func(*nq.Conn) { opened <- struct{}{} },
					onClose: func(*nq.Conn, error, int) time.Duration {
						if restarting.Load() {
							awaitClosed(proceed, 10*time.Second)
						}
						return 0
					},
				})
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				c := dialAndCall(t, ctx, cl, addr)
				waitFor(t, opened, 5*time.Second, "the first handshake")
				restarting.Store(true)
				srv.Close()
				key := &quicgo.TokenGeneratorKey{2}
				if tt.sameKey {
					key = first
				}
				srv = listen(addr, key)
				// A client without a token makes the attempt count reach RetryAbove, so that any
				// unvalidated attempt after it is sent through Retry.
				other := newClient(t, e, clientOptions{})
				if _, err := other.Dial(ctx, addr); err != nil {
					t.Fatal(err)
				}
				before := srv.Stats().Retries
				close(proceed)
				if _, err := c.RPC("rpc").Call(ctx, mPing, nil); err != nil {
					t.Fatalf("call after the restart: %v", err)
				}
				retried := srv.Stats().Retries > before
				if retried != tt.wantRetry {
					t.Fatalf("the reconnect was sent through Retry: %v, want %v", retried, tt.wantRetry)
				}
			})
		})
	}
}

// TestStatelessResetKey: a server that lost its state (here: it went away without its close
// reaching the client) and came back on the same address with the same StatelessResetKey
// answers the client's next packet with a stateless reset, so the client reconnects at once;
// without a key the client hears nothing until its idle timeout.
func TestStatelessResetKey(t *testing.T) {
	for _, tt := range []struct {
		name      string
		key       *quicgo.StatelessResetKey
		wantReset bool
	}{
		{"same key", &quicgo.StatelessResetKey{7}, true},
		{"no key", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := envs(t)[1](t) // memconn: its partitions make the first server vanish silently
			var signs atomic.Int32
			listen := func(addr string) *nq.Server {
				return listenCountingSigns(t, e, addr, &signs, func(s *nq.Server) { s.StatelessResetKey = tt.key })
			}
			srv := listen(e.serverAddr)
			addr := srv.Addr().String()
			closed := make(chan error, 1)
			quicConf := patientQUIC(false)
			quicConf.MaxIdleTimeout = 3 * time.Second // the fate of a client that hears nothing
			cl := newClient(t, e, clientOptions{
				quic: quicConf,
				onClose: func(_ *nq.Conn, err error, _ int) time.Duration {
					select {
					case closed <- err:
					default:
					}
					return nq.NoReconnect
				},
			})
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			c := dialAndCall(t, ctx, cl, addr)
			// The server goes away as if it crashed: its CONNECTION_CLOSE never arrives.
			server := srv.Addr().Addr()
			e.net.PartitionOneWay(server, e.clientLocal.Addr())
			srv.Close()
			e.net.HealOneWay(server, e.clientLocal.Addr())
			listen(addr)
			// The client's next packet (a call) reaches the new server, which has never heard of
			// the connection. (quic-go answers only packets longer than 42 bytes, so that a reset
			// cannot trigger another: the call carries 100.)
			callCtx, callCancel := context.WithTimeout(ctx, 5*time.Second)
			defer callCancel()
			_, _ = c.RPC("rpc").Call(callCtx, mPing, make([]byte, 100))
			err := waitFor(t, closed, 10*time.Second, "the connection to end")
			var reset *quicgo.StatelessResetError
			var idle *quicgo.IdleTimeoutError
			switch {
			case tt.wantReset && !errors.As(err, &reset):
				t.Fatalf("the connection ended with %v, want a stateless reset", err)
			case !tt.wantReset && !errors.As(err, &idle):
				t.Fatalf("the connection ended with %v, want the idle timeout (no key, no reset)", err)
			}
		})
	}
}
