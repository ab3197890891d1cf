package bpf

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/naquid/naquid/internal/netns"
	"golang.org/x/sys/unix"
)

// ioTimeout bounds every wait for a datagram.
const ioTimeout = 5 * time.Second

// progID returns the kernel's id for p's program.
func progID(t *testing.T, p *Program) uint32 {
	t.Helper()
	info, err := p.prog.Info()
	if err != nil {
		t.Fatalf("program info: %v", err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("kernel does not report program ids")
	}
	return uint32(id)
}

// xdpAttachment returns the XDP attachment of dev in ns from `ip -o link show`, which prints the
// mode ("xdp" for driver mode, "xdpgeneric" for generic mode) after the MTU and then
// "prog/xdp id <id> name ...": the result is "xdp id 42", "xdpgeneric id 42", or "" when no
// program is attached.
func xdpAttachment(t *testing.T, ns *netns.NS, dev string) string {
	t.Helper()
	out, err := ns.Run("ip", "-o", "link", "show", "dev", dev)
	if err != nil {
		t.Fatalf("ip link show %s: %v", dev, err)
	}
	var mode, id string
	f := strings.Fields(out)
	for i, w := range f {
		switch {
		case w == "xdp" || strings.HasPrefix(w, "xdpgeneric") || strings.HasPrefix(w, "xdpdrv") || strings.HasPrefix(w, "xdpoffload"):
			mode = w
		case w == "prog/xdp" && i+2 < len(f) && f[i+1] == "id":
			id = f[i+2]
		}
	}
	if mode == "" && id == "" {
		return ""
	}
	return mode + " id " + id
}

// wantAttachment is what xdpAttachment returns for program id attached in mode.
func wantAttachment(mode AttachMode, id uint32) string {
	if mode == AttachGeneric {
		return fmt.Sprintf("xdpgeneric id %d", id)
	}
	return fmt.Sprintf("xdp id %d", id)
}

// TestAttachModes attaches programs to loopback (no native XDP) and to a veth (native XDP) in a
// namespace, checks the mode chosen, what `ip link` shows, the argument and state errors, and
// that Close leaves no program attached.
func TestAttachModes(t *testing.T) {
	pair := netns.NewPair(t, netns.Config{Prefix: "nqbpf"})
	a := pair.A
	lo := load(t, Config{Ports: []uint16{portA}})
	veth := load(t, Config{Ports: []uint16{portA}})
	spare := load(t, Config{Ports: []uint16{portA}})

	if err := a.Do(func() error {
		loIndex := 1 // loopback is always interface 1 of a namespace
		_, err := lo.Attach(loIndex, AttachDriver)
		if err == nil {
			return errors.New("driver-mode attach to lo succeeded")
		}
		if !strings.Contains(err.Error(), "lo (ifindex 1)") || !strings.Contains(err.Error(), "driver mode") {
			t.Errorf("driver-mode attach error %q names neither the interface nor the mode", err)
		}
		mode, err := lo.Attach(loIndex, AttachAuto)
		if err != nil || mode != AttachGeneric {
			return fmt.Errorf("auto attach to lo = %v, %v; want generic", mode, err)
		}
		if _, err := lo.Attach(loIndex, AttachGeneric); !errors.Is(err, ErrAttached) {
			t.Errorf("second attach = %v, want ErrAttached", err)
		}
		mode, err = veth.Attach(a.Index, AttachAuto)
		if err != nil || mode != AttachDriver {
			return fmt.Errorf("auto attach to veth = %v, %v; want driver", mode, err)
		}
		if _, err := spare.Attach(9999, AttachGeneric); err == nil || !strings.Contains(err.Error(), "ifindex 9999") {
			t.Errorf("attach to a missing interface = %v, want an error naming ifindex 9999", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ifindex int
		mode    AttachMode
	}{{0, AttachGeneric}, {-3, AttachAuto}, {a.Index, AttachMode(7)}} {
		if _, err := spare.Attach(tc.ifindex, tc.mode); err == nil {
			t.Errorf("Attach(%d, %v) succeeded", tc.ifindex, tc.mode)
		}
	}

	if got, want := xdpAttachment(t, a, "lo"), wantAttachment(AttachGeneric, progID(t, lo)); got != want {
		t.Errorf("lo shows %q, want %q", got, want)
	}
	if got, want := xdpAttachment(t, a, a.Link), wantAttachment(AttachDriver, progID(t, veth)); got != want {
		t.Errorf("%s shows %q, want %q", a.Link, got, want)
	}
	for _, p := range []*Program{lo, veth} {
		if err := p.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	for _, dev := range []string{"lo", a.Link} {
		if got := xdpAttachment(t, a, dev); got != "" {
			t.Errorf("after Close %s still shows %q", dev, got)
		}
	}
}

// TestTraffic sends real datagrams through a veth pair to a namespace whose end runs the program
// (generic and driver mode, two RX queues) and checks where they land: the kernel's UDP sockets
// while the XSKMAP is empty (so ARP, neighbour discovery and the XDP_PASS fallback all work), an
// AF_XDP socket once one is registered, the kernel again after DeleteSocket. Test runs on the
// device show the XSKMAP is indexed by RX queue and XDP_REDIRECT is returned.
func TestTraffic(t *testing.T) {
	for _, mode := range []AttachMode{AttachGeneric, AttachDriver} {
		t.Run(mode.String(), func(t *testing.T) { testTraffic(t, mode) })
	}
}

func testTraffic(t *testing.T, mode AttachMode) {
	pair := netns.NewPair(t, netns.Config{Prefix: "nqbpf"})
	a, b := pair.A, pair.B
	for _, ns := range []*netns.NS{a, b} {
		if _, err := ns.Run("ethtool", "-L", ns.Link, "rx", "2", "tx", "2"); err != nil {
			t.Fatalf("two queues on %s: %v", ns.Link, err)
		}
	}
	p := load(t, Config{Ports: []uint16{portA}, QueueCount: 2})
	if err := a.Do(func() error {
		got, err := p.Attach(a.Index, mode)
		if err == nil && got != mode {
			err = fmt.Errorf("attached in %v mode", got)
		}
		return err
	}); err != nil {
		t.Fatalf("Attach(%s, %v): %v", a.Link, mode, err)
	}

	kernel := map[netip.AddrPort]*net.UDPConn{}
	for _, ap := range []netip.AddrPort{a.Addr4(portA), a.Addr4(portOther), a.Addr6(portA), a.Addr6(portOther)} {
		kernel[ap] = listenUDP(t, a, ap)
	}
	send4 := listenUDP(t, b, netip.AddrPortFrom(b.IPv4.Addr(), 0))
	send6 := listenUDP(t, b, netip.AddrPortFrom(b.IPv6.Addr(), 0))
	send := func(to netip.AddrPort, msg string) {
		t.Helper()
		c := send4
		if to.Addr().Is6() {
			c = send6
		}
		if _, err := c.WriteToUDPAddrPort([]byte(msg), to); err != nil {
			t.Fatalf("send to %v: %v", to, err)
		}
	}

	// 1. Empty XSKMAP: every datagram reaches the kernel.
	before := counters(t, p)
	for _, to := range []netip.AddrPort{a.Addr4(portA), a.Addr4(portOther), a.Addr6(portA), a.Addr6(portOther)} {
		msg := "to " + to.String()
		send(to, msg)
		expectDatagram(t, kernel[to], msg)
	}
	d := counters(t, p).Sub(before)
	if d.RedirectV4 != 1 || d.RedirectV6 != 1 || d.NoSocket != 2 || d.PassOtherPort != 2 {
		t.Errorf("empty XSKMAP: counter delta %+v, want one redirect per family, both without socket, two other-port", d)
	}
	if d.PassNotIP == 0 || d.PassNotUDP == 0 {
		t.Errorf("empty XSKMAP: counter delta %+v, want ARP (not IP) and neighbour discovery (not UDP) counted", d)
	}
	if d.PassMalformed+d.PassFragment+d.PassVLAN+d.PassIPv6Ext != 0 {
		t.Errorf("empty XSKMAP: counter delta %+v, want no malformed, fragment, VLAN or extension-header frames", d)
	}

	// 2. A socket on queue 1 only: test runs on the device redirect on queue 1, pass on queue 0.
	xsk1 := newXSK(t, a, 1)
	if err := p.SetSocket(1, xsk1.fd); err != nil {
		t.Fatalf("SetSocket(1): %v", err)
	}
	before = counters(t, p)
	v4, v6, other := udp4(t, portA, nil), udp6(t, portA), udp4(t, portOther, nil)
	if err := a.Do(func() error {
		for _, r := range []struct {
			name  string
			frame []byte
			queue int
			want  uint32
		}{
			{"ipv4 on queue 1", v4, 1, xdpRedirect},
			{"ipv6 on queue 1", v6, 1, xdpRedirect},
			{"ipv4 on queue 0", v4, 0, xdpPass},
			{"other port on queue 1", other, 1, xdpPass},
		} {
			action, err := run(p.prog, r.frame, a.Index, r.queue)
			if err != nil {
				return fmt.Errorf("%s: run: %w", r.name, err)
			}
			if action != r.want {
				t.Errorf("%s: action %d, want %d", r.name, action, r.want)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, want := counters(t, p).Sub(before), (Counters{RedirectV4: 2, RedirectV6: 1, NoSocket: 1, PassOtherPort: 1}); got != want {
		t.Errorf("socket on queue 1: counter delta %+v, want %+v", got, want)
	}

	// 3. Sockets on both queues: a datagram to our port lands in an AF_XDP socket.
	xsk0 := newXSK(t, a, 0)
	if err := p.SetSocket(0, xsk0.fd); err != nil {
		t.Fatalf("SetSocket(0): %v", err)
	}
	before = counters(t, p)
	msg := "to the AF_XDP socket"
	send(a.Addr4(portA), msg)
	frame := receiveXSK(t, xsk0, xsk1)
	if !bytes.HasSuffix(frame, []byte(msg)) || len(frame) != ethLen+ipv4Min+udpLen+len(msg) {
		t.Errorf("AF_XDP socket got %d-byte frame %x, want Ethernet/IPv4/UDP carrying %q", len(frame), frame, msg)
	}
	if got, want := counters(t, p).Sub(before), (Counters{RedirectV4: 1}); got != want {
		t.Errorf("sockets on both queues: counter delta %+v, want %+v", got, want)
	}

	// 4. Sockets deleted: the kernel receives again.
	for q := range 2 {
		if err := p.DeleteSocket(q); err != nil {
			t.Fatalf("DeleteSocket(%d): %v", q, err)
		}
	}
	before = counters(t, p)
	send(a.Addr4(portA), "back to the kernel")
	expectDatagram(t, kernel[a.Addr4(portA)], "back to the kernel")
	if got, want := counters(t, p).Sub(before), (Counters{RedirectV4: 1, NoSocket: 1}); got != want {
		t.Errorf("sockets deleted: counter delta %+v, want %+v", got, want)
	}
}

// listenUDP opens a kernel UDP socket on ap inside ns, closed by t.Cleanup.
func listenUDP(t *testing.T, ns *netns.NS, ap netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		return err
	}); err != nil {
		t.Fatalf("listen on %v in %s: %v", ap, ns.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectDatagram reads one datagram from c and checks it is msg.
func expectDatagram(t *testing.T, c *net.UDPConn, msg string) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, _, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("kernel socket %v: waiting for %q: %v", c.LocalAddr(), msg, err)
	}
	if got := string(buf[:n]); got != msg {
		t.Fatalf("kernel socket %v got %q, want %q", c.LocalAddr(), got, msg)
	}
}

// Geometry of the test AF_XDP sockets.
const (
	xskFrames    = 8
	xskFrameSize = 4096
)

// testXSK is a minimal AF_XDP socket in copy mode with its fill ring stocked and its RX ring
// mapped: just enough to be registered in the XSKMAP and to receive a few frames. (The real
// implementation is transport/afxdp's.)
type testXSK struct {
	fd         int
	umem       []byte
	rx         []byte // the mapped RX ring
	rxProducer *uint32
	rxDesc     uint64 // offset of the descriptor array in rx
}

// newXSK binds an AF_XDP socket to queue of ns's veth end. Everything is undone by t.Cleanup.
func newXSK(t *testing.T, ns *netns.NS, queue int) *testXSK {
	t.Helper()
	x := &testXSK{fd: -1}
	t.Cleanup(func() {
		if x.rx != nil {
			unix.Munmap(x.rx)
		}
		if x.fd >= 0 {
			unix.Close(x.fd)
		}
		if x.umem != nil {
			unix.Munmap(x.umem)
		}
	})
	if err := ns.Do(func() error { return x.setup(ns.Index, queue) }); err != nil {
		t.Fatalf("AF_XDP socket on %s queue %d: %v", ns.Link, queue, err)
	}
	return x
}

func (x *testXSK) setup(ifindex, queue int) error {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	x.fd = fd
	x.umem, err = unix.Mmap(-1, 0, xskFrames*xskFrameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("mmap UMEM: %w", err)
	}
	reg := unix.XDPUmemReg{Addr: uint64(uintptr(unsafe.Pointer(&x.umem[0]))), Len: uint64(len(x.umem)), Size: xskFrameSize}
	if err := setsockopt(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return fmt.Errorf("XDP_UMEM_REG: %w", err)
	}
	for _, opt := range []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_RX_RING} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, opt, xskFrames); err != nil {
			return fmt.Errorf("ring size option %d: %w", opt, err)
		}
	}
	var off unix.XDPMmapOffsets
	size := uint32(unsafe.Sizeof(off))
	if _, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS,
		uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&size)), 0); errno != 0 {
		return fmt.Errorf("XDP_MMAP_OFFSETS: %w", errno)
	}

	// Give the kernel every UMEM frame through the fill ring. The mapping is not needed after.
	fill, err := unix.Mmap(fd, unix.XDP_UMEM_PGOFF_FILL_RING, int(off.Fr.Desc)+xskFrames*8, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap fill ring: %w", err)
	}
	for i := range xskFrames {
		*(*uint64)(unsafe.Pointer(&fill[int(off.Fr.Desc)+8*i])) = uint64(i * xskFrameSize)
	}
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&fill[off.Fr.Producer])), xskFrames)
	if err := unix.Munmap(fill); err != nil {
		return fmt.Errorf("munmap fill ring: %w", err)
	}

	x.rx, err = unix.Mmap(fd, unix.XDP_PGOFF_RX_RING, int(off.Rx.Desc)+xskFrames*int(unsafe.Sizeof(unix.XDPDesc{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap RX ring: %w", err)
	}
	x.rxProducer = (*uint32)(unsafe.Pointer(&x.rx[off.Rx.Producer]))
	x.rxDesc = off.Rx.Desc

	sa := &unix.SockaddrXDP{Flags: unix.XDP_COPY, Ifindex: uint32(ifindex), QueueID: uint32(queue)}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	return nil
}

// first returns the first frame of the RX ring, if the kernel has produced one.
func (x *testXSK) first() ([]byte, bool) {
	if atomic.LoadUint32(x.rxProducer) == 0 {
		return nil, false
	}
	d := (*unix.XDPDesc)(unsafe.Pointer(&x.rx[x.rxDesc]))
	if d.Addr+uint64(d.Len) > uint64(len(x.umem)) {
		return nil, false
	}
	return x.umem[d.Addr : d.Addr+uint64(d.Len)], true
}

func setsockopt(fd, opt int, val unsafe.Pointer, size uintptr) error {
	if _, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(val), size, 0); errno != 0 {
		return errno
	}
	return nil
}

// receiveXSK waits (poll, bounded by ioTimeout) until one of the sockets has a frame and
// returns it.
func receiveXSK(t *testing.T, xsks ...*testXSK) []byte {
	t.Helper()
	fds := make([]unix.PollFd, len(xsks))
	for i, x := range xsks {
		fds[i] = unix.PollFd{Fd: int32(x.fd), Events: unix.POLLIN}
	}
	deadline := time.Now().Add(ioTimeout)
	for {
		for _, x := range xsks {
			if f, ok := x.first(); ok {
				return f
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no frame in the AF_XDP sockets after %v", ioTimeout)
		}
		if _, err := unix.Poll(fds, int(left.Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatalf("poll AF_XDP sockets: %v", err)
		}
	}
}
