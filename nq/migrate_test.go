package nq_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/quic"
)

// TestMigration: a client Conn moves to a new local socket (a new port over udp, a new address
// over memconn); the server sees the new address, a call in flight during the move completes,
// and the same stream and generation carry on.
func TestMigration(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		f := startFixture(t, e, fixtureOptions{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := newClient(t, e, clientOptions{}).Dial(ctx, f.addr)
		if err != nil {
			t.Fatal(err)
		}
		s, err := conn.OpenRPC(ctx, "rpc")
		if err != nil {
			t.Fatal(err)
		}
		before, err := s.Call(ctx, mWhoAmI, nil)
		if err != nil {
			t.Fatal(err)
		}
		slow := make(chan error, 1)
		if err := s.Go(ctx, mSleep, sleepPayload(300*time.Millisecond), func(_ []byte, err error) { slow <- err }); err != nil {
			t.Fatal(err)
		}
		var to netip.AddrPort // udp: same address, new port
		if e.net != nil {
			to = netip.MustParseAddrPort("192.0.2.3:0") // memconn: a new address
		}
		if err := conn.Migrate(ctx, to); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		// The server handles the first packets from the new address before its own path
		// validation finishes, so its view of the peer moves one round trip or so later: ask
		// until it does, each answer being the signal for the next question (bounded).
		var after []byte
		for i := 0; i < 200; i++ {
			if after, err = s.Call(ctx, mWhoAmI, nil); err != nil {
				t.Fatalf("call after migrating: %v", err)
			}
			if string(after) != string(before) {
				break
			}
		}
		if string(after) == string(before) {
			t.Fatalf("the server still sees %s after migrating and 200 round trips", after)
		}
		if e.net != nil && netip.MustParseAddrPort(string(after)).Addr() != to.Addr() {
			t.Fatalf("server sees %s, want an address of %s", after, to.Addr())
		}
		if err := waitFor(t, slow, 5*time.Second, "the call in flight during the move"); err != nil {
			t.Fatalf("call in flight during the move: %v", err)
		}
		if g := conn.Generation(); g != 1 {
			t.Fatalf("generation %d after migrating, want 1", g)
		}
	})
}

// TestMigrateRemoteAddrConcurrent: reading RemoteAddr while Migrate switches paths is safe (it
// raced with quic-go's connection loop; run with -race), and a client's RemoteAddr stays the
// server's address.
func TestMigrateRemoteAddrConcurrent(t *testing.T) {
	e := envs(t)[1](t)
	f := startFixture(t, e, fixtureOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := newClient(t, e, clientOptions{}).Dial(ctx, f.addr)
	if err != nil {
		t.Fatal(err)
	}
	want := conn.RemoteAddr()
	stop, read := make(chan struct{}), make(chan string, 1)
	go func() {
		last := ""
		for {
			select {
			case <-stop:
				read <- last
				return
			default:
				last = conn.RemoteAddr()
			}
		}
	}()
	for i := range 3 {
		to := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}), 0)
		if err := conn.Migrate(ctx, to); err != nil {
			t.Fatalf("Migrate %d: %v", i, err)
		}
	}
	close(stop)
	if got := <-read; got != want {
		t.Fatalf("RemoteAddr %q after migrating, want the server's %q", got, want)
	}
}

// TestMigrateEndsWithConnection: when the connection ends while Migrate validates the new path
// (every path is cut), Migrate fails at once with ErrConnLost instead of waiting for its ctx.
func TestMigrateEndsWithConnection(t *testing.T) {
	e := envs(t)[1](t)
	f := startFixture(t, e, fixtureOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	qc := quic.ClientConfig()
	qc.MaxIdleTimeout = 500 * time.Millisecond
	qc.KeepAlivePeriod = 200 * time.Millisecond
	conn, err := newClient(t, e, clientOptions{quic: qc, onClose: func(*nq.Conn, error, int) time.Duration {
		return nq.NoReconnect
	}}).Dial(ctx, f.addr)
	if err != nil {
		t.Fatal(err)
	}
	server := netip.MustParseAddr("192.0.2.1")
	e.net.Partition(netip.MustParseAddr("192.0.2.2"), server)
	e.net.Partition(netip.MustParseAddr("192.0.2.3"), server)
	mctx, mcancel := context.WithTimeout(ctx, 20*time.Second)
	defer mcancel()
	start := time.Now()
	err = conn.Migrate(mctx, netip.MustParseAddrPort("192.0.2.3:0"))
	if !errors.Is(err, nq.ErrConnLost) {
		t.Fatalf("Migrate over cut paths: %v, want ErrConnLost", err)
	}
	if mctx.Err() != nil {
		t.Fatalf("Migrate returned only at its ctx's deadline, after %v", time.Since(start))
	}
}
