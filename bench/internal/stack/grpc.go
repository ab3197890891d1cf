package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"

	"github.com/naquid/naquid/bench/internal/measure"
)

// gRPC service and method of the echo call, registered by hand (no protobuf).
const (
	grpcService = "nqbench.Echo"
	grpcMethod  = "/" + grpcService + "/Echo"
)

// rawCodec is a gRPC codec whose messages are raw bytes (*[]byte), so no protobuf is involved.
type rawCodec struct{}

func (rawCodec) Name() string { return "nqbench-raw" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *[]byte:
		return mem.BufferSlice{mem.SliceBuffer(*m)}, nil
	case []byte:
		return mem.BufferSlice{mem.SliceBuffer(m)}, nil
	}
	return nil, fmt.Errorf("stack grpc: codec cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("stack grpc: codec cannot unmarshal into %T", v)
	}
	*m = data.Materialize()
	return nil
}

// echoServer is the (empty) interface the service's implementation must satisfy.
type echoServer interface{}

type echoImpl struct{}

var echoDesc = grpc.ServiceDesc{
	ServiceName: grpcService,
	HandlerType: (*echoServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			var in []byte
			if err := dec(&in); err != nil {
				return nil, err
			}
			if icpt == nil {
				return &in, nil
			}
			return icpt(ctx, &in, &grpc.UnaryServerInfo{FullMethod: grpcMethod},
				func(_ context.Context, req any) (any, error) { return req, nil })
		},
	}},
}

// grpcStack is gRPC-go: unary calls over TLS, one HTTP/2 connection (grpc.ClientConn) per
// client connection, W concurrent calls each from its own goroutine, as gRPC users write them.
type grpcStack struct {
	cfg Config
}

func (s *grpcStack) Name() string { return GRPC }

func (s *grpcStack) Listen(ctx context.Context, addr string) (Server, error) {
	conf, err := s.cfg.Certs.ServerTLS("h2")
	if err != nil {
		return nil, fmt.Errorf("stack grpc: %w", err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("stack grpc: listen %s: %w", addr, err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(conf)), grpc.ForceServerCodecV2(rawCodec{}))
	gs.RegisterService(&echoDesc, echoImpl{})
	srv := &grpcServer{gs: gs, ln: ln, done: make(chan struct{})}
	go func() {
		defer close(srv.done)
		_ = gs.Serve(ln) // returns when stopped
	}()
	return srv, nil
}

type grpcServer struct {
	gs   *grpc.Server
	ln   net.Listener
	done chan struct{}
}

func (s *grpcServer) Addr() string { return s.ln.Addr().String() }

func (s *grpcServer) Close() error {
	s.gs.Stop()
	<-s.done
	return nil
}

func (s *grpcStack) NewDialer() (Dialer, error) {
	return &grpcDialer{stack: s, conns: make(map[*grpc.ClientConn]struct{})}, nil
}

type grpcDialer struct {
	stack *grpcStack
	mu    sync.Mutex
	conns map[*grpc.ClientConn]struct{}
}

func (d *grpcDialer) Dial(ctx context.Context, addr string) (Conn, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(credentials.NewTLS(d.stack.cfg.Certs.ClientTLS("h2"))),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		return nil, fmt.Errorf("stack grpc: dial %s: %w", addr, err)
	}
	// One call establishes the HTTP/2 connection, so Dial returns a connected Conn.
	var reply []byte
	ping := []byte{0}
	if err := cc.Invoke(ctx, grpcMethod, &ping, &reply, grpc.WaitForReady(true)); err != nil {
		cc.Close()
		return nil, fmt.Errorf("stack grpc: dial %s: %w", addr, err)
	}
	d.mu.Lock()
	d.conns[cc] = struct{}{}
	d.mu.Unlock()
	return &grpcConn{cc: cc, d: d}, nil
}

func (d *grpcDialer) Close() error {
	d.mu.Lock()
	conns := d.conns
	d.conns = make(map[*grpc.ClientConn]struct{})
	d.mu.Unlock()
	var errs []error
	for cc := range conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}

type grpcConn struct {
	cc *grpc.ClientConn
	d  *grpcDialer
}

// Pipeline runs w goroutines, each making unary calls one after the other.
func (c *grpcConn) Pipeline(ctx context.Context, n, w int, payload []byte, rec *measure.Shard) (int64, error) {
	if err := checkPipeline(n, w, payload); err != nil {
		return 0, err
	}
	var (
		issued, answered atomic.Int64
		wg               sync.WaitGroup
		mu               sync.Mutex
		first            error
	)
	for range min(w, n) {
		wg.Go(func() {
			in := payload
			var out []byte
			for issued.Add(1) <= int64(n) {
				t0 := time.Now()
				if err := c.cc.Invoke(ctx, grpcMethod, &in, &out); err != nil {
					rec.Error()
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("stack grpc: call: %w", err)
					}
					mu.Unlock()
					return
				}
				rec.Record(time.Since(t0))
				answered.Add(1)
			}
		})
	}
	wg.Wait()
	return answered.Load(), first
}

// Send makes the call from a new goroutine, as a gRPC user would for an asynchronous call.
func (c *grpcConn) Send(payload []byte, done func(error)) error {
	go func() {
		in := payload
		var out []byte
		done(c.cc.Invoke(context.Background(), grpcMethod, &in, &out))
	}()
	return nil
}

func (c *grpcConn) Close() error {
	c.d.mu.Lock()
	delete(c.d.conns, c.cc)
	c.d.mu.Unlock()
	return c.cc.Close()
}
