package afxdp

import (
	"bufio"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/internal/netns"
	"github.com/naquid/naquid/transport"
)

// mapped reports whether the process has a mapping containing addr (from /proc/self/maps).
func mapped(t *testing.T, addr uintptr) bool {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lo, hi, ok := strings.Cut(strings.Fields(sc.Text())[0], "-")
		if !ok {
			continue
		}
		l, err1 := strconv.ParseUint(lo, 16, 64)
		h, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 == nil && err2 == nil && uint64(addr) >= l && uint64(addr) < h {
			return true
		}
	}
	return false
}

// fdOpen reports whether fd is an open descriptor of the process.
func fdOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// TestCloseUndoesEverything: while open, the interface carries our program and the rings and
// UMEM are mapped; after Close the program is gone, every mapping is unmapped, every descriptor
// closed, and the same queue can be bound again at once.
func TestCloseUndoesEverything(t *testing.T) {
	p := newPair(t)
	for round := range 3 {
		c, err := openXDPErr(p.A, p.A.Addr4(4433), Config{})
		if err != nil {
			t.Fatalf("round %d: New on a queue just released: %v", round, err)
		}
		if got := xdpAttachment(t, p.A); !strings.Contains(got, "prog/xdp") {
			t.Fatalf("round %d: interface shows %q while open, want our program", round, got)
		}
		var maps []uintptr
		var fds []int
		for _, s := range c.socks {
			maps = append(maps, uintptr(unsafe.Pointer(&s.umem[0])))
			for _, r := range []*ring{&s.fill, &s.comp, &s.rx, &s.tx} {
				maps = append(maps, uintptr(unsafe.Pointer(&r.mem[0])))
			}
			fds = append(fds, s.fd)
		}
		fds = append(fds, c.nl.fd, int(c.waitFile.Fd()))
		if err := c.shadowRaw.Control(func(fd uintptr) { fds = append(fds, int(fd)) }); err != nil {
			t.Fatal(err)
		}
		for _, a := range maps {
			if !mapped(t, a) {
				t.Fatalf("mapping %#x not found while open", a)
			}
		}
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		// Checked first, before anything else in the test can reuse the numbers.
		for _, fd := range fds {
			if fdOpen(fd) {
				t.Errorf("round %d: descriptor %d still open after Close", round, fd)
			}
		}
		if err := c.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close = %v, want net.ErrClosed", err)
		}
		for _, a := range maps {
			if mapped(t, a) {
				t.Errorf("round %d: mapping %#x still present after Close", round, a)
			}
		}
		if got := xdpAttachment(t, p.A); got != "" {
			t.Fatalf("round %d: interface shows %q after Close, want no XDP program", round, got)
		}
	}
}

// TestNetpollerWaiting proves that a reader waits in the Go netpoller: while nothing arrives it
// is not woken (no busy polling, hardly any CPU), a read deadline wakes it, a datagram through the
// rings or through the shadow socket wakes it, and Close wakes it.
func TestNetpollerWaiting(t *testing.T) {
	p := newPair(t)
	x := openXDP(t, p.A, p.A.Addr4(0), Config{})
	u := openUDP(t, p.B, p.B.Addr4(0))
	msgs := []transport.Message{{Buf: make([]byte, 2048)}}

	// Idle: one ReadBatch waiting 300 ms for a deadline.
	const idle = 300 * time.Millisecond
	var before, after unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &before)
	calls := x.rd.calls
	start := time.Now()
	if err := x.SetReadDeadline(start.Add(idle)); err != nil {
		t.Fatal(err)
	}
	n, err := x.ReadBatch(msgs)
	elapsed := time.Since(start)
	_ = unix.Getrusage(unix.RUSAGE_SELF, &after)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n != 0 || elapsed < idle-5*time.Millisecond {
		t.Fatalf("idle ReadBatch = %d, %v after %v; want a deadline error after %v", n, err, elapsed, idle)
	}
	if polls := x.rd.calls - calls; polls > 3 {
		t.Errorf("the reader looked at the rings %d times while idle for %v: busy polling", polls, idle)
	}
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	if cpu > idle/2 {
		t.Errorf("the process used %v of CPU while the reader idled for %v", cpu, idle)
	}

	type result struct {
		n   int
		err error
	}
	blocked := func() <-chan result {
		if err := x.SetReadDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
		ch := make(chan result, 1)
		go func() {
			n, err := x.ReadBatch(msgs)
			ch <- result{n, err}
		}()
		return ch
	}
	wait := func(ch <-chan result, what string, limit time.Duration) result {
		t.Helper()
		select {
		case r := <-ch:
			return r
		case <-time.After(limit):
			_ = x.SetReadDeadline(time.Unix(1, 0))
			<-ch
			t.Fatalf("%s did not wake the reader within %v", what, limit)
			return result{}
		}
	}

	ch := blocked()
	if err := x.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if r := wait(ch, "a deadline in the past", 100*time.Millisecond); !errors.Is(r.err, os.ErrDeadlineExceeded) {
		t.Fatalf("woken by a deadline: %d, %v", r.n, r.err)
	}

	ch = blocked()
	writeAll(t, u, transport.Message{Buf: []byte("ring"), Addr: x.LocalAddr()})
	if r := wait(ch, "a datagram in the RX ring", ioTimeout); r.err != nil || r.n != 1 || string(msgs[0].Buf[:msgs[0].N]) != "ring" {
		t.Fatalf("woken by a datagram: %d, %v", r.n, r.err)
	}

	// A datagram from the namespace itself travels over loopback to the shadow socket.
	local := openUDP(t, p.A, p.A.Addr4(0))
	ch = blocked()
	writeAll(t, local, transport.Message{Buf: []byte("shadow"), Addr: x.LocalAddr()})
	if r := wait(ch, "a datagram on the shadow socket", ioTimeout); r.err != nil || r.n != 1 ||
		string(msgs[0].Buf[:msgs[0].N]) != "shadow" || msgs[0].Addr != local.LocalAddr() {
		t.Fatalf("woken by a shadow datagram: %d, %v, %q from %v", r.n, r.err, msgs[0].Buf[:msgs[0].N], msgs[0].Addr)
	}

	ch = blocked()
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if r := wait(ch, "Close", time.Second); !errors.Is(r.err, net.ErrClosed) {
		t.Fatalf("woken by Close: %d, %v", r.n, r.err)
	}
}

// TestMalformedFramesDropped injects frames that the XDP program redirects (it checks headers,
// not checksums) but that are broken, from a raw socket in the peer namespace: each is dropped and
// counted under its reason, nothing panics, and valid frames sent after them arrive.
func TestMalformedFramesDropped(t *testing.T) {
	p := newPair(t)
	x := openXDP(t, p.A, netip.MustParseAddrPort("[::]:0"), Config{})
	port := x.LocalAddr().Port()
	src4, dst4 := p.B.Addr4(40000), p.A.Addr4(port)
	src6, dst6 := p.B.Addr6(40000), p.A.Addr6(port)
	payload := []byte("malformed test payload")
	build := func(src, dst netip.AddrPort, mutate func(f []byte)) []byte {
		h := frameHeader{dstMAC: [6]byte(p.A.MAC), srcMAC: [6]byte(p.B.MAC), src: src, dst: dst}
		buf := make([]byte, h.headerLen()+len(payload))
		f := buf[:buildFrame(buf, &h, payload)]
		if mutate != nil {
			mutate(f)
		}
		return f
	}
	udp6 := ethLen + ipv6Len
	cases := []struct {
		name   string
		frame  []byte
		reason dropReason
	}{
		{"bad UDP checksum", build(src4, dst4, func(f []byte) { f[len(f)-1] ^= 0xff }), dropBadUDPChecksum},
		{"bad IPv4 header checksum", build(src4, dst4, func(f []byte) { f[ethLen+10] ^= 0xff }), dropBadIPChecksum},
		{"source port 0", build(netip.AddrPortFrom(src4.Addr(), 0), dst4, nil), dropBadAddress},
		{"zero UDP checksum over IPv6", build(src6, dst6, func(f []byte) { f[udp6+6], f[udp6+7] = 0, 0 }),
			dropBadUDPChecksum},
		{"bad IPv6 UDP checksum", build(src6, dst6, func(f []byte) { f[udp6+9] ^= 1 }), dropBadUDPChecksum},
		{"multicast IPv6 source", build(netip.MustParseAddrPort("[ff02::1]:40000"), dst6, nil), dropBadAddress},
	}
	fd := rawSocket(t, p.B)
	for _, tc := range cases {
		sendRaw(t, fd, p.B.Index, p.A.MAC, tc.frame)
	}
	sendRaw(t, fd, p.B.Index, p.A.MAC, build(src4, dst4, nil))
	sendRaw(t, fd, p.B.Index, p.A.MAC, build(src6, dst6, nil))
	got := readN(t, x, 2)
	for i, want := range []netip.AddrPort{src4, src6} {
		if string(got[i].Buf) != string(payload) || got[i].Addr != want {
			t.Fatalf("valid frame %d arrived as %q from %v, want from %v", i, got[i].Buf, got[i].Addr, want)
		}
	}
	if d := x.Stats().Drops; d != uint64(len(cases)) {
		t.Errorf("Drops = %d, want %d", d, len(cases))
	}
	want := map[dropReason]uint64{}
	for _, tc := range cases {
		want[tc.reason]++
	}
	for r, n := range want {
		if got := x.dropsBy[r].Load(); got != n {
			t.Errorf("%d drops counted as %v, want %d", got, r, n)
		}
	}
}

// rawSocket opens an AF_PACKET socket in ns, closed at cleanup.
func rawSocket(t *testing.T, ns *netns.NS) int {
	t.Helper()
	var fd int
	if err := ns.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		t.Fatalf("AF_PACKET socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// sendRaw sends an Ethernet frame out of interface ifindex.
func sendRaw(t *testing.T, fd, ifindex int, dst net.HardwareAddr, frame []byte) {
	t.Helper()
	sa := &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}
	copy(sa.Addr[:], dst)
	if err := unix.Sendto(fd, frame, 0, sa); err != nil {
		t.Fatalf("send raw frame: %v", err)
	}
}
