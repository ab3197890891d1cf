package quic

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/naquid/naquid/tools/certs/devcert"
	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/memconn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds every quic-go exchange in these tests, so a bug fails fast instead of hanging.
const testTimeout = 30 * time.Second

var testBundle = sync.OnceValues(func() (*devcert.Bundle, error) { return devcert.New(devcert.Options{}) })

func tlsConfigs(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	b, err := testBundle()
	if err != nil {
		t.Fatalf("devcert: %v", err)
	}
	server, client = b.ServerTLS(), b.ClientTLS("localhost")
	server.NextProtos = []string{ALPN}
	client.NextProtos = []string{ALPN}
	return server, client
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// pairFunc opens a server and a client transport.Conn that can reach each other; both are closed
// at cleanup.
type pairFunc func(t testing.TB) (server, client transport.Conn)

// newMemconn opens a fresh memconn network with the given default link and a server Conn on
// srv:4433 and a client Conn on cli:0; all are closed at cleanup.
func newMemconn(t testing.TB, link memconn.LinkConfig, srv, cli netip.Addr) (nw *memconn.Network, server, client transport.Conn) {
	t.Helper()
	nw, err := memconn.NewNetwork(memconn.Config{Seed: 1, Link: link})
	if err != nil {
		t.Fatalf("memconn.NewNetwork: %v", err)
	}
	t.Cleanup(func() { nw.Close() })
	ctx := testContext(t)
	s, err := nw.Listen(ctx, netip.AddrPortFrom(srv, 4433))
	if err != nil {
		t.Fatalf("memconn listen: %v", err)
	}
	c, err := nw.Listen(ctx, netip.AddrPortFrom(cli, 0))
	if err != nil {
		t.Fatalf("memconn listen: %v", err)
	}
	t.Cleanup(func() { s.Close(); c.Close() })
	return nw, s, c
}

// memconnPair returns a pairFunc on a fresh, fault-free memconn network.
func memconnPair(srv, cli string) pairFunc {
	return func(t testing.TB) (transport.Conn, transport.Conn) {
		_, s, c := newMemconn(t, memconn.LinkConfig{}, netip.MustParseAddr(srv), netip.MustParseAddr(cli))
		return s, c
	}
}

var (
	memconn4 = memconnPair("192.0.2.1", "192.0.2.2")
	memconn6 = memconnPair("2001:db8::1", "2001:db8::2")
)

// namedPair is a backend the quic-go tests run over.
type namedPair struct {
	name string
	pair pairFunc
}

// transports are the backends every quic-go test runs over (udp_linux_test.go adds kernel UDP).
var transports = []namedPair{
	{"memconn-ipv4", memconn4},
	{"memconn-ipv6", memconn6},
}

// newQUICTransport puts c under a quic-go Transport through PacketConn; everything is closed at
// cleanup.
func newQUICTransport(t testing.TB, c transport.Conn) *quicgo.Transport {
	t.Helper()
	pc, err := PacketConn(c)
	if err != nil {
		t.Fatalf("PacketConn: %v", err)
	}
	tr := &quicgo.Transport{Conn: pc}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("quic-go Transport.Close: %v", err)
		}
		if _, ok := pc.(*adapter); ok {
			pc.Close()
		}
	})
	return tr
}

// connect opens a quic-go connection from client to server with the package's presets and returns
// both ends. An echo server (streams and datagrams) runs on the server end until it closes.
func connect(t testing.TB, server, client transport.Conn) (srv, cli *quicgo.Conn) {
	t.Helper()
	ctx := testContext(t)
	serverTLS, clientTLS := tlsConfigs(t)
	str := newQUICTransport(t, server)
	ctr := newQUICTransport(t, client)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // runs after the closes registered below
	ln, err := str.Listen(serverTLS, ServerConfig())
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	type accepted struct {
		c   *quicgo.Conn
		err error
	}
	acc := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept(ctx)
		acc <- accepted{c, err}
	}()
	cli, err = ctr.Dial(ctx, net.UDPAddrFromAddrPort(server.LocalAddr()), clientTLS, ClientConfig())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { cli.CloseWithError(0, "") })
	a := <-acc
	if a.err != nil {
		t.Fatalf("Accept: %v", a.err)
	}
	srv = a.c
	t.Cleanup(func() { srv.CloseWithError(0, "") })
	wg.Go(func() { serveEcho(srv) })
	return srv, cli
}

// serveEcho echoes every stream and datagram on c until c closes.
func serveEcho(c *quicgo.Conn) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for {
			b, err := c.ReceiveDatagram(c.Context())
			if err != nil {
				return
			}
			if err := c.SendDatagram(b); err != nil {
				return
			}
		}
	})
	for {
		s, err := c.AcceptStream(c.Context())
		if err != nil {
			return
		}
		wg.Go(func() {
			if _, err := io.Copy(s, s); err != nil {
				s.CancelRead(1)
				s.CancelWrite(1)
				return
			}
			s.Close()
		})
	}
}

// echoStream sends size pseudo-random bytes on a new stream of c and checks they come back intact.
func echoStream(t testing.TB, c *quicgo.Conn, size int) {
	t.Helper()
	ctx := testContext(t)
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		t.Fatalf("OpenStreamSync: %v", err)
	}
	deadline, _ := ctx.Deadline()
	s.SetDeadline(deadline)
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := s.Write(data)
		if err == nil {
			err = s.Close()
		}
		werr <- err
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("reading the echo after %d of %d bytes: %v", len(got), size, err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echo differs: got %d bytes, want %d", len(got), size)
	}
}

func TestHandshake(t *testing.T) {
	for _, tt := range transports {
		t.Run(tt.name, func(t *testing.T) {
			server, client := tt.pair(t)
			srv, cli := connect(t, server, client)
			for side, c := range map[string]*quicgo.Conn{"server": srv, "client": cli} {
				st := c.ConnectionState()
				if st.TLS.NegotiatedProtocol != ALPN {
					t.Errorf("%s: ALPN %q, want %q", side, st.TLS.NegotiatedProtocol, ALPN)
				}
				if !st.SupportsDatagrams.Local || !st.SupportsDatagrams.Remote {
					t.Errorf("%s: datagram support %+v", side, st.SupportsDatagrams)
				}
			}
			if got, want := cli.RemoteAddr().(*net.UDPAddr).AddrPort(), server.LocalAddr(); got != want {
				t.Errorf("client's remote address %v, want %v", got, want)
			}
		})
	}
}

func TestStreamEcho1MiB(t *testing.T) {
	for _, tt := range transports {
		t.Run(tt.name, func(t *testing.T) {
			server, client := tt.pair(t)
			_, cli := connect(t, server, client)
			echoStream(t, cli, 1<<20)
		})
	}
}

func TestDatagrams(t *testing.T) {
	for _, tt := range transports {
		t.Run(tt.name, func(t *testing.T) {
			server, client := tt.pair(t)
			_, cli := connect(t, server, client)
			ctx := testContext(t)
			// One datagram at a time on a lossless path: each must come back.
			for i, size := range []int{1, 32, 200, 1000, 1100} {
				msg := bytes.Repeat([]byte{byte(i + 1)}, size)
				if err := cli.SendDatagram(msg); err != nil {
					t.Fatalf("SendDatagram(%d bytes): %v", size, err)
				}
				got, err := cli.ReceiveDatagram(ctx)
				if err != nil {
					t.Fatalf("ReceiveDatagram: %v", err)
				}
				if !bytes.Equal(got, msg) {
					t.Fatalf("datagram %d: got %d bytes, want %d", i, len(got), size)
				}
			}
		})
	}
}

func TestLossyReorderingEcho(t *testing.T) {
	link := memconn.LinkConfig{Loss: 0.05, Reorder: 0.05, Latency: 200 * time.Microsecond, Jitter: 100 * time.Microsecond}
	nw, server, client := newMemconn(t, link, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"))
	_, cli := connect(t, server, client)
	echoStream(t, cli, 1<<20)
	st := nw.Stats()
	t.Logf("network: %+v", st)
	if st.Lost == 0 || st.Reordered == 0 {
		t.Fatalf("the link lost %d and reordered %d datagrams: faults not exercised", st.Lost, st.Reordered)
	}
}

// noECNConn hides a transport's ECN support, so received codepoints never reach quic-go.
type noECNConn struct{ *observedConn }

func (c noECNConn) Capabilities() transport.Capabilities {
	caps := c.observedConn.Capabilities()
	caps.ECN = false
	return caps
}

// TestECNValidationFailsWithoutCodepoints is the control for "ECN passes through": when the
// adapter reports no received codepoints, quic-go's ECN validation fails and it stops marking.
func TestECNValidationFailsWithoutCodepoints(t *testing.T) {
	s, c := memconn4(t)
	server, client := &observedConn{Conn: s}, &observedConn{Conn: c}
	_, cli := connect(t, noECNConn{server}, noECNConn{client})
	echoStream(t, cli, 1<<20)
	for name, o := range map[string]*observedConn{"server": server, "client": client} {
		marked, total := o.ecnWrites[transport.ECNECT0].Load(), o.writes.Load()
		t.Logf("%s: %d of %d datagrams written ECT(0)", name, marked, total)
		if marked > 30 {
			t.Errorf("%s: %d of %d datagrams marked although the peer cannot report ECN", name, marked, total)
		}
	}
}

// observedConn counts what quic-go, through the adapter, asks of a transport.
type observedConn struct {
	transport.Conn
	readCalls, readMsgs atomic.Int64
	writes              atomic.Int64    // datagrams (a GSO run counts its segments)
	gsoWrites           atomic.Int64    // messages with SegmentSize set and several segments
	ecnWrites, ecnReads [4]atomic.Int64 // datagrams by codepoint
}

func (o *observedConn) ReadBatch(msgs []transport.Message) (int, error) {
	n, err := o.Conn.ReadBatch(msgs)
	o.readCalls.Add(1)
	o.readMsgs.Add(int64(n))
	for _, m := range msgs[:n] {
		o.ecnReads[m.ECN&3].Add(1)
	}
	return n, err
}

func (o *observedConn) WriteBatch(msgs []transport.Message) (int, error) {
	for _, m := range msgs {
		datagrams := int64(1)
		if m.SegmentSize > 0 && len(m.Buf) > m.SegmentSize {
			o.gsoWrites.Add(1)
			datagrams = int64((len(m.Buf) + m.SegmentSize - 1) / m.SegmentSize)
		}
		o.writes.Add(datagrams)
		o.ecnWrites[m.ECN&3].Add(datagrams)
	}
	return o.Conn.WriteBatch(msgs)
}

func TestAdapterPathOverMemconn(t *testing.T) {
	s, c := memconn4(t)
	server, client := &observedConn{Conn: s}, &observedConn{Conn: c}
	srv, cli := connect(t, server, client)
	echoStream(t, cli, 1<<20)

	t.Run("reads are batched", func(t *testing.T) {
		for name, o := range map[string]*observedConn{"server": server, "client": client} {
			calls, msgs := o.readCalls.Load(), o.readMsgs.Load()
			t.Logf("%s: %d datagrams in %d ReadBatch calls", name, msgs, calls)
			if msgs < 700 || calls >= msgs {
				t.Errorf("%s: %d datagrams in %d ReadBatch calls, want fewer calls than datagrams", name, msgs, calls)
			}
		}
	})
	t.Run("GSO runs reach the transport", func(t *testing.T) {
		for name, o := range map[string]*observedConn{"server": server, "client": client} {
			if o.gsoWrites.Load() == 0 {
				t.Errorf("%s: no segmented write among %d datagrams", name, o.writes.Load())
			}
		}
		if !cli.ConnectionState().GSO || !srv.ConnectionState().GSO {
			t.Error("quic-go reports GSO off")
		}
	})
	t.Run("ECN passes through", func(t *testing.T) {
		// quic-go marks its first packets ECT(0) and keeps marking only if the peer's ACKs
		// report the ECT(0) counts it expects, which requires the peer's adapter to hand the
		// received codepoints to quic-go. Many marked packets mean ECN validation succeeded.
		for name, o := range map[string]*observedConn{"server": server, "client": client} {
			marked, total := o.ecnWrites[transport.ECNECT0].Load(), o.writes.Load()
			t.Logf("%s: %d of %d datagrams written ECT(0); %d read ECT(0)", name, marked, total, o.ecnReads[transport.ECNECT0].Load())
			if marked < 100 || o.ecnReads[transport.ECNECT0].Load() < 100 {
				t.Errorf("%s: %d of %d datagrams written ECT(0), %d read: ECN validation failed", name, marked, total, o.ecnReads[transport.ECNECT0].Load())
			}
		}
	})
}

func TestOversizeWriteEMSGSIZE(t *testing.T) {
	s, _ := memconn4(t)
	pc, err := PacketConn(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.2:9"))
	a := pc.(*adapter)
	max := s.Capabilities().MaxDatagram
	if _, _, err := a.WriteMsgUDP(make([]byte, max+1), nil, to); !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("write of %d bytes: %v, want EMSGSIZE", max+1, err)
	}
	if n, err := pc.WriteTo(make([]byte, max), to); err != nil || n != max {
		t.Fatalf("write of %d bytes after EMSGSIZE: %d, %v", max, n, err)
	}
}

func BenchmarkStreamOverMemconn(b *testing.B) {
	server, client := memconn4(b)
	_, cli := connect(b, server, client)
	const chunk = 1 << 20
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		echoStream(b, cli, chunk)
	}
}
