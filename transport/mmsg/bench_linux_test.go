package mmsg

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/naquid/naquid/transport"
)

// benchWriters is the number of goroutines writing at once in BenchmarkWrite, standing in for
// QUIC connections that each write their own packets.
const benchWriters = 8

// BenchmarkWrite compares Conn.WriteBatch with one WriteToUDPAddrPort per datagram on a plain
// socket, over loopback, with benchWriters goroutines writing at once. "one-dst": every writer
// sends to the same peer (GSO can coalesce); "many-dst": each writer has its own peer (only
// sendmmsg batching helps). "x1": one datagram per WriteBatch, as quic-go writes a lone packet;
// "x8": eight per call. One op is one WriteBatch call (x8: eight plain writes); pkt/s,
// syscalls/pkt and allocs/pkt count datagrams.
func BenchmarkWrite(b *testing.B) {
	for _, size := range []int{64, 1200} {
		for _, dsts := range []string{"one-dst", "many-dst"} {
			for _, per := range []int{1, 8} {
				for _, path := range []string{"mmsg", "plain"} {
					b.Run(fmt.Sprintf("%dB/%s/x%d/%s", size, dsts, per, path), func(b *testing.B) {
						benchWrite(b, size, per, dsts == "many-dst", path == "mmsg")
					})
				}
			}
		}
	}
}

func benchWrite(b *testing.B, size, per int, many, batched bool) {
	peers := make([]netip.AddrPort, benchWriters)
	for i := range peers {
		if i > 0 && !many {
			peers[i] = peers[0]
			continue
		}
		// A peer that never reads: the kernel drops what overflows its buffer, the same for both paths.
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { pc.Close() })
		peers[i] = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	var c *Conn
	var plain *net.UDPConn
	if batched {
		c = listen(b, netip.MustParseAddrPort("127.0.0.1:0"), Config{})
	} else {
		var err error
		plain, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { plain.Close() })
	}
	var next atomic.Int32
	var before transport.Counters
	if c != nil {
		before = c.Stats()
	}
	b.SetParallelism((benchWriters + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	mallocs := mallocCount()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		w := int(next.Add(1)-1) % benchWriters
		dst := peers[w]
		msgs := make([]transport.Message, per)
		for i := range msgs {
			msgs[i] = transport.Message{Buf: make([]byte, size), Addr: dst}
		}
		for pb.Next() {
			if c != nil {
				if _, err := c.WriteBatch(msgs); err != nil {
					b.Error(err)
					return
				}
				continue
			}
			for i := range msgs {
				if _, err := plain.WriteToUDPAddrPort(msgs[i].Buf, dst); err != nil {
					b.Error(err)
					return
				}
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	pkts := float64(b.N * per)
	b.ReportMetric(float64(mallocCount()-mallocs)/pkts, "allocs/pkt")
	b.ReportMetric(pkts/elapsed.Seconds(), "pkt/s")
	calls := pkts
	if c != nil {
		calls = float64(c.Stats().WriteCalls - before.WriteCalls)
	}
	b.ReportMetric(calls/pkts, "syscalls/pkt")
}

// BenchmarkRead compares Conn.ReadBatch (recvmmsg, 64 per call, GRO on) with one
// ReadFromUDPAddrPort per datagram, over loopback. A sender Conn keeps at most readWindow
// datagrams in flight (64 per GSO send), so nothing is dropped. One op is one datagram read.
func BenchmarkRead(b *testing.B) {
	for _, size := range []int{64, 1200} {
		for _, path := range []string{"mmsg", "plain"} {
			b.Run(fmt.Sprintf("%dB/%s", size, path), func(b *testing.B) {
				benchRead(b, size, path == "mmsg")
			})
		}
	}
}

const readWindow = 1024

func benchRead(b *testing.B, size int, batched bool) {
	snd := listen(b, netip.MustParseAddrPort("127.0.0.1:0"), Config{})
	var c *Conn
	var plain *net.UDPConn
	var dst netip.AddrPort
	if batched {
		c = listen(b, netip.MustParseAddrPort("127.0.0.1:0"), Config{})
		dst = c.LocalAddr()
	} else {
		var err error
		plain, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { plain.Close() })
		if err := plain.SetReadBuffer(DefaultSocketBuffer); err != nil {
			b.Fatal(err)
		}
		dst = plain.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	var received atomic.Int64
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { // the sender: bounded by b.N and by stop
		out := make([]transport.Message, 64)
		for i := range out {
			out[i] = transport.Message{Buf: make([]byte, size), Addr: dst}
		}
		sent := int64(0)
		for sent < int64(b.N) {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if sent-received.Load() > readWindow-int64(len(out)) {
				runtime.Gosched()
				continue
			}
			k := min(len(out), b.N-int(sent))
			if _, err := snd.WriteBatch(out[:k]); err != nil {
				done <- err
				return
			}
			sent += int64(k)
		}
		done <- nil
	}()
	b.Cleanup(func() { close(stop); <-done })

	in := make([]transport.Message, 64)
	for i := range in {
		in[i].Buf = make([]byte, 2048)
	}
	buf := make([]byte, 2048)
	deadline := time.Now().Add(time.Minute)
	if c != nil {
		_ = c.SetReadDeadline(deadline)
	} else {
		_ = plain.SetReadDeadline(deadline)
	}
	var before transport.Counters
	if c != nil {
		before = c.Stats()
	}
	b.ReportAllocs()
	b.ResetTimer()
	mallocs := mallocCount()
	start := time.Now()
	for got := 0; got < b.N; {
		n := 1
		var err error
		if c != nil {
			n, err = c.ReadBatch(in[:min(len(in), b.N-got)])
		} else {
			_, _, err = plain.ReadFromUDPAddrPort(buf)
		}
		if err != nil {
			b.Fatalf("after %d of %d: %v", got, b.N, err)
		}
		got += n
		received.Store(int64(got))
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(mallocCount()-mallocs)/float64(b.N), "allocs/pkt")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pkt/s")
	calls := float64(b.N)
	if c != nil {
		calls = float64(c.Stats().ReadCalls - before.ReadCalls)
	}
	b.ReportMetric(calls/float64(b.N), "syscalls/pkt")
}

// mallocCount returns the number of heap allocations so far.
func mallocCount() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}
