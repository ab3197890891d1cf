package udp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/transporttest"
)

var (
	loop4 = netip.MustParseAddrPort("127.0.0.1:0")
	loop6 = netip.MustParseAddrPort("[::1]:0")
	any6  = netip.MustParseAddrPort("[::]:0")
)

// open opens a Conn closed at cleanup.
func open(t testing.TB, addr netip.AddrPort, cfg Config) *Conn {
	t.Helper()
	c, err := Listen(context.Background(), addr, cfg)
	if err != nil {
		t.Fatalf("Listen(%s): %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// skipWithoutIPv6 skips when the kernel has no IPv6 loopback.
func skipWithoutIPv6(t testing.TB) {
	t.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback on this kernel: %v", err)
	}
	_ = c.Close()
}

func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr netip.AddrPort
		cfg  Config
		ipv6 bool
	}{
		{"IPv4", loop4, Config{}, false},
		{"IPv6", loop6, Config{}, true},
		{"DualStack", any6, Config{}, true},
		{"IPv4SoftwareSegmentation", loop4, Config{DisableGSO: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ipv6 {
				skipWithoutIPv6(t)
			}
			transporttest.Run(t, transporttest.FactoryPair(Factory(tc.cfg), tc.addr, tc.addr))
		})
	}
}

// exchange writes msgs from a and reads len(want) datagrams on b, returning them.
func exchange(t *testing.T, a, b *Conn, msgs []transport.Message, count int) []transport.Message {
	t.Helper()
	if n, err := a.WriteBatch(msgs); err != nil || n != len(msgs) {
		t.Fatalf("WriteBatch: n=%d, err=%v", n, err)
	}
	if err := b.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var got []transport.Message
	for len(got) < count {
		m := []transport.Message{{Buf: make([]byte, 1<<16)}}
		if _, err := b.ReadBatch(m); err != nil {
			t.Fatalf("ReadBatch after %d of %d: %v", len(got), count, err)
		}
		got = append(got, m[0])
	}
	return got
}

// TestDualStackTalksToIPv4: a dual-stack socket and an IPv4 socket exchange datagrams; the
// dual-stack side sees plain IPv4 addresses and the ECN and local address of IPv4 traffic.
func TestDualStackTalksToIPv4(t *testing.T) {
	skipWithoutIPv6(t)
	dual := open(t, any6, Config{})
	v4 := open(t, loop4, Config{})
	dualAt := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), dual.LocalAddr().Port())

	got := exchange(t, v4, dual, []transport.Message{{Buf: []byte("hello"), Addr: dualAt,
		ECN: transport.ECNECT0}}, 1)[0]
	if got.Addr != v4.LocalAddr() {
		t.Errorf("source on the dual-stack side: got %v, want the plain IPv4 %v", got.Addr, v4.LocalAddr())
	}
	if got.Local != dualAt.Addr() || got.ECN != transport.ECNECT0 {
		t.Errorf("got Local %v ECN %v, want %v and ECT(0)", got.Local, got.ECN, dualAt.Addr())
	}

	// The reply goes to the plain IPv4 address it came from, with ECN and a chosen source.
	back := exchange(t, dual, v4, []transport.Message{{Buf: []byte("world"), Addr: got.Addr,
		ECN: transport.ECNCE, Local: got.Local}}, 1)[0]
	if string(back.Buf[:back.N]) != "world" || back.Addr != dualAt || back.ECN != transport.ECNCE {
		t.Errorf("reply: got %q from %v with %v, want \"world\" from %v with CE", back.Buf[:back.N],
			back.Addr, back.ECN, dualAt)
	}
}

// TestMaxDatagram: a datagram of exactly MaxDatagram bytes arrives whole; one byte more fails with
// EMSGSIZE before reaching the kernel.
func TestMaxDatagram(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr netip.AddrPort
		want int
	}{{"IPv4", loop4, maxDatagram4}, {"IPv6", loop6, maxDatagram6}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.addr.Addr().Is6() {
				skipWithoutIPv6(t)
			}
			a, b := open(t, tc.addr, Config{}), open(t, tc.addr, Config{})
			if got := a.Capabilities().MaxDatagram; got != tc.want {
				t.Fatalf("MaxDatagram = %d, want %d", got, tc.want)
			}
			buf := make([]byte, tc.want)
			for i := range buf {
				buf[i] = byte(i * 7)
			}
			got := exchange(t, a, b, []transport.Message{{Buf: buf, Addr: b.LocalAddr()}}, 1)[0]
			if got.N != tc.want || string(got.Buf[:got.N]) != string(buf) {
				t.Fatalf("a %d-byte datagram arrived with %d bytes or changed", tc.want, got.N)
			}
			_, err := a.WriteBatch([]transport.Message{{Buf: make([]byte, tc.want+1), Addr: b.LocalAddr()}})
			if !errors.Is(err, syscall.EMSGSIZE) {
				t.Fatalf("a %d-byte datagram: got %v, want EMSGSIZE", tc.want+1, err)
			}
		})
	}
}

func TestListenErrors(t *testing.T) {
	busy := open(t, loop4, Config{})
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		addr    netip.AddrPort
		cfg     Config
		is      error
		mention string
	}{
		{"zero address", context.Background(), netip.AddrPort{}, Config{}, ErrInvalidAddress, "invalid AddrPort"},
		{"port in use", context.Background(), busy.LocalAddr(), Config{}, syscall.EADDRINUSE,
			busy.LocalAddr().String()},
		{"address not local", context.Background(), netip.MustParseAddrPort("192.0.2.1:0"), Config{},
			syscall.EADDRNOTAVAIL, "192.0.2.1:0"},
		{"negative ReadBuffer", context.Background(), loop4, Config{ReadBuffer: -1}, ErrInvalidConfig,
			"Config.ReadBuffer"},
		{"huge WriteBuffer", context.Background(), loop4, Config{WriteBuffer: 1 << 31}, ErrInvalidConfig,
			"Config.WriteBuffer"},
		{"canceled context", canceled, loop4, Config{}, context.Canceled, "127.0.0.1:0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Listen(tc.ctx, tc.addr, tc.cfg)
			if err == nil {
				_ = c.Close()
				t.Fatalf("Listen(%v) succeeded", tc.addr)
			}
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("got %q, want an error matching %v that mentions %q", err, tc.is, tc.mention)
			}
			if c != nil {
				t.Fatalf("Listen returned a Conn with the error %v", err)
			}
		})
	}
	if _, err := Factory(Config{})(context.Background(), netip.AddrPort{}); err == nil {
		t.Fatal("Factory opened the zero address")
	}
}

func TestWriteErrors(t *testing.T) {
	a, b := open(t, loop4, Config{}), open(t, loop4, Config{})
	tests := []struct {
		name string
		msg  transport.Message
		is   error
	}{
		{"zero destination", transport.Message{Buf: []byte("x")}, ErrInvalidAddress},
		{"port 0", transport.Message{Buf: []byte("x"), Addr: netip.AddrPortFrom(b.LocalAddr().Addr(), 0)},
			ErrInvalidAddress},
		{"IPv6 source to an IPv4 destination", transport.Message{Buf: []byte("x"), Addr: b.LocalAddr(),
			Local: netip.MustParseAddr("::1")}, ErrInvalidAddress},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := a.WriteBatch([]transport.Message{{Buf: []byte("ok"), Addr: b.LocalAddr()}, tc.msg})
			if n != 1 || !errors.Is(err, tc.is) {
				t.Fatalf("got n=%d, err=%v; want n=1 and an error matching %v", n, err, tc.is)
			}
		})
	}
	t.Run("IPv6 destination on an IPv4 socket", func(t *testing.T) {
		_, err := a.WriteBatch([]transport.Message{{Buf: []byte("x"), Addr: netip.MustParseAddrPort("[::1]:9")}})
		if err == nil || errors.Is(err, syscall.EMSGSIZE) {
			t.Fatalf("got %v, want a plain error", err)
		}
	})
}

// TestSocketSetup: buffer sizes are applied, the socket is the one quic-go gets, options are
// readable through SyscallConn, and UDP GRO stays off.
func TestSocketSetup(t *testing.T) {
	const size = 1 << 20
	c := open(t, loop4, Config{ReadBuffer: size, WriteBuffer: size})
	if c.UDPConn() == nil || c.UDPConn().LocalAddr().(*net.UDPAddr).AddrPort() != c.LocalAddr() {
		t.Fatalf("UDPConn() is not the bound socket")
	}
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var rcv, snd, gro int
	var rcvErr, sndErr, groErr error
	if err := rc.Control(func(fd uintptr) {
		rcv, rcvErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, sndErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
		gro, groErr = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO)
	}); err != nil {
		t.Fatal(err)
	}
	if errors.Join(rcvErr, sndErr) != nil {
		t.Fatal(errors.Join(rcvErr, sndErr))
	}
	// The kernel reports twice the size asked for (it counts its overhead). Without root the
	// plain option is capped by net.core.[rw]mem_max.
	if os.Geteuid() == 0 && (rcv < size || snd < size) {
		t.Errorf("SO_RCVBUF=%d SO_SNDBUF=%d, want at least %d each", rcv, snd, size)
	}
	if groErr == nil && gro != 0 {
		t.Errorf("UDP_GRO is %d: the backend must leave GRO off", gro)
	}
}

// TestStats: counters follow traffic; a GSO message is one write call.
func TestStats(t *testing.T) {
	a, b := open(t, loop4, Config{}), open(t, loop4, Config{})
	exchange(t, a, b, []transport.Message{
		{Buf: make([]byte, 100), Addr: b.LocalAddr()},
		{Buf: make([]byte, 250), Addr: b.LocalAddr(), SegmentSize: 100},
	}, 4)
	wantCalls := uint64(4)
	if a.Capabilities().GSO {
		wantCalls = 2
	}
	sa, sb := a.Stats(), b.Stats()
	if sa.PacketsWritten != 4 || sa.BytesWritten != 350 || sa.WriteCalls != wantCalls || sa.Drops != 0 {
		t.Errorf("sender stats %+v: want 4 packets, 350 bytes, %d calls, 0 drops", sa, wantCalls)
	}
	if sb.PacketsRead != 4 || sb.BytesRead != 350 || sb.ReadCalls != 4 || sb.KernelDrops != 0 {
		t.Errorf("receiver stats %+v: want 4 packets, 350 bytes, 4 calls, 0 kernel drops", sb)
	}
}

// TestKernelDropsCounted: datagrams the kernel drops for a full receive buffer show in
// KernelDrops.
func TestKernelDropsCounted(t *testing.T) {
	a := open(t, loop4, Config{})
	b := open(t, loop4, Config{ReadBuffer: 4096})
	// Enable the counter, then overflow the tiny buffer.
	exchange(t, a, b, []transport.Message{{Buf: make([]byte, 10), Addr: b.LocalAddr()}}, 1)
	msgs := make([]transport.Message, 64)
	for i := range msgs {
		msgs[i] = transport.Message{Buf: make([]byte, 1000), Addr: b.LocalAddr()}
	}
	if _, err := a.WriteBatch(msgs); err != nil {
		t.Fatal(err)
	}
	// The count rides on datagrams queued after the drops: make room, queue a marker, read up to it.
	exchange(t, a, b, nil, 1)
	marker := []byte("marker")
	got := exchange(t, a, b, []transport.Message{{Buf: marker, Addr: b.LocalAddr()}}, 1)
	for i := 0; string(got[0].Buf[:got[0].N]) != string(marker); i++ {
		if i == len(msgs) {
			t.Fatal("the marker datagram never arrived")
		}
		got = exchange(t, a, b, nil, 1)
	}
	if d := b.Stats().KernelDrops; d == 0 {
		t.Fatalf("KernelDrops = 0 after overflowing a 4 KiB receive buffer with 64 KB")
	}
}

// TestAllocs: steady-state reads and writes allocate nothing per packet.
func TestAllocs(t *testing.T) {
	a, b := open(t, loop4, Config{}), open(t, loop4, Config{})
	aSoft := open(t, loop4, Config{DisableGSO: true})
	dst := b.LocalAddr()
	read := []transport.Message{{Buf: make([]byte, 2048)}}
	buf := make([]byte, 4*300)
	tests := []struct {
		name  string
		from  *Conn
		msg   transport.Message
		count int
	}{
		{"plain", a, transport.Message{Buf: buf[:1200], Addr: dst}, 1},
		{"ECN and source address", a, transport.Message{Buf: buf[:64], Addr: dst, ECN: transport.ECNECT0,
			Local: a.LocalAddr().Addr()}, 1},
		{"segmented", a, transport.Message{Buf: buf, Addr: dst, SegmentSize: 300, ECN: transport.ECNECT1}, 4},
		{"segmented in software", aSoft, transport.Message{Buf: buf, Addr: dst, SegmentSize: 300}, 4},
	}
	if err := b.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			write := []transport.Message{tc.msg}
			step := func() {
				if _, err := tc.from.WriteBatch(write); err != nil {
					t.Fatal(err)
				}
				for range tc.count {
					if _, err := b.ReadBatch(read); err != nil {
						t.Fatal(err)
					}
				}
			}
			step() // first read enables the drop counter
			if allocs := testing.AllocsPerRun(200, step); allocs != 0 {
				t.Fatalf("%v allocations per write of %d datagrams and their reads, want 0", allocs, tc.count)
			}
		})
	}
}
