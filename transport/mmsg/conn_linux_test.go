package mmsg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/internal/netns"
	"github.com/naquid/naquid/transport"
)

// ioTimeout bounds every read in these tests.
const ioTimeout = 5 * time.Second

// listen opens a Conn in the current namespace and closes it at cleanup.
func listen(t testing.TB, addr netip.AddrPort, cfg Config) *Conn {
	t.Helper()
	c, err := Listen(context.Background(), addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// listenIn opens a Conn inside a namespace.
func listenIn(t testing.TB, n *netns.NS, addr netip.AddrPort, cfg Config) *Conn {
	t.Helper()
	var c *Conn
	if err := n.Do(func() (err error) {
		c, err = Listen(context.Background(), addr, cfg)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// openPair opens a sender and a receiver on one of the test networks: loopback or a veth pair
// between two namespaces, over IPv4 or IPv6.
func openPair(t *testing.T, network string, sndCfg, rcvCfg Config) (snd, rcv *Conn) {
	t.Helper()
	switch network {
	case "loopback4":
		return listen(t, netip.MustParseAddrPort("127.0.0.1:0"), sndCfg), listen(t, netip.MustParseAddrPort("127.0.0.1:0"), rcvCfg)
	case "loopback6":
		return listen(t, netip.MustParseAddrPort("[::1]:0"), sndCfg), listen(t, netip.MustParseAddrPort("[::1]:0"), rcvCfg)
	case "veth4", "veth6":
		p := netns.NewPair(t, netns.Config{})
		if network == "veth4" {
			return listenIn(t, p.A, p.A.Addr4(0), sndCfg), listenIn(t, p.B, p.B.Addr4(0), rcvCfg)
		}
		return listenIn(t, p.A, p.A.Addr6(0), sndCfg), listenIn(t, p.B, p.B.Addr6(0), rcvCfg)
	}
	t.Fatalf("unknown network %q", network)
	return nil, nil
}

var networks = []string{"loopback4", "loopback6", "veth4", "veth6"}

// datagram returns size bytes identified by id: a 4-byte id, then filler derived from it.
func datagram(id, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(id*31 + i*7)
	}
	if size >= 4 {
		b[0], b[1], b[2], b[3] = byte(id>>24), byte(id>>16), byte(id>>8), byte(id)
	}
	return b
}

// segmented returns one buffer holding count datagrams of seg bytes (ids from first on) and a
// tail datagram of tail bytes (when tail > 0), and the datagrams one by one.
func segmented(first, seg, count, tail int) ([]byte, [][]byte) {
	var buf []byte
	var parts [][]byte
	for i := 0; i < count; i++ {
		d := datagram(first+i, seg)
		buf = append(buf, d...)
		parts = append(parts, d)
	}
	if tail > 0 {
		d := datagram(first+count, tail)
		buf = append(buf, d...)
		parts = append(parts, d)
	}
	return buf, parts
}

// receive reads exactly want datagrams from c, batch messages per call, and returns copies.
func receive(t *testing.T, c *Conn, want, batch int) [][]byte {
	t.Helper()
	msgs := make([]transport.Message, batch)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 2048)
	}
	var out [][]byte
	for len(out) < want {
		if err := c.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
			t.Fatal(err)
		}
		n, err := c.ReadBatch(msgs)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", len(out), want, err)
		}
		for _, m := range msgs[:n] {
			out = append(out, bytes.Clone(m.Buf[:m.N]))
		}
	}
	if len(out) > want {
		t.Fatalf("received %d datagrams, want %d", len(out), want)
	}
	return out
}

func sameDatagrams(t *testing.T, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("received %d datagrams, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("datagram %d: got %d bytes starting %x, want %d bytes starting %x", i,
				len(got[i]), got[i][:min(8, len(got[i]))], len(want[i]), want[i][:min(8, len(want[i]))])
		}
	}
}

// gsoCase is one batch of messages and the datagrams it must arrive as.
type gsoCase struct {
	name string
	msgs func(dst netip.AddrPort) ([]transport.Message, [][]byte)
}

var gsoCases = []gsoCase{
	{"equal segments", func(dst netip.AddrPort) ([]transport.Message, [][]byte) {
		buf, parts := segmented(100, 1200, 8, 0)
		return []transport.Message{{Buf: buf, Addr: dst, SegmentSize: 1200}}, parts
	}},
	{"segments and a short tail", func(dst netip.AddrPort) ([]transport.Message, [][]byte) {
		buf, parts := segmented(200, 1000, 5, 300)
		return []transport.Message{{Buf: buf, Addr: dst, SegmentSize: 1000}}, parts
	}},
	{"small messages to one destination", func(dst netip.AddrPort) ([]transport.Message, [][]byte) {
		var msgs []transport.Message
		var parts [][]byte
		for i := 0; i < 100; i++ {
			d := datagram(300+i, 64)
			msgs = append(msgs, transport.Message{Buf: d, Addr: dst})
			parts = append(parts, d)
		}
		return msgs, parts
	}},
	{"runs of mixed sizes", func(dst netip.AddrPort) ([]transport.Message, [][]byte) {
		var msgs []transport.Message
		var parts [][]byte
		for i, size := range []int{1200, 1200, 1200, 500, 1200, 100, 100, 100, 1452, 64} {
			d := datagram(400+i, size)
			msgs = append(msgs, transport.Message{Buf: d, Addr: dst})
			parts = append(parts, d)
		}
		return msgs, parts
	}},
}

// TestGSO sends segmented messages and runs of same-size messages over loopback and a veth
// pair, and checks that every datagram arrives intact and separate, and that the sender used
// fewer system calls than datagrams.
func TestGSO(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			snd, rcv := openPair(t, network, Config{}, Config{})
			if !snd.Capabilities().GSO {
				t.Skip("kernel without UDP GSO (getsockopt UDP_SEGMENT failed)")
			}
			for _, tc := range gsoCases {
				msgs, want := tc.msgs(rcv.LocalAddr())
				before := snd.Stats()
				if n, err := snd.WriteBatch(msgs); n != len(msgs) || err != nil {
					t.Fatalf("%s: WriteBatch = (%d, %v)", tc.name, n, err)
				}
				sameDatagrams(t, receive(t, rcv, len(want), 8), want)
				after := snd.Stats()
				calls, pkts := after.WriteCalls-before.WriteCalls, after.PacketsWritten-before.PacketsWritten
				if pkts != uint64(len(want)) || calls >= pkts {
					t.Errorf("%s: %d datagrams in %d sendmmsg calls, want %d datagrams in fewer calls",
						tc.name, pkts, calls, len(want))
				}
			}
			t.Logf("receiver: %d reads returned coalesced datagrams", rcv.counters.coalesced.Load())
		})
	}
}

// TestGRO checks that coalesced reads are split into the right datagrams when read a few at a
// time. It needs the kernel to actually hand over coalesced datagrams; if it never did, the test
// says so and skips.
func TestGRO(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			snd, rcv := openPair(t, network, Config{}, Config{})
			if !rcv.r.gro {
				t.Skip("UDP_GRO unavailable (kernel older than 5.12 or setsockopt failed)")
			}
			if !snd.Capabilities().GSO {
				t.Skip("kernel without UDP GSO: nothing to coalesce")
			}
			var msgs []transport.Message
			var want [][]byte
			for i := 0; i < 3; i++ {
				buf, parts := segmented(1000*i, 1100, 20, 77)
				msgs = append(msgs, transport.Message{Buf: buf, Addr: rcv.LocalAddr(), SegmentSize: 1100})
				want = append(want, parts...)
			}
			if n, err := snd.WriteBatch(msgs); n != len(msgs) || err != nil {
				t.Fatalf("WriteBatch = (%d, %v)", n, err)
			}
			sameDatagrams(t, receive(t, rcv, len(want), 3), want)
			st := rcv.Stats()
			if st.PacketsRead != uint64(len(want)) {
				t.Errorf("PacketsRead %d, want %d", st.PacketsRead, len(want))
			}
			coalesced := rcv.counters.coalesced.Load()
			if coalesced == 0 {
				t.Skipf("%s: the kernel delivered every datagram separately; the GRO split was not exercised", network)
			}
			t.Logf("%d datagrams in %d recvmmsg calls, %d coalesced reads", st.PacketsRead, st.ReadCalls, coalesced)
		})
	}
}

// TestGSOFallbackOnEIO makes GSO sends fail with EIO, as the kernel does when the route's device
// cannot checksum segmented datagrams, and checks that the Conn turns GSO off once, logs it once,
// and still delivers every datagram, in order, over loopback and a veth pair. The EIO comes from
// a wrapped sendmmsg: on this kernel (6.18) turning off checksum offload on veth no longer makes
// GSO fail (the kernel checksums in software), and IPsec (the other EIO trigger) has no ESP here.
func TestGSOFallbackOnEIO(t *testing.T) {
	for _, network := range []string{"loopback4", "veth6"} {
		t.Run(network, func(t *testing.T) {
			var logBuf syncBuffer
			snd, rcv := openPair(t, network, Config{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))}, Config{})
			if !snd.Capabilities().GSO {
				t.Skip("kernel without UDP GSO")
			}
			var eios int
			snd.w.sys = func(fd uintptr, hdrs []unix.Mmsghdr) (int, syscall.Errno) {
				for i := range hdrs {
					if hasSegment(&hdrs[i]) {
						if i == 0 {
							eios++
							return 0, unix.EIO
						}
						return sendmmsg(fd, hdrs[:i])
					}
				}
				return sendmmsg(fd, hdrs)
			}
			for round := 0; round < 2; round++ {
				for _, tc := range gsoCases {
					msgs, want := tc.msgs(rcv.LocalAddr())
					if n, err := snd.WriteBatch(msgs); n != len(msgs) || err != nil {
						t.Fatalf("round %d, %s: WriteBatch = (%d, %v)", round, tc.name, n, err)
					}
					sameDatagrams(t, receive(t, rcv, len(want), 8), want)
				}
			}
			err := snd.GSODisabled()
			var gerr *GSODisabledError
			if !errors.As(err, &gerr) || !errors.Is(err, syscall.EIO) || gerr.Local != snd.LocalAddr() {
				t.Fatalf("GSODisabled() = %v, want a *GSODisabledError wrapping EIO", err)
			}
			if eios != 1 {
				t.Errorf("%d GSO sends failed, want 1 (GSO off after the first)", eios)
			}
			if n := strings.Count(logBuf.String(), "level=WARN"); n != 1 {
				t.Errorf("logged %d times, want once:\n%s", n, logBuf.String())
			}
		})
	}
}

// hasSegment reports whether a message header carries a UDP_SEGMENT control message.
func hasSegment(h *unix.Mmsghdr) bool {
	if h.Hdr.Control == nil {
		return false
	}
	oob := unsafe.Slice(h.Hdr.Control, h.Hdr.Controllen)
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_UDP && m.Header.Type == unix.UDP_SEGMENT {
			return true
		}
	}
	return false
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestKillSwitches checks NQ_DISABLE_GSO and NQ_DISABLE_GRO, and that segmented messages are
// still delivered (split in software) without GSO.
func TestKillSwitches(t *testing.T) {
	t.Setenv("NQ_DISABLE_GSO", "1")
	t.Setenv("NQ_DISABLE_GRO", "true")
	snd, rcv := openPair(t, "loopback4", Config{}, Config{})
	if snd.Capabilities().GSO || rcv.r.gro {
		t.Fatalf("GSO %v / GRO %v still on", snd.Capabilities().GSO, rcv.r.gro)
	}
	buf, want := segmented(1, 1000, 4, 10)
	before := snd.Stats()
	if n, err := snd.WriteBatch([]transport.Message{{Buf: buf, Addr: rcv.LocalAddr(), SegmentSize: 1000}}); n != 1 || err != nil {
		t.Fatalf("WriteBatch = (%d, %v)", n, err)
	}
	sameDatagrams(t, receive(t, rcv, len(want), 8), want)
	if calls := snd.Stats().WriteCalls - before.WriteCalls; calls != 1 {
		t.Errorf("%d sendmmsg calls for one batch, want 1", calls)
	}
	t.Setenv("NQ_DISABLE_GSO", "no")
	if c := listen(t, netip.MustParseAddrPort("127.0.0.1:0"), Config{}); !c.Capabilities().GSO && snd.caps.GSO {
		t.Error("NQ_DISABLE_GSO=no disabled GSO")
	}
}

// TestEMSGSIZERouting has many goroutines write through one Conn over a 1500-byte-MTU veth with
// DF set; the writes that carry a datagram too large for the path get EMSGSIZE from the kernel,
// and only those: every other writer's datagrams arrive.
func TestEMSGSIZERouting(t *testing.T) {
	p := netns.NewPair(t, netns.Config{})
	snd := listenIn(t, p.A, p.A.Addr4(0), Config{})
	rcv := listenIn(t, p.B, p.B.Addr4(0), Config{})
	rc, err := snd.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	dst := rcv.LocalAddr()
	const writers, writes = 12, 20
	type kind int
	const (
		okPair    kind = iota // two 1000-byte datagrams: both sent
		bigMiddle             // 1000, 2000, 1000: the first sent, then EMSGSIZE
		bigRun                // three 2000-byte datagrams (a GSO run): EMSGSIZE at once
	)
	kindOf := func(w int) kind {
		switch w {
		case 0:
			return bigMiddle
		case 1:
			return bigRun
		}
		return okPair
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers*writes)
	wantTotal := 0
	for w := 0; w < writers; w++ {
		switch kindOf(w) {
		case okPair:
			wantTotal += 2 * writes
		case bigMiddle:
			wantTotal += writes
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < writes; k++ {
				id := (w*writes + k) * 3
				var msgs []transport.Message
				switch kindOf(w) {
				case okPair:
					msgs = []transport.Message{{Buf: datagram(id, 1000), Addr: dst}, {Buf: datagram(id+1, 1000), Addr: dst}}
				case bigMiddle:
					msgs = []transport.Message{{Buf: datagram(id, 1000), Addr: dst}, {Buf: datagram(id+1, 2000), Addr: dst},
						{Buf: datagram(id+2, 1000), Addr: dst}}
				case bigRun:
					msgs = []transport.Message{{Buf: datagram(id, 2000), Addr: dst}, {Buf: datagram(id+1, 2000), Addr: dst},
						{Buf: datagram(id+2, 2000), Addr: dst}}
				}
				n, err := snd.WriteBatch(msgs)
				wantN, wantErr := len(msgs), false
				switch kindOf(w) {
				case bigMiddle:
					wantN, wantErr = 1, true
				case bigRun:
					wantN, wantErr = 0, true
				}
				if n != wantN || (err != nil) != wantErr || err != nil && !errors.Is(err, syscall.EMSGSIZE) {
					errs <- fmt.Errorf("writer %d (kind %d): got (%d, %v), want %d sent", w, kindOf(w), n, err, wantN)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := receive(t, rcv, wantTotal, 64)
	seen := make(map[string]bool)
	for _, d := range got {
		if len(d) != 1000 || seen[string(d)] {
			t.Fatalf("unexpected or duplicate datagram of %d bytes", len(d))
		}
		seen[string(d)] = true
	}
	st := snd.Stats()
	t.Logf("%d datagrams in %d sendmmsg calls", st.PacketsWritten, st.WriteCalls)
}

// TestKernelDrops overflows a tiny receive buffer and checks that SO_RXQ_OVFL reaches
// Stats.KernelDrops.
func TestKernelDrops(t *testing.T) {
	snd, rcv := openPair(t, "loopback4", Config{}, Config{ReadBuffer: 1, DisableGRO: true})
	msgs := make([]transport.Message, 64)
	for i := range msgs {
		msgs[i] = transport.Message{Buf: datagram(i, 1000), Addr: rcv.LocalAddr()}
	}
	for i := 0; i < 4; i++ {
		if _, err := snd.WriteBatch(msgs); err != nil {
			t.Fatal(err)
		}
	}
	// The drop count travels on datagrams queued after the drops: drain what was queued, then
	// send and read one more.
	drain := make([]transport.Message, 64)
	for i := range drain {
		drain[i].Buf = make([]byte, 1500)
	}
	if err := rcv.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	queued, err := rcv.ReadBatch(drain)
	if err != nil {
		t.Fatal(err)
	}
	if queued == len(drain) {
		t.Fatalf("%d datagrams were queued in a tiny receive buffer", queued)
	}
	if _, err := snd.WriteBatch(msgs[:1]); err != nil {
		t.Fatal(err)
	}
	receive(t, rcv, 1, 1)
	if d := rcv.Stats().KernelDrops; d == 0 {
		t.Fatal("KernelDrops is 0 after overflowing a tiny receive buffer")
	} else {
		t.Logf("kernel dropped %d datagrams", d)
	}
}

// TestDualStack checks an IPv6 wildcard socket talking to an IPv4 peer: addresses arrive
// unmapped, Local and ECN work both ways.
func TestDualStack(t *testing.T) {
	srv := listen(t, netip.MustParseAddrPort("[::]:0"), Config{})
	cli := listen(t, netip.MustParseAddrPort("127.0.0.1:0"), Config{})
	srvAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), srv.LocalAddr().Port())
	if n, err := cli.WriteBatch([]transport.Message{{Buf: []byte("ping"), Addr: srvAddr, ECN: transport.ECNECT0}}); n != 1 || err != nil {
		t.Fatalf("client WriteBatch = (%d, %v)", n, err)
	}
	in := readOne(t, srv)
	if in.Addr != cli.LocalAddr() || in.Local != srvAddr.Addr() || in.ECN != transport.ECNECT0 {
		t.Fatalf("server got from %v to %v with %v; want from %v to %v with ECT(0)", in.Addr, in.Local, in.ECN,
			cli.LocalAddr(), srvAddr.Addr())
	}
	if n, err := srv.WriteBatch([]transport.Message{{Buf: []byte("pong"), Addr: in.Addr, Local: in.Local, ECN: transport.ECNCE}}); n != 1 || err != nil {
		t.Fatalf("server WriteBatch = (%d, %v)", n, err)
	}
	out := readOne(t, cli)
	if out.Addr != srvAddr || out.ECN != transport.ECNCE || string(out.Buf[:out.N]) != "pong" {
		t.Fatalf("client got %q from %v with %v", out.Buf[:out.N], out.Addr, out.ECN)
	}
}

func readOne(t *testing.T, c *Conn) transport.Message {
	t.Helper()
	msgs := []transport.Message{{Buf: make([]byte, 100)}}
	if err := c.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadBatch(msgs); err != nil {
		t.Fatal(err)
	}
	return msgs[0]
}

// TestNoAllocs checks that a steady stream of writes and reads allocates nothing, with the
// offloads on and off.
func TestNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("-race: sync.Pool drops objects on purpose, allocation counts are meaningless")
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		size []int
	}{
		{"offloads", Config{}, []int{1200, 1200, 1200, 1200, 300, 64, 64, 64}},
		{"no offloads", Config{DisableGSO: true, DisableGRO: true}, []int{1200, 1200, 1200, 1200, 300, 64, 64, 64}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snd, rcv := openPair(t, "loopback4", tc.cfg, tc.cfg)
			out := make([]transport.Message, len(tc.size))
			in := make([]transport.Message, len(tc.size))
			for i, s := range tc.size {
				out[i] = transport.Message{Buf: datagram(i, s), Addr: rcv.LocalAddr(), ECN: transport.ECNECT0}
				in[i].Buf = make([]byte, 1500)
			}
			var failure error
			op := func() {
				if _, err := snd.WriteBatch(out); err != nil {
					failure = err
					return
				}
				for got := 0; got < len(out); {
					n, err := rcv.ReadBatch(in)
					if err != nil {
						failure = err
						return
					}
					got += n
				}
			}
			if err := rcv.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			for range 20 {
				op()
			}
			allocs := testing.AllocsPerRun(200, op)
			if failure != nil {
				t.Fatal(failure)
			}
			if allocs != 0 {
				t.Errorf("%v allocations per batch of %d datagrams, want 0", allocs, len(out))
			}
		})
	}
}

// TestClosedErrors checks the error values after Close.
func TestClosedErrors(t *testing.T) {
	c := listen(t, netip.MustParseAddrPort("127.0.0.1:0"), Config{})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteBatch([]transport.Message{{Buf: []byte("x"), Addr: c.LocalAddr()}}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteBatch after Close: %v", err)
	}
	if _, err := c.ReadBatch(make([]transport.Message, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadBatch after Close: %v", err)
	}
	if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if _, err := Listen(context.Background(), netip.AddrPort{}, Config{BatchSize: -1}); err == nil || !strings.Contains(err.Error(), "BatchSize") {
		t.Errorf("Listen with a bad config: %v", err)
	}
}

// TestENOBUFS makes sends fail with ENOBUFS and checks that the writer never sees it: a
// transient ENOBUFS is waited out, a persistent one drops the datagrams and counts them, and the
// wait is bounded.
func TestENOBUFS(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failures  int // ENOBUFS answers before the real system call is made again
		delivered bool
	}{
		{"transient", 2, true},
		{"persistent", 1 << 30, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snd, rcv := openPair(t, "loopback4", Config{}, Config{})
			left := tc.failures
			snd.w.sys = func(fd uintptr, hdrs []unix.Mmsghdr) (int, syscall.Errno) {
				if left > 0 {
					left--
					return 0, unix.ENOBUFS
				}
				return sendmmsg(fd, hdrs)
			}
			msgs := []transport.Message{{Buf: datagram(1, 100), Addr: rcv.LocalAddr()}, {Buf: datagram(2, 300), Addr: rcv.LocalAddr()}}
			start := time.Now()
			if n, err := snd.WriteBatch(msgs); n != len(msgs) || err != nil {
				t.Fatalf("WriteBatch = (%d, %v), want ENOBUFS absorbed", n, err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("WriteBatch took %v", d)
			}
			st := snd.Stats()
			if st.PacketsWritten+st.Drops != uint64(len(msgs)) {
				t.Fatalf("%d written + %d dropped, want %d in all", st.PacketsWritten, st.Drops, len(msgs))
			}
			if !tc.delivered {
				if st.Drops != uint64(len(msgs)) {
					t.Fatalf("Drops = %d, want %d", st.Drops, len(msgs))
				}
				return
			}
			if st.Drops == 0 {
				sameDatagrams(t, receive(t, rcv, len(msgs), 4), [][]byte{msgs[0].Buf, msgs[1].Buf})
			}
			// Later writes are unaffected.
			snd.w.sys = sendmmsg
			if _, err := snd.WriteBatch(msgs[:1]); err != nil {
				t.Fatal(err)
			}
		})
	}
}
