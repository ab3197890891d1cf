package nq_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/naquid/naquid/internal/wire"
	"github.com/naquid/naquid/nq"
)

// text is a record codec for strings (naquid's "rst" codec stream, with nq doing the framing).
type text struct{}

func (text) Append(dst []byte, v string) ([]byte, error) { return append(dst, v...), nil }
func (text) Decode(data []byte) (string, error)          { return string(data), nil }

// echoMux serves naquid's stream fixtures: "sst" (byte records) and "rst" (text records) answer
// every record R with one record R+R; "raw" echoes bytes until the client closes its side.
func echoMux(t *testing.T, rawMode string) *nq.Mux {
	t.Helper()
	mux := nq.NewMux()
	err := errors.Join(
		nq.HandleRecords(mux, "sst", nq.Bytes{}, nq.RecordHandler[[]byte]{
			OnRecord: func(s *nq.RecordStream[[]byte], v []byte) { s.Send(append(v, v...)) },
		}),
		nq.HandleRecords(mux, "rst", text{}, nq.RecordHandler[string]{
			OnRecord: func(s *nq.RecordStream[string], v string) { s.Send(v + v) },
		}),
		mux.HandleRaw("raw", nq.RawHandler{OnStream: func(s *nq.RawStream) {
			defer s.Close()
			io.Copy(s, s)
		}}),
		mux.SetRawMode(rawMode),
	)
	if err != nil {
		t.Fatal(err)
	}
	return mux
}

func startEchoServer(t *testing.T, e *env, mux *nq.Mux, maxFrame int) string {
	t.Helper()
	srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux, Transport: e.serverFactory, MaxFrameSize: maxFrame}
	if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.Addr().String()
}

// TestStreams ports naquid's stream spec, in normal and raw mode: a 12-byte record sent twice
// comes back as two records of the payload doubled, on a byte-record and a text-record stream.
func TestStreams(t *testing.T) {
	for _, mode := range []string{"", "sst", "rst"} {
		name := "named"
		if mode != "" {
			name = "raw-mode-" + mode
		}
		t.Run(name, func(t *testing.T) {
			forEachEnv(t, func(t *testing.T, e *env) {
				addr := startEchoServer(t, e, echoMux(t, mode), 0)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				got := make(chan string, 4)
				cmux := nq.NewMux()
				err := errors.Join(
					nq.HandleRecords(cmux, "sst", nq.Bytes{}, nq.RecordHandler[[]byte]{
						OnRecord: func(_ *nq.RecordStream[[]byte], v []byte) { got <- "sst:" + string(v) },
					}),
					nq.HandleRecords(cmux, "rst", text{}, nq.RecordHandler[string]{
						OnRecord: func(_ *nq.RecordStream[string], v string) { got <- "rst:" + v },
					}),
					cmux.SetRawMode(mode),
				)
				if err != nil {
					t.Fatal(err)
				}
				cl := newClient(t, e, clientOptions{mux: cmux})
				cl.DeliveryAcks = true
				conn, err := cl.Dial(ctx, addr)
				if err != nil {
					t.Fatal(err)
				}
				// Each stream sends the 12-byte payload twice, the second time with an ack
				// callback, which must fire once with the framed length: 13 bytes.
				const payload = "hogehogehoge"
				acks := make(chan int, 8)
				ack := func(n int, err error) {
					if err != nil {
						t.Errorf("ack: %v", err)
					}
					acks <- n
				}
				want := []string{}
				if mode != "rst" {
					sst, err := nq.OpenRecords[[]byte](ctx, conn, "sst")
					if err != nil {
						t.Fatal(err)
					}
					if err := errors.Join(sst.Send([]byte(payload)), sst.SendAck([]byte(payload), ack)); err != nil {
						t.Fatal(err)
					}
					want = append(want, "sst:"+payload+payload, "sst:"+payload+payload)
				}
				if mode != "sst" {
					rst, err := nq.OpenRecords[string](ctx, conn, "rst")
					if err != nil {
						t.Fatal(err)
					}
					if err := errors.Join(rst.Send(payload), rst.SendAck(payload, ack)); err != nil {
						t.Fatal(err)
					}
					want = append(want, "rst:"+payload+payload, "rst:"+payload+payload)
				}
				for range len(want) / 2 {
					if n := waitFor(t, acks, 5*time.Second, "the delivery ack"); n != 13 {
						t.Fatalf("ack of %d bytes, want 13", n)
					}
				}
				counts := map[string]int{}
				for range want {
					counts[waitFor(t, got, 5*time.Second, "an echoed record")]++
				}
				for _, w := range want {
					if counts[w] == 0 {
						t.Fatalf("echoes %v, want %v", counts, want)
					}
					counts[w]--
				}
				if len(acks) != 0 {
					t.Fatal("an ack fired twice")
				}
				if mode != "" {
					other := map[string]string{"sst": "rst", "rst": "sst"}[mode]
					if _, err := nq.OpenRecords[string](ctx, conn, other); !errors.Is(err, nq.ErrUnknownProtocol) {
						t.Fatalf("opening %q in raw mode %q: %v, want ErrUnknownProtocol", other, mode, err)
					}
				}
			})
		})
	}
}

// TestRecordFraming covers what naquid's record streams could not do: several records in one
// chunk, a record split across chunks, empty records, and an over-limit record that closes only
// its stream.
func TestRecordFraming(t *testing.T) {
	e := envs(t)[0](t)
	addr := startEchoServer(t, e, echoMux(t, ""), 1024)
	qc := rawDial(t, addr)

	// Three records (one empty) in one write, then one record written a byte at a time.
	var in []byte
	in, _ = wire.AppendPreamble(in, "sst")
	for _, r := range []string{"a", "", "bc"} {
		in = wire.AppendRecord(in, []byte(r))
	}
	s := rawStream(t, qc, "", in)
	for _, b := range wire.AppendRecord(nil, []byte("split")) {
		if _, err := s.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := wire.NewReader(s, 0, 0)
	for _, want := range []string{"aa", "", "bcbc", "splitsplit"} {
		got, err := r.NextRecord()
		if err != nil || string(got) != want {
			t.Fatalf("echo: %q, %v; want %q", got, err, want)
		}
	}

	// A record over the server's 1024-byte limit: that stream is reset, the connection lives.
	big := wire.AppendRecord(nil, bytes.Repeat([]byte("x"), 2000))
	tooBig := rawStream(t, qc, "sst", big)
	wantReset(t, tooBig, wire.StreamFrameTooLarge, "over-limit record")
	if _, err := s.Write(wire.AppendRecord(nil, []byte("ok"))); err != nil {
		t.Fatal(err)
	}
	if got, err := r.NextRecord(); err != nil || string(got) != "okok" {
		t.Fatalf("after the over-limit record: %q, %v", got, err)
	}
}

// TestRecordTooLargeClosesStream: the nq client sees ErrFrameTooLarge on that stream only.
func TestRecordTooLargeClosesStream(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		addr := startEchoServer(t, e, echoMux(t, ""), 1024)
		closed := make(chan error, 1)
		cmux := nq.NewMux()
		if err := nq.HandleRecords(cmux, "sst", nq.Bytes{}, nq.RecordHandler[[]byte]{
			OnClose: func(_ *nq.RecordStream[[]byte], err error) { closed <- err },
		}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := newClient(t, e, clientOptions{mux: cmux}).Dial(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		s, err := nq.OpenRecords[[]byte](ctx, conn, "sst")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(bytes.Repeat([]byte("x"), 2000)); err != nil {
			t.Fatal(err)
		}
		if err := waitFor(t, closed, 5*time.Second, "the stream to close"); !errors.Is(err, nq.ErrFrameTooLarge) {
			t.Fatalf("stream closed with %v, want ErrFrameTooLarge", err)
		}
		if !conn.IsOpen() {
			t.Fatal("the connection closed with the stream")
		}
	})
}

// TestRawStream: a raw stream is an io.ReadWriteCloser with deadlines.
func TestRawStream(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		addr := startEchoServer(t, e, echoMux(t, ""), 0)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn := rawClient(ctx, t, e, addr, clientOptions{})
		s, err := conn.OpenRaw(ctx, "raw")
		if err != nil {
			t.Fatal(err)
		}
		// A read deadline in the past fails a read at once, and reads work again after it.
		s.SetReadDeadline(time.Now().Add(-time.Second))
		if _, err := s.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read past the deadline: %v, want os.ErrDeadlineExceeded", err)
		}
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		msg := strings.Repeat("raw bytes, no framing. ", 1000)
		if _, err := io.WriteString(s, msg); err != nil {
			t.Fatal(err)
		}
		if err := s.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		echo, err := io.ReadAll(s)
		if err != nil || string(echo) != msg {
			t.Fatalf("echo of %d bytes: %d bytes, %v", len(msg), len(echo), err)
		}
		s.Close()
	})
}

// TestServerOpensStreams: the server opens record and raw streams to the client, whose open
// hooks accept one and reject the other; the rejected opener sees ErrRejected.
func TestServerOpensStreams(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		conns := make(chan *nq.Conn, 1)
		smux := nq.NewMux()
		if err := errors.Join(
			nq.HandleRecords(smux, "sst", nq.Bytes{}, nq.RecordHandler[[]byte]{}),
			smux.HandleRaw("raw", nq.RawHandler{}),
		); err != nil {
			t.Fatal(err)
		}
		srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: smux, Transport: e.serverFactory,
			OnOpen: func(c *nq.Conn) error { conns <- c; return nil }}
		if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })

		records := make(chan string, 1)
		cmux := nq.NewMux()
		if err := errors.Join(
			nq.HandleRecords(cmux, "sst", nq.Bytes{}, nq.RecordHandler[[]byte]{
				OnRecord: func(s *nq.RecordStream[[]byte], v []byte) {
					if s.Outgoing() {
						t.Error("a server-opened stream reports Outgoing on the client")
					}
					records <- string(v)
				},
			}),
			cmux.HandleRaw("raw", nq.RawHandler{
				OnOpen: func(*nq.RawStream) error { return errors.New("no raw streams, thanks") },
			}),
		); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := newClient(t, e, clientOptions{mux: cmux}).Dial(ctx, srv.Addr().String()); err != nil {
			t.Fatal(err)
		}
		sc := waitFor(t, conns, 5*time.Second, "the server's connection")
		rs, err := nq.OpenRecords[[]byte](ctx, sc, "sst")
		if err != nil {
			t.Fatal(err)
		}
		if err := rs.Send([]byte("from the server")); err != nil {
			t.Fatal(err)
		}
		if got := waitFor(t, records, 5*time.Second, "the record"); got != "from the server" {
			t.Fatalf("record %q", got)
		}
		raw, err := sc.OpenRaw(ctx, "raw")
		if err != nil {
			t.Fatal(err)
		}
		raw.Write([]byte("hello?"))
		raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(raw); !errors.Is(err, nq.ErrRejected) {
			t.Fatalf("reading a stream the client rejected: %v, want ErrRejected", err)
		}
	})
}

// TestFlowControlBackPressure: a receiver that stops reading fills the stream's flow-control
// window; the sender's writes queue behind a blocking write (never blocking the sender), and a
// Close during it still delivers every record, in order, before the stream ends.
func TestFlowControlBackPressure(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		release := make(chan struct{})
		got := make(chan int, 512)
		ended := make(chan error, 1)
		mux := nq.NewMux()
		if err := nq.HandleRecords(mux, "sst", nq.Bytes{}, nq.RecordHandler[[]byte]{
			OnRecord: func(_ *nq.RecordStream[[]byte], v []byte) {
				<-release // the first record blocks the reader until the test lets go
				got <- int(v[0])<<8 | int(v[1])
			},
			OnClose: func(_ *nq.RecordStream[[]byte], err error) { ended <- err },
		}); err != nil {
			t.Fatal(err)
		}
		addr := startEchoServer(t, e, mux, 0)
		cmux := nq.NewMux()
		if err := nq.HandleRecords(cmux, "sst", nq.Bytes{}, nq.RecordHandler[[]byte]{}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := newClient(t, e, clientOptions{mux: cmux}).Dial(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		s, err := nq.OpenRecords[[]byte](ctx, conn, "sst")
		if err != nil {
			t.Fatal(err)
		}
		const records = 400 // 400 x 8 KiB: well over the server's 1 MiB stream window
		for i := range records {
			rec := make([]byte, 8<<10)
			rec[0], rec[1] = byte(i>>8), byte(i)
			if err := s.Send(rec); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		s.Close()
		close(release)
		for i := range records {
			if n := waitFor(t, got, 10*time.Second, "a record"); n != i {
				t.Fatalf("record %d arrived as number %d", n, i)
			}
		}
		if err := waitFor(t, ended, 10*time.Second, "the end of the stream"); !errors.Is(err, nq.ErrClosed) {
			t.Fatalf("stream ended with %v, want ErrClosed (a clean end)", err)
		}
	})
}
