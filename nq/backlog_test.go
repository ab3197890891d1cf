package nq_test

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/internal/wire"
	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/quic"
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

// frameCounter reads a raw stream, once started, and counts the frames of each kind; it stops
// when the stream's read side is cancelled (stop).
type frameCounter struct {
	s       *quicgo.Stream
	notify  atomic.Int64
	records atomic.Int64 // length-prefixed records, for a record stream
	done    chan struct{}
}

// start begins reading; records says the stream carries records rather than RPC frames.
func (fc *frameCounter) start(records bool) {
	fc.done = make(chan struct{})
	go func() {
		defer close(fc.done)
		var buf []byte
		tmp := make([]byte, 64<<10)
		for {
			n, err := fc.s.Read(tmp)
			buf = append(buf, tmp[:n]...)
			for {
				used := 0
				if records {
					_, k, rerr := wire.ParseRecord(buf, 1<<20)
					if rerr != nil {
						break
					}
					used = k
					fc.records.Add(1)
				} else {
					var f wire.Frame
					k, ferr := f.Decode(buf, 1<<20)
					if ferr != nil {
						break
					}
					used = k
					if f.Kind == wire.KindNotify {
						fc.notify.Add(1)
					}
				}
				buf = buf[used:]
			}
			if err != nil {
				return
			}
		}
	}()
}

func (fc *frameCounter) stop() {
	fc.s.CancelRead(0)
	<-fc.done
}

// TestNotifyBacklogFull: a server pushing notifications to a client that reads nothing gets
// ErrBacklogFull once the output waiting for the client reaches MaxUnsent, without losing the
// stream and without sending the refused ones; calls are not refused; once the client has read
// everything, pushes go through again. A negative bound lets the output grow.
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
			fc := &frameCounter{s: rawStream(t, qc, "rpc", nil)} // reads nothing for now
			s := waitFor(t, opened, 5*time.Second, "the server's stream")

			// Past the peer's flow-control window (256 KiB) output waits in the stream.
			sent, err := pushUntilFull(2*nq.DefaultMaxUnsent/chunk, func() error { return s.Notify(1, payload) })
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
			if err := s.Err(); err != nil {
				t.Fatalf("the stream ended: %v", err)
			}
			// A call is not refused (it waits for its answer, which this client never gives).
			ctx, cancel := context.WithCancel(context.Background())
			answered := make(chan error, 1)
			if err := s.Go(ctx, 1, []byte("x"), func(_ []byte, err error) { answered <- err }); err != nil {
				t.Fatalf("Go at the bound: %v", err)
			}
			cancel()
			if err := waitFor(t, answered, 5*time.Second, "the cancelled call"); !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled call ended with %v", err)
			}

			// The client catches up: it gets exactly the notifications that were accepted, and
			// pushes go through again.
			fc.start(false)
			defer fc.stop()
			if !eventually(20*time.Second, func() bool { return s.Unsent() == 0 && fc.notify.Load() == int64(sent) }) {
				t.Fatalf("Unsent() = %d and %d of %d notifications received after the client read", s.Unsent(), fc.notify.Load(), sent)
			}
			if err := s.Notify(1, payload); err != nil {
				t.Fatalf("Notify after the client caught up: %v", err)
			}
			if !eventually(10*time.Second, func() bool { return fc.notify.Load() == int64(sent+1) }) {
				t.Fatalf("%d notifications received, want %d", fc.notify.Load(), sent+1)
			}
		})
	}
}

// TestUnsentFollowsReading: Unsent drops as the client reads, before all that waited has gone
// (a stalled stream's output is handed to quic-go piece by piece), so a game loop that looks at
// it resumes a client that is catching up.
func TestUnsentFollowsReading(t *testing.T) {
	onOpen, opened := openedStream[*nq.RPCStream]()
	srv := rpcServer(t, nq.RPCHandler{OnOpen: onOpen})
	// A client with a small, fixed receive window: what it has not read cannot hide in it.
	conf := quic.ClientConfig()
	conf.InitialStreamReceiveWindow, conf.MaxStreamReceiveWindow = 256<<10, 256<<10
	c := rawStream(t, rawDialConfig(t, srv.Addr().String(), conf), "rpc", nil)
	s := waitFor(t, opened, 5*time.Second, "the server's stream")
	payload := make([]byte, 64<<10)
	if _, err := pushUntilFull(1000, func() error { return s.Notify(1, payload) }); !errors.Is(err, nq.ErrBacklogFull) {
		t.Fatalf("Notify: %v, want ErrBacklogFull", err)
	}
	before := s.Unsent()
	const read = 2 << 20
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, read)); err != nil {
		t.Fatalf("reading: %v", err)
	}
	// What the client read left the stream; quic-go may have taken up to one more slice.
	want := before - read + 64<<10
	if !eventually(10*time.Second, func() bool { return s.Unsent() <= want }) {
		t.Fatalf("Unsent() = %d after the client read %d of %d, want at most %d", s.Unsent(), read, before, want)
	}
}

// TestBacklogFullOnClosedStreamSaysClosed: a stream closed while its backlog is full reports
// that it is closed, not that it is full.
func TestBacklogFullOnClosedStreamSaysClosed(t *testing.T) {
	onOpen, opened := openedStream[*nq.RPCStream]()
	srv := rpcServer(t, nq.RPCHandler{OnOpen: onOpen, MaxUnsent: 256 << 10})
	rawStream(t, rawDial(t, srv.Addr().String()), "rpc", nil)
	s := waitFor(t, opened, 5*time.Second, "the server's stream")
	payload := make([]byte, 32<<10)
	if _, err := pushUntilFull(1000, func() error { return s.Notify(1, payload) }); !errors.Is(err, nq.ErrBacklogFull) {
		t.Fatalf("Notify: %v, want ErrBacklogFull", err)
	}
	s.Close()
	if err := s.Notify(1, payload); !errors.Is(err, nq.ErrClosed) || errors.Is(err, nq.ErrBacklogFull) {
		t.Fatalf("Notify on the closed stream: %v, want ErrClosed", err)
	}
}

// TestBacklogBoundIgnoresPassFrames: the frames a handler sends during its pass leave together
// at its end; they do not count against a small MaxUnsent while the peer reads.
func TestBacklogBoundIgnoresPassFrames(t *testing.T) {
	const notes = 100
	refused := make(chan error, 1)
	srv := rpcServer(t, nq.RPCHandler{MaxUnsent: 16 << 10, OnRequest: func(req *nq.Request) {
		for range notes {
			if err := req.Stream().Notify(2, make([]byte, 300)); err != nil {
				refused <- err
				break
			}
		}
		req.Reply(nil)
	}})
	var got atomic.Int64
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{OnNotify: func(*nq.RPCStream, uint32, []byte) { got.Add(1) }}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := newClient(t, &env{name: "udp"}, clientOptions{mux: mux}).Dial(ctx, srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RPC("rpc").Call(ctx, 1, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-refused:
		t.Fatalf("a handler's notification was refused: %v", err)
	default:
	}
	if n := got.Load(); n != notes { // the reply follows the notifications on the stream
		t.Fatalf("%d notifications arrived, want %d", n, notes)
	}
}

// TestRecordSendBacklogFull: record sends are bounded the same way, and go through again once
// the client has read.
func TestRecordSendBacklogFull(t *testing.T) {
	const bound = 128 << 10
	onOpen, opened := openedStream[*nq.RecordStream[[]byte]]()
	mux := nq.NewMux()
	if err := nq.HandleRecords(mux, "rec", nq.Bytes{}, nq.RecordHandler[[]byte]{OnOpen: onOpen, MaxUnsent: bound}); err != nil {
		t.Fatal(err)
	}
	srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux}
	if err := srv.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	fc := &frameCounter{s: rawStream(t, rawDial(t, srv.Addr().String()), "rec", nil)}
	s := waitFor(t, opened, 5*time.Second, "the server's stream")
	record := make([]byte, 32<<10)
	sent, err := pushUntilFull(1000, func() error { return s.Send(record) })
	if !errors.Is(err, nq.ErrBacklogFull) {
		t.Fatalf("after %d records: %v, want ErrBacklogFull", sent, err)
	}
	if u := s.Unsent(); u < bound || u >= bound+len(record)+16 {
		t.Errorf("Unsent() = %d at ErrBacklogFull, want the bound %d plus at most one record", u, bound)
	}
	fc.start(true)
	defer fc.stop()
	if !eventually(20*time.Second, func() bool { return s.Unsent() == 0 && fc.records.Load() == int64(sent) }) {
		t.Fatalf("Unsent() = %d and %d of %d records received after the client read", s.Unsent(), fc.records.Load(), sent)
	}
	if err := s.Send(record); err != nil {
		t.Fatalf("Send after the client caught up: %v", err)
	}
}
