package memconn

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/naquid/naquid/transport"
)

// benchPair returns two Conns on a network whose default link is link.
func benchPair(b *testing.B, link LinkConfig) (*Conn, *Conn) {
	n := newNet(b, Config{Link: link, QueueLen: 4096})
	return listen(b, n, "192.0.2.1:1"), listen(b, n, "192.0.2.2:1")
}

// benchMessages returns a write batch of size-byte datagrams to dst and a read batch.
func benchMessages(dst *Conn, size int) (w, r []transport.Message) {
	w = make([]transport.Message, batchSize)
	r = make([]transport.Message, batchSize)
	for i := range w {
		w[i] = transport.Message{Buf: make([]byte, size), Addr: dst.LocalAddr()}
		r[i].Buf = make([]byte, 1500)
	}
	return w, r
}

// report adds pkt/s and allocs/pkt for pkts datagrams moved since start and mallocs0.
func report(b *testing.B, pkts int, start time.Time, mallocs0 uint64) {
	b.StopTimer()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(pkts)/time.Since(start).Seconds(), "pkt/s")
	b.ReportMetric(float64(ms.Mallocs-mallocs0)/float64(pkts), "allocs/pkt")
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// BenchmarkWriteRead moves batches of 64 datagrams of 64 bytes over a perfect link, writer and
// reader on one goroutine: the cost of the write, delivery and read paths themselves.
func BenchmarkWriteRead(b *testing.B) {
	a, c := benchPair(b, LinkConfig{})
	w, r := benchMessages(c, 64)
	m0, start := mallocs(), time.Now()
	for b.Loop() {
		if _, err := a.WriteBatch(w); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < len(w); {
			k, err := c.ReadBatch(r)
			if err != nil {
				b.Fatal(err)
			}
			got += k
		}
	}
	report(b, b.N*len(w), start, m0)
}

// BenchmarkFaults is BenchmarkWriteRead over a link with 5% loss, 5% duplication and 5%
// corruption (no delay): the cost of the random decisions.
func BenchmarkFaults(b *testing.B) {
	a, c := benchPair(b, LinkConfig{Loss: 0.05, Duplicate: 0.05, Corrupt: 0.05})
	w, r := benchMessages(c, 64)
	from, to := a.LocalAddr().Addr(), c.LocalAddr().Addr()
	pkts := 0
	m0, start := mallocs(), time.Now()
	for b.Loop() {
		if _, err := a.WriteBatch(w); err != nil {
			b.Fatal(err)
		}
		// Read exactly what the link delivered, so that no read waits.
		for delivered := int(c.net.LinkStats(from, to).Delivered); pkts < delivered; {
			k, err := c.ReadBatch(r)
			if err != nil {
				b.Fatal(err)
			}
			pkts += k
		}
	}
	report(b, pkts, start, m0)
}

// BenchmarkPipelined runs a writer and a reader goroutine, the reader returning credit so that
// at most 1024 datagrams are queued. With latency set, every datagram goes through the delay
// queue and its timer.
func BenchmarkPipelined(b *testing.B) {
	for _, bc := range []struct {
		name string
		link LinkConfig
	}{
		{"perfect", LinkConfig{}},
		{"latency=1ms", LinkConfig{Latency: time.Millisecond}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			a, c := benchPair(b, bc.link)
			w, r := benchMessages(c, 64)
			const window = 1024 / batchSize // batches in flight
			credit := make(chan struct{}, window)
			for range window {
				credit <- struct{}{}
			}
			// A lost datagram fails the benchmark instead of hanging it.
			if err := c.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
				b.Fatal(err)
			}
			var wg sync.WaitGroup
			failed := make(chan struct{})
			b.ResetTimer()
			m0, start := mallocs(), time.Now()
			wg.Go(func() {
				got := 0
				for got < b.N*batchSize {
					k, err := c.ReadBatch(r)
					if err != nil {
						b.Error(err)
						close(failed)
						return
					}
					for range (got+k)/batchSize - got/batchSize {
						credit <- struct{}{}
					}
					got += k
				}
			})
			for range b.N {
				select {
				case <-credit:
				case <-failed:
					b.FailNow()
				}
				if _, err := a.WriteBatch(w); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
			report(b, b.N*batchSize, start, m0)
		})
	}
}
