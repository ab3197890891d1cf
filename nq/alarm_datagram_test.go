package nq_test

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
)

// TestAlarmNeverFiresAfterClose: an alarm whose stream closed before it was due never fires; a
// control alarm on the connection, due later, proves the time has passed.
func TestAlarmNeverFiresAfterClose(t *testing.T) {
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
		var fired atomic.Bool
		a := s.AfterFunc(50*time.Millisecond, func() { fired.Store(true) })
		s.Close()
		<-s.Done()
		if a.Reset(10 * time.Millisecond) {
			t.Error("Reset re-armed an alarm whose stream had closed")
		}
		control := make(chan struct{})
		conn.AfterFunc(200*time.Millisecond, func() { close(control) })
		waitFor(t, control, 5*time.Second, "the control alarm")
		if fired.Load() {
			t.Fatal("an alarm fired after its stream closed")
		}

		// Stop and Reset on a live alarm.
		ran := make(chan string, 2)
		b := conn.AfterFunc(time.Hour, func() { ran <- "b" })
		if !b.Reset(10 * time.Millisecond) {
			t.Fatal("Reset of a pending alarm reported it inactive")
		}
		if got := waitFor(t, ran, 5*time.Second, "the reset alarm"); got != "b" {
			t.Fatal(got)
		}
		c := conn.AfterFunc(time.Hour, func() { ran <- "c" })
		if !c.Stop() || c.Stop() {
			t.Fatal("Stop should report true once, then false")
		}
	})
}

// TestDatagrams: datagrams flow both ways, survive a reconnect of the client Conn without
// re-registering anything, and a datagram too large for the path fails with a typed error.
func TestDatagrams(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		srv := &nq.Server{
			TLS:       certs(t).ServerTLS(),
			Transport: e.serverFactory,
			OnDatagram: func(c *nq.Conn, p []byte) {
				c.SendDatagram(append([]byte("echo:"), p...))
			},
		}
		if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		got := make(chan string, 64)
		opened := make(chan uint64, 4)
		cl := newClient(t, e, clientOptions{
			onOpen:  func(c *nq.Conn) { opened <- c.Generation() },
			onClose: func(*nq.Conn, error, int) time.Duration { return 0 },
		})
		cl.OnDatagram = func(_ *nq.Conn, p []byte) { got <- string(p) }
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := cl.Dial(ctx, srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, opened, 5*time.Second, "generation 1")
		// Datagrams are unreliable: send until one comes back (loopback rarely drops any).
		roundTrip := func(msg string) {
			t.Helper()
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for range 100 {
				if err := conn.SendDatagram([]byte(msg)); err != nil {
					t.Fatalf("send %q: %v", msg, err)
				}
				select {
				case g := <-got:
					if g != "echo:"+msg {
						t.Fatalf("datagram %q, want %q", g, "echo:"+msg)
					}
					return
				case <-tick.C:
				}
			}
			t.Fatalf("no echo of %q", msg)
		}
		roundTrip("hello")
		var tl *nq.DatagramTooLargeError
		if err := conn.SendDatagram(bytes.Repeat([]byte("x"), 64<<10)); !errors.As(err, &tl) || tl.Max <= 0 || tl.Size != 64<<10 {
			t.Fatalf("oversized datagram: %v, want *DatagramTooLargeError", err)
		}

		conn.Reset()
		if g := waitFor(t, opened, 5*time.Second, "generation 2"); g != 2 {
			t.Fatalf("reopened as generation %d", g)
		}
		for len(got) > 0 {
			<-got
		}
		roundTrip("after reconnect")
	})
}

// TestConnAlarmLifetime: a client Conn's alarm survives a reconnect and fires; an alarm of a
// client Conn that was closed, or of a server Conn that was closed, never fires, and Reset
// cannot re-arm it.
func TestConnAlarmLifetime(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		serverConns := make(chan *nq.Conn, 4)
		serverClosed := make(chan *nq.Conn, 4)
		srv := &nq.Server{
			TLS:       certs(t).ServerTLS(),
			Transport: e.serverFactory,
			OnOpen:    func(c *nq.Conn) error { serverConns <- c; return nil },
			OnClose:   func(c *nq.Conn, _ error) { serverClosed <- c },
		}
		if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		opened := make(chan uint64, 4)
		cl := newClient(t, e, clientOptions{
			onOpen:  func(c *nq.Conn) { opened <- c.Generation() },
			onClose: func(*nq.Conn, error, int) time.Duration { return 0 },
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := cl.Dial(ctx, srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, opened, 5*time.Second, "generation 1")
		first := waitFor(t, serverConns, 5*time.Second, "the server's first connection")

		// A client Conn's alarm belongs to the Conn, not to one connection generation.
		survivor := make(chan struct{})
		conn.AfterFunc(100*time.Millisecond, func() { close(survivor) })
		conn.Reset()
		if g := waitFor(t, opened, 5*time.Second, "generation 2"); g != 2 {
			t.Fatalf("reopened as generation %d, want 2", g)
		}
		waitFor(t, survivor, 5*time.Second, "the alarm set before the reconnect")
		waitFor(t, serverClosed, 5*time.Second, "the server's first connection to close")
		second := waitFor(t, serverConns, 5*time.Second, "the server's second connection")

		// The first server Conn has ended: its alarms never fire and cannot be re-armed.
		var firedServer, firedClient atomic.Bool
		if a := first.AfterFunc(time.Millisecond, func() { firedServer.Store(true) }); a.Reset(time.Millisecond) {
			t.Error("Reset reported an alarm of a closed server Conn active")
		}
		// A server Conn closed while its alarm is pending.
		sa := second.AfterFunc(50*time.Millisecond, func() { firedServer.Store(true) })
		second.Close()
		waitFor(t, serverClosed, 5*time.Second, "the server's second connection to close")
		// A client Conn closed while its alarm is pending.
		waitFor(t, opened, 5*time.Second, "generation 3 (the client reconnects after the server's close)")
		ca := conn.AfterFunc(50*time.Millisecond, func() { firedClient.Store(true) })
		conn.Close()
		waitFor(t, conn.Done(), 5*time.Second, "the client Conn to end")
		if sa.Reset(time.Millisecond) || ca.Reset(time.Millisecond) {
			t.Error("Reset re-armed an alarm whose Conn had ended")
		}
		// No event marks an alarm that does not fire: wait past every due time.
		past := make(chan struct{})
		time.AfterFunc(250*time.Millisecond, func() { close(past) })
		waitFor(t, past, 5*time.Second, "the control timer")
		if firedServer.Load() {
			t.Error("an alarm of a closed server Conn fired")
		}
		if firedClient.Load() {
			t.Error("an alarm of a closed client Conn fired")
		}
	})
}
