package nq_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/naquid/naquid/internal/wire"
	"github.com/naquid/naquid/nq"
)

// keeper is a handler that keeps every request to answer later, as a game server answering
// from its tick does, and records the order the requests reached it in.
type keeper struct {
	mu     sync.Mutex
	n      int      // requests seen
	kept   []kept   // not answered yet, oldest first
	order  []uint64 // the 8-byte payloads (big-endian indices), in arrival order
	arrive chan struct{}
}

// kept is a request kept for later, with a copy of its payload (valid only during the handler).
type kept struct {
	req     *nq.Request
	payload []byte
}

func newKeeper() *keeper { return &keeper{arrive: make(chan struct{}, 1)} }

func (k *keeper) onRequest(req *nq.Request) {
	k.mu.Lock()
	k.n++
	k.kept = append(k.kept, kept{req, append([]byte(nil), req.Payload...)})
	if len(req.Payload) == 8 {
		k.order = append(k.order, binary.BigEndian.Uint64(req.Payload))
	}
	k.mu.Unlock()
	select {
	case k.arrive <- struct{}{}:
	default:
	}
}

// dispatched returns how many requests the handler has seen.
func (k *keeper) dispatched() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.n
}

// answerOne answers the oldest kept request with its payload, waiting (5 s at most) for one to
// arrive; it reports whether it answered.
func (k *keeper) answerOne(t *testing.T) bool {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		k.mu.Lock()
		if len(k.kept) > 0 {
			next := k.kept[0]
			k.kept = k.kept[1:]
			k.mu.Unlock()
			if err := next.req.Reply(next.payload); err != nil {
				t.Fatalf("Reply: %v", err)
			}
			return true
		}
		k.mu.Unlock()
		select {
		case <-k.arrive:
		case <-deadline:
			return false
		}
	}
}

// TestUnansweredRequestsBounded: requests the handler keeps unanswered count against
// RPCHandler.MaxUnanswered; past it, the stream's further requests wait (held, counted in
// FramesHeld) and each answer lets the next one in, in order, until every call is answered.
// A negative bound dispatches everything at once.
func TestUnansweredRequestsBounded(t *testing.T) {
	for _, tc := range []struct {
		name  string
		max   int
		calls int
		bound int // requests dispatched before the first answer; calls for no bound
	}{
		{"bound 4", 4, 40, 4},
		{"default", 0, nq.DefaultMaxUnanswered + 100, nq.DefaultMaxUnanswered},
		{"no bound", -1, nq.DefaultMaxUnanswered + 100, nq.DefaultMaxUnanswered + 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newKeeper()
			srv := rpcServer(t, nq.RPCHandler{OnRequest: k.onRequest, MaxUnanswered: tc.max})
			cl := newClient(t, &env{name: "udp"}, clientOptions{})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			c, err := cl.Dial(ctx, srv.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			rpc := c.RPC("rpc")
			results := make(chan error, tc.calls)
			for i := range tc.calls {
				want := be64(uint64(i))
				if err := rpc.Go(ctx, 1, want, func(reply []byte, err error) {
					if err == nil && string(reply) != string(want) {
						err = fmt.Errorf("call %d answered %x", i, reply)
					}
					results <- err
				}); err != nil {
					t.Fatal(err)
				}
			}
			// The first bound requests reach the handler; the rest are held back.
			held := uint64(tc.calls - tc.bound)
			if !eventually(20*time.Second, func() bool {
				return k.dispatched() == tc.bound && srv.Stats().FramesHeld >= held
			}) {
				t.Fatalf("%d requests dispatched, %d held; want %d dispatched, %d held",
					k.dispatched(), srv.Stats().FramesHeld, tc.bound, held)
			}
			if held > 0 && k.dispatched() != tc.bound {
				t.Fatalf("%d requests dispatched with %d held, want %d", k.dispatched(), held, tc.bound)
			}
			// Each answer lets the next held request in, and only that one.
			for i := range tc.calls {
				if !k.answerOne(t) {
					t.Fatalf("request %d never reached the handler (%d dispatched)", i, k.dispatched())
				}
				if n := k.dispatched(); n > tc.bound+i+1 {
					t.Fatalf("%d requests dispatched after %d answers, want at most %d", n, i+1, tc.bound+i+1)
				}
			}
			for range tc.calls {
				if err := <-results; err != nil {
					t.Fatal(err)
				}
			}
			k.mu.Lock()
			defer k.mu.Unlock()
			for i, v := range k.order {
				if v != uint64(i) {
					t.Fatalf("request %d reached the handler as number %d", v, i)
				}
			}
		})
	}
}

// TestTooManyRequestsIsReset: a peer that keeps sending requests while the handler holds its
// bound of them unanswered has the stream reset with StreamTooManyRequests once the connection
// holds its budget of requests; the handler saw only its bound, and the close hook sees
// ErrTooManyRequests.
func TestTooManyRequestsIsReset(t *testing.T) {
	k := newKeeper()
	closed := make(chan error, 1)
	srv := rpcServer(t, nq.RPCHandler{
		OnRequest:     k.onRequest,
		MaxUnanswered: 2,
		OnClose:       func(_ *nq.RPCStream, err error) { closed <- err },
	})
	qc := rawDial(t, srv.Addr().String())
	s := rawStream(t, qc, "rpc", nil)
	total := writeUntilReset(t, s, requests(1024, "ping"), wire.StreamTooManyRequests, 64<<20)
	if total < 0 {
		t.Fatal("no reset after 64 MiB of requests")
	}
	// A held request costs its frame and a flag byte: 9 bytes for 8 written, so the 4 MiB
	// budget is reached after about 3.6 MiB of requests.
	if total < 3<<20 {
		t.Errorf("reset after %d bytes of requests, well before the connection's 4 MiB budget", total)
	}
	if n := k.dispatched(); n != 2 {
		t.Errorf("%d requests reached the handler, want its bound of 2", n)
	}
	select {
	case err := <-closed:
		if !errors.Is(err, nq.ErrTooManyRequests) {
			t.Errorf("close hook saw %v, want ErrTooManyRequests", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the close hook did not run")
	}
}

// TestTooManyRequestsFailsCalls: an nq client whose calls pile up past what the server holds for
// a stream whose handler answers none sees its calls fail with ErrTooManyRequests.
func TestTooManyRequestsFailsCalls(t *testing.T) {
	k := newKeeper()
	srv := rpcServer(t, nq.RPCHandler{OnRequest: k.onRequest, MaxUnanswered: 1})
	cl := newClient(t, &env{name: "udp"}, clientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := cl.Dial(ctx, srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	rpc := c.RPC("rpc")
	payload := make([]byte, 64<<10)
	const calls = 100 // 6.4 MiB: past the server's 4 MiB budget for held requests
	results := make(chan error, calls)
	for range calls {
		if err := rpc.Go(ctx, 1, payload, func(_ []byte, err error) { results <- err }); err != nil {
			if errors.Is(err, nq.ErrTooManyRequests) {
				results <- err
				continue
			}
			t.Fatal(err)
		}
	}
	for range calls {
		err := <-results
		if !errors.Is(err, nq.ErrTooManyRequests) {
			t.Fatalf("call ended with %v, want ErrTooManyRequests", err)
		}
	}
}

// TestAnswersAfterPeerFIN: when the peer finishes its side, the requests the handler keeps to
// answer later are still answered before this side's FIN, including those held back for the
// unanswered bound (they reach the handler one per answer).
func TestAnswersAfterPeerFIN(t *testing.T) {
	for _, tc := range []struct {
		name string
		max  int
	}{{"bound 2", 2}, {"no bound", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			k := newKeeper()
			srv := rpcServer(t, nq.RPCHandler{OnRequest: k.onRequest, MaxUnanswered: tc.max})
			qc := rawDial(t, srv.Addr().String())
			const calls = 8
			s := rawStream(t, qc, "rpc", requests(calls, "tick"))
			s.Close() // FIN
			for i := range calls {
				if !k.answerOne(t) {
					t.Fatalf("request %d never reached the handler", i)
				}
			}
			_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(s)
			if err != nil {
				t.Fatalf("reading the answers: %v", err)
			}
			if n := countAnswers(t, got); n != calls {
				t.Errorf("%d answers, want %d", n, calls)
			}
		})
	}
}

// TestCloseWhileAwaitingAnswers: a stream whose peer finished while requests are still
// unanswered (a handler that never answers) does not keep the server from closing.
func TestCloseWhileAwaitingAnswers(t *testing.T) {
	k := newKeeper()
	srv := rpcServer(t, nq.RPCHandler{OnRequest: k.onRequest})
	qc := rawDial(t, srv.Addr().String())
	s := rawStream(t, qc, "rpc", requests(1, "never answered"))
	s.Close() // FIN
	select {
	case <-k.arrive:
	case <-time.After(5 * time.Second):
		t.Fatal("the request never reached the handler")
	}
	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Server.Close waits for a request its handler never answers")
	}
}

// TestPeerCloseEndsAwaitingStream: a peer that closes its stream altogether (FIN and
// STOP_SENDING, as RPCStream.Close does) while a request is unanswered ends the stream at once:
// no answer can reach it, so the request's context ends, and Shutdown does not wait for it.
func TestPeerCloseEndsAwaitingStream(t *testing.T) {
	gaveUp := make(chan struct{})
	srv := rpcServer(t, nq.RPCHandler{OnRequest: func(req *nq.Request) {
		go func() {
			<-req.Context().Done() // a long poll that gives up when its stream ends
			close(gaveUp)
		}()
	}})
	qc := rawDial(t, srv.Addr().String())
	s := rawStream(t, qc, "rpc", requests(1, "long poll"))
	s.CancelRead(0x99) // STOP_SENDING
	s.Close()          // FIN
	select {
	case <-gaveUp:
	case <-time.After(5 * time.Second):
		t.Fatal("the request's context did not end after the peer closed its stream")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
