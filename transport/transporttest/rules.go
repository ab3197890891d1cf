package transporttest

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/naquid/naquid/transport"
)

// datagramCount is how many datagrams the Datagrams subtest sends each way (10,000 in all).
const datagramCount = 5000

// testDatagrams: datagramCount datagrams each way, both ways at once, of sizes cycling over
// 0..MaxDatagram, arrive intact, once, from the sender's address.
func testDatagrams(e *env) {
	e.failOn(runDatagrams(e, datagramCount, idleTimeout))
}

// runDatagrams sends count datagrams a->b and count b->a at the same time and returns every
// rule violation.
func runDatagrams(e *env, count int, idle time.Duration) []error {
	maxSize := min(maxDatagram(e.a), maxDatagram(e.b), maxTestDatagram)
	sizes := sizeCycle(count, maxSize)
	var (
		senders   []func() error
		receivers []receiver
		trackers  []*tracker
	)
	for _, dir := range []struct {
		name     string
		from, to transport.Conn
	}{{"a->b", e.a, e.b}, {"b->a", e.b, e.a}} {
		tr := newTracker(dir.name, dir.from, dir.to, 1, count)
		for seq, size := range sizes {
			if size < headerLen {
				tr.expectSmall(0, uint32(seq), size)
			}
		}
		win := newWindow(windowCount, windowBytes, idle)
		from, dst := dir.from, dir.to.LocalAddr()
		senders = append(senders, func() error {
			buf := make([]byte, maxSize)
			msgs := make([]transport.Message, 1)
			for seq, size := range sizes {
				fill(buf[:size], 0, uint32(seq))
				msgs[0] = transport.Message{Buf: buf[:size], Addr: dst}
				if err := send(from, msgs, win); err != nil {
					return fmt.Errorf("%s: datagram %d (%d bytes): %w", dir.name, seq, size, err)
				}
			}
			return nil
		})
		receivers = append(receivers, receiver{conn: dir.to, batch: 8, buf: maxSize, want: count,
			idle: idle, win: win, tr: tr})
		trackers = append(trackers, tr)
	}
	errs := e.exchange(senders, receivers)
	for _, tr := range trackers {
		if err := tr.err(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// sizeCycle returns count sizes that cycle over 0..maxSize: every size appears when count allows,
// the first two are 0 and maxSize, and neighbours differ widely.
func sizeCycle(count, maxSize int) []int {
	span := maxSize + 1
	stride := 7919 % span
	for stride == 0 || gcd(stride, span) != 1 {
		stride++
	}
	sizes := make([]int, count)
	for i := range sizes {
		sizes[i] = i * stride % span
	}
	if count > 1 {
		sizes[1] = maxSize
	}
	return sizes
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// testReadBatchSizes: ReadBatch with 1, 2, 8 and 64 messages returns 1..len(msgs) of them, each
// with N <= len(Buf).
func testReadBatchSizes(e *env) {
	const count = 256
	for _, batch := range []int{1, 2, 8, 64} {
		tr := newTracker(fmt.Sprintf("a->b, ReadBatch of %d", batch), e.a, e.b, 1, count)
		win := newWindow(2*windowCount, windowBytes, idleTimeout)
		dst := e.b.LocalAddr()
		sender := func() error {
			const perWrite = 16
			bufs := make([][]byte, perWrite)
			for i := range bufs {
				bufs[i] = make([]byte, 1200)
			}
			msgs := make([]transport.Message, perWrite)
			for seq := 0; seq < count; seq += perWrite {
				for i := range msgs {
					size := headerLen + (seq+i)*37%1000
					fill(bufs[i][:size], 0, uint32(seq+i))
					msgs[i] = transport.Message{Buf: bufs[i][:size], Addr: dst}
				}
				if err := send(e.a, msgs, win); err != nil {
					return fmt.Errorf("ReadBatch of %d: %w", batch, err)
				}
			}
			return nil
		}
		e.failOn(e.exchange([]func() error{sender}, []receiver{{conn: e.b, batch: batch, buf: 2048,
			want: count, idle: idleTimeout, win: win, tr: tr}}))
		e.failOn(nonNil(tr.err()))
	}
}

// testReadTruncates: a datagram longer than Buf arrives truncated to len(Buf), and the next one
// arrives whole.
func testReadTruncates(e *env) {
	big := make([]byte, 1000)
	fill(big, 0, 0)
	if err := send(e.a, []transport.Message{{Buf: big, Addr: e.b.LocalAddr()}}, nil); err != nil {
		e.t.Fatal(err)
	}
	m, err := readOne(e.b, 100)
	if err != nil {
		e.t.Fatal(err)
	}
	if m.N != 100 || string(m.Buf[:m.N]) != string(big[:100]) {
		e.t.Fatalf("rule \"a datagram longer than Buf is truncated to len(Buf)\": sent 1000 bytes, read "+
			"into 100: got N=%d, first bytes match: %v", m.N, m.N <= 100 && string(m.Buf[:m.N]) == string(big[:m.N]))
	}
	next := make([]byte, 300)
	fill(next, 0, 1)
	if err := send(e.a, []transport.Message{{Buf: next, Addr: e.b.LocalAddr()}}, nil); err != nil {
		e.t.Fatal(err)
	}
	if m, err = readOne(e.b, 2048); err != nil {
		e.t.Fatal(err)
	}
	if string(m.Buf[:m.N]) != string(next) {
		e.t.Fatalf("rule \"a truncated datagram leaves nothing behind\": after a truncated read the next "+
			"read returned %d bytes, want the 300-byte datagram sent after it", m.N)
	}
}

// readOne reads one datagram into a fresh buffer of bufSize bytes, waiting at most idleTimeout.
func readOne(c transport.Conn, bufSize int) (transport.Message, error) {
	msgs := []transport.Message{{Buf: make([]byte, bufSize)}}
	if err := c.SetReadDeadline(time.Now().Add(idleTimeout)); err != nil {
		return transport.Message{}, fmt.Errorf("SetReadDeadline on an open Conn: %v", err)
	}
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	n, err := c.ReadBatch(msgs)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return transport.Message{}, fmt.Errorf("rule \"no datagram is lost on an unloaded path\": "+
			"nothing arrived within %v", idleTimeout)
	case err != nil:
		return transport.Message{}, fmt.Errorf("ReadBatch: %v", err)
	case n != 1:
		return transport.Message{}, fmt.Errorf("rule \"ReadBatch returns 1 <= n <= len(msgs)\": got n=%d "+
			"for len(msgs)=1", n)
	case msgs[0].N < 0 || msgs[0].N > bufSize:
		return transport.Message{}, fmt.Errorf("rule \"ReadBatch sets 0 <= N <= len(Buf)\": N=%d, "+
			"len(Buf)=%d", msgs[0].N, bufSize)
	}
	return msgs[0], nil
}

// testConcurrentWriters: 16 goroutines calling WriteBatch at once; every datagram arrives exactly
// once.
func testConcurrentWriters(e *env) {
	const (
		writers  = 16
		batches  = 40
		perBatch = 4
		perW     = batches * perBatch
	)
	tr := newTracker("a->b", e.a, e.b, writers, perW)
	win := newWindow(windowCount, windowBytes, idleTimeout)
	dst := e.b.LocalAddr()
	senders := make([]func() error, writers)
	for w := range senders {
		senders[w] = func() error {
			bufs := make([][]byte, perBatch)
			for i := range bufs {
				bufs[i] = make([]byte, 1200)
			}
			msgs := make([]transport.Message, perBatch)
			for seq := 0; seq < perW; seq += perBatch {
				for i := range msgs {
					size := headerLen + ((seq+i)*53+w*17)%1100
					fill(bufs[i][:size], uint16(w), uint32(seq+i))
					msgs[i] = transport.Message{Buf: bufs[i][:size], Addr: dst}
				}
				if err := send(e.a, msgs, win); err != nil {
					return fmt.Errorf("writer %d, datagram %d: %w", w, seq, err)
				}
				// The other methods are documented safe for concurrent use too.
				_ = e.a.LocalAddr()
				_ = e.a.Capabilities()
			}
			return nil
		}
	}
	e.failOn(e.exchange(senders, []receiver{{conn: e.b, batch: 8, buf: 2048, want: writers * perW,
		idle: idleTimeout, win: win, tr: tr}}))
	e.failOn(nonNil(tr.err()))
}

// testBufferReuse: buffers overwritten as soon as WriteBatch returns do not change what arrives.
func testBufferReuse(e *env) {
	const (
		rounds   = 8
		plain    = 16
		segSize  = 600
		segments = 3
		perRound = plain + segments
	)
	tr := newTracker("a->b", e.a, e.b, 1, rounds*perRound)
	win := newWindow(windowCount, windowBytes, idleTimeout)
	dst := e.b.LocalAddr()
	sender := func() error {
		bufs := make([][]byte, plain+1)
		for i := range bufs {
			bufs[i] = make([]byte, segSize*segments)
		}
		msgs := make([]transport.Message, plain+1)
		for r := range rounds {
			seq := uint32(r * perRound)
			for i := range plain {
				size := headerLen + (int(seq)*31)%500
				fill(bufs[i][:size], 0, seq)
				msgs[i] = transport.Message{Buf: bufs[i][:size], Addr: dst}
				seq++
			}
			fillSegments(bufs[plain], segSize, 0, seq)
			msgs[plain] = transport.Message{Buf: bufs[plain], Addr: dst, SegmentSize: segSize}
			if err := send(e.a, msgs, win); err != nil {
				return fmt.Errorf("round %d: %w", r, err)
			}
			for _, b := range bufs {
				for i := range b {
					b[i] = 0xEE
				}
			}
		}
		return nil
	}
	e.failOn(e.exchange([]func() error{sender}, []receiver{{conn: e.b, batch: 8, buf: 2048,
		want: rounds * perRound, idle: idleTimeout, win: win, tr: tr}}))
	if err := tr.err(); err != nil {
		e.t.Fatalf("rule \"WriteBatch keeps no reference to a buffer after it returns\" (buffers were "+
			"overwritten with 0xEE right after WriteBatch): %v", err)
	}
}

// testOversize: a datagram of MaxDatagram+1 bytes fails with EMSGSIZE, WriteBatch stops there,
// and later writes still work.
func testOversize(e *env) {
	maxSize := e.a.Capabilities().MaxDatagram
	if maxSize <= 0 {
		e.t.Skip("Capabilities().MaxDatagram is 0 (unknown): no size is known to be too large")
	}
	if maxSize >= math.MaxUint16 {
		e.t.Skipf("Capabilities().MaxDatagram is %d: no UDP datagram is larger", maxSize)
	}
	dst := e.b.LocalAddr()
	first, after, later := make([]byte, 100), make([]byte, 100), make([]byte, 100)
	fill(first, 0, 0)
	fill(later, 0, 1)
	fill(after, 0, 2)
	tr := newTracker("a->b", e.a, e.b, 1, 3)

	for _, tc := range []struct {
		name string
		msg  transport.Message
	}{
		{"a datagram of MaxDatagram+1 bytes", transport.Message{Buf: make([]byte, maxSize+1), Addr: dst}},
		{"a segment of MaxDatagram+1 bytes", transport.Message{Buf: make([]byte, 2*(maxSize+1)), Addr: dst,
			SegmentSize: maxSize + 1}},
	} {
		msgs := []transport.Message{{Buf: first, Addr: dst}, tc.msg, {Buf: after, Addr: dst}}
		n, err := e.a.WriteBatch(msgs)
		if !errors.Is(err, syscall.EMSGSIZE) {
			e.t.Fatalf("rule \"a datagram larger than MaxDatagram (%d) fails with EMSGSIZE\": %s: "+
				"WriteBatch returned n=%d, err=%v", maxSize, tc.name, n, err)
		}
		if n != 1 {
			e.t.Fatalf("rule \"on EMSGSIZE, n counts the messages sent before the failing one\": %s as the "+
				"second of 3 messages: n=%d, want 1", tc.name, n)
		}
		if err := send(e.a, []transport.Message{{Buf: later, Addr: dst}}, nil); err != nil {
			e.t.Fatalf("rule \"writes still work after EMSGSIZE\": %v", err)
		}
		e.failOn(e.exchange(nil, []receiver{{conn: e.b, batch: 1, buf: 2048, want: 2, idle: idleTimeout,
			tr: tr}}))
		e.failOn(nonNil(tr.err()))
		if tr.seen[0][2] > 0 {
			e.t.Fatalf("rule \"WriteBatch stops at the message that fails\": %s failed, yet the message "+
				"after it in the same batch arrived", tc.name)
		}
		if tr.seen[0][0] != 1 || tr.seen[0][1] != 1 {
			e.t.Fatalf("rule \"writes still work after EMSGSIZE\": %s: %s", tc.name, tr.missingReport())
		}
		tr.seen[0][0], tr.seen[0][1] = 0, 0
	}
}

// testSegments: a Message with SegmentSize arrives as separate datagrams, in order, intact.
func testSegments(e *env) {
	type part struct{ size, seg int }
	cases := []struct {
		name  string
		parts []part // one message each, in one WriteBatch
		want  []int  // datagram sizes in arrival order
	}{
		{"5x1000 and a 300-byte tail", []part{{5300, 1000}}, []int{1000, 1000, 1000, 1000, 1000, 300}},
		{"exactly 8x1200", []part{{9600, 1200}}, []int{1200, 1200, 1200, 1200, 1200, 1200, 1200, 1200}},
		{"SegmentSize equal to len(Buf) is one datagram", []part{{1200, 1200}}, []int{1200}},
		{"SegmentSize above len(Buf) is one datagram", []part{{500, 1200}}, []int{500}},
		{"segmented, plain and segmented messages in one batch",
			[]part{{1520, 500}, {700, 0}, {1600, 800}}, []int{500, 500, 500, 20, 700, 800, 800}},
	}
	dst := e.b.LocalAddr()
	for _, tc := range cases {
		tr := newTracker("a->b, "+tc.name, e.a, e.b, 1, len(tc.want))
		var msgs []transport.Message
		seq := uint32(0)
		for _, p := range tc.parts {
			buf := make([]byte, p.size)
			if p.seg > 0 {
				seq += uint32(fillSegments(buf, p.seg, 0, seq))
			} else {
				fill(buf, 0, seq)
				seq++
			}
			msgs = append(msgs, transport.Message{Buf: buf, Addr: dst, SegmentSize: p.seg})
		}
		if err := send(e.a, msgs, nil); err != nil {
			e.t.Fatalf("%s: %v", tc.name, err)
		}
		e.failOn(e.exchange(nil, []receiver{{conn: e.b, batch: 8, buf: 16 << 10, want: len(tc.want),
			idle: idleTimeout, tr: tr}}))
		if err := tr.err(); err != nil {
			e.t.Fatalf("rule \"a segmented message arrives as one datagram per segment\": %v", err)
		}
		for i, d := range tr.order {
			if d.seq != uint32(i) {
				e.t.Fatalf("rule \"segments arrive in order\": %s: arrival order %v", tc.name, tr.order)
			}
		}
	}
}

// testReadDeadline: deadlines in the future expire, a deadline in the past wakes a blocked reader
// at once, and clearing the deadline makes reads work again.
func testReadDeadline(e *env) {
	t, c := e.t, e.b
	msgs := []transport.Message{{Buf: make([]byte, 2048)}}

	const future = 50 * time.Millisecond
	start := time.Now()
	if err := c.SetReadDeadline(start.Add(future)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	n, err := e.readBounded(c, msgs, totalTimeout)
	elapsed := time.Since(start)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("rule \"a passed deadline fails ReadBatch with os.ErrDeadlineExceeded\": deadline in %v: "+
			"got n=%d, err=%v", future, n, err)
	}
	if elapsed < future-5*time.Millisecond {
		t.Fatalf("rule \"ReadBatch waits until the deadline\": a deadline %v ahead expired after %v", future,
			elapsed)
	}

	if _, err := e.readBounded(c, msgs, totalTimeout); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("rule \"a deadline in the past fails ReadBatch at once\": got err=%v", err)
	}

	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatalf("SetReadDeadline(zero): %v", err)
	}
	result := e.blockedRead(c)
	woke := time.Now()
	if err := c.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatalf("SetReadDeadline(past) with a blocked reader: %v", err)
	}
	select {
	case r := <-result:
		if !errors.Is(r.err, os.ErrDeadlineExceeded) {
			t.Fatalf("rule \"SetReadDeadline wakes a blocked ReadBatch with os.ErrDeadlineExceeded\": got "+
				"n=%d, err=%v", r.n, r.err)
		}
		if d := time.Since(woke); d > wakeTimeout {
			t.Errorf("rule \"SetReadDeadline in the past wakes a blocked ReadBatch within %v\": it took %v",
				wakeTimeout, d)
		}
	case <-time.After(closeWakeTimeout):
		t.Fatalf("rule \"SetReadDeadline in the past wakes a blocked ReadBatch\": still blocked after %v "+
			"(quic-go's Transport.Close would hang)", closeWakeTimeout)
	}

	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatalf("SetReadDeadline(zero): %v", err)
	}
	result = e.blockedRead(c)
	payload := make([]byte, 200)
	fill(payload, 0, 0)
	if err := send(e.a, []transport.Message{{Buf: payload, Addr: c.LocalAddr()}}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-result:
		if r.err != nil || r.n != 1 {
			t.Fatalf("rule \"clearing the deadline makes reads work again\": got n=%d, err=%v", r.n, r.err)
		}
	case <-time.After(idleTimeout):
		_ = c.SetReadDeadline(time.Unix(1, 0))
		t.Fatalf("rule \"clearing the deadline makes reads work again\": a datagram sent after the deadline "+
			"was cleared did not arrive within %v", idleTimeout)
	}
}

// readResult is the outcome of a ReadBatch run in another goroutine.
type readResult struct {
	n   int
	err error
}

// readBounded runs ReadBatch in another goroutine and gives up when it has not returned within
// limit (waking it with a deadline in the past; the cleanup waits for it).
func (e *env) readBounded(c transport.Conn, msgs []transport.Message, limit time.Duration) (int, error) {
	result := make(chan readResult, 1)
	e.spawn(func() {
		n, err := c.ReadBatch(msgs)
		result <- readResult{n, err}
	})
	select {
	case r := <-result:
		return r.n, r.err
	case <-time.After(limit):
		_ = c.SetReadDeadline(time.Unix(1, 0))
		return 0, fmt.Errorf("ReadBatch still blocked after %v", limit)
	}
}

// blockedRead starts a ReadBatch on c (which has nothing to read) in another goroutine, watches it
// stay blocked for blockedWindow, and returns the channel its result will arrive on.
func (e *env) blockedRead(c transport.Conn) <-chan readResult {
	e.t.Helper()
	result := make(chan readResult, 1)
	e.spawn(func() {
		n, err := c.ReadBatch([]transport.Message{{Buf: make([]byte, 2048)}})
		result <- readResult{n, err}
	})
	select {
	case r := <-result:
		e.t.Fatalf("rule \"ReadBatch blocks until a datagram arrives\": it returned n=%d, err=%v with "+
			"nothing sent and no deadline", r.n, r.err)
	case <-time.After(blockedWindow):
	}
	return result
}

// testClose: Close wakes a blocked reader; every later call fails with net.ErrClosed; another
// Close is harmless; Close racing with writers is safe.
func testClose(e *env) {
	t, c := e.t, e.b
	result := e.blockedRead(c)
	if err := c.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	select {
	case r := <-result:
		if !errors.Is(r.err, net.ErrClosed) {
			t.Errorf("rule \"Close wakes a blocked reader with net.ErrClosed\": got n=%d, err=%v", r.n, r.err)
		}
	case <-time.After(closeWakeTimeout):
		t.Fatalf("rule \"Close wakes a blocked reader\": ReadBatch still blocked %v after Close",
			closeWakeTimeout)
	}

	msgs := []transport.Message{{Buf: make([]byte, 100), Addr: e.a.LocalAddr()}}
	if _, err := e.readBounded(c, msgs, closeWakeTimeout); !errors.Is(err, net.ErrClosed) {
		t.Errorf("rule \"after Close, ReadBatch fails with net.ErrClosed\": got %v", err)
	}
	if n, err := c.WriteBatch(msgs); !errors.Is(err, net.ErrClosed) || n != 0 {
		t.Errorf("rule \"after Close, WriteBatch fails with net.ErrClosed\": got n=%d, err=%v", n, err)
	}
	if err := c.SetReadDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("rule \"after Close, SetReadDeadline fails with net.ErrClosed\": got %v", err)
	}
	closes := make(chan error, 2)
	for range 2 {
		e.spawn(func() { closes <- c.Close() })
	}
	for range 2 {
		if err := <-closes; err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("rule \"a second Close returns nil or net.ErrClosed\": got %v", err)
		}
	}

	closeUnderWriters(e)
}

// closeUnderWriters closes a while four goroutines write to b in a loop: every writer must end
// with an error matching net.ErrClosed and nothing else.
func closeUnderWriters(e *env) {
	const writers = 4
	// b is closed already, so nobody reads: like UDP, a write never fails because of its
	// destination.
	dst := e.b.LocalAddr()
	started := make(chan struct{}, writers)
	done := make(chan error, writers)
	for w := range writers {
		e.spawn(func() {
			buf := make([]byte, 64)
			fill(buf, uint16(w), 0)
			msgs := []transport.Message{{Buf: buf, Addr: dst}, {Buf: buf, Addr: dst}}
			for i := 0; ; i++ {
				if i == 10 {
					started <- struct{}{}
				}
				if _, err := e.a.WriteBatch(msgs); err != nil {
					done <- err
					return
				}
			}
		})
	}
	for range writers {
		select {
		case <-started:
		case <-time.After(totalTimeout):
			e.t.Fatalf("writers to a closed peer made no progress in %v: WriteBatch must absorb "+
				"back-pressure, never block forever", totalTimeout)
		}
	}
	if err := e.a.Close(); err != nil {
		e.t.Fatalf("Close with writers running: %v", err)
	}
	for range writers {
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				e.t.Errorf("rule \"WriteBatch fails only with EMSGSIZE or, after Close, net.ErrClosed\": a "+
					"writer racing with Close got %v", err)
			}
		case <-time.After(totalTimeout):
			e.t.Fatalf("rule \"after Close, WriteBatch fails with net.ErrClosed\": a writer still had not "+
				"failed %v after Close", totalTimeout)
		}
	}
}

// testECN: with Capabilities().ECN, every codepoint sent arrives unchanged, on plain and
// segmented messages.
func testECN(e *env) {
	if !e.a.Capabilities().ECN || !e.b.Capabilities().ECN {
		e.t.Skipf("Capabilities().ECN is false (a: %v, b: %v)", e.a.Capabilities().ECN,
			e.b.Capabilities().ECN)
	}
	codepoints := []transport.ECN{transport.ECNNotECT, transport.ECNECT1, transport.ECNECT0, transport.ECNCE}
	const segments = 3
	dst := e.b.LocalAddr()
	var msgs []transport.Message
	var want []transport.ECN
	for i, ecn := range codepoints {
		buf := make([]byte, 100)
		fill(buf, 0, uint32(i))
		msgs = append(msgs, transport.Message{Buf: buf, Addr: dst, ECN: ecn})
		want = append(want, ecn)
	}
	seg := make([]byte, segments*400)
	fillSegments(seg, 400, 0, uint32(len(msgs)))
	msgs = append(msgs, transport.Message{Buf: seg, Addr: dst, SegmentSize: 400, ECN: transport.ECNECT0})
	for range segments {
		want = append(want, transport.ECNECT0)
	}
	tr := newTracker("a->b", e.a, e.b, 1, len(want))
	if err := send(e.a, msgs, nil); err != nil {
		e.t.Fatal(err)
	}
	e.failOn(e.exchange(nil, []receiver{{conn: e.b, batch: 8, buf: 2048, want: len(want),
		idle: idleTimeout, tr: tr}}))
	e.failOn(nonNil(tr.err()))
	for seq, w := range want {
		if got := tr.ecn[0][seq]; got != w {
			e.t.Errorf("rule \"a datagram sent with ECN %v arrives with ECN %v\": datagram %d arrived with %v",
				w, w, seq, got)
		}
	}
}

// testLocalAddr: with Capabilities().LocalAddr, Local is the receiver's address (checked by the
// tracker on every datagram of the suite), also when the sender picks its source address.
func testLocalAddr(e *env) {
	if !e.b.Capabilities().LocalAddr {
		e.t.Skip("Capabilities().LocalAddr is false")
	}
	dst := e.b.LocalAddr()
	src := e.a.LocalAddr().Addr()
	var msgs []transport.Message
	for i := range 4 {
		buf := make([]byte, 100)
		fill(buf, 0, uint32(i))
		m := transport.Message{Buf: buf, Addr: dst}
		if i%2 == 1 && e.a.Capabilities().LocalAddr && !src.IsUnspecified() {
			m.Local = src // the sender's own address as the chosen source
		}
		msgs = append(msgs, m)
	}
	tr := newTracker("a->b", e.a, e.b, 1, len(msgs))
	if err := send(e.a, msgs, nil); err != nil {
		e.t.Fatalf("rule \"WriteBatch accepts the Conn's own address as Local\": %v", err)
	}
	e.failOn(e.exchange(nil, []receiver{{conn: e.b, batch: 8, buf: 2048, want: len(msgs),
		idle: idleTimeout, tr: tr}}))
	e.failOn(nonNil(tr.err()))
}

// nonNil returns err as a slice, empty when err is nil.
func nonNil(err error) []error {
	if err == nil {
		return nil
	}
	return []error{err}
}
