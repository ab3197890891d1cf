package nq_test

import (
	"context"
	"errors"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/internal/wire"
	"github.com/naquid/naquid/nq"
)

// amplifyingServer starts a kernel-UDP server whose "rpc" protocol answers every request with
// 1 KiB.
func amplifyingServer(t *testing.T) (addr string) {
	t.Helper()
	reply := make([]byte, 1024)
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(req *nq.Request) {
		req.Reply(reply)
	}}); err != nil {
		t.Fatal(err)
	}
	srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux}
	if err := srv.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.Addr().String()
}

// TestStreamClosedStopsReading: when the server closes a stream (here: the peer sent
// STOP_SENDING, so the server's answers fail), it also stops reading it, and the peer's further
// writes fail instead of being read and discarded for ever.
func TestStreamClosedStopsReading(t *testing.T) {
	addr := amplifyingServer(t)
	qc := rawDial(t, addr)
	s := rawStream(t, qc, "rpc", nil)
	s.CancelRead(0x98) // STOP_SENDING: the server's first answer fails and it closes the stream
	var batch []byte
	for id := uint64(1); id <= 1000; id++ {
		batch, _ = wire.AppendRequest(batch, 1, id, []byte("ping"))
	}
	total := 0
	for deadline := time.Now().Add(10 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatalf("the peer still writes to a stream the server closed, %d bytes later", total)
		}
		if err := s.SetWriteDeadline(time.Now().Add(2 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, err := s.Write(batch)
		total += n
		var se *quicgo.StreamError
		if errors.As(err, &se) {
			if wire.StreamCode(se.ErrorCode) != wire.StreamClosed {
				t.Fatalf("stream ended with code %d, want StreamClosed", se.ErrorCode)
			}
			return
		}
		if err != nil {
			t.Fatalf("write: %v", err)
		}
		if total > 64<<20 {
			t.Fatalf("the server kept reading a stream it had closed: %d bytes", total)
		}
	}
}
