package memconn

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/naquid/naquid/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newNet returns a network closed at the end of the test.
func newNet(t testing.TB, cfg Config) *Network {
	t.Helper()
	n, err := NewNetwork(cfg)
	if err != nil {
		t.Fatalf("NewNetwork: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// listen binds addr on n and closes the Conn at the end of the test.
func listen(t testing.TB, n *Network, addr string) *Conn {
	t.Helper()
	c, err := n.Listen(context.Background(), netip.MustParseAddrPort(addr))
	if err != nil {
		t.Fatalf("Listen %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// payload returns a datagram of size bytes (at least 8) carrying seq and a pattern derived from it.
func payload(seq uint64, size int) []byte {
	b := make([]byte, max(size, 8))
	binary.BigEndian.PutUint64(b, seq)
	for i := 8; i < len(b); i++ {
		b[i] = byte(seq*31 + uint64(i))
	}
	return b
}

func seqOf(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// send writes one datagram per payload to dst and fails the test on error.
func send(t testing.TB, c *Conn, dst netip.AddrPort, payloads ...[]byte) {
	t.Helper()
	msgs := make([]transport.Message, len(payloads))
	for i, p := range payloads {
		msgs[i] = transport.Message{Buf: p, Addr: dst}
	}
	if n, err := c.WriteBatch(msgs); err != nil || n != len(msgs) {
		t.Fatalf("WriteBatch: n=%d err=%v, want %d nil", n, err, len(msgs))
	}
}

// got is one received datagram, copied out of the read buffers.
type got struct {
	data  []byte
	from  netip.AddrPort
	local netip.Addr
	ecn   transport.ECN
	at    time.Time
}

// recv reads exactly want datagrams, failing if they do not arrive within wait.
func recv(t testing.TB, c *Conn, want int, wait time.Duration) []got {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	msgs := make([]transport.Message, batchSize)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 65536)
	}
	var out []got
	for len(out) < want {
		k, err := c.ReadBatch(msgs[:min(len(msgs), want-len(out))])
		if err != nil {
			t.Fatalf("ReadBatch after %d of %d datagrams: %v", len(out), want, err)
		}
		now := time.Now()
		for _, m := range msgs[:k] {
			out = append(out, got{append([]byte(nil), m.Buf[:m.N]...), m.Addr, m.Local, m.ECN, now})
		}
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	return out
}

// drain reads every datagram queued now without waiting.
func drain(t testing.TB, c *Conn) []got {
	t.Helper()
	if err := c.SetReadDeadline(time.Unix(1, 0)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	msgs := make([]transport.Message, batchSize)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 65536)
	}
	var out []got
	for {
		k, err := c.ReadBatch(msgs)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("ReadBatch: %v", err)
		}
		for _, m := range msgs[:k] {
			out = append(out, got{append([]byte(nil), m.Buf[:m.N]...), m.Addr, m.Local, m.ECN, time.Time{}})
		}
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	return out
}

// checkConservation verifies that every datagram sent is accounted for exactly once.
func checkConservation(t testing.TB, s Stats) {
	t.Helper()
	in := s.Sent + s.Duplicated
	out := s.Delivered + s.Lost + s.Partitioned + s.TooBig + s.QueueDrops + s.ReceiveDrops + s.Unreachable + s.InFlight
	if in != out {
		t.Errorf("stats do not balance: Sent+Duplicated=%d, outcomes=%d (%+v)", in, out, s)
	}
}
