package udp

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/naquid/naquid/transport"
)

// BenchmarkReadWrite sends datagrams one WriteBatch each from one Conn and reads them one
// ReadBatch each on another, over IPv4 loopback, with at most 256 in flight so none is lost.
// It reports packets per second and allocations per packet (both sides).
func BenchmarkReadWrite(b *testing.B) {
	for _, size := range []int{64, 1200} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) { benchReadWrite(b, size) })
	}
}

func benchReadWrite(b *testing.B, size int) {
	tx, rx := open(b, loop4, Config{}), open(b, loop4, Config{})
	const window = 256
	credit := make(chan struct{}, window)
	done := make(chan error, 1)
	total := b.N
	go func() {
		msgs := []transport.Message{{Buf: make([]byte, 2048)}}
		for got := 0; got < total; got++ {
			if got%window == 0 {
				if err := rx.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
					done <- err
					return
				}
			}
			if _, err := rx.ReadBatch(msgs); err != nil {
				done <- fmt.Errorf("after %d of %d datagrams: %w", got, total, err)
				return
			}
			<-credit
		}
		done <- nil
	}()
	msgs := []transport.Message{{Buf: make([]byte, size), Addr: rx.LocalAddr()}}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for range total {
		credit <- struct{}{}
		if _, err := tx.WriteBatch(msgs); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(total)/elapsed.Seconds(), "pkt/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(total), "allocs/pkt")
}
