// Package stack holds the network stacks nqbench compares, each behind the same three small
// interfaces: a Server that echoes, a Dialer that opens client connections (sharing sockets
// where the stack can), and a Conn that runs the workloads' two call patterns — a closed-loop
// pipeline with a fixed window of calls in flight, and single open-loop sends.
//
// Every stack answers an 8- or 64-byte request with the same bytes. The stream-based peers (raw
// quic-go, TCP, TLS over TCP, kcp-go + smux) share one framing and one echo loop (framed.go),
// written as a competent engineer would by hand: one long-lived stream per connection, a 2-byte
// length prefix, buffered writes flushed when the window refills (client) or when the read
// buffer is drained (server). gRPC runs unary calls through a raw-bytes codec. nq runs its own
// RPC protocol.
package stack

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/naquid/naquid/bench/internal/measure"
	"github.com/naquid/naquid/transport"
)

// Names of the stacks New knows, in the order reports list them.
const (
	NQ   = "nq"   // naquid RPC over QUIC; the transport is chosen with Config.Transport
	QUIC = "quic" // raw quic-go, one pipelined stream per connection
	TCP  = "tcp"  // TCP with length-prefixed frames
	TLS  = "tls"  // TLS 1.3 over TCP with length-prefixed frames
	GRPC = "grpc" // gRPC-go unary calls over TLS, one HTTP/2 connection per client connection
	KCP  = "kcp"  // kcp-go (fast mode, no FEC, no crypto) carrying one smux stream per connection
)

// Names returns the stack names New accepts.
func Names() []string { return []string{NQ, QUIC, TCP, TLS, GRPC, KCP} }

// Transports returns nq's packet-I/O backends by name.
func Transports() []string { return []string{"udp", "mmsg", "afxdp"} }

// ErrUnknown is returned by New for a name it does not know.
var ErrUnknown = errors.New("stack: unknown stack")

// ErrNeedsFactory is returned for the nq transport afxdp when Config has no factory for the
// side asked for: AF_XDP runs on an interface the caller chooses (nqbench builds a veth pair
// between network namespaces, package xdpnet), not on loopback.
var ErrNeedsFactory = errors.New("stack: transport afxdp needs an interface: set Config.ServerFactory and Config.ClientFactory")

// Defaults of Config fields.
const (
	// DefaultCallTimeout bounds every call of the stacks that have per-call timeouts (nq).
	DefaultCallTimeout = 10 * time.Second
	// MaxPayload is the largest payload of a call: the stream peers' frames have a 2-byte length.
	MaxPayload = 65535
)

// Config configures a stack. The zero value works for stacks that need no certificates.
type Config struct {
	// Certs is the TLS material of the stacks that encrypt (nq, quic, tls, grpc). Required for
	// them.
	Certs *Certs
	// Transport is nq's packet-I/O backend: "udp" (the default), "mmsg" or "afxdp" (which needs
	// ServerFactory for a server and ClientFactory for clients). It names the stack in reports
	// ("nq/afxdp"). Other stacks ignore it.
	Transport string
	// ServerFactory and ClientFactory, when not nil, open the nq server's and the nq clients'
	// sockets in place of Transport's default factory (kernel sockets on whatever address the
	// workload gives). nqbench sets them for afxdp: the server on AF_XDP on a veth end in one
	// network namespace, the clients on kernel UDP in another. Other stacks ignore them.
	ServerFactory, ClientFactory transport.Factory
	// PerSocket is how many client connections share one client UDP socket (one nq.Client or
	// one quic.Transport), for nq and quic. 0 means 1: every connection has its own socket.
	PerSocket int
	// CallTimeout is nq's per-call timeout. 0 means DefaultCallTimeout.
	CallTimeout time.Duration
	// DisableResumption makes nq and quic clients do a full TLS handshake every time (no
	// session tickets). The default resumes sessions.
	DisableResumption bool
}

func (c Config) validate(name string) error {
	if c.PerSocket < 0 {
		return fmt.Errorf("stack %s: Config.PerSocket %d is negative", name, c.PerSocket)
	}
	if c.CallTimeout < 0 {
		return fmt.Errorf("stack %s: Config.CallTimeout %v is negative", name, c.CallTimeout)
	}
	if c.Transport != "" && !slices.Contains(Transports(), c.Transport) {
		return fmt.Errorf("stack %s: Config.Transport %q is not one of %s", name, c.Transport, strings.Join(Transports(), ", "))
	}
	switch name {
	case NQ, QUIC, TLS, GRPC:
		if c.Certs == nil {
			return fmt.Errorf("stack %s: Config.Certs is nil: this stack encrypts", name)
		}
	}
	return nil
}

func (c Config) perSocket() int { return max(c.PerSocket, 1) }

func (c Config) callTimeout() time.Duration {
	if c.CallTimeout == 0 {
		return DefaultCallTimeout
	}
	return c.CallTimeout
}

// Stack is one network stack under test.
type Stack interface {
	// Name is the stack's name in reports: "nq/udp", "quic", "tcp", ...
	Name() string
	// Listen starts an echo server on addr ("host:port", port 0 for any).
	Listen(ctx context.Context, addr string) (Server, error)
	// NewDialer returns a fleet of client connections.
	NewDialer() (Dialer, error)
}

// Server is a running echo server.
type Server interface {
	// Addr is the address clients dial ("127.0.0.1:port").
	Addr() string
	// Close stops the server and closes its connections.
	Close() error
}

// Dialer opens client connections. Dial is safe for concurrent use.
type Dialer interface {
	// Dial opens one connection to addr and returns once it is established.
	Dial(ctx context.Context, addr string) (Conn, error)
	// Close closes every connection the Dialer opened and its sockets.
	Close() error
}

// Diagnoser is implemented by Dialers that can explain trouble their connections had (failed
// connection attempts); workloads add it to their results' notes.
type Diagnoser interface {
	// Diagnostics returns "" when there is nothing to report.
	Diagnostics() string
}

// Conn is one client connection. A Conn runs either Pipeline calls (one at a time) or Sends,
// not both.
type Conn interface {
	// Pipeline makes n echo calls of payload, keeping w in flight, and records each answer's
	// latency (from the moment the call was issued) in rec. It returns the number of calls
	// answered, and the first error; it returns when all n are answered, on the first error, or
	// when ctx ends.
	Pipeline(ctx context.Context, n, w int, payload []byte, rec *measure.Shard) (int64, error)
	// Send issues one echo call without waiting; done runs once, with nil when the answer
	// arrived or with the error that ended the call. If Send returns an error, done never
	// runs. Send may block while the connection applies back-pressure.
	Send(payload []byte, done func(error)) error
	// Close closes the connection.
	Close() error
}

// New returns the stack name configured by cfg.
func New(name string, cfg Config) (Stack, error) {
	if err := cfg.validate(name); err != nil {
		return nil, err
	}
	switch name {
	case NQ:
		return newNQ(cfg)
	case QUIC:
		return &quicStack{cfg: cfg}, nil
	case TCP:
		return &tcpStack{cfg: cfg}, nil
	case TLS:
		return &tcpStack{cfg: cfg, tls: true}, nil
	case GRPC:
		return &grpcStack{cfg: cfg}, nil
	case KCP:
		return &kcpStack{cfg: cfg}, nil
	}
	return nil, fmt.Errorf("stack %q: %w (known: %s)", name, ErrUnknown, strings.Join(Names(), ", "))
}

// checkPipeline validates Pipeline's arguments.
func checkPipeline(n, w int, payload []byte) error {
	if n < 0 || w < 1 {
		return fmt.Errorf("stack: pipeline of %d calls with window %d: need n >= 0 and w >= 1", n, w)
	}
	if len(payload) > MaxPayload {
		return fmt.Errorf("stack: payload of %d bytes over %d", len(payload), MaxPayload)
	}
	return nil
}
