package stack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/quic"
)

// quicALPN is the raw quic-go peer's application protocol.
const quicALPN = "nqbench"

// quicStack is raw quic-go: one long-lived bidirectional stream per connection carrying
// length-prefixed frames, with the same quic.Config presets as nq (package quic's
// ServerConfig and ClientConfig), so the difference measured is nq's own layer. Server and
// clients use quic-go's stock socket (a *net.UDPConn handed to quic.Transport).
type quicStack struct {
	cfg Config
}

func (s *quicStack) Name() string { return QUIC }

func (s *quicStack) Listen(ctx context.Context, addr string) (Server, error) {
	conf, err := s.cfg.Certs.ServerTLS(quicALPN)
	if err != nil {
		return nil, fmt.Errorf("stack quic: %w", err)
	}
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("stack quic: listen %s: %w", addr, err)
	}
	tr := &quicgo.Transport{Conn: pc}
	ln, err := tr.Listen(conf, quic.ServerConfig())
	if err != nil {
		tr.Close()
		pc.Close()
		return nil, fmt.Errorf("stack quic: listen %s: %w", addr, err)
	}
	srv := &quicServer{pc: pc, tr: tr, ln: ln, conns: make(map[*quicgo.Conn]struct{})}
	srv.wg.Add(1)
	go srv.acceptLoop()
	return srv, nil
}

type quicServer struct {
	pc net.PacketConn
	tr *quicgo.Transport
	ln *quicgo.Listener
	wg sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[*quicgo.Conn]struct{}
}

func (s *quicServer) Addr() string { return s.pc.LocalAddr().String() }

func (s *quicServer) acceptLoop() {
	defer s.wg.Done()
	for {
		qc, err := s.ln.Accept(context.Background())
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = qc.CloseWithError(0, "server closed")
			return
		}
		s.conns[qc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(qc)
	}
}

// serve echoes on every stream the client opens (the benchmark opens one).
func (s *quicServer) serve(qc *quicgo.Conn) {
	defer s.wg.Done()
	for {
		st, err := qc.AcceptStream(qc.Context())
		if err != nil {
			break
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = echoFramed(st)
			st.CancelRead(0)
			_ = st.Close()
		}()
	}
	s.mu.Lock()
	delete(s.conns, qc)
	s.mu.Unlock()
}

func (s *quicServer) Close() error {
	s.mu.Lock()
	s.closed = true
	conns := make([]*quicgo.Conn, 0, len(s.conns))
	for qc := range s.conns {
		conns = append(conns, qc)
	}
	s.mu.Unlock()
	err := s.ln.Close()
	for _, qc := range conns {
		_ = qc.CloseWithError(0, "server closed")
	}
	s.wg.Wait()
	_ = s.tr.Close()
	if cerr := s.pc.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
		err = cerr
	}
	return err
}

func (s *quicStack) NewDialer() (Dialer, error) {
	conf := s.cfg.Certs.ClientTLS(quicALPN)
	if s.cfg.DisableResumption {
		conf.SessionTicketsDisabled = true
	} else {
		conf.ClientSessionCache = tls.NewLRUClientSessionCache(0)
	}
	return &quicDialer{cfg: s.cfg, tls: conf, quic: quic.ClientConfig()}, nil
}

// quicDialer spreads its connections over client sockets, Config.PerSocket per socket.
type quicDialer struct {
	cfg  Config
	tls  *tls.Config
	quic *quicgo.Config

	mu      sync.Mutex
	closed  bool
	sockets []*quicSocket
	conns   map[*quicgo.Conn]struct{}
}

type quicSocket struct {
	pc    net.PacketConn
	tr    *quicgo.Transport
	users int
}

// socket returns a client socket with room for one more connection.
func (d *quicDialer) socket() (*quicSocket, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("stack quic: dialer: %w", net.ErrClosed)
	}
	if n := len(d.sockets); n > 0 && d.sockets[n-1].users < d.cfg.perSocket() {
		s := d.sockets[n-1]
		s.users++
		return s, nil
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		return nil, fmt.Errorf("stack quic: client socket: %w", err)
	}
	s := &quicSocket{pc: pc, tr: &quicgo.Transport{Conn: pc}, users: 1}
	d.sockets = append(d.sockets, s)
	return s, nil
}

func (d *quicDialer) Dial(ctx context.Context, addr string) (Conn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("stack quic: dial %s: %w", addr, err)
	}
	s, err := d.socket()
	if err != nil {
		return nil, err
	}
	qc, err := s.tr.Dial(ctx, ua, d.tls, d.quic)
	if err != nil {
		return nil, fmt.Errorf("stack quic: dial %s: %w", addr, err)
	}
	d.mu.Lock()
	if d.conns == nil {
		d.conns = make(map[*quicgo.Conn]struct{})
	}
	d.conns[qc] = struct{}{}
	d.mu.Unlock()
	open := func(ctx context.Context) (stream, error) {
		st, err := qc.OpenStreamSync(ctx)
		if err != nil {
			return nil, fmt.Errorf("stack quic: open stream: %w", err)
		}
		return st, nil
	}
	closeConn := func() error {
		d.mu.Lock()
		delete(d.conns, qc)
		d.mu.Unlock()
		return qc.CloseWithError(0, "")
	}
	return newFramedConn(open, closeConn), nil
}

func (d *quicDialer) Close() error {
	d.mu.Lock()
	d.closed = true
	conns := d.conns
	d.conns = nil
	sockets := d.sockets
	d.sockets = nil
	d.mu.Unlock()
	for qc := range conns {
		_ = qc.CloseWithError(0, "")
	}
	for _, s := range sockets {
		_ = s.tr.Close()
		_ = s.pc.Close()
	}
	return nil
}
