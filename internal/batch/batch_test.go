package batch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/naquid/naquid/transport"
)

// testTimeout bounds every wait in these tests so that a bug fails fast instead of hanging.
const testTimeout = 10 * time.Second

// msg returns a message whose payload encodes (writer, index).
func msg(writer, index int) transport.Message {
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b, uint32(writer))
	binary.BigEndian.PutUint32(b[4:], uint32(index))
	return transport.Message{Buf: b}
}

func ident(m transport.Message) (writer, index int) {
	return int(binary.BigEndian.Uint32(m.Buf)), int(binary.BigEndian.Uint32(m.Buf[4:]))
}

type sent struct{ writer, index int }

// recorder is a fake FlushFunc: it logs what it sends, fails the messages fail picks, and
// checks that it is never called concurrently.
type recorder struct {
	inFlight atomic.Int32
	mu       sync.Mutex
	log      []sent
	calls    []int // messages per call
	fail     func(writer, index int) error
	gate     chan struct{} // when set, the first call closes entered and waits for gate to close
	entered  chan struct{}
	t        testing.TB
}

func (r *recorder) flush(msgs []transport.Message) (int, error) {
	if r.inFlight.Add(1) != 1 {
		r.t.Error("FlushFunc called concurrently")
	}
	defer r.inFlight.Add(-1)
	r.mu.Lock()
	first := len(r.calls) == 0
	r.calls = append(r.calls, len(msgs))
	r.mu.Unlock()
	if first && r.gate != nil {
		close(r.entered)
		select {
		case <-r.gate:
		case <-time.After(testTimeout):
			r.t.Error("gate never opened")
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, m := range msgs {
		w, x := ident(m)
		if r.fail != nil {
			if err := r.fail(w, x); err != nil {
				return i, err
			}
		}
		r.log = append(r.log, sent{w, x})
	}
	return len(msgs), nil
}

type result struct {
	n   int
	err error
}

// TestRouting puts several writers into one flush and checks that each gets its own result, that
// a failure stops only its own writer's messages, and that nothing is sent twice.
func TestRouting(t *testing.T) {
	errTooBig := fmt.Errorf("too big: %w", syscall.EMSGSIZE)
	for _, tc := range []struct {
		name    string
		sizes   []int                          // messages per writer; writer 0 leads and is flushed alone first
		maxMsgs int                            // Config.MaxMessages
		fail    func(w, i int) error           // which message fails
		flush   func(*recorder) FlushFunc      // replaces the recorder's flush when set
		want    []result                       // per writer
		check   func(t *testing.T, log []sent) // extra checks on what was sent
	}{
		{
			name:  "all sent",
			sizes: []int{1, 2, 3, 1},
			want:  []result{{1, nil}, {2, nil}, {3, nil}, {1, nil}},
		},
		{
			name:  "failure in the middle of a batch",
			sizes: []int{1, 3, 3, 2},
			fail: func(w, i int) error {
				if w == 2 && i == 1 {
					return errTooBig
				}
				return nil
			},
			want: []result{{1, nil}, {3, nil}, {1, errTooBig}, {2, nil}},
			check: func(t *testing.T, log []sent) {
				for _, s := range log {
					if s.writer == 2 && s.index > 1 {
						t.Errorf("message %d of the failed writer was sent", s.index)
					}
				}
			},
		},
		{
			name:  "first message of a batch fails",
			sizes: []int{1, 2, 2},
			fail: func(w, i int) error {
				if w == 1 && i == 0 {
					return errTooBig
				}
				return nil
			},
			want: []result{{1, nil}, {0, errTooBig}, {2, nil}},
		},
		{
			name:  "last message of a batch fails",
			sizes: []int{1, 2, 2},
			fail: func(w, i int) error {
				if w == 2 && i == 1 {
					return errTooBig
				}
				return nil
			},
			want: []result{{1, nil}, {2, nil}, {1, errTooBig}},
		},
		{
			name:  "every writer fails",
			sizes: []int{2, 2, 2},
			fail:  func(w, i int) error { return net.ErrClosed },
			want:  []result{{0, net.ErrClosed}, {0, net.ErrClosed}, {0, net.ErrClosed}},
		},
		{
			name:    "writes larger than a flush",
			sizes:   []int{5, 7, 1, 3},
			maxMsgs: 3,
			want:    []result{{5, nil}, {7, nil}, {1, nil}, {3, nil}},
		},
		{
			name:    "failure in a write split over flushes",
			sizes:   []int{1, 7, 2},
			maxMsgs: 3,
			fail: func(w, i int) error {
				if w == 1 && i == 4 {
					return errTooBig
				}
				return nil
			},
			want: []result{{1, nil}, {4, errTooBig}, {2, nil}},
		},
		{
			name:  "short flush without error",
			sizes: []int{1, 2, 2},
			flush: func(r *recorder) FlushFunc {
				calls := 0
				return func(msgs []transport.Message) (int, error) {
					if calls++; calls == 2 {
						// Sends one message of the combined batch and says nothing about the rest.
						n, _ := r.flush(msgs[:1])
						r.mu.Lock()
						r.calls[len(r.calls)-1] = len(msgs)
						r.mu.Unlock()
						return n, nil
					}
					return r.flush(msgs)
				}
			},
			want: []result{{1, nil}, {1, io.ErrShortWrite}, {2, nil}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{t: t, fail: tc.fail, gate: make(chan struct{}), entered: make(chan struct{})}
			flush := rec.flush
			if tc.flush != nil {
				flush = tc.flush(rec)
			}
			c, err := New(flush, Config{MaxMessages: tc.maxMsgs})
			if err != nil {
				t.Fatal(err)
			}
			waiting := make(chan int, len(tc.sizes))
			c.enqueued = func(n int) { waiting <- n }

			results := make([]chan result, len(tc.sizes))
			for w, size := range tc.sizes {
				results[w] = make(chan result, 1)
				msgs := make([]transport.Message, size)
				for i := range msgs {
					msgs[i] = msg(w, i)
				}
				go func() {
					n, err := c.Write(msgs)
					results[w] <- result{n, err}
				}()
				if w == 0 {
					select { // writer 0 leads and is stuck in the gated first flush
					case <-rec.entered:
					case <-time.After(testTimeout):
						t.Fatal("first flush never started")
					}
					continue
				}
				waitFor(t, waiting, w+1) // writer w is queued behind it (the leader is still pending)
			}
			close(rec.gate)
			for w, ch := range results {
				var got result
				select {
				case got = <-ch:
				case <-time.After(testTimeout):
					t.Fatalf("writer %d never returned", w)
				}
				if got.n != tc.want[w].n || !errors.Is(got.err, tc.want[w].err) || (got.err == nil) != (tc.want[w].err == nil) {
					t.Errorf("writer %d: got (%d, %v), want (%d, %v)", w, got.n, got.err, tc.want[w].n, tc.want[w].err)
				}
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			// Each writer's messages went out once each, in order, and exactly as many as it was told.
			next := make([]int, len(tc.sizes))
			for _, s := range rec.log {
				if s.index != next[s.writer] {
					t.Fatalf("writer %d: sent message %d, expected %d (log %v)", s.writer, s.index, next[s.writer], rec.log)
				}
				next[s.writer]++
			}
			for w := range tc.sizes {
				if next[w] != tc.want[w].n {
					t.Errorf("writer %d: %d messages sent, told %d", w, next[w], tc.want[w].n)
				}
			}
			if tc.maxMsgs > 0 {
				for _, n := range rec.calls {
					if n > tc.maxMsgs {
						t.Errorf("a flush got %d messages, more than MaxMessages %d", n, tc.maxMsgs)
					}
				}
			} else {
				queued := 0
				for _, n := range tc.sizes[1:] {
					queued += n
				}
				if len(rec.calls) < 2 || rec.calls[1] != queued {
					t.Errorf("flush sizes %v: the %d queued messages were not combined into the second flush", rec.calls, queued)
				}
			}
			if tc.check != nil {
				tc.check(t, rec.log)
			}
		})
	}
}

func waitFor(t *testing.T, ch <-chan int, want int) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("%d writers waiting, want %d", got, want)
		}
	case <-time.After(testTimeout):
		t.Fatalf("writer %d never queued", want)
	}
}

// TestConcurrentWriters runs 64 writers against a flush that fails some messages, and checks that
// every message is sent exactly once unless it or an earlier message of its write failed, and
// that every writer learns exactly that.
func TestConcurrentWriters(t *testing.T) {
	const writers, writes = 64, 150
	fails := func(w, i int) bool { return (w*7919+i*104729)%53 == 0 }
	rec := &recorder{t: t}
	rec.fail = func(w, i int) error {
		if fails(w, i%1000) {
			return fmt.Errorf("writer %d message %d: %w", w, i, syscall.EMSGSIZE)
		}
		return nil
	}
	c, err := New(rec.flush, Config{MaxMessages: 32, MaxRounds: 2})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	expected := make([][]sent, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msgs := make([]transport.Message, 0, 4)
			for k := 0; k < writes; k++ {
				size := 1 + (w+k)%4
				msgs = msgs[:0]
				for i := 0; i < size; i++ {
					msgs = append(msgs, msg(w, k*1000+i))
				}
				want := size
				for i := 0; i < size; i++ {
					if fails(w, i) {
						want = i
						break
					}
				}
				n, err := c.Write(msgs)
				if n != want || (err != nil) != (want < size) || err != nil && !errors.Is(err, syscall.EMSGSIZE) {
					t.Errorf("writer %d write %d: got (%d, %v), want %d sent", w, k, n, err, want)
					return
				}
				if err != nil && !bytes.Contains([]byte(err.Error()), []byte("writer "+strconv.Itoa(w)+" ")) {
					t.Errorf("writer %d got another writer's error: %v", w, err)
				}
				for i := 0; i < want; i++ {
					expected[w] = append(expected[w], sent{w, k*1000 + i})
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * testTimeout):
		t.Fatal("writers did not finish")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	got := make([][]sent, writers)
	for _, s := range rec.log {
		got[s.writer] = append(got[s.writer], s)
	}
	for w := range expected {
		if len(got[w]) != len(expected[w]) {
			t.Fatalf("writer %d: %d messages sent, want %d", w, len(got[w]), len(expected[w]))
		}
		for i := range got[w] {
			if got[w][i] != expected[w][i] {
				t.Fatalf("writer %d: message %d is %v, want %v", w, i, got[w][i], expected[w][i])
			}
		}
	}
	total := 0
	for _, n := range rec.calls {
		total += n
	}
	t.Logf("%d flushes, %.1f messages per flush", len(rec.calls), float64(total)/float64(len(rec.calls)))
}

// goid returns the current goroutine's id (test-only: it parses the stack header).
func goid() int {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	id, _ := strconv.Atoi(string(b[:bytes.IndexByte(b, ' ')]))
	return id
}

// TestLeaderHandoff keeps the queue non-empty after every flush and checks that no goroutine
// flushes more than 1+MaxRounds rounds in a row before another takes over.
func TestLeaderHandoff(t *testing.T) {
	const maxRounds, spawns = 3, 100
	var (
		c       *Combiner
		leaders []int
		started int
		wg      sync.WaitGroup
	)
	waiting := make(chan int, 1)
	sentIDs := make(map[int]int)
	spawn := func(id int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n, err := c.Write([]transport.Message{msg(id, 0)}); n != 1 || err != nil {
				t.Errorf("writer %d: (%d, %v)", id, n, err)
			}
		}()
	}
	flush := func(msgs []transport.Message) (int, error) {
		leaders = append(leaders, goid())
		for _, m := range msgs {
			w, _ := ident(m)
			sentIDs[w]++
		}
		if started < spawns {
			started++
			spawn(started)
			select { // the new writer is queued before this flush returns
			case <-waiting:
			case <-time.After(testTimeout):
				t.Error("spawned writer never queued")
			}
		}
		return len(msgs), nil
	}
	var err error
	c, err = New(flush, Config{MaxRounds: maxRounds})
	if err != nil {
		t.Fatal(err)
	}
	c.enqueued = func(int) { waiting <- 0 }
	spawn(0)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("writers did not finish")
	}
	run, longest, handoffs := 1, 1, 0
	for i := 1; i < len(leaders); i++ {
		if leaders[i] == leaders[i-1] {
			run++
		} else {
			run = 1
			handoffs++
		}
		longest = max(longest, run)
	}
	if longest > 1+maxRounds {
		t.Errorf("a leader flushed %d rounds in a row, bound is %d", longest, 1+maxRounds)
	}
	if handoffs < spawns/(1+maxRounds)-1 {
		t.Errorf("only %d hand-offs in %d flushes", handoffs, len(leaders))
	}
	for id := 0; id <= spawns; id++ {
		if sentIDs[id] != 1 {
			t.Errorf("writer %d sent %d times", id, sentIDs[id])
		}
	}
}

// TestNoAllocs checks that steady-state writes allocate nothing, alone and with concurrent
// writers sharing flushes.
func TestNoAllocs(t *testing.T) {
	var flushed atomic.Int64
	c, err := New(func(msgs []transport.Message) (int, error) {
		flushed.Add(int64(len(msgs)))
		return len(msgs), nil
	}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	msgs := []transport.Message{msg(0, 0), msg(0, 1)}
	write := func() {
		if n, err := c.Write(msgs); n != 2 || err != nil {
			t.Fatalf("Write = (%d, %v)", n, err)
		}
	}
	for range 100 {
		write()
	}
	if a := testing.AllocsPerRun(1000, write); a != 0 {
		t.Errorf("single writer: %v allocs per Write, want 0", a)
	}

	if raceEnabled {
		t.Log("-race: sync.Pool drops objects on purpose; concurrent allocation check skipped")
		return
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 1; w <= 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own := []transport.Message{msg(w, 0)}
			for k := 0; k < 1_000_000; k++ { // bounded; normally stopped much earlier
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Write(own); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	t.Cleanup(func() { close(stop); wg.Wait() })
	for range 2000 {
		write()
	}
	if a := testing.AllocsPerRun(2000, write); a != 0 {
		t.Errorf("with concurrent writers: %v allocs per Write, want 0", a)
	}
}

func TestNew(t *testing.T) {
	ok := func([]transport.Message) (int, error) { return 0, nil }
	for _, tc := range []struct {
		name  string
		flush FlushFunc
		cfg   Config
		field string // "" when valid
	}{
		{"zero config", ok, Config{}, ""},
		{"nil flush", nil, Config{}, "FlushFunc"},
		{"negative MaxMessages", ok, Config{MaxMessages: -1}, "MaxMessages"},
		{"negative MaxRounds", ok, Config{MaxRounds: -2}, "MaxRounds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.flush, tc.cfg)
			if tc.field == "" {
				if err != nil || c == nil {
					t.Fatalf("New = (%v, %v)", c, err)
				}
				if n, err := c.Write(nil); n != 0 || err != nil {
					t.Fatalf("empty Write = (%d, %v)", n, err)
				}
				return
			}
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.field)) {
				t.Fatalf("New error %v does not name %s", err, tc.field)
			}
		})
	}
}

// BenchmarkCombiner measures the combiner with W concurrent writers of one message each against
// a flush that costs about as much as a small sendmmsg (a fixed ~1 µs plus a little per message).
func BenchmarkCombiner(b *testing.B) {
	for _, writers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			var flushes, msgsOut atomic.Int64
			c, err := New(func(msgs []transport.Message) (int, error) {
				flushes.Add(1)
				msgsOut.Add(int64(len(msgs)))
				spin(time.Microsecond + time.Duration(len(msgs))*50*time.Nanosecond)
				return len(msgs), nil
			}, Config{})
			if err != nil {
				b.Fatal(err)
			}
			b.SetParallelism((writers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			b.ReportAllocs()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				msgs := []transport.Message{msg(0, 0)}
				for pb.Next() {
					if _, err := c.Write(msgs); err != nil {
						b.Error(err)
						return
					}
				}
			})
			elapsed := time.Since(start)
			if f := flushes.Load(); f > 0 {
				b.ReportMetric(float64(msgsOut.Load())/float64(f), "msgs/flush")
			}
			b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N), "ns/msg")
		})
	}
}

// spin busy-waits for d, standing in for the CPU cost of a system call.
func spin(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
	}
}
