package nq_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
)

// openedStream returns a hook that hands the stream it sees to a channel, and the channel.
func openedStream[S any]() (func(S) error, chan S) {
	ch := make(chan S, 1)
	return func(s S) error {
		ch <- s
		return nil
	}, ch
}

// pushUntilFull calls send until it fails (at most max times) and returns the number of sends
// that succeeded and the error.
func pushUntilFull(max int, send func() error) (int, error) {
	for i := range max {
		if err := send(); err != nil {
			return i, err
		}
	}
	return max, nil
}

// TestNotifyBacklogFull: a server pushing notifications to a client that reads nothing gets
// ErrBacklogFull once the stream's unsent output reaches MaxUnsent (calls too), without losing
// the stream; once the client has read everything, pushes go through again. A negative bound
// lets the output grow.
func TestNotifyBacklogFull(t *testing.T) {
	const chunk = 64 << 10
	payload := make([]byte, chunk)
	for _, tc := range []struct {
		name  string
		max   int
		bound int // 0: no bound expected within 2x the default
	}{
		{"default", 0, nq.DefaultMaxUnsent},
		{"256 KiB", 256 << 10, 256 << 10},
		{"no bound", -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			onOpen, opened := openedStream[*nq.RPCStream]()
			srv := rpcServer(t, nq.RPCHandler{OnOpen: onOpen, MaxUnsent: tc.max})
			qc := rawDial(t, srv.Addr().String())
			c := rawStream(t, qc, "rpc", nil) // reads nothing for now
			s := waitFor(t, opened, 5*time.Second, "the server's stream")

			// Past the peer's flow-control window (256 KiB) output waits in the stream.
			limit := 2 * nq.DefaultMaxUnsent / chunk
			sent, err := pushUntilFull(limit, func() error { return s.Notify(1, payload) })
			if tc.bound == 0 {
				if err != nil {
					t.Fatalf("Notify %d failed without a bound: %v", sent, err)
				}
				if s.Unsent() < nq.DefaultMaxUnsent {
					t.Fatalf("Unsent() = %d after %d notifications", s.Unsent(), sent)
				}
				return
			}
			if !errors.Is(err, nq.ErrBacklogFull) {
				t.Fatalf("after %d notifications: %v, want ErrBacklogFull", sent, err)
			}
			if u := s.Unsent(); u < tc.bound || u >= tc.bound+chunk+64 {
				t.Errorf("Unsent() = %d at ErrBacklogFull, want the bound %d plus at most one frame", u, tc.bound)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := s.Call(ctx, 1, []byte("x")); !errors.Is(err, nq.ErrBacklogFull) {
				t.Errorf("Call at the bound: %v, want ErrBacklogFull", err)
			}
			if err := s.Err(); err != nil {
				t.Fatalf("the stream ended: %v", err)
			}

			// The client catches up: pushes go through again.
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = io.Copy(io.Discard, c) // until the stream's read side is cancelled below
			}()
			defer func() {
				c.CancelRead(0)
				<-done
			}()
			if !eventually(20*time.Second, func() bool { return s.Unsent() == 0 }) {
				t.Fatalf("Unsent() = %d after the client read", s.Unsent())
			}
			if err := s.Notify(1, payload); err != nil {
				t.Fatalf("Notify after the client caught up: %v", err)
			}
		})
	}
}

// TestRecordSendBacklogFull: record sends are bounded the same way.
func TestRecordSendBacklogFull(t *testing.T) {
	onOpen, opened := openedStream[*nq.RecordStream[[]byte]]()
	mux := nq.NewMux()
	if err := nq.HandleRecords(mux, "rec", nq.Bytes{}, nq.RecordHandler[[]byte]{OnOpen: onOpen, MaxUnsent: 128 << 10}); err != nil {
		t.Fatal(err)
	}
	srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux}
	if err := srv.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	qc := rawDial(t, srv.Addr().String())
	rawStream(t, qc, "rec", nil)
	s := waitFor(t, opened, 5*time.Second, "the server's stream")
	record := make([]byte, 32<<10)
	sent, err := pushUntilFull(1000, func() error { return s.Send(record) })
	if !errors.Is(err, nq.ErrBacklogFull) {
		t.Fatalf("after %d records: %v, want ErrBacklogFull", sent, err)
	}
	if u := s.Unsent(); u < 128<<10 {
		t.Errorf("Unsent() = %d at ErrBacklogFull, want at least the bound", u)
	}
}
