package nq_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/transport/memconn"
)

var (
	faultServerIP = netip.MustParseAddr("192.0.2.1")
	faultClientIP = netip.MustParseAddr("192.0.2.2")
)

// faultCase is one row of the fault matrix.
type faultCase struct {
	name string
	// link is the configuration of both directions.
	link memconn.LinkConfig
	// up, when set, replaces link on the client -> server direction.
	up *memconn.LinkConfig
	// partition cuts the path for this long once half of the calls have completed, then heals it.
	partition time.Duration
	// idle, when set, is the idle timeout of both ends (shorter than a partition, it ends the
	// connection and the client reconnects after the heal).
	idle time.Duration
	// disconnects says the fault ends connections: calls in flight may fail with ErrConnLost,
	// and at least one reconnect must happen.
	disconnects bool
	// mayDisconnect says the fault can end a connection without having to: at 30% loss each
	// way QUIC's exponential probe back-off can outlast the idle timeout. Calls in flight may
	// then fail with ErrConnLost (still exactly once), but no reconnect is required.
	mayDisconnect bool
	// happened checks in the network's counters that the fault was applied.
	happened func(memconn.Stats) error
}

func faultMatrix() []faultCase {
	lat := 2 * time.Millisecond
	counted := func(what string, get func(memconn.Stats) uint64) func(memconn.Stats) error {
		return func(s memconn.Stats) error {
			if get(s) == 0 {
				return fmt.Errorf("no datagram was %s (stats %+v)", what, s)
			}
			return nil
		}
	}
	lost := counted("lost", func(s memconn.Stats) uint64 { return s.Lost })
	return []faultCase{
		{name: "loss5", link: memconn.LinkConfig{Loss: 0.05, Latency: lat}, happened: lost},
		{name: "loss15", link: memconn.LinkConfig{Loss: 0.15, Latency: lat}, happened: lost},
		{name: "loss30", link: memconn.LinkConfig{Loss: 0.30, Latency: lat}, mayDisconnect: true, happened: lost},
		{name: "reorder", link: memconn.LinkConfig{Latency: lat, Jitter: time.Millisecond, Reorder: 0.25, ReorderDelay: 4 * time.Millisecond},
			happened: counted("reordered", func(s memconn.Stats) uint64 { return s.Reordered })},
		{name: "duplicate", link: memconn.LinkConfig{Latency: lat, Duplicate: 0.25},
			happened: counted("duplicated", func(s memconn.Stats) uint64 { return s.Duplicated })},
		{name: "corrupt", link: memconn.LinkConfig{Latency: lat, Corrupt: 0.10, CorruptBits: 8},
			happened: counted("corrupted", func(s memconn.Stats) uint64 { return s.Corrupted })},
		{name: "mobile-mix", link: memconn.LinkConfig{Loss: 0.05, Latency: 10 * time.Millisecond, Jitter: 10 * time.Millisecond,
			Reorder: 0.05, Duplicate: 0.02, Corrupt: 0.02, CorruptBits: 3}, happened: lost},
		{name: "write-error-bursts", link: memconn.LinkConfig{Latency: lat},
			up:          &memconn.LinkConfig{Latency: lat, WriteErrorsAfter: 60, WriteErrors: 2},
			disconnects: true,
			happened:    counted("failed at write", func(s memconn.Stats) uint64 { return s.WriteErrors })},
		{name: "partition-heal", link: memconn.LinkConfig{Latency: lat}, partition: 1500 * time.Millisecond,
			happened: counted("partitioned", func(s memconn.Stats) uint64 { return s.Partitioned })},
		{name: "partition-past-idle", link: memconn.LinkConfig{Latency: lat}, partition: 3 * time.Second,
			idle: 1500 * time.Millisecond, disconnects: true,
			happened: counted("partitioned", func(s memconn.Stats) uint64 { return s.Partitioned })},
	}
}

// TestReliabilityFaults runs three workloads at once through every fault of the matrix on the
// in-memory network: pipelined RPC calls, a record stream echoed record by record, and
// datagrams echoed one by one. Every call completes exactly once (a reply equal to its request
// or an error) and reaches the server handler at most once; records arrive in order, at most
// once, and — unless the fault ends connections — all of them, both ways; datagrams arrive at
// most once; no corrupted payload reaches any handler; faults that do not end the connection
// cost no call and no record.
func TestReliabilityFaults(t *testing.T) {
	size := pick(faultLoad{calls: 3000, records: 2000, datagrams: 500, limit: 2 * time.Minute},
		faultLoad{calls: 20000, records: 10000, datagrams: 5000, limit: 10 * time.Minute})
	seeds := pick([]uint64{1}, []uint64{1, 2, 3})
	for _, fc := range faultMatrix() {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("%s/seed%d", fc.name, seed), func(t *testing.T) {
				t.Parallel()
				runFaultCase(t, fc, seed, size)
			})
		}
	}
}

// faultLoad sizes the workloads of one fault case.
type faultLoad struct {
	calls, records, datagrams int
	// limit bounds the case: 30% loss each way keeps QUIC's congestion window near its minimum,
	// and 20,000 calls then take about a minute.
	limit time.Duration
}

// Salts of the three workloads' payloads, so that one's payload never passes for another's.
const (
	saltRPC      = 0x0100
	saltRecord   = 0x0200
	saltDatagram = 0x0300
)

// endRecord asks the peer to echo it: once its echo is back, every record sent before it on the
// same stream has been delivered.
const endRecord = "END"

// tally counts, per index, how often a workload's payload was seen.
type tally []atomic.Int32

func (t tally) add(idx uint64) bool {
	if idx >= uint64(len(t)) {
		return false
	}
	t[idx].Add(1)
	return true
}

// check reports indices seen more than once and, when all is set, indices never seen; it returns
// how many were seen.
func (t tally) check(tb testing.TB, what string, all bool) int {
	tb.Helper()
	seen, reported := 0, 0
	for i := range t {
		n := t[i].Load()
		if n > 0 {
			seen++
		}
		if (n > 1 || all && n == 0) && reported < 5 {
			tb.Errorf("%s %d seen %d times", what, i, n)
			reported++
		}
	}
	return seen
}

// recordOrder checks, on one record stream, that records arrive with consecutive indices.
type recordOrder struct {
	mu   sync.Mutex
	last int64 // -1 before the first record
}

func (o *recordOrder) next(idx uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	ok := o.last < 0 || uint64(o.last)+1 == idx
	o.last = int64(idx)
	return ok
}

// faultPeer is what each end of a fault case checks about what it receives.
type faultPeer struct {
	salt       uint64
	calls      tally // requests reaching the RPC handler (server end only)
	records    tally
	datagrams  tally
	bad        atomic.Int64 // payloads that failed their check
	disordered atomic.Int64 // records out of order on their stream
	ends       chan struct{}
}

func newFaultPeer(salt uint64, size faultLoad) *faultPeer {
	return &faultPeer{
		salt:      salt,
		calls:     make(tally, size.calls),
		records:   make(tally, size.records),
		datagrams: make(tally, size.datagrams),
		ends:      make(chan struct{}, 1),
	}
}

// handleRequest is the server's RPC handler: check, count, echo (some answers come later, from
// a timer, as a game server's often do).
func (p *faultPeer) handleRequest(req *nq.Request) {
	idx, ok := validPayload(req.Payload, p.salt+saltRPC)
	if !ok || !p.calls.add(idx) {
		p.bad.Add(1)
		req.Fail(&nq.RemoteError{Code: -3, Message: "corrupted payload"})
		return
	}
	if idx%7 == 3 {
		b := append([]byte(nil), req.Payload...)
		time.AfterFunc(time.Duration(idx%5)*time.Millisecond, func() { req.Reply(b) })
		return
	}
	req.Reply(req.Payload)
}

// recordHandler checks and counts records; the server end echoes each one back on its stream.
func (p *faultPeer) recordHandler(echo bool) nq.RecordHandler[[]byte] {
	return nq.RecordHandler[[]byte]{
		OnOpen: func(s *nq.RecordStream[[]byte]) error {
			s.SetValue(&recordOrder{last: -1})
			return nil
		},
		OnRecord: func(s *nq.RecordStream[[]byte], v []byte) {
			if string(v) == endRecord {
				if echo {
					s.Send(v)
				} else {
					select {
					case p.ends <- struct{}{}:
					default:
					}
				}
				return
			}
			idx, ok := validPayload(v, p.salt+saltRecord)
			if !ok || !p.records.add(idx) {
				p.bad.Add(1)
				return
			}
			if !s.Value().(*recordOrder).next(idx) {
				p.disordered.Add(1)
			}
			if echo {
				s.Send(v)
			}
		},
	}
}

// datagramHandler checks and counts datagrams; the server end echoes each one back.
func (p *faultPeer) datagramHandler(echo bool) func(c *nq.Conn, b []byte) {
	return func(c *nq.Conn, b []byte) {
		idx, ok := validPayload(b, p.salt+saltDatagram)
		if !ok || !p.datagrams.add(idx) {
			p.bad.Add(1)
			return
		}
		if echo {
			c.SendDatagram(b) // may fail (no room in the packet, connection gone): datagrams are unreliable
		}
	}
}

func runFaultCase(t *testing.T, fc faultCase, seed uint64, size faultLoad) {
	n, err := memconn.NewNetwork(memconn.Config{Seed: seed, Link: fc.link})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if fc.up != nil {
		if err := n.SetLink(faultClientIP, faultServerIP, *fc.up); err != nil {
			t.Fatal(err)
		}
	}
	serverQUIC, clientQUIC := patientQUIC(true), patientQUIC(false)
	if fc.idle > 0 {
		for _, c := range []*quicgo.Config{serverQUIC, clientQUIC} {
			c.MaxIdleTimeout = fc.idle
			c.HandshakeIdleTimeout = fc.idle
		}
		clientQUIC.KeepAlivePeriod = fc.idle / 3
	}
	salt := seed * 1000

	// Server.
	sp := newFaultPeer(salt, size)
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{OnRequest: sp.handleRequest}); err != nil {
		t.Fatal(err)
	}
	if err := nq.HandleRecords(mux, "rec", nq.Bytes{}, sp.recordHandler(true)); err != nil {
		t.Fatal(err)
	}
	srv := &nq.Server{TLS: certs(t).ServerTLS(), Mux: mux, Transport: n.Factory(), QUIC: serverQUIC,
		OnDatagram: sp.datagramHandler(true)}
	if err := srv.Listen(context.Background(), netip.AddrPortFrom(faultServerIP, 4433).String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	// Client.
	cp := newFaultPeer(salt, size)
	cmux := nq.NewMux()
	// The per-call timeout: far longer than any recovery the faults need, short enough that a lost
	// call fails the test in bounded time.
	if err := cmux.HandleRPC("rpc", nq.RPCHandler{Timeout: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := nq.HandleRecords(cmux, "rec", nq.Bytes{}, cp.recordHandler(false)); err != nil {
		t.Fatal(err)
	}
	var closes atomic.Int32
	cl := &nq.Client{
		TLS:        certs(t).ClientTLS("localhost"),
		Mux:        cmux,
		Transport:  n.Factory(),
		LocalAddr:  netip.AddrPortFrom(faultClientIP, 0),
		QUIC:       clientQUIC,
		OnDatagram: cp.datagramHandler(false),
		OnClose: func(*nq.Conn, error, int) time.Duration {
			closes.Add(1)
			return 20 * time.Millisecond
		},
	}
	t.Cleanup(func() { cl.Close() })
	conn, err := cl.Connect(srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), size.limit)
	t.Cleanup(cancel)

	start := time.Now()
	half := make(chan struct{})
	var workloads sync.WaitGroup
	var rpcRes rpcResult
	workloads.Add(3)
	go func() {
		defer workloads.Done()
		rpcRes = runRPCPipeline(ctx, conn.RPC("rpc"), salt+saltRPC, size.calls, fc.disconnects || fc.mayDisconnect, half)
	}()
	var recRes recordResult
	go func() {
		defer workloads.Done()
		recRes = runRecordSender(ctx, conn, salt+saltRecord, size.records, cp.ends)
	}()
	var dgSent, dgFailed int
	go func() {
		defer workloads.Done()
		dgSent, dgFailed = runDatagramSender(ctx, conn, salt+saltDatagram, size.datagrams)
	}()
	partitionDone := make(chan struct{})
	go func() {
		defer close(partitionDone)
		if fc.partition == 0 {
			return
		}
		select {
		case <-half:
		case <-ctx.Done():
			return
		}
		n.Partition(faultClientIP, faultServerIP)
		select {
		case <-time.After(fc.partition):
		case <-ctx.Done():
		}
		n.Heal(faultClientIP, faultServerIP)
	}()
	waitFor(t, doneChan(&workloads), size.limit, "the workloads to finish")
	elapsed := time.Since(start)
	waitFor(t, partitionDone, 10*time.Second, "the partition to heal")
	disconnects := closes.Load()
	conn.Close()
	waitFor(t, conn.Done(), 10*time.Second, "the client Conn to end")

	// RPC: exactly once, replies match, at most once at the server.
	for _, msg := range rpcRes.problems {
		t.Error(msg)
	}
	handled := sp.calls.check(t, "request", false)
	if handled < rpcRes.ok {
		t.Errorf("%d replies but only %d requests handled", rpcRes.ok, handled)
	}
	// Records: in order, at most once, all of them both ways unless connections ended.
	complete := !fc.disconnects && !fc.mayDisconnect
	recAtServer := sp.records.check(t, "record at the server", complete)
	recEchoed := cp.records.check(t, "record echo at the client", complete)
	if complete && recRes.sendErrors > 0 {
		t.Errorf("%d records failed to send (first: %v)", recRes.sendErrors, recRes.firstErr)
	}
	if !recRes.ended {
		t.Errorf("the end-of-records marker never came back (%v)", recRes.firstErr)
	}
	// Datagrams: at most once.
	dgAtServer := sp.datagrams.check(t, "datagram at the server", false)
	dgEchoed := cp.datagrams.check(t, "datagram echo at the client", false)
	if dgAtServer == 0 {
		t.Error("no datagram arrived")
	}
	for _, p := range []*faultPeer{sp, cp} {
		if b := p.bad.Load(); b != 0 {
			t.Errorf("%d corrupted or unknown payloads reached a handler", b)
		}
		if d := p.disordered.Load(); d != 0 {
			t.Errorf("%d records arrived out of order", d)
		}
	}
	if fc.disconnects {
		if disconnects == 0 {
			t.Error("the fault never ended a connection")
		}
		if rpcRes.ok == 0 {
			t.Error("no call succeeded")
		}
	}
	stats := n.Stats()
	if err := fc.happened(stats); err != nil {
		t.Error(err)
	}
	t.Logf("%v, %d disconnects: calls %d ok / %d failed %v; records %d sent, %d at server, %d echoed; datagrams %d sent (%d refused), %d at server, %d echoed; network: sent %d lost %d dup %d corrupt %d reordered %d write-errors %d partitioned %d",
		elapsed.Round(time.Millisecond), disconnects, rpcRes.ok, rpcRes.failed, rpcRes.kinds,
		size.records, recAtServer, recEchoed, dgSent, dgFailed, dgAtServer, dgEchoed,
		stats.Sent, stats.Lost, stats.Duplicated, stats.Corrupted, stats.Reordered, stats.WriteErrors, stats.Partitioned)
}

// doneChan returns a channel closed when wg's count reaches zero.
func doneChan(wg *sync.WaitGroup) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		wg.Wait()
		close(ch)
	}()
	return ch
}

// rpcResult sums up an RPC pipeline.
type rpcResult struct {
	ok, failed int
	kinds      map[string]int
	problems   []string
}

// runRPCPipeline makes calls pipelined calls, 32 in flight, and checks that each completes
// exactly once with its own reply or, when disconnects is set, ErrConnLost. It closes half once
// half of the calls have completed.
func runRPCPipeline(ctx context.Context, rpc *nq.RPC, salt uint64, calls int, disconnects bool, half chan<- struct{}) rpcResult {
	const window = 32
	slots := make(chan struct{}, window)
	results := make([]atomic.Int32, calls) // completions per call: must end at exactly 1
	var (
		mu        sync.Mutex
		res       = rpcResult{kinds: map[string]int{}}
		completed atomic.Int64
		done      = make(chan struct{})
	)
	problem := func(format string, args ...any) {
		if len(res.problems) < 5 {
			res.problems = append(res.problems, fmt.Sprintf(format, args...))
		}
	}
	complete := func(idx int, reply []byte, err error) {
		if results[idx].Add(1) != 1 {
			return // reported below
		}
		mu.Lock()
		switch {
		case err == nil:
			res.ok++
			if string(reply) != string(checkedPayload(uint64(idx), salt)) {
				problem("call %d: the reply does not match the request", idx)
			}
		default:
			res.failed++
			kind := "other"
			switch {
			case errors.Is(err, nq.ErrConnLost):
				kind = "ErrConnLost"
			case errors.Is(err, nq.ErrTimeout):
				kind = "ErrTimeout"
			}
			res.kinds[kind]++
			if !disconnects || kind != "ErrConnLost" {
				problem("call %d: %v", idx, err)
			}
		}
		mu.Unlock()
		switch completed.Add(1) {
		case int64(calls / 2):
			close(half)
		case int64(calls):
			close(done)
		}
	}
	for i := range calls {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			mu.Lock()
			problem("gave up after %d calls: %v", i, ctx.Err())
			mu.Unlock()
			return res
		}
		err := rpc.Go(ctx, mPing, checkedPayload(uint64(i), salt), func(reply []byte, err error) {
			complete(i, reply, err)
			<-slots
		})
		if err != nil {
			complete(i, nil, err)
			<-slots
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range results {
		if c := results[i].Load(); c != 1 {
			problem("call %d completed %d times, want exactly once", i, c)
		}
	}
	return res
}

// recordResult sums up a record sender.
type recordResult struct {
	sendErrors int
	firstErr   error
	ended      bool // the end marker's echo came back
}

// runRecordSender sends records 0..n-1 on a record stream, opening a new stream after a
// connection loss (records sent on a lost stream may be lost), then sends the end marker until
// its echo comes back (ends), which proves every record before it on that stream arrived.
func runRecordSender(ctx context.Context, conn *nq.Conn, salt uint64, n int, ends <-chan struct{}) recordResult {
	var (
		res recordResult
		rs  *nq.RecordStream[[]byte]
	)
	note := func(err error) {
		res.sendErrors++
		if res.firstErr == nil {
			res.firstErr = err
		}
	}
	stream := func() bool {
		for rs == nil || rs.Context().Err() != nil {
			octx, cancel := context.WithTimeout(ctx, 30*time.Second)
			s, err := nq.OpenRecords[[]byte](octx, conn, "rec")
			cancel()
			if err != nil {
				note(err)
				if ctx.Err() != nil {
					return false
				}
				continue
			}
			rs = s
		}
		return true
	}
	for i := range n {
		if !stream() {
			return res
		}
		if err := rs.Send(checkedPayload(uint64(i), salt)); err != nil {
			note(err)
		}
	}
	for range 10 {
		if !stream() {
			return res
		}
		if err := rs.Send([]byte(endRecord)); err != nil {
			note(err)
			continue
		}
		select {
		case <-ends:
			res.ended = true
			return res
		case <-rs.Done():
		case <-time.After(30 * time.Second):
		case <-ctx.Done():
			return res
		}
	}
	return res
}

// runDatagramSender sends datagrams 0..n-1, one every 2 ms, and returns how many were accepted
// and how many refused (no connection at the time, no room).
func runDatagramSender(ctx context.Context, conn *nq.Conn, salt uint64, n int) (sent, refused int) {
	tk := time.NewTicker(2 * time.Millisecond)
	defer tk.Stop()
	for i := range n {
		select {
		case <-tk.C:
		case <-ctx.Done():
			return sent, refused
		}
		if err := conn.SendDatagram(checkedPayload(uint64(i), salt)); err != nil {
			refused++
			continue
		}
		sent++
	}
	return sent, refused
}
