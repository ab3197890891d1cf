package nq_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/quic"
	"github.com/naquid/naquid/tools/certs/devcert"
	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/memconn"
	"github.com/naquid/naquid/transport/mmsg"
)

// Method numbers of the fixture server (naquid's e2e rpctypes).
const (
	mPing          = 1
	mRaise         = 2
	mNotifyText    = 3
	mServerStream  = 4
	mSleep         = 5
	mClose         = 6
	mSetupReject   = 7
	mWhoAmI        = 11 // replies with the caller's address as the server sees it
	mServerRequest = 10000
	mTextNotify    = 0x7FFF
)

// env is one transport setting the acceptance tests run on.
type env struct {
	name          string
	serverAddr    string
	clientLocal   netip.AddrPort
	serverFactory transport.Factory
	clientFactory transport.Factory
	net           *memconn.Network
}

var bundle = sync.OnceValues(func() (*devcert.Bundle, error) {
	return devcert.New(devcert.Options{Hosts: []string{"localhost", "127.0.0.1", "192.0.2.1"}})
})

func certs(t testing.TB) *devcert.Bundle {
	t.Helper()
	b, err := bundle()
	if err != nil {
		t.Fatalf("certificates: %v", err)
	}
	return b
}

// kernelTransport selects the kernel-socket backend the acceptance tests run on besides memconn:
// `go test ./nq -args -nq.transport=mmsg` runs them over recvmmsg/sendmmsg.
var kernelTransport = flag.String("nq.transport", "udp", "kernel socket backend for the acceptance tests: udp or mmsg")

// envs returns the transports every acceptance test runs on: a kernel socket on loopback (udp, or
// mmsg with -nq.transport=mmsg) and the in-memory network.
func envs(t *testing.T) []func(t *testing.T) *env {
	return []func(t *testing.T) *env{
		func(t *testing.T) *env {
			switch *kernelTransport {
			case "udp":
				return &env{name: "udp", serverAddr: "127.0.0.1:0"}
			case "mmsg":
				f := mmsg.Factory(mmsg.Config{})
				return &env{name: "mmsg", serverAddr: "127.0.0.1:0", serverFactory: f, clientFactory: f}
			}
			t.Fatalf("-nq.transport %q: want udp or mmsg", *kernelTransport)
			return nil
		},
		func(t *testing.T) *env {
			n, err := memconn.NewNetwork(memconn.Config{Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { n.Close() })
			return &env{
				name:          "memconn",
				serverAddr:    "192.0.2.1:4433",
				clientLocal:   netip.MustParseAddrPort("192.0.2.2:0"),
				serverFactory: n.Factory(),
				clientFactory: n.Factory(),
				net:           n,
			}
		},
	}
}

// forEachEnv runs f once per transport, as parallel subtests.
func forEachEnv(t *testing.T, f func(t *testing.T, e *env)) {
	for i, mk := range envs(t) {
		name := []string{*kernelTransport, "memconn"}[i]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t, mk(t))
		})
	}
}

// fixture is the in-process server of the acceptance tests (naquid's e2e server).
type fixture struct {
	srv  *nq.Server
	addr string

	rejectConns   atomic.Int32 // connections still to reject at open
	rejectStreams int32        // stream opens to reject on each accepted connection

	serverStreamResult chan error // verdicts of the server's own calls (ServerStream)
	mu                 sync.Mutex
	streamRejects      map[*nq.Conn]int32
}

type fixtureOptions struct {
	rejectConns   int32
	rejectStreams int32
	maxConns      int
	maxHandshakes int
	onClose       func(c *nq.Conn, err error)
	qlogDir       string
}

func startFixture(t *testing.T, e *env, o fixtureOptions) *fixture {
	t.Helper()
	f := &fixture{
		rejectStreams:      o.rejectStreams,
		serverStreamResult: make(chan error, 16),
		streamRejects:      make(map[*nq.Conn]int32),
	}
	f.rejectConns.Store(o.rejectConns)
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{
		OnRequest: f.handle,
		OnOpen:    f.onStreamOpen,
	}); err != nil {
		t.Fatal(err)
	}
	f.srv = &nq.Server{
		TLS:       certs(t).ServerTLS(),
		Mux:       mux,
		Transport: e.serverFactory,
		OnOpen: func(c *nq.Conn) error {
			if f.rejectConns.Add(-1) >= 0 {
				return errors.New("fixture rejects this connection")
			}
			return nil
		},
		OnClose: func(c *nq.Conn, err error) {
			f.mu.Lock()
			delete(f.streamRejects, c)
			f.mu.Unlock()
			if o.onClose != nil {
				o.onClose(c, err)
			}
		},
		MaxConns:      o.maxConns,
		MaxHandshakes: o.maxHandshakes,
		QlogDir:       o.qlogDir,
	}
	if err := f.srv.Listen(context.Background(), e.serverAddr); err != nil {
		t.Fatalf("fixture listen: %v", err)
	}
	t.Cleanup(func() { f.srv.Close() })
	f.addr = f.srv.Addr().String()
	return f
}

func (f *fixture) onStreamOpen(s *nq.RPCStream) error {
	if s.Outgoing() {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.streamRejects[s.Conn()]
	f.streamRejects[s.Conn()] = n + 1
	if n < f.rejectStreams {
		return fmt.Errorf("fixture rejects stream open #%d", n+1)
	}
	return nil
}

func (f *fixture) handle(req *nq.Request) {
	switch req.Method {
	case mPing, mSetupReject:
		req.Reply(req.Payload)
	case mRaise:
		if len(req.Payload) < 4 {
			req.Fail(errors.New("short raise payload"))
			return
		}
		code := int32(binary.BigEndian.Uint32(req.Payload))
		req.Fail(&nq.RemoteError{Code: int64(code), Message: string(req.Payload[4:])})
	case mNotifyText:
		req.Stream().Notify(mTextNotify, req.Payload)
		req.Reply([]byte("notify success"))
	case mServerStream:
		name, msg, ok := strings.Cut(string(req.Payload), "|")
		if !ok {
			req.Reply([]byte("parse fails:" + string(req.Payload)))
			return
		}
		req.Reply(nil)
		conn := req.Conn()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := conn.OpenRPC(ctx, name)
			if err != nil {
				f.serverStreamResult <- err
				return
			}
			text := "from server:" + msg
			reply, err := s.Call(ctx, mServerRequest, []byte(text))
			if err == nil && string(reply) != "from client:"+text {
				err = fmt.Errorf("server stream: reply %q, want %q", reply, "from client:"+text)
			}
			f.serverStreamResult <- err
		}()
	case mSleep:
		if len(req.Payload) != 8 {
			req.Fail(errors.New("sleep wants an 8-byte duration"))
			return
		}
		d := time.Duration(binary.BigEndian.Uint64(req.Payload))
		time.AfterFunc(d, func() { req.Reply(nil) })
	case mWhoAmI:
		req.Reply([]byte(req.Conn().RemoteAddr()))
	case mClose:
		req.Reply(nil)
		if string(req.Payload) == "conn" {
			req.Conn().Close()
		} else {
			req.Stream().Close()
		}
	default:
		req.Fail(&nq.RemoteError{Code: -1, Message: fmt.Sprintf("unknown method %d", req.Method)})
	}
}

// clientOptions are the hooks and handlers a test gives its client.
type clientOptions struct {
	mux        *nq.Mux
	onOpen     func(c *nq.Conn)
	onClose    func(c *nq.Conn, err error, attempt int) time.Duration
	onFinalize func(c *nq.Conn)
	transport  transport.Factory
	quic       *quicgo.Config
}

func newClient(t *testing.T, e *env, o clientOptions) *nq.Client {
	t.Helper()
	mux := o.mux
	if mux == nil {
		mux = nq.NewMux()
		if err := mux.HandleRPC("rpc", nq.RPCHandler{}); err != nil {
			t.Fatal(err)
		}
	}
	factory := e.clientFactory
	if o.transport != nil {
		factory = o.transport
	}
	cl := &nq.Client{
		TLS:        certs(t).ClientTLS("localhost"),
		Mux:        mux,
		Transport:  factory,
		LocalAddr:  e.clientLocal,
		OnOpen:     o.onOpen,
		OnClose:    o.onClose,
		OnFinalize: o.onFinalize,
		QUIC:       o.quic,
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// patientQUIC returns a quic-go configuration whose idle timeout survives a machine starved by
// the race detector and parallel test packages (the default 5.5 s can expire there, and the
// tests would see connection losses they did not cause).
func patientQUIC(server bool) *quicgo.Config {
	c := quic.ClientConfig()
	if server {
		c = quic.ServerConfig()
	}
	c.MaxIdleTimeout = 60 * time.Second
	c.HandshakeIdleTimeout = 20 * time.Second
	return c
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func sleepPayload(d time.Duration) []byte { return be64(uint64(d)) }

// waitFor receives from ch or fails the test after d.
func waitFor[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
		var zero T
		return zero
	}
}

func mustEqual(t *testing.T, got, want []byte, what string) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}
