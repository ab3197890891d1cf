// Package transporttest is the conformance suite every transport.Conn implementation runs.
//
// A backend calls [Run] from its own tests with a [PairFunc] that opens two connected Conns:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, transporttest.FactoryPair(mybackend.Factory(mybackend.Config{}),
//			netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort("127.0.0.1:0")))
//	}
//
// Each rule of the transport contract is a named subtest, and every failure message names the rule
// it broke. The suite sends real traffic between the two Conns, paced by receipts (a bounded window
// of datagrams in flight) so that no socket buffer overflows; a datagram that never arrives shows as
// a failure naming it, never as a hang. The whole suite takes a few seconds per backend.
package transporttest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/naquid/naquid/transport"
)

// PairFunc returns two fresh Conns that can reach each other: a writes to b.LocalAddr() and b
// writes to a.LocalAddr(). It reports setup problems with t.Fatal (or t.Skip). The suite closes
// both Conns through t.Cleanup when the subtest ends, whether or not PairFunc registered its own
// cleanup (a second Close must be harmless anyway).
type PairFunc func(t *testing.T) (a, b transport.Conn)

// setupTimeout bounds the opening of one Conn by FactoryPair.
const setupTimeout = 10 * time.Second

// FactoryPair returns a PairFunc that opens a with f at addrA and b with f at addrB (use port 0 so
// that every subtest gets fresh ports) and closes both through t.Cleanup.
func FactoryPair(f transport.Factory, addrA, addrB netip.AddrPort) PairFunc {
	return func(t *testing.T) (transport.Conn, transport.Conn) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		a, err := f(ctx, addrA)
		if err != nil {
			t.Fatalf("transporttest: open conn a at %s: %v", addrA, err)
		}
		t.Cleanup(func() { _ = a.Close() })
		b, err := f(ctx, addrB)
		if err != nil {
			t.Fatalf("transporttest: open conn b at %s: %v", addrB, err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return a, b
	}
}

// Timing limits of the suite. They are generous for loopback on a loaded machine and still make a
// broken backend fail in seconds.
const (
	// idleTimeout is how long a receiver waits for the next datagram (and a sender for credit)
	// before it declares the outstanding datagrams lost.
	idleTimeout = 3 * time.Second
	// totalTimeout bounds one exchange of traffic.
	totalTimeout = 20 * time.Second
	// wakeTimeout is how fast SetReadDeadline in the past must wake a blocked reader.
	wakeTimeout = 100 * time.Millisecond
	// closeWakeTimeout is how fast Close must wake a blocked reader.
	closeWakeTimeout = time.Second
	// blockedWindow is how long a reader with nothing to read is watched to make sure it stays
	// blocked before the suite wakes it.
	blockedWindow = 50 * time.Millisecond
	// goroutineExitTimeout is how long the cleanup waits for the suite's goroutines after the
	// Conns are closed.
	goroutineExitTimeout = 5 * time.Second
)

// subtests lists the rules in the order Run checks them.
var subtests = []struct {
	name string
	fn   func(e *env)
}{
	{"Datagrams", testDatagrams},
	{"ReadBatchSizes", testReadBatchSizes},
	{"ReadTruncates", testReadTruncates},
	{"ConcurrentWriters", testConcurrentWriters},
	{"BufferReuse", testBufferReuse},
	{"Oversize", testOversize},
	{"Segments", testSegments},
	{"ReadDeadline", testReadDeadline},
	{"Close", testClose},
	{"ECN", testECN},
	{"LocalAddr", testLocalAddr},
}

// Run checks the transport contract on Conns from newPair. Every subtest opens a fresh pair.
func Run(t *testing.T, newPair PairFunc) {
	t.Helper()
	for _, st := range subtests {
		t.Run(st.name, func(t *testing.T) {
			st.fn(newEnv(t, newPair))
		})
	}
}

// env is one subtest's pair of Conns and the goroutines it started.
type env struct {
	t    *testing.T
	a, b transport.Conn
	wg   sync.WaitGroup
}

// newEnv opens a pair and arranges, at cleanup, to close both Conns and then wait (bounded) for
// every goroutine started with e.spawn.
func newEnv(t *testing.T, newPair PairFunc) *env {
	t.Helper()
	e := &env{t: t}
	// Cleanups run last-registered first: close the Conns, then wait for the goroutines.
	t.Cleanup(e.waitGoroutines)
	a, b := newPair(t)
	if a == nil || b == nil {
		t.Fatalf("transporttest: PairFunc returned a nil Conn (a=%v, b=%v)", a, b)
	}
	t.Cleanup(func() {
		_ = a.Close()
		_ = b.Close()
	})
	e.a, e.b = a, b
	return e
}

// spawn runs f in a goroutine that the cleanup waits for. f must not call t's methods.
func (e *env) spawn(f func()) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f()
	}()
}

func (e *env) waitGoroutines() {
	done := make(chan struct{})
	go func() {
		e.wg.Wait()
		close(done)
	}()
	timer := time.NewTimer(goroutineExitTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		e.t.Errorf("rule \"Close wakes a blocked reader\": a goroutine of the suite is still blocked in "+
			"ReadBatch or WriteBatch %v after both Conns were closed", goroutineExitTimeout)
	}
}

// maxDatagram returns c's MaxDatagram, 1452 when it is unknown.
func maxDatagram(c transport.Conn) int {
	if m := c.Capabilities().MaxDatagram; m > 0 {
		return m
	}
	return defaultMaxDatagram
}

// defaultMaxDatagram is the size callers assume when Capabilities.MaxDatagram is 0.
const defaultMaxDatagram = 1452

// exchange runs the receivers in goroutines and the senders in the calling goroutine's children,
// then waits for all of them, bounded by totalTimeout. It returns every error, sender errors
// first. When the time runs out it wakes the receivers with a read deadline in the past.
func (e *env) exchange(senders []func() error, receivers []receiver) []error {
	type result struct {
		idx int
		err error
	}
	n := len(senders) + len(receivers)
	results := make(chan result, n)
	for i, r := range receivers {
		e.spawn(func() { results <- result{len(senders) + i, r.run()} })
	}
	for i, s := range senders {
		e.spawn(func() { results <- result{i, s()} })
	}
	errs := make([]error, n)
	timer := time.NewTimer(totalTimeout)
	defer timer.Stop()
	woken := false
	for got := 0; got < n; {
		select {
		case r := <-results:
			errs[r.idx] = r.err
			got++
		case <-timer.C:
			if woken {
				e.t.Fatalf("traffic did not finish within %v, nor within %v after waking the receivers "+
					"with a read deadline in the past", totalTimeout, totalTimeout)
			}
			for _, r := range receivers {
				_ = r.conn.SetReadDeadline(time.Unix(1, 0))
			}
			e.t.Errorf("traffic did not finish within %v; woke the receivers", totalTimeout)
			woken = true
			timer.Reset(totalTimeout)
		}
	}
	var out []error
	for _, err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// failOn reports every error with t.Error and stops the subtest if there was one.
func (e *env) failOn(errs []error) {
	e.t.Helper()
	for _, err := range errs {
		e.t.Error(err)
	}
	if len(errs) > 0 {
		e.t.FailNow()
	}
}

// errDeadline is what a receiver reports when nothing arrived for idleTimeout.
var errDeadline = errors.New("nothing arrived")

// receiver reads datagrams from conn until want have arrived, handing each to tr and returning
// credit to win (if not nil).
type receiver struct {
	conn  transport.Conn
	batch int // messages per ReadBatch call
	buf   int // bytes per message buffer
	want  int
	idle  time.Duration
	win   *window
	tr    *tracker
}

// run reads until r.want datagrams arrived or nothing arrived for r.idle. Structural rule
// violations of ReadBatch end the run with an error; content problems are collected in r.tr.
func (r receiver) run() error {
	msgs := make([]transport.Message, r.batch)
	bufs := make([][]byte, r.batch)
	for i := range bufs {
		bufs[i] = make([]byte, r.buf)
	}
	defer func() { _ = r.conn.SetReadDeadline(time.Time{}) }()
	got := 0
	for got < r.want {
		for i := range msgs {
			// Reset every field so that a value left from an earlier call cannot hide a bug.
			msgs[i] = transport.Message{Buf: bufs[i], N: -1, SegmentSize: -1, ECN: 0xff}
		}
		if err := r.conn.SetReadDeadline(time.Now().Add(r.idle)); err != nil {
			return fmt.Errorf("SetReadDeadline on an open Conn: %v", err)
		}
		n, err := r.conn.ReadBatch(msgs)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("rule \"no datagram is lost on an unloaded path\": %w for %v: received %d of %d datagrams; %s", errDeadline, r.idle,
					got, r.want, r.tr.missingReport())
			}
			return fmt.Errorf("rule \"ReadBatch fails only on deadline, Close or a broken socket\": "+
				"ReadBatch after %d of %d datagrams: %v", got, r.want, err)
		}
		if n < 1 || n > len(msgs) {
			return fmt.Errorf("rule \"ReadBatch returns 1 <= n <= len(msgs)\": got n=%d for len(msgs)=%d",
				n, len(msgs))
		}
		for i := range n {
			m := &msgs[i]
			if m.N < 0 || m.N > len(m.Buf) {
				return fmt.Errorf("rule \"ReadBatch sets 0 <= N <= len(Buf)\": msgs[%d].N=%d with len(Buf)=%d",
					i, m.N, len(m.Buf))
			}
			r.tr.observe(m)
			got++
			if r.win != nil {
				r.win.release(1, m.N)
			}
		}
	}
	return nil
}
