package nq_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
)

// TestFailOverFrameLimit: an error answer must fit the frame limit like a reply. A RemoteError
// over it is refused by Fail (ErrFrameTooLarge) and the request can still be answered; any other
// error's text is cut to fit. Neither breaks the stream for the other calls.
func TestFailOverFrameLimit(t *testing.T) {
	const limit = 1024
	forEachEnv(t, func(t *testing.T, e *env) {
		failed := make(chan error, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c := rpcServerConn(t, e, ctx, func(req *nq.Request) {
			switch req.Method {
			case 1: // an explicit RemoteError too large, then a small one
				err := req.Fail(&nq.RemoteError{Code: 7, Message: "big", Data: make([]byte, 2*limit)})
				failed <- err
				req.Fail(&nq.RemoteError{Code: 8, Message: "small"})
			case 2: // a plain error with a long text
				req.Fail(errors.New(strings.Repeat("é", 3*limit)))
			default:
				req.Reply(req.Payload)
			}
		}, limit)
		rpc := c.RPC("rpc")

		_, err := rpc.Call(ctx, 1, nil)
		var re *nq.RemoteError
		if !errors.As(err, &re) || re.Code != 8 {
			t.Fatalf("call 1: %v, want the small RemoteError (code 8)", err)
		}
		if err := <-failed; !errors.Is(err, nq.ErrFrameTooLarge) {
			t.Fatalf("Fail with a %d-byte RemoteError: %v, want ErrFrameTooLarge", 2*limit, err)
		}

		_, err = rpc.Call(ctx, 2, nil)
		if !errors.As(err, &re) || re.Code != nq.CodeUnhandled || len(re.Message) > limit || !strings.HasPrefix(re.Message, "éé") {
			t.Fatalf("call 2: %v, want CodeUnhandled with the text cut to %d bytes", err, limit)
		}
		if strings.ContainsRune(re.Message, '\uFFFD') {
			t.Fatalf("call 2: the text was cut inside a character: %q", re.Message[len(re.Message)-4:])
		}

		if reply, err := rpc.Call(ctx, 3, []byte("still works")); err != nil || string(reply) != "still works" {
			t.Fatalf("call 3 after the failures: %q, %v", reply, err)
		}
	})
}
