package stack

import (
	"context"
	"fmt"
	"sync"

	kcp "github.com/xtaci/kcp-go/v5"
	"github.com/xtaci/smux"
)

// kcpStack is kcp-go in its fast mode (no delay, 10 ms interval, fast resend after 2 duplicate
// acks, no congestion control; no FEC, no encryption) carrying smux, with one smux stream of
// length-prefixed frames per connection. Each client connection has its own UDP socket, as
// kcp-go's Dial makes one.
type kcpStack struct {
	cfg Config
}

func (s *kcpStack) Name() string { return KCP }

// tuneKCP applies the fast-mode settings to one session (both ends use the same).
func tuneKCP(sess *kcp.UDPSession) {
	//lint:ignore SA1019 stream mode is what kcptun runs (small writes merge into full segments); it has no replacement
	sess.SetStreamMode(true)
	sess.SetWriteDelay(false)
	sess.SetNoDelay(1, 10, 2, 1)
	sess.SetWindowSize(1024, 1024)
	sess.SetMtu(1350)
	sess.SetACKNoDelay(false)
}

func (s *kcpStack) Listen(_ context.Context, addr string) (Server, error) {
	ln, err := kcp.ListenWithOptions(addr, nil, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("stack kcp: listen %s: %w", addr, err)
	}
	_ = ln.SetReadBuffer(4 << 20) // best effort: the kernel may cap it
	_ = ln.SetWriteBuffer(4 << 20)
	srv := &kcpServer{ln: ln, sessions: make(map[*smux.Session]struct{})}
	srv.wg.Add(1)
	go srv.acceptLoop()
	return srv, nil
}

type kcpServer struct {
	ln *kcp.Listener
	wg sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	sessions map[*smux.Session]struct{}
}

func (s *kcpServer) Addr() string { return s.ln.Addr().String() }

func (s *kcpServer) acceptLoop() {
	defer s.wg.Done()
	for {
		sess, err := s.ln.AcceptKCP()
		if err != nil {
			return
		}
		tuneKCP(sess)
		mux, err := smux.Server(sess, smux.DefaultConfig())
		if err != nil {
			sess.Close()
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			mux.Close()
			return
		}
		s.sessions[mux] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(mux)
	}
}

func (s *kcpServer) serve(mux *smux.Session) {
	defer s.wg.Done()
	for {
		st, err := mux.AcceptStream()
		if err != nil {
			break
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = echoFramed(st)
			st.Close()
		}()
	}
	mux.Close()
	s.mu.Lock()
	delete(s.sessions, mux)
	s.mu.Unlock()
}

func (s *kcpServer) Close() error {
	s.mu.Lock()
	s.closed = true
	err := s.ln.Close()
	for mux := range s.sessions {
		mux.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *kcpStack) NewDialer() (Dialer, error) {
	return &kcpDialer{conns: make(map[*smux.Session]struct{})}, nil
}

type kcpDialer struct {
	mu    sync.Mutex
	conns map[*smux.Session]struct{}
}

func (d *kcpDialer) Dial(ctx context.Context, addr string) (Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("stack kcp: dial %s: %w", addr, err)
	}
	sess, err := kcp.DialWithOptions(addr, nil, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("stack kcp: dial %s: %w", addr, err)
	}
	tuneKCP(sess)
	mux, err := smux.Client(sess, smux.DefaultConfig())
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("stack kcp: smux: %w", err)
	}
	// KCP has no handshake: open the stream now and make one call, so a dead server is found
	// here and the connection exists on the server when Dial returns.
	st, err := mux.OpenStream()
	if err != nil {
		mux.Close()
		return nil, fmt.Errorf("stack kcp: open stream: %w", err)
	}
	d.mu.Lock()
	d.conns[mux] = struct{}{}
	d.mu.Unlock()
	closeConn := func() error {
		d.mu.Lock()
		delete(d.conns, mux)
		d.mu.Unlock()
		return mux.Close()
	}
	fc := newFramedConn(func(context.Context) (stream, error) { return st, nil }, closeConn)
	if err := fc.ping(ctx); err != nil {
		fc.Close()
		return nil, fmt.Errorf("stack kcp: dial %s: %w", addr, err)
	}
	return fc, nil
}

func (d *kcpDialer) Close() error {
	d.mu.Lock()
	conns := d.conns
	d.conns = make(map[*smux.Session]struct{})
	d.mu.Unlock()
	for mux := range conns {
		_ = mux.Close() // an already closed session reports io.ErrClosedPipe: nothing to do
	}
	return nil
}
