package nq_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/internal/wire"
	"github.com/naquid/naquid/nq"
)

// hostileAttack is one misbehaviour on a fresh stream and the reset code it must earn.
type hostileAttack struct {
	name  string
	proto string // preamble name; "" writes data with no preamble
	data  []byte
	fin   bool // close the write side after data
	code  wire.StreamCode
}

func hostileAttacks() []hostileAttack {
	long := append([]byte{0x41, 0x2c}, bytes.Repeat([]byte("a"), 300)...) // name length 300
	return []hostileAttack{
		{name: "unknown protocol", proto: "no-such-protocol", code: wire.StreamUnknownProtocol},
		{name: "zero-length name", data: []byte{0x00}, code: wire.StreamProtocolError},
		{name: "name over 255 bytes", data: long, code: wire.StreamProtocolError},
		{name: "name not UTF-8", data: []byte{0x02, 0xff, 0xfe}, code: wire.StreamProtocolError},
		{name: "request with msgid 0", proto: "rpc", data: []byte{0x01, 0x00, 0x00}, code: wire.StreamProtocolError},
		{name: "non-minimal varint", proto: "rpc", data: []byte{0x01, 0x40, 0x01, 0x00}, code: wire.StreamProtocolError},
		{name: "reply with method bits", proto: "rpc", data: []byte{0x41, 0x01, 0x00}, code: wire.StreamProtocolError},
		{name: "inline-able method as varint", proto: "rpc", data: []byte{0x3f, 0x05, 0x01, 0x00}, code: wire.StreamProtocolError},
		{name: "method over 32 bits", proto: "rpc", data: []byte{0xff, 0xc0, 0, 0, 1, 0, 0, 0, 0, 0x00}, code: wire.StreamProtocolError},
		{name: "error frame with a malformed payload", proto: "rpc", data: []byte{0x80, 0x01, 0x00}, code: wire.StreamProtocolError},
		{name: "frame cut by FIN", proto: "rpc", data: []byte{0x01, 0x05, 0x08, 'a'}, fin: true, code: wire.StreamProtocolError},
		{name: "oversized frame", proto: "rpc", data: []byte{0x01, 0x01, 0x80, 0x20, 0x00, 0x00}, code: wire.StreamFrameTooLarge},
		{name: "oversized record", proto: "rec", data: []byte{0x80, 0x20, 0x00, 0x00}, code: wire.StreamFrameTooLarge},
		{name: "non-minimal record length", proto: "rec", data: []byte{0x40, 0x01, 'x'}, code: wire.StreamProtocolError},
		{name: "record cut by FIN", proto: "rec", data: []byte{0x05, 'a', 'b'}, fin: true, code: wire.StreamProtocolError},
		{name: "record the codec rejects", proto: "rec", data: []byte{0x03, 'b', 'a', 'd'}, code: wire.StreamProtocolError},
	}
}

// rejectingCodec is the record codec of the hostile test's server: it refuses the record "bad".
type rejectingCodec struct{ nq.Bytes }

func (rejectingCodec) Decode(data []byte) ([]byte, error) {
	if string(data) == "bad" {
		return nil, errors.New("the codec refuses this record")
	}
	return append([]byte(nil), data...), nil
}

// startHostileServer serves "rpc" (pings are echoed), the record protocol "rec" (records are
// echoed) and datagrams (counted) on the kernel socket backend.
func startHostileServer(t *testing.T, e *env, datagrams *atomic.Int64) *nq.Server {
	t.Helper()
	mux := nq.NewMux()
	err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: func(req *nq.Request) {
		if req.Method != mPing {
			req.Fail(&nq.RemoteError{Code: -1, Message: "unknown method"})
			return
		}
		req.Reply(req.Payload)
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = nq.HandleRecords(mux, "rec", nq.Codec[[]byte](rejectingCodec{}), nq.RecordHandler[[]byte]{
		OnRecord: func(s *nq.RecordStream[[]byte], v []byte) { s.Send(v) },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux, Transport: e.serverFactory,
		OnDatagram: func(*nq.Conn, []byte) { datagrams.Add(1) }}
	if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// TestReliabilityHostileCrowd: many raw quic-go connections misbehave at once — every malformed
// preamble, frame and record kind, oversized frames and records, stray replies, stream floods,
// datagram floods, and a stream that never finishes its preamble — while well-behaved nq clients
// keep calling. Each offending stream is reset with its protocol error code, each hostile
// connection's own good streams (RPC and records) keep answering, no connection is closed, and
// the good clients lose no call.
func TestReliabilityHostileCrowd(t *testing.T) {
	hostiles := pick(16, 64)
	attackFor := pick(3*time.Second, 30*time.Second)
	e := envs(t)[0](t)
	var datagrams atomic.Int64
	srv := startHostileServer(t, e, &datagrams)
	addr := srv.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)

	// Good clients: closed-loop callers, 4 calls in flight each.
	const goodClients, perClient = 8, 4
	var (
		goodOK, goodErr atomic.Int64
		errOnce         sync.Once
		firstGoodErr    error
		good            sync.WaitGroup
	)
	stopGood := make(chan struct{})
	for range goodClients {
		cl := newClient(t, e, clientOptions{})
		c, err := cl.Dial(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		rpc := c.RPC("rpc")
		for w := range perClient {
			good.Add(1)
			go func() {
				defer good.Done()
				p := be64(uint64(w))
				for {
					select {
					case <-stopGood:
						return
					default:
					}
					cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
					reply, err := rpc.Call(cctx, mPing, p)
					ccancel()
					if err == nil && !bytes.Equal(reply, p) {
						err = fmt.Errorf("reply %x to %x", reply, p)
					}
					if err != nil {
						goodErr.Add(1)
						errOnce.Do(func() { firstGoodErr = err })
						continue
					}
					goodOK.Add(1)
				}
			}()
		}
	}
	stopGoodOnce := sync.OnceFunc(func() { close(stopGood) })
	t.Cleanup(func() { stopGoodOnce(); good.Wait() })

	// Hostile connections, dialled here (rawDial fails the test from this goroutine only).
	qcs := make([]*quicgo.Conn, hostiles)
	for i := range qcs {
		qcs[i] = rawDial(t, addr)
	}
	var (
		attacksOK  atomic.Int64
		failMu     sync.Mutex
		failures   []string
		hostileRun sync.WaitGroup
		rounds     sync.WaitGroup // hostile connections still in their attack rounds
	)
	fail := func(format string, args ...any) {
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	start := time.Now()
	for i, qc := range qcs {
		hostileRun.Add(1)
		rounds.Add(1)
		go func() {
			defer hostileRun.Done()
			if err := hostileConn(ctx, qc, attackFor, &attacksOK, rounds.Done); err != nil {
				fail("hostile connection %d: %v", i, err)
			}
		}()
	}
	// The good clients run while the attack rounds do; the stalled preambles take longer.
	rounds.Wait()
	elapsed := time.Since(start)
	stopGoodOnce()
	good.Wait()
	hostileRun.Wait()

	for _, msg := range failures {
		t.Error(msg)
	}
	for i, qc := range qcs {
		if err := qc.Context().Err(); err != nil {
			t.Errorf("hostile connection %d was closed (%v): only its offending streams should be", i, context.Cause(qc.Context()))
		}
	}
	if n := goodErr.Load(); n != 0 {
		t.Errorf("%d calls of the good clients failed (first: %v)", n, firstGoodErr)
	}
	if goodOK.Load() == 0 {
		t.Error("the good clients completed no call")
	}
	if datagrams.Load() == 0 {
		t.Error("no datagram of the hostile connections reached the server's handler")
	}
	if n := srv.NumConns(); n != hostiles+goodClients {
		t.Errorf("server holds %d connections, want %d", n, hostiles+goodClients)
	}
	t.Logf("%d hostile connections made %d attacks in %v of rounds (each reset as required) and sent datagrams (%d handled); %d good clients made %d calls meanwhile, %d failed",
		hostiles, attacksOK.Load(), elapsed.Round(time.Millisecond), datagrams.Load(), goodClients, goodOK.Load(), goodErr.Load())
}

// hostileConn runs every attack on qc, over and over for d, checking after each round that the
// connection's good stream still answers. It also leaves one stream with half a preamble and
// checks at the end that the server gave up on it. It calls roundsDone exactly once, when the
// rounds are over.
func hostileConn(ctx context.Context, qc *quicgo.Conn, d time.Duration, ok *atomic.Int64, roundsDone func()) error {
	var once sync.Once
	defer once.Do(roundsDone)
	// A stream that names a 5-byte protocol and sends 2 bytes of it, then stalls.
	stall, err := openRaw(ctx, qc, "", []byte{0x05, 'r', 'p'}, false)
	if err != nil {
		return fmt.Errorf("stalled stream: %w", err)
	}
	stalledAt := time.Now()
	goodStream, err := openRaw(ctx, qc, "rpc", nil, false)
	if err != nil {
		return fmt.Errorf("good stream: %w", err)
	}
	reader := wire.NewReader(goodStream, 0, 0)
	goodRecords, err := openRaw(ctx, qc, "rec", nil, false)
	if err != nil {
		return fmt.Errorf("good record stream: %w", err)
	}
	recReader := wire.NewReader(goodRecords, 0, 0)
	msgid := uint64(0)
	ping := func() error {
		msgid++
		req, _ := wire.AppendRequest(nil, mPing, msgid, []byte("ok"))
		// Stray replies first: answers to msgids nobody used are ignored.
		stray, _ := wire.AppendReply(nil, msgid+1000, []byte("nobody asked"))
		if _, err := goodStream.Write(append(stray, req...)); err != nil {
			return fmt.Errorf("good stream write: %w", err)
		}
		_ = goodStream.SetReadDeadline(time.Now().Add(10 * time.Second))
		fr, err := reader.NextFrame()
		if err != nil || fr.Kind != wire.KindReply || fr.MsgID != msgid || string(fr.Payload) != "ok" {
			return fmt.Errorf("good stream ping %d: frame %+v, err %v", msgid, fr, err)
		}
		rec := []byte(fmt.Sprintf("record %d", msgid))
		if _, err := goodRecords.Write(wire.AppendRecord(nil, rec)); err != nil {
			return fmt.Errorf("good record stream write: %w", err)
		}
		_ = goodRecords.SetReadDeadline(time.Now().Add(10 * time.Second))
		echo, err := recReader.NextRecord()
		if err != nil || !bytes.Equal(echo, rec) {
			return fmt.Errorf("good record stream: echo %q, err %v; want %q", echo, err, rec)
		}
		return nil
	}
	if err := ping(); err != nil {
		return err
	}
	attacks := hostileAttacks()
	deadline := time.Now().Add(d)
	for round := 0; time.Now().Before(deadline); round++ {
		for _, a := range attacks {
			s, err := openRaw(ctx, qc, a.proto, a.data, a.fin)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round, a.name, err)
			}
			if err := expectReset(s, a.code, time.Now().Add(10*time.Second)); err != nil {
				return fmt.Errorf("round %d, %s: %w", round, a.name, err)
			}
			ok.Add(1)
		}
		// A burst of streams with a bad preamble, all open at once.
		burst := make([]*quicgo.Stream, 0, 32)
		for range cap(burst) {
			s, err := openRaw(ctx, qc, "", []byte{0x00}, false)
			if err != nil {
				return fmt.Errorf("round %d, stream burst: %w", round, err)
			}
			burst = append(burst, s)
		}
		for _, s := range burst {
			if err := expectReset(s, wire.StreamProtocolError, time.Now().Add(10*time.Second)); err != nil {
				return fmt.Errorf("round %d, stream burst: %w", round, err)
			}
			ok.Add(1)
		}
		// A burst of garbage datagrams: the application gets them, nothing breaks.
		for i := range 64 {
			if err := qc.SendDatagram(bytes.Repeat([]byte{byte(i)}, 1+i*15)); err != nil {
				return fmt.Errorf("round %d, datagram %d: %w", round, i, err)
			}
		}
		if err := ping(); err != nil {
			return fmt.Errorf("round %d: %w", round, err)
		}
	}
	once.Do(roundsDone)
	// The stalled preamble: the server resets it with StreamCancelled once its preamble timeout
	// (10 s) passes.
	if err := expectReset(stall, wire.StreamCancelled, stalledAt.Add(20*time.Second)); err != nil {
		return fmt.Errorf("stalled preamble: %w", err)
	}
	ok.Add(1)
	return ping()
}

// openRaw opens a stream on qc and writes the preamble of proto (unless empty), data, and a FIN
// if fin.
func openRaw(ctx context.Context, qc *quicgo.Conn, proto string, data []byte, fin bool) (*quicgo.Stream, error) {
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := qc.OpenStreamSync(octx)
	if err != nil {
		return nil, err
	}
	var b []byte
	if proto != "" {
		if b, err = wire.AppendPreamble(nil, proto); err != nil {
			return nil, err
		}
	}
	if _, err := s.Write(append(b, data...)); err != nil {
		return nil, err
	}
	if fin {
		if err := s.Close(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// expectReset reads s until the server resets it (by deadline at the latest) and checks the code.
func expectReset(s *quicgo.Stream, code wire.StreamCode, deadline time.Time) error {
	_ = s.SetReadDeadline(deadline)
	_, err := io.Copy(io.Discard, s)
	var se *quicgo.StreamError
	if !errors.As(err, &se) || wire.StreamCode(se.ErrorCode) != code {
		return fmt.Errorf("stream ended with %v, want a reset with %v", err, code)
	}
	s.CancelWrite(quicgo.StreamErrorCode(wire.StreamCancelled))
	return nil
}
