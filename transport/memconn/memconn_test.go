package memconn

import (
	"bytes"
	"context"
	"errors"
	"math"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/naquid/naquid/transport"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		field string // "" means valid
	}{
		{"zero", Config{}, ""},
		{"full", Config{Seed: 9, MaxDatagram: 9000, QueueLen: 8, Link: LinkConfig{
			Loss: 0.1, Latency: time.Millisecond, Jitter: time.Millisecond, Reorder: 1, Duplicate: 0.5,
			Corrupt: 0.01, CorruptBits: 64, Bandwidth: 1e6, QueueBytes: 1, MaxDatagram: 1200,
			WriteErrorsAfter: 3, WriteErrors: 1, WriteError: syscall.ECONNREFUSED}}, ""},
		{"negative MaxDatagram", Config{MaxDatagram: -1}, "MaxDatagram"},
		{"huge MaxDatagram", Config{MaxDatagram: 70000}, "MaxDatagram"},
		{"negative QueueLen", Config{QueueLen: -1}, "QueueLen"},
		{"Loss above 1", Config{Link: LinkConfig{Loss: 1.5}}, "Link.Loss"},
		{"Loss NaN", Config{Link: LinkConfig{Loss: math.NaN()}}, "Link.Loss"},
		{"Reorder negative", Config{Link: LinkConfig{Reorder: -0.1}}, "Link.Reorder"},
		{"Duplicate above 1", Config{Link: LinkConfig{Duplicate: 2}}, "Link.Duplicate"},
		{"Corrupt above 1", Config{Link: LinkConfig{Corrupt: 1.01}}, "Link.Corrupt"},
		{"Latency negative", Config{Link: LinkConfig{Latency: -1}}, "Link.Latency"},
		{"Jitter negative", Config{Link: LinkConfig{Jitter: -1}}, "Link.Jitter"},
		{"Jitter huge", Config{Link: LinkConfig{Jitter: math.MaxInt64}}, "Link.Jitter"},
		{"Latency huge", Config{Link: LinkConfig{Latency: 25 * time.Hour}}, "Link.Latency"},
		{"ReorderDelay negative", Config{Link: LinkConfig{ReorderDelay: -1}}, "Link.ReorderDelay"},
		{"CorruptBits too many", Config{Link: LinkConfig{CorruptBits: 65}}, "Link.CorruptBits"},
		{"Bandwidth negative", Config{Link: LinkConfig{Bandwidth: -1}}, "Link.Bandwidth"},
		{"QueueBytes negative", Config{Link: LinkConfig{QueueBytes: -1}}, "Link.QueueBytes"},
		{"Link MaxDatagram negative", Config{Link: LinkConfig{MaxDatagram: -1}}, "Link.MaxDatagram"},
		{"WriteErrorsAfter negative", Config{Link: LinkConfig{WriteErrorsAfter: -1}}, "Link.WriteErrorsAfter"},
		{"WriteErrors negative", Config{Link: LinkConfig{WriteErrors: -1}}, "Link.WriteErrors"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := NewNetwork(tt.cfg)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("NewNetwork: %v", err)
				}
				t.Cleanup(func() { _ = n.Close() })
				return
			}
			if err == nil {
				_ = n.Close()
				t.Fatalf("NewNetwork accepted an invalid config; want an error naming %s", tt.field)
			}
			if !strings.Contains(err.Error(), tt.field+" ") {
				t.Fatalf("error %q does not name field %s", err, tt.field)
			}
		})
	}
	// SetLink and SetDefaultLink validate too.
	n := newNet(t, Config{})
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	if err := n.SetLink(a, b, LinkConfig{Loss: 2}); err == nil || !strings.Contains(err.Error(), "Loss") {
		t.Errorf("SetLink with Loss 2: err=%v, want one naming Loss", err)
	}
	if err := n.SetDefaultLink(LinkConfig{Jitter: -5}); err == nil || !strings.Contains(err.Error(), "Jitter") {
		t.Errorf("SetDefaultLink with Jitter -5: err=%v, want one naming Jitter", err)
	}
}

func TestListen(t *testing.T) {
	n := newNet(t, Config{})
	listen(t, n, "192.0.2.1:4433")
	listen(t, n, "0.0.0.0:5000")
	listen(t, n, "[2001:db8::1]:4433")

	tests := []struct {
		name    string
		addr    netip.AddrPort
		want    string // exact LocalAddr, or "" to check the port range only
		inUse   bool
		wantErr bool
	}{
		{"new address", netip.MustParseAddrPort("192.0.2.2:4433"), "192.0.2.2:4433", false, false},
		{"same address and port", netip.MustParseAddrPort("192.0.2.1:4433"), "", true, true},
		{"mapped form of a bound address", netip.MustParseAddrPort("[::ffff:192.0.2.1]:4433"), "", true, true},
		{"specific under bound wildcard", netip.MustParseAddrPort("192.0.2.9:5000"), "", true, true},
		{"wildcard over bound specific", netip.MustParseAddrPort("0.0.0.0:4433"), "", true, true},
		{"other family wildcard", netip.MustParseAddrPort("[::]:5000"), "[::]:5000", false, false},
		{"IPv6 wildcard over bound IPv6", netip.MustParseAddrPort("[::]:4433"), "", true, true},
		{"mapped address is unmapped", netip.MustParseAddrPort("[::ffff:198.51.100.7]:1"), "198.51.100.7:1", false, false},
		{"zone dropped", netip.MustParseAddrPort("[fe80::1%eth0]:7"), "[fe80::1]:7", false, false},
		{"zero AddrPort means 0.0.0.0", netip.AddrPort{}, "", false, false},
		{"port 0 picks a port", netip.MustParseAddrPort("192.0.2.1:0"), "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := n.Listen(context.Background(), tt.addr)
			if tt.wantErr {
				if err == nil {
					_ = c.Close()
					t.Fatalf("Listen %s succeeded, want an error", tt.addr)
				}
				if tt.inUse && !errors.Is(err, syscall.EADDRINUSE) {
					t.Fatalf("Listen %s: %v, want EADDRINUSE", tt.addr, err)
				}
				if name := normAddrPort(tt.addr).String(); !strings.Contains(err.Error(), name) {
					t.Fatalf("error %q does not name %s", err, name)
				}
				return
			}
			if err != nil {
				t.Fatalf("Listen %s: %v", tt.addr, err)
			}
			t.Cleanup(func() { _ = c.Close() })
			got := c.LocalAddr()
			if tt.want != "" && got.String() != tt.want {
				t.Fatalf("LocalAddr = %s, want %s", got, tt.want)
			}
			if tt.want == "" && (got.Port() < ephemeralLow || got.Port() > ephemeralHigh) {
				t.Fatalf("LocalAddr = %s, want a port in [%d, %d]", got, ephemeralLow, ephemeralHigh)
			}
		})
	}

	t.Run("closing frees the port", func(t *testing.T) {
		ap := netip.MustParseAddrPort("203.0.113.1:9")
		c, err := n.Listen(context.Background(), ap)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		c2 := listen(t, n, ap.String())
		if c2.LocalAddr() != ap {
			t.Fatalf("LocalAddr = %s, want %s", c2.LocalAddr(), ap)
		}
	})
	t.Run("canceled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := n.Listen(ctx, netip.MustParseAddrPort("192.0.2.50:1")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Listen with canceled ctx: %v, want context.Canceled", err)
		}
	})
	t.Run("factory", func(t *testing.T) {
		c, err := n.Factory()(context.Background(), netip.MustParseAddrPort("192.0.2.60:0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		if _, ok := c.(transport.Stats); !ok {
			t.Fatal("Conn does not implement transport.Stats")
		}
		if _, err := n.Factory()(context.Background(), netip.MustParseAddrPort("192.0.2.1:4433")); err == nil {
			t.Fatal("factory bound an address in use")
		}
	})
	t.Run("closed network", func(t *testing.T) {
		n2 := newNet(t, Config{})
		c := listen(t, n2, "192.0.2.1:1")
		if err := n2.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := n2.Listen(context.Background(), netip.MustParseAddrPort("192.0.2.1:2")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Listen on closed network: %v, want net.ErrClosed", err)
		}
		if _, err := c.WriteBatch([]transport.Message{{Buf: []byte("x"), Addr: c.LocalAddr()}}); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write on a Conn of a closed network: %v, want net.ErrClosed", err)
		}
	})
}

func TestDeliveryFields(t *testing.T) {
	n := newNet(t, Config{})
	a := listen(t, n, "192.0.2.1:1000")
	b := listen(t, n, "[2001:db8::2]:2000")
	caps := b.Capabilities()
	want := transport.Capabilities{MaxDatagram: DefaultMaxDatagram, ECN: true, LocalAddr: true, BatchSize: 64}
	if caps != want {
		t.Fatalf("Capabilities = %+v, want %+v", caps, want)
	}
	for _, ecn := range []transport.ECN{transport.ECNNotECT, transport.ECNECT0, transport.ECNECT1, transport.ECNCE} {
		msg := []transport.Message{{Buf: []byte("hello"), Addr: b.LocalAddr(), ECN: ecn}}
		if _, err := a.WriteBatch(msg); err != nil {
			t.Fatal(err)
		}
		g := recv(t, b, 1, 5*time.Second)[0]
		if string(g.data) != "hello" || g.from != a.LocalAddr() || g.local != b.LocalAddr().Addr() || g.ecn != ecn {
			t.Errorf("got %q from %s local %s ECN %s; want %q from %s local %s ECN %s",
				g.data, g.from, g.local, g.ecn, "hello", a.LocalAddr(), b.LocalAddr().Addr(), ecn)
		}
	}

	t.Run("truncation", func(t *testing.T) {
		send(t, a, b.LocalAddr(), payload(1, 100))
		msgs := []transport.Message{{Buf: make([]byte, 10)}}
		if k, err := b.ReadBatch(msgs); err != nil || k != 1 || msgs[0].N != 10 {
			t.Fatalf("ReadBatch = %d, %v, N=%d; want 1, nil, N=10", k, err, msgs[0].N)
		}
	})
	t.Run("buffer reuse after write", func(t *testing.T) {
		buf := []byte("original")
		send(t, a, b.LocalAddr(), buf)
		copy(buf, "MUTATED!")
		if g := recv(t, b, 1, 5*time.Second)[0]; string(g.data) != "original" {
			t.Fatalf("got %q, want %q", g.data, "original")
		}
	})
	t.Run("segments", func(t *testing.T) {
		buf := make([]byte, 5*1000+300)
		for i := range buf {
			buf[i] = byte(i / 1000)
		}
		msgs := []transport.Message{{Buf: buf, Addr: b.LocalAddr(), SegmentSize: 1000}}
		if k, err := a.WriteBatch(msgs); err != nil || k != 1 {
			t.Fatalf("WriteBatch = %d, %v", k, err)
		}
		gs := recv(t, b, 6, 5*time.Second)
		for i, g := range gs {
			wantLen := 1000
			if i == 5 {
				wantLen = 300
			}
			if len(g.data) != wantLen || !bytes.Equal(g.data, buf[i*1000:i*1000+wantLen]) {
				t.Errorf("segment %d: %d bytes, want %d bytes of segment %d", i, len(g.data), wantLen, i)
			}
		}
		if s := a.Stats(); s.PacketsWritten < 6 {
			t.Errorf("PacketsWritten = %d, want segments counted one each", s.PacketsWritten)
		}
	})
	t.Run("empty datagram", func(t *testing.T) {
		send(t, a, b.LocalAddr(), []byte{})
		if g := recv(t, b, 1, 5*time.Second)[0]; len(g.data) != 0 {
			t.Fatalf("got %d bytes, want 0", len(g.data))
		}
	})
	t.Run("ReadBatch with no messages", func(t *testing.T) {
		if k, err := b.ReadBatch(nil); k != 0 || err != nil {
			t.Fatalf("ReadBatch(nil) = %d, %v; want 0, nil", k, err)
		}
	})
}

func TestMessageSize(t *testing.T) {
	n := newNet(t, Config{MaxDatagram: 1200})
	a := listen(t, n, "192.0.2.1:1")
	b := listen(t, n, "192.0.2.2:1")
	dst := b.LocalAddr()
	tests := []struct {
		name    string
		msgs    []transport.Message
		wantN   int
		wantErr error
		arrive  int
	}{
		{"at the limit", []transport.Message{{Buf: make([]byte, 1200), Addr: dst}}, 1, nil, 1},
		{"one byte over", []transport.Message{{Buf: make([]byte, 1201), Addr: dst}}, 0, syscall.EMSGSIZE, 0},
		{"oversized second message", []transport.Message{
			{Buf: make([]byte, 10), Addr: dst}, {Buf: make([]byte, 5000), Addr: dst}, {Buf: make([]byte, 10), Addr: dst},
		}, 1, syscall.EMSGSIZE, 1},
		{"segments within the limit", []transport.Message{{Buf: make([]byte, 5000), Addr: dst, SegmentSize: 1200}}, 1, nil, 5},
		{"oversized segment", []transport.Message{{Buf: make([]byte, 5000), Addr: dst, SegmentSize: 1201}}, 0, syscall.EMSGSIZE, 0},
		{"SegmentSize larger than Buf", []transport.Message{{Buf: make([]byte, 100), Addr: dst, SegmentSize: 1500}}, 1, nil, 1},
		{"no destination", []transport.Message{{Buf: make([]byte, 10)}}, 0, syscall.EINVAL, 0},
		{"port 0", []transport.Message{{Buf: make([]byte, 10), Addr: netip.MustParseAddrPort("192.0.2.2:0")}}, 0, syscall.EINVAL, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := a.WriteBatch(tt.msgs)
			if k != tt.wantN || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("WriteBatch = %d, %v; want %d, %v", k, err, tt.wantN, tt.wantErr)
			}
			if got := len(drain(t, b)); got != tt.arrive {
				t.Fatalf("%d datagrams arrived, want %d", got, tt.arrive)
			}
		})
	}
	if s := n.LinkStats(a.LocalAddr().Addr(), dst.Addr()); s.SizeErrors != 3 {
		t.Errorf("SizeErrors = %d, want 3", s.SizeErrors)
	}

	t.Run("path limit drops silently", func(t *testing.T) {
		if err := n.SetLink(a.LocalAddr().Addr(), dst.Addr(), LinkConfig{MaxDatagram: 1000}); err != nil {
			t.Fatal(err)
		}
		send(t, a, dst, make([]byte, 1000), make([]byte, 1001), make([]byte, 999))
		if got := len(drain(t, b)); got != 2 {
			t.Fatalf("%d datagrams arrived, want 2", got)
		}
		s := n.LinkStats(a.LocalAddr().Addr(), dst.Addr())
		if s.TooBig != 1 {
			t.Fatalf("TooBig = %d, want 1", s.TooBig)
		}
		checkConservation(t, s)
	})
}

func TestUnreachableAndQueueFull(t *testing.T) {
	n := newNet(t, Config{QueueLen: 4})
	a := listen(t, n, "192.0.2.1:1")
	b := listen(t, n, "192.0.2.2:1")
	nobody := netip.MustParseAddrPort("192.0.2.2:99")
	send(t, a, nobody, payload(0, 8), payload(1, 8))

	ps := make([][]byte, 10)
	for i := range ps {
		ps[i] = payload(uint64(i), 8)
	}
	send(t, a, b.LocalAddr(), ps...) // must not block although only 4 fit
	gs := drain(t, b)
	if len(gs) != 4 {
		t.Fatalf("%d datagrams arrived, want the queue bound 4", len(gs))
	}
	for i, g := range gs {
		if seqOf(g.data) != uint64(i) {
			t.Fatalf("datagram %d has seq %d, want the first four in order", i, seqOf(g.data))
		}
	}
	s := n.Stats()
	if s.Unreachable != 2 || s.ReceiveDrops != 6 || s.Delivered != 4 {
		t.Fatalf("Stats = %+v, want Unreachable 2, ReceiveDrops 6, Delivered 4", s)
	}
	checkConservation(t, s)
	if bs := b.Stats(); bs.Drops != 6 || bs.RingFull != 6 || bs.PacketsRead != 4 {
		t.Fatalf("receiver Counters = %+v, want Drops 6, RingFull 6, PacketsRead 4", bs)
	}
	if as := a.Stats(); as.PacketsWritten != 12 || as.BytesWritten != 96 || as.WriteCalls != 2 {
		t.Fatalf("sender Counters = %+v, want PacketsWritten 12, BytesWritten 96, WriteCalls 2", as)
	}
}

func TestWildcard(t *testing.T) {
	n := newNet(t, Config{})
	srv := listen(t, n, "0.0.0.0:4433")
	cli := listen(t, n, "198.51.100.1:5555")

	for _, ip := range []string{"192.0.2.1", "203.0.113.9", "127.0.0.1"} {
		send(t, cli, netip.MustParseAddrPort(ip+":4433"), []byte(ip))
		g := recv(t, srv, 1, 5*time.Second)[0]
		if g.local.String() != ip || g.from != cli.LocalAddr() {
			t.Errorf("wildcard got local %s from %s, want local %s from %s", g.local, g.from, ip, cli.LocalAddr())
		}
		// A reply from Local reaches the client from the address it dialed.
		msgs := []transport.Message{{Buf: []byte("re"), Addr: g.from, Local: g.local}}
		if _, err := srv.WriteBatch(msgs); err != nil {
			t.Fatal(err)
		}
		if r := recv(t, cli, 1, 5*time.Second)[0]; r.from.String() != ip+":4433" {
			t.Errorf("reply from %s, want %s:4433", r.from, ip)
		}
	}
	// Other ports and the other family are not the wildcard's.
	send(t, cli, netip.MustParseAddrPort("192.0.2.1:4434"), []byte("x"))
	send(t, cli, netip.MustParseAddrPort("[2001:db8::1]:4433"), []byte("x"))
	if got := drain(t, srv); len(got) != 0 {
		t.Fatalf("wildcard received %d datagrams for other ports or family", len(got))
	}
	// Without Local, a wildcard Conn sends from loopback.
	send(t, srv, cli.LocalAddr(), []byte("noloc"))
	if r := recv(t, cli, 1, 5*time.Second)[0]; r.from.String() != "127.0.0.1:4433" {
		t.Fatalf("reply without Local from %s, want 127.0.0.1:4433", r.from)
	}
}

func TestDeadlineAndClose(t *testing.T) {
	n := newNet(t, Config{})
	c := listen(t, n, "192.0.2.1:1")
	msgs := []transport.Message{{Buf: make([]byte, 100)}}

	// readErr runs ReadBatch in a goroutine and returns its error channel.
	readErr := func() <-chan error {
		ch := make(chan error, 1)
		go func() {
			_, err := c.ReadBatch(msgs)
			ch <- err
		}()
		return ch
	}
	waitErr := func(ch <-chan error, want error) {
		t.Helper()
		select {
		case err := <-ch:
			if !errors.Is(err, want) {
				t.Fatalf("ReadBatch: %v, want %v", err, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("ReadBatch still blocked, want %v", want)
		}
	}

	// A future deadline wakes a blocked reader when it passes.
	if err := c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	waitErr(readErr(), os.ErrDeadlineExceeded)
	var ne net.Error
	if _, err := c.ReadBatch(msgs); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("expired read: %v, want a net.Error with Timeout", err)
	}

	// A deadline moved into the past wakes a reader blocked with no deadline.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	ch := readErr()
	if err := c.SetReadDeadline(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	waitErr(ch, os.ErrDeadlineExceeded)

	// Clearing the deadline makes reads work again.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	send(t, c, c.LocalAddr(), []byte("self"))
	if k, err := c.ReadBatch(msgs); err != nil || k != 1 {
		t.Fatalf("ReadBatch after clearing the deadline = %d, %v", k, err)
	}

	// Close wakes a blocked reader; later calls fail with net.ErrClosed.
	ch = readErr()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitErr(ch, net.ErrClosed)
	if _, err := c.ReadBatch(msgs); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadBatch after Close: %v", err)
	}
	if _, err := c.WriteBatch([]transport.Message{{Buf: []byte("x"), Addr: c.LocalAddr()}}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteBatch after Close: %v", err)
	}
	if err := c.SetReadDeadline(time.Time{}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SetReadDeadline after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestConcurrentWriters(t *testing.T) {
	const writers, perWriter = 8, 500
	n := newNet(t, Config{QueueLen: writers * perWriter})
	dst := listen(t, n, "192.0.2.100:1")
	var wg sync.WaitGroup
	for w := range writers {
		c := listen(t, n, netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(w + 1)}), 1).String())
		wg.Go(func() {
			buf := make([]byte, 16)
			for i := range perWriter / 5 {
				var msgs [5]transport.Message
				for j := range msgs {
					seq := uint64(w*perWriter + i*5 + j)
					copy(buf, payload(seq, 16))
					msgs[j] = transport.Message{Buf: append([]byte(nil), buf...), Addr: dst.LocalAddr()}
				}
				if _, err := c.WriteBatch(msgs[:]); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	seen := make(map[uint64]bool)
	gs := recv(t, dst, writers*perWriter, 10*time.Second)
	wg.Wait()
	for _, g := range gs {
		s := seqOf(g.data)
		if seen[s] {
			t.Fatalf("seq %d arrived twice", s)
		}
		seen[s] = true
	}
}

func TestNoAllocsPerPacket(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items, so allocation counts are meaningless")
	}
	n := newNet(t, Config{})
	a := listen(t, n, "192.0.2.1:1")
	b := listen(t, n, "192.0.2.2:1")
	w := make([]transport.Message, batchSize)
	r := make([]transport.Message, batchSize)
	for i := range w {
		w[i] = transport.Message{Buf: make([]byte, 64), Addr: b.LocalAddr()}
		r[i].Buf = make([]byte, 1500)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := a.WriteBatch(w); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(w); {
			k, err := b.ReadBatch(r)
			if err != nil {
				t.Fatal(err)
			}
			got += k
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch of %d, want 0", allocs, batchSize)
	}
}
