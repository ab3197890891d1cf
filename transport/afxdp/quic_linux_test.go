package afxdp_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/internal/netns"
	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/quic"
	"github.com/naquid/naquid/tools/certs/devcert"
	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/afxdp"
	"github.com/naquid/naquid/transport/udp"
)

// testTimeout bounds each QUIC exchange, so that a bug fails fast instead of hanging.
const testTimeout = 30 * time.Second

var bundle = sync.OnceValues(func() (*devcert.Bundle, error) { return devcert.New(devcert.Options{}) })

func tlsConfigs(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	b, err := bundle()
	if err != nil {
		t.Fatalf("devcert: %v", err)
	}
	server, client = b.ServerTLS(), b.ClientTLS("localhost")
	server.NextProtos = []string{quic.ALPN}
	client.NextProtos = []string{quic.ALPN}
	return server, client
}

// inNS returns a factory that opens its Conns inside ns (sockets and interfaces are looked up
// in the namespace of the thread that creates them).
func inNS(ns *netns.NS, f transport.Factory) transport.Factory {
	return func(ctx context.Context, local netip.AddrPort) (transport.Conn, error) {
		var c transport.Conn
		err := ns.Do(func() (err error) {
			c, err = f(ctx, local)
			return err
		})
		return c, err
	}
}

func xdpFactory(ns *netns.NS) transport.Factory {
	return inNS(ns, afxdp.Factory(afxdp.Config{Interface: ns.Link}))
}

func udpFactory(ns *netns.NS) transport.Factory {
	return inNS(ns, udp.Factory(udp.Config{}))
}

func newPair(t *testing.T) *netns.Pair {
	t.Helper()
	if err := netns.Available(); err != nil {
		t.Skip(err)
	}
	return netns.NewPair(t, netns.Config{Prefix: "nqq"})
}

// openQUIC opens a Conn with f at local and a quic-go Transport over it, closed at cleanup.
func openQUIC(t *testing.T, f transport.Factory, local netip.AddrPort) (transport.Conn, *quicgo.Transport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := f(ctx, local)
	if err != nil {
		t.Fatalf("open transport at %s: %v", local, err)
	}
	pc, err := quic.PacketConn(c)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	tr := &quicgo.Transport{Conn: pc}
	t.Cleanup(func() {
		tr.Close()
		pc.Close()
		c.Close()
	})
	return c, tr
}

// TestQUICEcho runs a QUIC echo between two namespaces with quic-go over naquid's quic adapter:
// the server on afxdp and the client on kernel UDP (IPv4 and IPv6), and both on afxdp. Small
// messages go back and forth one at a time, then 2 MiB each way in large writes (quic-go sends
// those as GSO runs, which afxdp splits).
func TestQUICEcho(t *testing.T) {
	p := newPair(t)
	for _, tc := range []struct {
		name                   string
		clientFactory          func(*netns.NS) transport.Factory
		serverAddr, clientAddr netip.AddrPort
	}{
		{"server-afxdp/client-udp/ipv4", udpFactory, p.A.Addr4(0), p.B.Addr4(0)},
		{"server-afxdp/client-udp/ipv6", udpFactory, p.A.Addr6(0), p.B.Addr6(0)},
		{"server-afxdp/client-afxdp/ipv4", xdpFactory, p.A.Addr4(0), p.B.Addr4(0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serverTLS, clientTLS := tlsConfigs(t)
			sc, str := openQUIC(t, xdpFactory(p.A), tc.serverAddr)
			_, ctr := openQUIC(t, tc.clientFactory(p.B), tc.clientAddr)
			ln, err := str.Listen(serverTLS, quic.ServerConfig())
			if err != nil {
				t.Fatal(err)
			}
			echoed := make(chan error, 1)
			go func() { echoed <- serveEcho(ln) }()

			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			conn, err := ctr.Dial(ctx, net.UDPAddrFromAddrPort(sc.LocalAddr()), clientTLS, quic.ClientConfig())
			if err != nil {
				t.Fatalf("dial %s: %v", sc.LocalAddr(), err)
			}
			s, err := conn.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64<<10)
			for i := range 200 {
				msg := fmt.Appendf(nil, "message %03d %s", i, bytes.Repeat([]byte{'x'}, i*5))
				if _, err := s.Write(msg); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(s, buf[:len(msg)]); err != nil || !bytes.Equal(buf[:len(msg)], msg) {
					t.Fatalf("echo %d: %q, %v", i, buf[:len(msg)], err)
				}
			}
			bulk := make([]byte, 2<<20)
			for i := range bulk {
				bulk[i] = byte(i * 31)
			}
			writeErr := make(chan error, 1)
			go func() {
				_, err := s.Write(bulk)
				writeErr <- errors.Join(err, s.Close())
			}()
			back, err := io.ReadAll(s)
			if err != nil || !bytes.Equal(back, bulk) {
				t.Fatalf("bulk echo: %d of %d bytes, %v", len(back), len(bulk), err)
			}
			if err := <-writeErr; err != nil {
				t.Fatal(err)
			}
			conn.CloseWithError(0, "done")
			ln.Close()
			if err := <-echoed; err != nil {
				t.Errorf("server: %v", err)
			}
			st := sc.(transport.Stats).Stats()
			t.Logf("server afxdp stats: %+v", st)
			if st.PacketsRead < 1000 || st.Drops != 0 {
				t.Errorf("server stats %+v: want >1000 datagrams read, none dropped", st)
			}
		})
	}
}

// serveEcho accepts one connection and echoes its first stream until the client closes it.
func serveEcho(ln *quicgo.Listener) error {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	conn, err := ln.Accept(ctx)
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	s, err := conn.AcceptStream(ctx)
	if err != nil {
		return fmt.Errorf("accept stream: %w", err)
	}
	if _, err := io.Copy(s, s); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	return s.Close()
}

// TestNQRPC runs nq's RPC workload between two namespaces: a server on afxdp, clients on kernel
// UDP and on afxdp, each making sequential and concurrent calls, then the nq-demo workload
// (scaled down: 20 connections pipelining 500 calls, 32 in flight).
func TestNQRPC(t *testing.T) {
	p := newPair(t)
	b, err := bundle()
	if err != nil {
		t.Fatal(err)
	}
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(req *nq.Request) {
		req.Reply(append([]byte(fmt.Sprintf("%d:", req.Method)), req.Payload...))
	}}); err != nil {
		t.Fatal(err)
	}
	srv := &nq.Server{TLS: b.ServerTLS(), Mux: mux, Transport: xdpFactory(p.A)}
	if err := srv.Listen(context.Background(), p.A.Addr4(0).String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	for _, tc := range []struct {
		name    string
		factory transport.Factory
	}{{"client-udp", udpFactory(p.B)}, {"client-afxdp", xdpFactory(p.B)}} {
		t.Run(tc.name, func(t *testing.T) {
			cmux := nq.NewMux()
			if err := cmux.HandleRPC("rpc", nq.RPCHandler{}); err != nil {
				t.Fatal(err)
			}
			cl := &nq.Client{TLS: b.ClientTLS("localhost"), Mux: cmux, Transport: tc.factory}
			t.Cleanup(func() { cl.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			conn, err := cl.Dial(ctx, srv.Addr().String())
			if err != nil {
				t.Fatalf("dial %s: %v", srv.Addr(), err)
			}
			rpc := conn.RPC("rpc")
			for i := range 100 {
				reply, err := rpc.Call(ctx, uint32(i), []byte("ping"))
				if want := fmt.Sprintf("%d:ping", i); err != nil || string(reply) != want {
					t.Fatalf("call %d: %q, %v; want %q", i, reply, err, want)
				}
			}
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					payload := bytes.Repeat([]byte{byte(w)}, 1000)
					for i := range 50 {
						reply, err := rpc.Call(ctx, uint32(w), payload)
						if err != nil || !bytes.Equal(reply[bytes.IndexByte(reply, ':')+1:], payload) {
							errs <- fmt.Errorf("worker %d call %d: %d bytes, %v", w, i, len(reply), err)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			conn.Close()
			pipeline(ctx, t, cl, srv.Addr().String())
		})
	}
}

// pipeline runs the nq-demo workload, scaled down: 20 connections, each pipelining 500 Ping
// calls with 32 in flight from the reply callbacks; every reply must echo its call.
func pipeline(ctx context.Context, t *testing.T, cl *nq.Client, addr string) {
	const conns, calls, window = 20, 500, 32
	done := make(chan error, conns)
	for c := range conns {
		conn, err := cl.Dial(ctx, addr)
		if err != nil {
			t.Fatalf("pipeline dial %d: %v", c, err)
		}
		rpc := conn.RPC("rpc")
		var mu sync.Mutex
		sent, got := 0, 0
		var call func() error
		call = func() error {
			mu.Lock()
			seq := sent
			sent++
			mu.Unlock()
			payload := []byte(fmt.Sprint(seq))
			return rpc.Go(ctx, 1, payload, func(reply []byte, err error) {
				if err == nil && string(reply) != "1:"+string(payload) {
					err = fmt.Errorf("connection %d call %d: reply %q", c, seq, reply)
				}
				if err != nil {
					done <- err
					return
				}
				mu.Lock()
				got++
				finished, more := got == calls, sent < calls
				mu.Unlock()
				switch {
				case finished:
					done <- nil
				case more:
					if err := call(); err != nil {
						done <- err
					}
				}
			})
		}
		for range window {
			if err := call(); err != nil {
				t.Fatalf("pipeline connection %d: %v", c, err)
			}
		}
	}
	for range conns {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatal("pipeline: timed out")
		}
	}
}
