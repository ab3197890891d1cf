package nq_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/internal/wire"
	"github.com/naquid/naquid/nq"
)

// rpcServer starts a kernel-UDP server on loopback serving h as protocol "rpc", and an echo as
// "echo".
func rpcServer(t *testing.T, h nq.RPCHandler) *nq.Server {
	t.Helper()
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", h); err != nil {
		t.Fatal(err)
	}
	if err := mux.HandleRPC("echo", nq.RPCHandler{OnRequest: func(req *nq.Request) { req.Reply(req.Payload) }}); err != nil {
		t.Fatal(err)
	}
	srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux}
	if err := srv.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// amplifyingServer starts a kernel-UDP server whose "rpc" protocol answers every request with
// 1 KiB.
func amplifyingServer(t *testing.T) (addr string) {
	t.Helper()
	reply := make([]byte, 1024)
	return rpcServer(t, nq.RPCHandler{OnRequest: func(req *nq.Request) { req.Reply(reply) }}).Addr().String()
}

// requests returns n request frames with msgids 1 to n, method 1 and payload.
func requests(n int, payload string) []byte {
	var b []byte
	for id := uint64(1); id <= uint64(n); id++ {
		b, _ = wire.AppendRequest(b, 1, id, []byte(payload))
	}
	return b
}

// writeBatch writes batch to s, allowing 5 s; it returns the bytes written and, when the peer
// has reset the stream, the code (reset true). Any other error fails the test.
func writeBatch(t *testing.T, s *quicgo.Stream, batch []byte) (n int, code wire.StreamCode, reset bool) {
	t.Helper()
	if err := s.SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := s.Write(batch)
	var se *quicgo.StreamError
	if errors.As(err, &se) {
		return n, wire.StreamCode(se.ErrorCode), true
	}
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	return n, 0, false
}

// writeUntilReset writes batch to s until the peer resets the stream, which must be with want,
// and returns the bytes written; -1 when limit bytes went without a reset. It allows 20 s.
func writeUntilReset(t *testing.T, s *quicgo.Stream, batch []byte, want wire.StreamCode, limit int) int {
	t.Helper()
	total := 0
	for deadline := time.Now().Add(20 * time.Second); total <= limit; {
		if time.Now().After(deadline) {
			t.Fatalf("no reset after %d bytes and 20 s", total)
		}
		n, code, reset := writeBatch(t, s, batch)
		total += n
		if reset {
			if code != want {
				t.Fatalf("stream reset with %v after %d bytes, want %v", code, total, want)
			}
			return total
		}
	}
	return -1
}

// TestStreamClosedStopsReading: when the server closes a stream (here: the peer sent
// STOP_SENDING, so the server's answers fail), it also stops reading it, and the peer's further
// writes fail instead of being read and discarded for ever.
func TestStreamClosedStopsReading(t *testing.T) {
	addr := amplifyingServer(t)
	qc := rawDial(t, addr)
	s := rawStream(t, qc, "rpc", nil)
	s.CancelRead(0x98) // STOP_SENDING: the server's first answer fails and it closes the stream
	batch := requests(1000, "ping")
	if total := writeUntilReset(t, s, batch, wire.StreamClosed, 64<<20); total < 0 {
		t.Fatal("the server kept reading a stream it had closed")
	}
}

// TestPeerNotReadingIsReset: a peer that sends requests and never reads the answers gets its
// stream reset with StreamNotReading once the server holds its bounded share of answers and
// held-back requests; before that the server stops running handlers (the answers it builds stay
// bounded however much the peer sends), and the connection's other streams keep working.
func TestPeerNotReadingIsReset(t *testing.T) {
	const replySize = 64 << 10
	reply := make([]byte, replySize)
	var handled atomic.Int64
	closed := make(chan error, 1)
	srv := rpcServer(t, nq.RPCHandler{
		OnRequest: func(req *nq.Request) {
			handled.Add(1)
			req.Reply(reply)
		},
		OnClose: func(_ *nq.RPCStream, err error) {
			select {
			case closed <- err:
			default:
			}
		},
	})
	qc := rawDial(t, srv.Addr().String())
	s := rawStream(t, qc, "rpc", nil)

	batch := requests(256, "map chunk")
	total := writeUntilReset(t, s, batch, wire.StreamNotReading, 64<<20)
	if total < 0 {
		t.Fatalf("no reset after 64 MiB of requests (%d handled)", handled.Load())
	}
	// The handlers that ran built at most the backlog limit (256 KiB), what the peer's flow
	// control window took (its initial stream window, 256 KiB with quic.ClientConfig: the peer
	// reads nothing, so it never grows; 512 KiB allowed here) and one answer past the limit;
	// allow twice that.
	if n := handled.Load(); n*replySize > 2*(256<<10+512<<10+replySize) {
		t.Errorf("%d requests handled (%d MiB of answers) for a peer that reads none", n, n*replySize>>20)
	}
	select {
	case err := <-closed:
		if !errors.Is(err, nq.ErrPeerNotReading) {
			t.Errorf("server's close hook saw %v, want ErrPeerNotReading", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server's close hook did not run")
	}
	if st := srv.Stats(); st.FramesHeld == 0 {
		t.Errorf("Stats().FramesHeld = 0 after requests were held back")
	}
	t.Logf("reset after %d bytes of requests, %d handled", total, handled.Load())

	// The connection's other streams still work.
	echo := rawStream(t, qc, "echo", nil)
	req, _ := wire.AppendRequest(nil, 1, 1, []byte("still here"))
	if _, err := echo.Write(req); err != nil {
		t.Fatal(err)
	}
	_ = echo.SetReadDeadline(time.Now().Add(5 * time.Second))
	var f wire.Frame
	buf := make([]byte, 0, 256)
	for {
		tmp := make([]byte, 256)
		n, err := echo.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if _, derr := f.Decode(buf, 1<<20); derr == nil {
			break
		}
		if err != nil {
			t.Fatalf("echo on another stream: %v", err)
		}
	}
	if f.Kind != wire.KindReply || string(f.Payload) != "still here" {
		t.Fatalf("echo answered %v %q", f.Kind, f.Payload)
	}
}

// TestHeldFramesBoundedPerConnection: what a peer's streams hold back counts against one budget
// per connection (4 MiB by default), so spreading the requests over several streams that read
// nothing does not multiply it: a stream is reset before the peer has written much more than
// the budget in all.
func TestHeldFramesBoundedPerConnection(t *testing.T) {
	addr := amplifyingServer(t)
	qc := rawDial(t, addr)
	const streams = 4
	var ss []*quicgo.Stream
	for range streams {
		ss = append(ss, rawStream(t, qc, "rpc", nil))
	}
	batch := requests(1024, "ping")
	total := 0
	deadline := time.Now().Add(20 * time.Second)
	for {
		for i, s := range ss {
			if time.Now().After(deadline) {
				t.Fatalf("no stream reset after %d bytes of requests on %d streams", total, streams)
			}
			n, code, reset := writeBatch(t, s, batch)
			total += n
			if reset {
				if code != wire.StreamNotReading {
					t.Fatalf("stream %d reset with %v, want StreamNotReading", i, code)
				}
				// Four streams each held to a per-stream budget would take 16 MiB; one budget
				// for the connection is reached at 4 MiB plus what each stream's answers
				// took before holding started (well under 1 MiB of requests each).
				if total > 8<<20 {
					t.Errorf("first reset after %d bytes of requests on %d streams, want under 8 MiB", total, streams)
				}
				return
			}
		}
	}
}

// TestHeldFramesReleasedOnClose: what a stream held back leaves the connection's budget when the
// stream ends, so a later stream of the same peer may hold as much again.
func TestHeldFramesReleasedOnClose(t *testing.T) {
	reply := make([]byte, 1024)
	closed := make(chan error, 4)
	srv := rpcServer(t, nq.RPCHandler{
		OnRequest: func(req *nq.Request) { req.Reply(reply) },
		OnClose:   func(_ *nq.RPCStream, err error) { closed <- err },
	})
	qc := rawDial(t, srv.Addr().String())

	const perBatch, batches = 1024, 380 // 9 bytes held a request (frame and flags): 3.3 MiB
	batch := requests(perBatch, "ping")
	// send writes the requests on a fresh stream and waits until the server has held at least
	// held frames in all (it holds all but the first few hundred of each stream).
	send := func(held uint64) *quicgo.Stream {
		s := rawStream(t, qc, "rpc", nil)
		for range batches {
			if err := s.SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Write(batch); err != nil {
				t.Fatalf("write: %v", err)
			}
		}
		for deadline := time.Now().Add(20 * time.Second); srv.Stats().FramesHeld < held; {
			select {
			case err := <-closed:
				t.Fatalf("stream closed while holding: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("the server held %d frames, want %d", srv.Stats().FramesHeld, held)
			}
			time.Sleep(time.Millisecond) // polling a counter: the server reads at its own pace
		}
		return s
	}
	const mostOfOneStream = perBatch * (batches - 2)
	a := send(mostOfOneStream)
	a.CancelWrite(0x99)
	a.CancelRead(0x99)
	select {
	case err := <-closed:
		if errors.Is(err, nq.ErrPeerNotReading) {
			t.Fatalf("first stream: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first stream did not close")
	}
	send(2 * mostOfOneStream) // would pass the budget if the first stream's frames still counted
}

// bigAnswerServer starts a kernel-UDP server whose "rpc" protocol answers every request with 64 KiB
// (so a peer that has not read yet gets its later requests held) and closes notified when a
// notification arrives.
func bigAnswerServer(t *testing.T) (srv *nq.Server, handled *atomic.Int64, notified chan struct{}) {
	t.Helper()
	reply := make([]byte, 64<<10)
	handled = new(atomic.Int64)
	notified = make(chan struct{})
	srv = rpcServer(t, nq.RPCHandler{
		OnRequest: func(req *nq.Request) {
			handled.Add(1)
			req.Reply(reply)
		},
		OnNotify: func(*nq.RPCStream, uint32, []byte) { close(notified) },
	})
	return srv, handled, notified
}

// countAnswers decodes the frames in b and counts the replies.
func countAnswers(t *testing.T, b []byte) int {
	t.Helper()
	n := 0
	var f wire.Frame
	for len(b) > 0 {
		used, err := f.Decode(b, 1<<20)
		if err != nil {
			t.Fatalf("answers: %v", err)
		}
		if f.Kind == wire.KindReply {
			n++
		}
		b = b[used:]
	}
	return n
}

// TestHeldFramesRunBeforeFIN: requests and a notification held back when the peer finished its
// side (FIN) still run, as the peer reads, before the stream closes: every request is answered.
func TestHeldFramesRunBeforeFIN(t *testing.T) {
	srv, handled, notified := bigAnswerServer(t)
	qc := rawDial(t, srv.Addr().String())
	const calls = 16 // 1 MiB of answers: past the peer's window and the 256 KiB backlog
	batch := requests(calls, "")
	batch = wire.AppendNotify(batch, 7, []byte("bye"))
	s := rawStream(t, qc, "rpc", batch)
	s.Close() // FIN
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("reading the answers: %v (%d of %d handled)", err, handled.Load(), calls)
	}
	if n := countAnswers(t, got); n != calls {
		t.Errorf("%d answers, want %d", n, calls)
	}
	select {
	case <-notified:
	default:
		t.Error("the notification sent before FIN never ran")
	}
	if srv.Stats().FramesHeld == 0 {
		t.Error("nothing was held: the test did not exercise the hold")
	}
}

// TestShutdownAnswersHeldRequests: Server.Shutdown waits for requests held back (they arrived
// before it) and they are answered, not refused.
func TestShutdownAnswersHeldRequests(t *testing.T) {
	srv, handled, _ := bigAnswerServer(t)
	qc := rawDial(t, srv.Addr().String())
	const calls = 16
	batch := requests(calls, "")
	s := rawStream(t, qc, "rpc", batch)
	for deadline := time.Now().Add(10 * time.Second); srv.Stats().FramesHeld == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("nothing held after 10 s (%d handled)", handled.Load())
		}
		time.Sleep(time.Millisecond) // polling a counter: the server reads at its own pace
	}
	read := make(chan []byte, 1)
	go func() {
		_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(s) // ends when the shutdown closes the connection
		read <- b
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := countAnswers(t, <-read); n != calls {
		t.Errorf("%d answers before the shutdown closed the connection, want %d (%d handled)", n, calls, handled.Load())
	}
}

// TestBigAnswersKeepOrder: a client that pipelines calls with large answers and notifications
// between them, and reads everything, makes the server's unsent output pass the backlog limit
// many times over; the server holds requests back meanwhile, and still every call is answered
// and every handler runs once, in the order the client sent them.
func TestBigAnswersKeepOrder(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		const (
			calls     = 48
			replySize = 256 << 10
		)
		reply := make([]byte, replySize)
		var mu sync.Mutex
		var order []uint32
		notified := make(chan struct{})
		mux := nq.NewMux()
		if err := mux.HandleRPC("rpc", nq.RPCHandler{
			OnRequest: func(req *nq.Request) {
				mu.Lock()
				order = append(order, req.Method)
				mu.Unlock()
				req.Reply(reply)
			},
			OnNotify: func(_ *nq.RPCStream, method uint32, _ []byte) {
				mu.Lock()
				order = append(order, method)
				mu.Unlock()
				if method == 2*calls-1 {
					close(notified)
				}
			},
		}); err != nil {
			t.Fatal(err)
		}
		addr := startEchoServer(t, e, mux, 0)
		c, err := newClient(t, e, clientOptions{}).Dial(context.Background(), addr)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		rs, err := c.RPC("rpc").Stream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			n   int
			err error
		}
		results := make(chan result, calls)
		var want []uint32
		for i := uint32(0); i < calls; i++ {
			if err := rs.Go(ctx, 2*i, nil, func(b []byte, err error) { results <- result{len(b), err} }); err != nil {
				t.Fatal(err)
			}
			if err := rs.Notify(2*i+1, nil); err != nil {
				t.Fatal(err)
			}
			want = append(want, 2*i, 2*i+1)
		}
		for i := range calls {
			select {
			case r := <-results:
				if r.err != nil || r.n != replySize {
					t.Fatalf("answer %d: %d bytes, %v", i, r.n, r.err)
				}
			case <-ctx.Done():
				t.Fatalf("%d of %d calls answered", i, calls)
			}
		}
		select {
		case <-notified:
		case <-ctx.Done():
			t.Fatal("the last notification's handler did not run")
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(order, want) {
			t.Fatalf("handlers ran in the order %v, want %v", order, want)
		}
	})
}

// readFrame reads from s until one whole frame has arrived after the bytes in buf, and returns
// it with the bytes left over.
func readFrame(t *testing.T, s *quicgo.Stream, buf []byte) (wire.Frame, []byte) {
	t.Helper()
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	tmp := make([]byte, 4096)
	for {
		var f wire.Frame
		if n, err := f.Decode(buf, 1<<20); err == nil {
			f.Payload = bytes.Clone(f.Payload)
			return f, buf[n:]
		}
		n, err := s.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil && n == 0 {
			t.Fatalf("reading a frame: %v", err)
		}
	}
}

// TestCallsFailAtPeerFINWhileHolding: when the peer finishes its side while the stream still
// holds its requests back (the stream stays open until they are answered), the stream's own
// pending calls fail at once: the peer will answer none.
func TestCallsFailAtPeerFINWhileHolding(t *testing.T) {
	reply := make([]byte, 64<<10)
	called := make(chan error, 1)
	started := make(chan struct{})
	var once sync.Once
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv := rpcServer(t, nq.RPCHandler{OnRequest: func(req *nq.Request) {
		once.Do(func() {
			if err := req.Stream().Go(ctx, 9, nil, func(_ []byte, err error) { called <- err }); err != nil {
				called <- err
			}
			close(started)
		})
		req.Reply(reply)
	}})
	qc := rawDial(t, srv.Addr().String())
	s := rawStream(t, qc, "rpc", requests(16, ""))
	<-started
	for deadline := time.Now().Add(10 * time.Second); srv.Stats().FramesHeld == 0; {
		if time.Now().After(deadline) {
			t.Fatal("nothing held after 10 s")
		}
		time.Sleep(time.Millisecond) // polling a counter: the server reads at its own pace
	}
	s.Close() // FIN, and still no reading
	select {
	case err := <-called:
		if !errors.Is(err, nq.ErrClosed) {
			t.Fatalf("the pending call failed with %v, want ErrClosed (the peer finished)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the pending call still waits 5 s after the peer finished")
	}
}

// TestHeldRequestsAfterShutdownRefused: requests held back since before a Server.Shutdown are
// served; those that arrived after it began are refused with CodeShuttingDown, as they would
// have been without the hold.
func TestHeldRequestsAfterShutdownRefused(t *testing.T) {
	srv, _, _ := bigAnswerServer(t)
	qc := rawDial(t, srv.Addr().String())
	const before, after = 16, 4
	s := rawStream(t, qc, "rpc", requests(before, ""))
	for deadline := time.Now().Add(10 * time.Second); srv.Stats().FramesHeld == 0; {
		if time.Now().After(deadline) {
			t.Fatal("nothing held after 10 s")
		}
		time.Sleep(time.Millisecond) // polling a counter: the server reads at its own pace
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	// Draining has begun once a fresh stream's request is refused.
	probe := rawStream(t, qc, "echo", nil)
	var pending []byte
	for id := uint64(1); ; id++ {
		if id > 1000 {
			t.Fatal("the server never started draining")
		}
		req, _ := wire.AppendRequest(nil, 1, id, nil)
		if _, err := probe.Write(req); err != nil {
			t.Fatal(err)
		}
		var f wire.Frame
		f, pending = readFrame(t, probe, pending)
		if f.Kind == wire.KindError {
			break
		}
	}
	var more []byte
	for id := uint64(before + 1); id <= before+after; id++ {
		more, _ = wire.AppendRequest(more, 1, id, nil)
	}
	if _, err := s.Write(more); err != nil {
		t.Fatal(err)
	}
	replies, refused := 0, 0
	var buf []byte
	for replies+refused < before+after {
		var f wire.Frame
		f, buf = readFrame(t, s, buf)
		switch f.Kind {
		case wire.KindReply:
			replies++
		case wire.KindError:
			if code, _, _, err := wire.ParseErrorPayload(f.Payload); err != nil || code != nq.CodeShuttingDown {
				t.Fatalf("error answer %d, %v; want CodeShuttingDown", code, err)
			}
			refused++
		}
	}
	if replies != before || refused != after {
		t.Errorf("%d replies and %d refusals, want %d and %d", replies, refused, before, after)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestNotificationNotHeldAlone: while a stream's output is backed up (the server pushes faster
// than the peer reads), the peer's notifications still run at once: only requests, and what
// follows a held request, are held.
func TestNotificationNotHeldAlone(t *testing.T) {
	push := make([]byte, 64<<10)
	pushed := make(chan struct{})
	notified := make(chan struct{})
	srv := rpcServer(t, nq.RPCHandler{
		OnRequest: func(req *nq.Request) {
			for i := range 16 { // 1 MiB the peer does not read
				req.Stream().Notify(uint32(i), push)
			}
			req.Reply(nil)
			close(pushed)
		},
		OnNotify: func(*nq.RPCStream, uint32, []byte) { close(notified) },
	})
	qc := rawDial(t, srv.Addr().String())
	s := rawStream(t, qc, "rpc", requests(1, ""))
	<-pushed
	if _, err := s.Write(wire.AppendNotify(nil, 5, []byte("input"))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-notified:
	case <-time.After(5 * time.Second):
		t.Fatal("the notification waits for the peer to read the server's pushes")
	}
}
