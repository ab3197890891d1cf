package nq_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/naquid/naquid/nq"
)

// heapTolerance is how much HeapInuse may exceed its baseline after the reconnect cycles:
// quic-go and crypto/tls keep a few pools and caches (packet buffers, session tickets) whose size
// depends on timing, not on the number of connections. A leak of even 1 KiB per cycle exceeds it
// in the soak run (10,000 cycles).
const heapTolerance = 4 * mib

// TestReliabilityReconnectLeaks runs reconnect cycles, each ending the connection a different
// way — the client resets it, the server closes it, the client closes the Conn and connects a
// new one, the whole Client is closed and a new one made — and then checks that goroutines,
// file descriptors and heap are back at their baseline and the server holds no connection.
func TestReliabilityReconnectLeaks(t *testing.T) {
	cycles := pick(500, 10000)
	for i, mk := range envs(t) {
		t.Run([]string{*kernelTransport, "memconn"}[i], func(t *testing.T) {
			runLeakCycles(t, mk(t), cycles)
		})
	}
}

// leakClient is one Client of the leak test with one Conn, and the opens it has seen.
type leakClient struct {
	cl     *nq.Client
	conn   *nq.Conn
	opened chan uint64 // generation of each open
}

// newLeakClient makes a Client and connects its Conn. The caller closes it (lc.close): a
// t.Cleanup per Client would keep thousands of closed Clients reachable until the test ends and
// blur the heap figures.
func newLeakClient(t *testing.T, e *env, addr string) *leakClient {
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{}); err != nil {
		t.Fatal(err)
	}
	lc := &leakClient{opened: make(chan uint64, 8)}
	lc.cl = &nq.Client{
		TLS:       certs(t).ClientTLS("localhost"),
		Mux:       mux,
		Transport: e.clientFactory,
		LocalAddr: e.clientLocal,
		OnOpen:    func(c *nq.Conn) { lc.opened <- c.Generation() },
		OnClose:   func(*nq.Conn, error, int) time.Duration { return 0 },
	}
	lc.connect(t, addr)
	return lc
}

// connect starts a new Conn and waits for its first open.
func (lc *leakClient) connect(t *testing.T, addr string) {
	t.Helper()
	c, err := lc.cl.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	lc.conn = c
	lc.waitGen(t, 1)
}

// waitGen waits for the open of generation gen (older opens are skipped).
func (lc *leakClient) waitGen(t *testing.T, gen uint64) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case g := <-lc.opened:
			if g >= gen {
				return
			}
		case <-deadline:
			t.Fatalf("generation %d never opened (at %d)", gen, lc.conn.Generation())
		}
	}
}

func (lc *leakClient) ping(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := lc.conn.RPC("rpc").Call(ctx, mPing, []byte("ping")); err != nil {
		t.Fatalf("ping on generation %d: %v", lc.conn.Generation(), err)
	}
}

func (lc *leakClient) close(t *testing.T) {
	t.Helper()
	lc.cl.Close()
	waitFor(t, lc.conn.Done(), 10*time.Second, "the Conn to finalize")
}

// cycle ends the current connection in way kind (0..3) and returns once a new one has answered a
// ping. It may replace lc's Client.
func (lc *leakClient) cycle(t *testing.T, e *env, addr string, kind int) *leakClient {
	t.Helper()
	gen := lc.conn.Generation()
	switch kind {
	case 0: // client-initiated: reset and reconnect
		lc.conn.Reset()
		lc.waitGen(t, gen+1)
	case 1: // server-initiated: the server closes the connection, the client reconnects
		// A notify, not a call: a reply written just before the server's Close can be lost
		// (TestReliabilityReplyBeforeClose), which is not what this test is about.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := lc.conn.RPC("rpc").Notify(ctx, mClose, nil)
		cancel()
		if err != nil {
			t.Fatalf("asking the server to close: %v", err)
		}
		lc.waitGen(t, gen+1)
	case 2: // the client closes the Conn for good and connects a new one
		lc.conn.Close()
		waitFor(t, lc.conn.Done(), 10*time.Second, "the Conn to finalize")
		lc.connect(t, addr)
	case 3: // the whole Client goes (its socket too) and a new one comes
		lc.close(t)
		lc = newLeakClient(t, e, addr)
	}
	lc.ping(t)
	return lc
}

// leakServer is the leak test's server: it echoes pings and, notified with mClose, closes the
// caller's connection. (The acceptance fixture remembers every connection it served, which would
// read as a leak here.)
type leakServer struct {
	srv  *nq.Server
	addr string
}

func startLeakServer(t *testing.T, e *env) *leakServer {
	t.Helper()
	mux := nq.NewMux()
	err := mux.HandleRPC("rpc", nq.RPCHandler{
		OnRequest: func(req *nq.Request) {
			if req.Method != mPing {
				req.Fail(&nq.RemoteError{Code: -1, Message: "unknown method"})
				return
			}
			req.Reply(req.Payload)
		},
		OnNotify: func(s *nq.RPCStream, method uint32, _ []byte) {
			if method == mClose {
				s.Conn().Close()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux, Transport: e.serverFactory}
	if err := srv.Listen(context.Background(), e.serverAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &leakServer{srv: srv, addr: srv.Addr().String()}
}

func runLeakCycles(t *testing.T, e *env, cycles int) {
	f := startLeakServer(t, e)
	var lc *leakClient
	t.Cleanup(func() {
		if lc != nil {
			lc.cl.Close() // after a failure; a second Close does nothing
		}
	})
	// Warm up: pools, session caches and lazily started machinery reach their steady size.
	lc = newLeakClient(t, e, f.addr)
	for i := range 20 {
		lc = lc.cycle(t, e, f.addr, i%4)
	}
	lc.close(t)
	if !eventually(10*time.Second, func() bool { return f.srv.NumConns() == 0 }) {
		t.Fatalf("warm-up: the server still holds %d connections", f.srv.NumConns())
	}
	baseGoroutines := runtime.NumGoroutine()
	ignore := goleak.IgnoreCurrent()
	baseFDs := openFDs(t)
	baseHeap := heapInUse()

	start := time.Now()
	lc = newLeakClient(t, e, f.addr)
	for i := range cycles {
		lc = lc.cycle(t, e, f.addr, i%4)
	}
	elapsed := time.Since(start)
	lc.close(t)

	if !eventually(10*time.Second, func() bool { return f.srv.NumConns() == 0 }) {
		t.Errorf("the server still holds %d connections after every client closed", f.srv.NumConns())
	}
	goleak.VerifyNone(t, ignore)
	var fds int
	if !eventually(5*time.Second, func() bool { fds = openFDs(t); return fds <= baseFDs }) {
		t.Errorf("open file descriptors: %d, baseline %d", fds, baseFDs)
	}
	var heap uint64
	if !eventually(5*time.Second, func() bool { heap = heapInUse(); return heap <= baseHeap+heapTolerance }) {
		t.Errorf("HeapInuse %.1f MiB, baseline %.1f MiB: more than the %d MiB tolerance after %d cycles",
			float64(heap)/mib, float64(baseHeap)/mib, heapTolerance/mib, cycles)
	}
	t.Logf("%d reconnect cycles in %v (%v each): goroutines %d -> %d, fds %d -> %d, HeapInuse %.1f -> %.1f MiB",
		cycles, elapsed.Round(time.Millisecond), (elapsed / time.Duration(cycles)).Round(time.Microsecond),
		baseGoroutines, runtime.NumGoroutine(), baseFDs, fds, float64(baseHeap)/mib, float64(heap)/mib)
}
