package stack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
)

// tcpStack is TCP (or TLS 1.3 over TCP) with length-prefixed frames: one goroutine per server
// connection running echoFramed. Go sets TCP_NODELAY by default.
type tcpStack struct {
	cfg Config
	tls bool
}

func (s *tcpStack) Name() string {
	if s.tls {
		return TLS
	}
	return TCP
}

func (s *tcpStack) Listen(ctx context.Context, addr string) (Server, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("stack %s: listen %s: %w", s.Name(), addr, err)
	}
	if s.tls {
		conf, err := s.cfg.Certs.ServerTLS()
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("stack %s: %w", s.Name(), err)
		}
		ln = tls.NewListener(ln, conf)
	}
	srv := &streamServer{ln: ln, conns: make(map[net.Conn]struct{})}
	srv.wg.Add(1)
	go srv.acceptLoop()
	return srv, nil
}

// streamServer accepts net.Conns and echoes frames on each.
type streamServer struct {
	ln net.Listener
	wg sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func (s *streamServer) Addr() string { return s.ln.Addr().String() }

func (s *streamServer) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			_ = echoFramed(c) // ends when the client closes
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *streamServer) Close() error {
	s.mu.Lock()
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (s *tcpStack) NewDialer() (Dialer, error) {
	return &tcpDialer{stack: s, conns: make(map[*framedConn]struct{})}, nil
}

type tcpDialer struct {
	stack *tcpStack
	mu    sync.Mutex
	conns map[*framedConn]struct{}
}

func (d *tcpDialer) Dial(ctx context.Context, addr string) (Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("stack %s: dial %s: %w", d.stack.Name(), addr, err)
	}
	if d.stack.tls {
		tc := tls.Client(c, d.stack.cfg.Certs.ClientTLS())
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("stack %s: handshake with %s: %w", d.stack.Name(), addr, err)
		}
		c = tc
	}
	fc := newFramedConn(func(context.Context) (stream, error) { return c, nil }, c.Close)
	d.mu.Lock()
	d.conns[fc] = struct{}{}
	d.mu.Unlock()
	return fc, nil
}

func (d *tcpDialer) Close() error {
	d.mu.Lock()
	conns := d.conns
	d.conns = make(map[*framedConn]struct{})
	d.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
	return nil
}
