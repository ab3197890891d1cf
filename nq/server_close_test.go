package nq_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/memconn"
)

// serverStops are the two ways to stop a server.
var serverStops = []struct {
	name  string
	close func(s *nq.Server) error
}{
	{"Close", func(s *nq.Server) error { return s.Close() }},
	{"Shutdown", func(s *nq.Server) error { return s.Shutdown(context.Background()) }},
}

// TestListenAfterCloseBeforeListen: a server closed (or shut down) before it ever listened stays
// closed, as the docs of ErrServerClosed say: its Listen fails and opens nothing.
func TestListenAfterCloseBeforeListen(t *testing.T) {
	for _, tc := range serverStops {
		t.Run(tc.name, func(t *testing.T) {
			n, err := memconn.NewNetwork(memconn.Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			opened := false
			factory := func(ctx context.Context, local netip.AddrPort) (transport.Conn, error) {
				opened = true
				return n.Factory()(ctx, local)
			}
			srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: nq.NewMux(), Transport: factory}
			if err := tc.close(srv); err != nil {
				t.Fatalf("%s before Listen: %v", tc.name, err)
			}
			err = srv.Listen(context.Background(), "192.0.2.1:4433")
			if err == nil {
				srv.Close()
			}
			if !errors.Is(err, nq.ErrServerClosed) || opened {
				t.Fatalf("Listen after %s: %v (socket opened: %v), want ErrServerClosed and no socket", tc.name, err, opened)
			}
		})
	}
}

// TestServerCloseDuringListen: Close or Shutdown while Listen is still opening the socket
// neither panics nor leaks: Listen then fails with ErrServerClosed, having closed the socket it
// opened (a new server can bind the same address), and the server stays closed.
func TestServerCloseDuringListen(t *testing.T) {
	for _, tc := range serverStops {
		t.Run(tc.name, func(t *testing.T) {
			n, err := memconn.NewNetwork(memconn.Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			opening, release := make(chan struct{}), make(chan struct{})
			slow := func(ctx context.Context, local netip.AddrPort) (transport.Conn, error) {
				close(opening)
				<-release
				return n.Factory()(ctx, local)
			}
			srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: nq.NewMux(), Transport: slow}
			const addr = "192.0.2.1:4433"
			listened := make(chan error, 1)
			go func() { listened <- srv.Listen(context.Background(), addr) }()
			<-opening
			if err := tc.close(srv); err != nil {
				t.Fatalf("%s during Listen: %v", tc.name, err)
			}
			close(release)
			select {
			case err := <-listened:
				if !errors.Is(err, nq.ErrServerClosed) {
					t.Fatalf("Listen: %v, want ErrServerClosed", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Listen did not return")
			}
			if err := srv.Listen(context.Background(), addr); !errors.Is(err, nq.ErrServerClosed) {
				t.Fatalf("Listen again after %s: %v, want ErrServerClosed", tc.name, err)
			}
			again := &nq.Server{TLS: certs(t).ServerTLS(), Mux: nq.NewMux(), Transport: n.Factory()}
			if err := again.Listen(context.Background(), addr); err != nil {
				t.Fatalf("the address stayed taken: %v", err)
			}
			again.Close()
		})
	}
}

// TestLongRejectReason: an OnOpen error with a text too long for one packet still reaches the
// client as a rejection (nq cuts the close reason), not as an idle timeout.
func TestLongRejectReason(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: nq.NewMux(), Transport: e.serverFactory,
			OnOpen: func(*nq.Conn) error { return errors.New(strings.Repeat("no room on this shard; ", 200)) }}
		if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		closed := make(chan error, 1)
		cl := newClient(t, e, clientOptions{onClose: func(_ *nq.Conn, err error, _ int) time.Duration {
			select {
			case closed <- err:
			default:
			}
			return nq.NoReconnect
		}})
		if _, err := cl.Connect(srv.Addr().String()); err != nil {
			t.Fatal(err)
		}
		err := waitFor(t, closed, 20*time.Second, "the rejection")
		if !errors.Is(err, nq.ErrRejected) || !strings.Contains(err.Error(), "no room on this shard") {
			t.Fatalf("close: %.300v; want ErrRejected with the OnOpen text", err)
		}
	})
}
