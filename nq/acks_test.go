package nq_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/transport/memconn"
)

// lossyEnv is an in-memory network whose client->server link drops packets.
func lossyEnv(t *testing.T, loss float64) *env {
	t.Helper()
	n, err := memconn.NewNetwork(memconn.Config{Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	e := &env{
		name:          "memconn-lossy",
		serverAddr:    "192.0.2.1:4433",
		clientLocal:   netip.MustParseAddrPort("192.0.2.2:0"),
		serverFactory: n.Factory(),
		clientFactory: n.Factory(),
		net:           n,
	}
	if err := n.SetLink(e.clientLocal.Addr(), netip.MustParseAddr("192.0.2.1"), memconn.LinkConfig{Loss: loss}); err != nil {
		t.Fatal(err)
	}
	return e
}

// ackedRecords dials addr with delivery acks on and opens an "sst" record stream whose client
// side runs h.
func ackedRecords(t *testing.T, e *env, ctx context.Context, addr string, h nq.RecordHandler[[]byte]) (*nq.Conn, *nq.RecordStream[[]byte]) {
	t.Helper()
	cmux := nq.NewMux()
	if err := nq.HandleRecords(cmux, "sst", nq.Bytes{}, h); err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, e, clientOptions{mux: cmux, quic: patientQUIC(false)})
	cl.DeliveryAcks = true
	conn, err := cl.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	s, err := nq.OpenRecords[[]byte](ctx, conn, "sst")
	if err != nil {
		t.Fatal(err)
	}
	return conn, s
}

// TestDeliveryAcksUnderLoss: with 20% of the client's packets lost (the test checks the network
// really lost some, so retransmitted bytes had to be acknowledged), every ack fires exactly once
// with its record's framed length, and the server receives every record.
func TestDeliveryAcksUnderLoss(t *testing.T) {
	e := lossyEnv(t, 0.2)
	received := make(chan []byte, 256)
	mux := nq.NewMux()
	if err := nq.HandleRecords(mux, "sst", nq.Bytes{}, nq.RecordHandler[[]byte]{
		OnRecord: func(_ *nq.RecordStream[[]byte], v []byte) { received <- v },
	}); err != nil {
		t.Fatal(err)
	}
	addr := startEchoServer(t, e, mux, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, s := ackedRecords(t, e, ctx, addr, nq.RecordHandler[[]byte]{})
	const records = 100
	type ack struct {
		i, n int
		err  error
	}
	acks := make(chan ack, records)
	for i := range records {
		payload := make([]byte, 100+i)
		if err := s.SendAck(payload, func(n int, err error) { acks <- ack{i, n, err} }); err != nil {
			t.Fatal(err)
		}
	}
	seen := make(map[int]bool)
	for range records {
		a := waitFor(t, acks, 25*time.Second, "a delivery ack")
		if a.err != nil || a.n != 100+a.i+2 || seen[a.i] {
			t.Fatalf("ack of record %d: n=%d err=%v (seen before: %v); want n=%d", a.i, a.n, a.err, seen[a.i], 100+a.i+2)
		}
		seen[a.i] = true
	}
	for range records {
		waitFor(t, received, 10*time.Second, "the records at the server")
	}
	if st := e.net.Stats(); st.Lost == 0 {
		t.Fatal("the link lost nothing: the test proves nothing about retransmissions")
	}
}

// TestDeliveryAckWaitsForDelivery: while the path is cut no ack fires; after healing it does; and
// a send whose connection ends before delivery gets an error, never an ack.
func TestDeliveryAckWaitsForDelivery(t *testing.T) {
	e := lossyEnv(t, 0)
	addr := startEchoServer(t, e, echoMux(t, ""), 0)
	cmux := nq.NewMux()
	if err := nq.HandleRecords(cmux, "sst", nq.Bytes{}, nq.RecordHandler[[]byte]{}); err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, e, clientOptions{mux: cmux, quic: patientQUIC(false),
		onClose: func(*nq.Conn, error, int) time.Duration { return nq.NoReconnect }})
	cl.DeliveryAcks = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := cl.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	s, err := nq.OpenRecords[[]byte](ctx, conn, "sst")
	if err != nil {
		t.Fatal(err)
	}
	server := netip.MustParseAddr("192.0.2.1")
	e.net.Partition(e.clientLocal.Addr(), server)
	acked := make(chan error, 2)
	if err := s.SendAck([]byte("across the partition"), func(_ int, err error) { acked <- err }); err != nil {
		t.Fatal(err)
	}
	control := make(chan struct{})
	conn.AfterFunc(300*time.Millisecond, func() { close(control) })
	waitFor(t, control, 5*time.Second, "the control alarm")
	if len(acked) != 0 {
		t.Fatal("an ack fired while the path was cut")
	}
	e.net.Heal(e.clientLocal.Addr(), server)
	if err := waitFor(t, acked, 10*time.Second, "the ack after healing"); err != nil {
		t.Fatalf("ack after healing: %v", err)
	}

	e.net.Partition(e.clientLocal.Addr(), server)
	if err := s.SendAck([]byte("lost with the connection"), func(_ int, err error) { acked <- err }); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if err := waitFor(t, acked, 10*time.Second, "the failed ack"); err == nil || !errors.Is(err, nq.ErrClosed) {
		t.Fatalf("ack of data lost with the connection: %v, want an error matching ErrClosed", err)
	}
	// Without DeliveryAcks, SendAck refuses.
	plain := newClient(t, e, clientOptions{mux: cmux})
	e.net.Heal(e.clientLocal.Addr(), server)
	pc, err := plain.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := nq.OpenRecords[[]byte](ctx, pc, "sst")
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.SendAck(nil, func(int, error) {}); !errors.Is(err, nq.ErrAcksDisabled) {
		t.Fatalf("SendAck without DeliveryAcks: %v", err)
	}
}

// TestQlogDir: a configured qlog directory receives one trace per connection, on the client and
// on the server.
func TestQlogDir(t *testing.T) {
	e := envs(t)[0](t)
	serverDir := t.TempDir()
	f := startFixture(t, e, fixtureOptions{qlogDir: serverDir})
	dir := t.TempDir()
	cl := newClient(t, e, clientOptions{})
	cl.QlogDir = dir
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := cl.Dial(ctx, f.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.RPC("rpc").Call(ctx, mPing, nil); err != nil {
		t.Fatal(err)
	}
	// The server's trace file is created with the connection (it is written as the trace ends).
	if files, _ := filepath.Glob(filepath.Join(serverDir, "*_server.sqlog")); len(files) != 1 {
		t.Fatalf("server qlog files %v, want one trace", files)
	}
	cl.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "*_client.sqlog"))
	if len(files) != 1 {
		t.Fatalf("qlog files %v, want one client trace", files)
	}
	if fi, err := os.Stat(files[0]); err != nil || fi.Size() == 0 {
		t.Fatalf("qlog trace empty or missing: %v", err)
	}
}

// TestDeliveryAckPeerClosesStream: when the peer closes a stream this side is still sending on
// (its close stops the reading, and quic-go resets the send side, dropping what was not
// delivered), every delivery wait ends while the connection stays open: with an ack for what
// arrived, with an error matching ErrClosed for the rest.
func TestDeliveryAckPeerClosesStream(t *testing.T) {
	forEachEnv(t, func(t *testing.T, e *env) {
		mux := nq.NewMux()
		if err := nq.HandleRecords(mux, "sst", nq.Bytes{}, nq.RecordHandler[[]byte]{
			OnRecord: func(s *nq.RecordStream[[]byte], _ []byte) { s.Close() },
		}); err != nil {
			t.Fatal(err)
		}
		addr := startEchoServer(t, e, mux, 0)
		closed := make(chan error, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, s := ackedRecords(t, e, ctx, addr, nq.RecordHandler[[]byte]{
			OnClose: func(_ *nq.RecordStream[[]byte], err error) { closed <- err },
		})
		const records = 2000
		results := make(chan error, records)
		sent := 0
		for range records {
			if err := s.SendAck(make([]byte, 2000), func(_ int, err error) { results <- err }); err != nil {
				break // the stream has closed
			}
			sent++
		}
		waitFor(t, closed, 10*time.Second, "the stream's close")
		failed := 0
		for i := range sent {
			err := waitFor(t, results, 10*time.Second, "every delivery wait to end")
			if err != nil {
				if !errors.Is(err, nq.ErrClosed) {
					t.Fatalf("wait %d: %v, want an error matching ErrClosed", i, err)
				}
				failed++
			}
		}
		if !conn.IsOpen() {
			t.Fatal("the connection closed with the stream")
		}
		t.Logf("%d records sent with acks: %d delivered, %d failed", sent, sent-failed, failed)
	})
}
