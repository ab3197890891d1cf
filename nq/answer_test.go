package nq_test

import (
	"context"
	"errors"
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
		srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux, Transport: e.serverFactory}
		if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := newClient(t, e, clientOptions{}).Dial(ctx, srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := conn.OpenRPC(ctx, "rpc")
		if err != nil {
			t.Fatal(err)
		}
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
