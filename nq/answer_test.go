package nq_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
)

// TestAnswerOnce: many goroutines race to answer each request with Reply or Fail; exactly one
// wins, the others get ErrAnswered, the caller sees exactly that one answer, and the server's
// in-flight gauge returns to zero.
func TestAnswerOnce(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		const racers, requests = 8, 50
		results := make(chan []error, requests)
		mux := nq.NewMux()
		if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(req *nq.Request) {
			go func() {
				errs := make([]error, racers)
				var wg sync.WaitGroup
				start := make(chan struct{})
				for i := range racers {
					wg.Go(func() {
						<-start
						if i%2 == 0 {
							errs[i] = req.Reply([]byte{byte(i)})
						} else {
							errs[i] = req.Fail(&nq.RemoteError{Code: int64(i), Message: "racer"})
						}
					})
				}
				close(start)
				wg.Wait()
				results <- errs
			}()
		}}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		srv, s := serveAndOpenRPC(ctx, t, e, mux)
		for n := range requests {
			reply, err := s.Call(ctx, 1, nil)
			var re *nq.RemoteError
			switch {
			case err == nil:
				if len(reply) != 1 || reply[0]%2 != 0 {
					t.Fatalf("request %d: reply %v, want one byte from an even racer", n, reply)
				}
			case errors.As(err, &re):
				if re.Code%2 != 1 || re.Message != "racer" {
					t.Fatalf("request %d: %v, want a racer's error", n, re)
				}
			default:
				t.Fatalf("request %d: %v", n, err)
			}
			errs := waitFor(t, results, 10*time.Second, "the racers")
			won := 0
			for i, err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.Is(err, nq.ErrAnswered):
					t.Fatalf("request %d, racer %d: %v, want nil or ErrAnswered", n, i, err)
				}
			}
			if won != 1 {
				t.Fatalf("request %d answered %d times", n, won)
			}
		}
		if got := srv.Stats().InFlight; got != 0 {
			t.Fatalf("server InFlight %d after every request was answered, want 0", got)
		}
	})
}

// serveAndOpenRPC starts a server on e serving mux, dials it and opens an "rpc" stream; ctx
// bounds the dial and the open.
func serveAndOpenRPC(ctx context.Context, t *testing.T, e *env, mux *nq.Mux) (*nq.Server, *nq.RPCStream) {
	t.Helper()
	srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux, Transport: e.serverFactory}
	if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	conn, err := newClient(t, e, clientOptions{}).Dial(ctx, srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := conn.OpenRPC(ctx, "rpc")
	if err != nil {
		t.Fatal(err)
	}
	return srv, s
}

// TestReuseRequests: with RPCHandler.ReuseRequests, a Request answered before its handler
// returned is handed to the handler again for a later request, with that request's fields; one
// still unanswered when the handler returns is never handed out again, and answering it later
// still works. Without the option every request gets its own record.
func TestReuseRequests(t *testing.T) {
	const methodLater = 7 // answered from another goroutine once the test releases it
	for _, reuse := range []bool{true, false} {
		t.Run(map[bool]string{true: "reuse", false: "default"}[reuse], func(t *testing.T) {
			e := envs(t)[1](t) // memconn
			var mu sync.Mutex
			uses := map[*nq.Request][]uint32{} // the methods of the requests each record carried
			release := make(chan struct{})
			mux := nq.NewMux()
			if err := mux.HandleRPC("rpc", nq.RPCHandler{ReuseRequests: reuse, OnRequest: func(req *nq.Request) {
				mu.Lock()
				uses[req] = append(uses[req], req.Method)
				mu.Unlock()
				if req.Method == methodLater {
					payload := append([]byte(nil), req.Payload...)
					go func() {
						<-release
						req.Reply(payload)
					}()
					return
				}
				req.Reply(req.Payload)
			}}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, s := serveAndOpenRPC(ctx, t, e, mux)
			const calls, everyLater = 200, 10
			laterDone := make(chan error, calls/everyLater)
			for i := range calls {
				want := []byte{byte(i), byte(i >> 8)}
				if i%everyLater == 3 {
					if err := s.Go(ctx, methodLater, want, func(reply []byte, err error) {
						if err == nil && string(reply) != string(want) {
							err = fmt.Errorf("reply %v, want %v", reply, want)
						}
						laterDone <- err
					}); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if reply, err := s.Call(ctx, 1, want); err != nil || string(reply) != string(want) {
					t.Fatalf("call %d: %v, %v; want the payload back", i, reply, err)
				}
			}
			close(release)
			for range calls / everyLater {
				if err := waitFor(t, laterDone, 10*time.Second, "a late answer"); err != nil {
					t.Fatalf("late answer: %v", err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, methods := range uses {
				for i, m := range methods[:len(methods)-1] {
					if m == methodLater {
						t.Fatalf("a record unanswered when its handler returned was handed out again (use %d of %v)", i, methods)
					}
				}
			}
			if reuse && len(uses) > calls/everyLater+1 {
				t.Errorf("%d records for %d requests: records answered inline were not reused", len(uses), calls)
			}
			if !reuse && len(uses) != calls {
				t.Errorf("%d records for %d requests, want one each", len(uses), calls)
			}
		})
	}
}
