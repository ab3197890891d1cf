package afxdp

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/naquid/naquid/transport"
)

// TestNoAllocations: in steady state, a WriteBatch of 8 datagrams on one afxdp Conn and the
// ReadBatch calls that receive them on another allocate nothing.
func TestNoAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector (sync.Pool drops items)")
	}
	p := newPair(t)
	x := openXDP(t, p.A, p.A.Addr4(0), Config{})
	y := openXDP(t, p.B, p.B.Addr4(0), Config{})
	const batch = 8
	out := make([]transport.Message, batch)
	for i := range out {
		out[i] = transport.Message{Buf: make([]byte, 64+i*100), Addr: y.LocalAddr(), ECN: transport.ECNECT0}
	}
	in := make([]transport.Message, batch)
	for i := range in {
		in[i].Buf = make([]byte, 2048)
	}
	var failed error
	round := func() {
		if _, err := x.WriteBatch(out); err != nil {
			failed = err
			return
		}
		for got := 0; got < batch; {
			n, err := y.ReadBatch(in[:batch-got])
			if err != nil {
				failed = err
				return
			}
			got += n
		}
	}
	// Warm up: the peers learn each other, caches and arrays reach their size.
	if err := y.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	writeAll(t, y, transport.Message{Buf: []byte("hello"), Addr: x.LocalAddr()})
	readN(t, x, 1)
	for range 20 {
		round()
	}
	allocs := testing.AllocsPerRun(200, round)
	if failed != nil {
		t.Fatal(failed)
	}
	if x.shadowWrites.Load() != 0 {
		t.Errorf("%d datagrams went through the shadow socket", x.shadowWrites.Load())
	}
	if allocs > 0 {
		t.Errorf("%.2f allocations per round of %d datagrams, want 0", allocs, batch)
	}
}

// BenchmarkVeth sends datagrams from namespace B to a receiver in namespace A over a veth pair
// and back, with at most window datagrams in flight, for afxdp and kernel UDP receivers and
// senders. It reports packets per second and allocations per packet. The ratio between the
// afxdp and udp rows is the point (both run here, in the same conditions); bench/'s
// bench-pps measures capacity properly, with pinned cores and overload.
func BenchmarkVeth(b *testing.B) {
	for _, size := range []int{64, 1200} {
		for _, tc := range []struct {
			name             string
			xdpSend, xdpRecv bool
		}{
			{"udp-to-udp", false, false},
			{"udp-to-afxdp", false, true},
			{"afxdp-to-udp", true, false},
			{"afxdp-to-afxdp", true, true},
		} {
			b.Run(fmt.Sprintf("%s/%dB", tc.name, size), func(b *testing.B) {
				p := newPair(b)
				var tx, rx transport.Conn
				if tc.xdpSend {
					tx = openXDP(b, p.B, p.B.Addr4(0), Config{})
				} else {
					tx = openUDP(b, p.B, p.B.Addr4(0))
				}
				if tc.xdpRecv {
					rx = openXDP(b, p.A, p.A.Addr4(0), Config{})
				} else {
					rx = openUDP(b, p.A, p.A.Addr4(0))
				}
				benchFlow(b, tx, rx, size)
			})
		}
	}
}

// benchFlow moves b.N datagrams of size bytes from tx to rx in batches, paced by a window of
// datagrams in flight so that no queue overflows (a loss fails the benchmark after ioTimeout).
func benchFlow(b *testing.B, tx, rx transport.Conn, size int) {
	const batch, window = 32, 1024
	// Warm up and let tx learn rx's Ethernet address.
	writeAll(b, rx, transport.Message{Buf: []byte("warm"), Addr: tx.LocalAddr()})
	readN(b, tx, 1)
	writeAll(b, tx, transport.Message{Buf: []byte("warm"), Addr: rx.LocalAddr()})
	readN(b, rx, 1)

	credit := make(chan int, window)
	done := make(chan error, 1)
	total := b.N
	go func() {
		msgs := make([]transport.Message, batch)
		for i := range msgs {
			msgs[i].Buf = make([]byte, 2048)
		}
		for got := 0; got < total; {
			if err := rx.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
				done <- err
				return
			}
			n, err := rx.ReadBatch(msgs)
			if err != nil {
				done <- fmt.Errorf("after %d of %d datagrams: %w", got, total, err)
				return
			}
			got += n
			for range n {
				<-credit
			}
		}
		done <- nil
	}()
	out := make([]transport.Message, batch)
	for i := range out {
		out[i] = transport.Message{Buf: make([]byte, size), Addr: rx.LocalAddr()}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for sent := 0; sent < total; {
		k := min(batch, total-sent)
		for range k {
			credit <- 0
		}
		n, err := tx.WriteBatch(out[:k])
		if err != nil || n != k {
			b.Fatalf("WriteBatch = %d, %v", n, err)
		}
		sent += k
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(total)/elapsed.Seconds(), "pkt/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(total), "allocs/pkt")
	if s, ok := tx.(transport.Stats); ok && s.Stats().Drops > 0 {
		b.Fatalf("sender dropped %d datagrams", s.Stats().Drops)
	}
}
