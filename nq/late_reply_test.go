package nq_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
)

// TestLateReplyAfterIDReuse: a call abandoned while the server still works on it (its ctx
// deadline passed) keeps its message id out of use, so the server's late answer cannot complete
// a newer call that would otherwise reuse the id once ids wrap (after 16383 calls).
func TestLateReplyAfterIDReuse(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		const slow = 7
		held := make(chan *nq.Request, 2)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c := rpcServerConn(t, e, ctx, func(req *nq.Request) {
			if req.Method == slow {
				held <- req // answered later, by the test
				return
			}
			req.Reply(req.Payload)
		}, 0)
		s, err := c.RPC("rpc").Stream(ctx)
		if err != nil {
			t.Fatal(err)
		}

		// Call A is abandoned at its ctx deadline while the server holds it.
		actx, acancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err = s.Call(actx, slow, []byte("A"))
		acancel()
		if !errors.Is(err, nq.ErrTimeout) {
			t.Fatalf("call A: %v, want ErrTimeout", err)
		}
		reqA := <-held

		// Ids are given in sequence from 1 and wrap after 16383: A took 1, these calls take 2 to
		// 16383 (256 in flight at a time), and the slow calls B1 and B2 come next: without the
		// quarantine of abandoned ids, B1 would get A's id.
		const calls, window = 1<<14 - 2, 256
		done := make(chan error, window)
		for i := range calls {
			if i >= window {
				if err := <-done; err != nil {
					t.Fatalf("call %d: %v", i-window, err)
				}
			}
			if err := s.Go(ctx, 1, nil, func(_ []byte, err error) { done <- err }); err != nil {
				t.Fatal(err)
			}
		}
		for range window {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}

		type result struct {
			reply []byte
			err   error
		}
		var got [2]chan result
		var reqB [2]*nq.Request
		for i := range got {
			got[i] = make(chan result, 1)
			go func() {
				b, err := s.Call(ctx, slow, []byte("B"))
				got[i] <- result{b, err}
			}()
			reqB[i] = <-held
		}
		if err := reqA.Reply([]byte("answer to A")); err != nil {
			t.Fatal(err)
		}
		// A round trip after A's answer was sent: it has arrived, and was dropped or misdelivered.
		if _, err := s.Call(ctx, 1, nil); err != nil {
			t.Fatal(err)
		}
		for i := range got {
			select {
			case r := <-got[i]:
				t.Fatalf("call B%d completed before its answer was sent: %q, %v", i+1, r.reply, r.err)
			default:
			}
			if err := reqB[i].Reply([]byte("answer to B")); err != nil {
				t.Fatal(err)
			}
			if r := <-got[i]; r.err != nil || string(r.reply) != "answer to B" {
				t.Fatalf("call B%d: %q, %v; want \"answer to B\"", i+1, r.reply, r.err)
			}
		}
	})
}
