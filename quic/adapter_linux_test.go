package quic

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/transport"
)

var (
	v4Local  = netip.MustParseAddrPort("192.0.2.1:4433")
	v4Remote = netip.MustParseAddrPort("192.0.2.2:5000")
	v6Local  = netip.MustParseAddrPort("[2001:db8::1]:4433")
	v6Remote = netip.MustParseAddrPort("[2001:db8::2]:5000")
)

// newTestAdapter wraps a fakeConn with caps and local in an adapter closed at cleanup.
func newTestAdapter(t testing.TB, caps transport.Capabilities, local netip.AddrPort) (*adapter, *fakeConn) {
	t.Helper()
	f := newFakeConn(caps, local)
	pc, err := PacketConn(f)
	if err != nil {
		t.Fatalf("PacketConn: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.(*adapter), f
}

// testCmsg builds one control message the way quic-go and the kernel do (header cast in place),
// independently of the adapter's own encoder.
func testCmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgSpace(0):], data)
	return b
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
func u16(v uint16) []byte { return binary.NativeEndian.AppendUint16(nil, v) }

func newMsgs(n int) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, 1500)}
		ms[i].OOB = make([]byte, 128)
	}
	return ms
}

func TestPacketConnNil(t *testing.T) {
	if _, err := PacketConn(nil); err == nil {
		t.Fatal("PacketConn(nil) succeeded")
	}
}

// kernelConn is a fakeConn that claims to be a kernel UDP socket.
type kernelConn struct {
	*fakeConn
	uc *net.UDPConn
}

func (k kernelConn) UDPConn() *net.UDPConn { return k.uc }

func TestPacketConnKernelUDPPassesSocketThrough(t *testing.T) {
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	pc, err := PacketConn(kernelConn{newFakeConn(transport.Capabilities{}, v4Local), uc})
	if err != nil {
		t.Fatal(err)
	}
	if pc != net.PacketConn(uc) {
		t.Fatalf("PacketConn returned %T %p, want the *net.UDPConn %p itself", pc, pc, uc)
	}
}

func TestLocalAddrIsUDPAddr(t *testing.T) {
	a, _ := newTestAdapter(t, transport.Capabilities{}, v6Local)
	ua, ok := a.LocalAddr().(*net.UDPAddr)
	if !ok || ua.AddrPort() != v6Local {
		t.Fatalf("LocalAddr = %#v, want *net.UDPAddr %v", a.LocalAddr(), v6Local)
	}
}

func TestReadBatchControlMessages(t *testing.T) {
	tests := []struct {
		name   string
		caps   transport.Capabilities
		in     transport.Message
		oobLen int
		want   []unix.SocketControlMessage // nil: no control messages
		trunc  bool
	}{
		{
			name: "no capabilities",
			in:   transport.Message{Addr: v4Remote, Local: v4Local.Addr(), ECN: transport.ECNECT0},
		},
		{
			name: "ECN IPv4",
			caps: transport.Capabilities{ECN: true},
			in:   transport.Message{Addr: v4Remote, ECN: transport.ECNECT0},
			want: []unix.SocketControlMessage{{Header: unix.Cmsghdr{Level: unix.IPPROTO_IP, Type: unix.IP_TOS}, Data: []byte{0b10}}},
		},
		{
			name: "ECN not-ECT still reported",
			caps: transport.Capabilities{ECN: true},
			in:   transport.Message{Addr: v4Remote},
			want: []unix.SocketControlMessage{{Header: unix.Cmsghdr{Level: unix.IPPROTO_IP, Type: unix.IP_TOS}, Data: []byte{0}}},
		},
		{
			name: "ECN IPv6 CE",
			caps: transport.Capabilities{ECN: true},
			in:   transport.Message{Addr: v6Remote, ECN: transport.ECNCE},
			want: []unix.SocketControlMessage{{Header: unix.Cmsghdr{Level: unix.IPPROTO_IPV6, Type: unix.IPV6_TCLASS}, Data: u32(3)}},
		},
		{
			name: "ECN and packet info IPv4",
			caps: transport.Capabilities{ECN: true, LocalAddr: true},
			in:   transport.Message{Addr: v4Remote, Local: v4Local.Addr(), ECN: transport.ECNECT1},
			want: []unix.SocketControlMessage{
				{Header: unix.Cmsghdr{Level: unix.IPPROTO_IP, Type: unix.IP_TOS}, Data: []byte{0b01}},
				{Header: unix.Cmsghdr{Level: unix.IPPROTO_IP, Type: unix.IP_PKTINFO}, Data: []byte{0, 0, 0, 0, 192, 0, 2, 1, 192, 0, 2, 1}},
			},
		},
		{
			name: "packet info IPv6",
			caps: transport.Capabilities{LocalAddr: true},
			in:   transport.Message{Addr: v6Remote, Local: v6Local.Addr()},
			want: []unix.SocketControlMessage{{
				Header: unix.Cmsghdr{Level: unix.IPPROTO_IPV6, Type: unix.IPV6_PKTINFO},
				Data:   append(v6Local.Addr().AsSlice(), 0, 0, 0, 0),
			}},
		},
		{
			name: "local address unknown",
			caps: transport.Capabilities{LocalAddr: true},
			in:   transport.Message{Addr: v4Remote},
		},
		{
			name:   "OOB too short",
			caps:   transport.Capabilities{ECN: true},
			in:     transport.Message{Addr: v4Remote, ECN: transport.ECNECT0},
			oobLen: 8,
			trunc:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, f := newTestAdapter(t, tt.caps, v4Local)
			tt.in.Buf = []byte("payload")
			f.deliver(tt.in)
			ms := newMsgs(1)
			if tt.oobLen > 0 {
				ms[0].OOB = ms[0].OOB[:tt.oobLen]
			}
			n, err := a.ReadBatch(ms, 0)
			if err != nil || n != 1 {
				t.Fatalf("ReadBatch = %d, %v", n, err)
			}
			m := ms[0]
			if got := string(m.Buffers[0][:m.N]); got != "payload" {
				t.Errorf("payload %q", got)
			}
			if trunc := m.Flags&unix.MSG_CTRUNC != 0; trunc != tt.trunc {
				t.Errorf("MSG_CTRUNC = %v, want %v", trunc, tt.trunc)
			}
			got, err := unix.ParseSocketControlMessage(m.OOB[:m.NN])
			if err != nil {
				t.Fatalf("kernel-format parse of OOB: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d control messages %+v, want %d", len(got), got, len(tt.want))
			}
			for i, w := range tt.want {
				g := got[i]
				if g.Header.Level != w.Header.Level || g.Header.Type != w.Header.Type || !bytes.Equal(g.Data, w.Data) {
					t.Errorf("cmsg %d = level %d type %d data %x, want level %d type %d data %x",
						i, g.Header.Level, g.Header.Type, g.Data, w.Header.Level, w.Header.Type, w.Data)
				}
			}
		})
	}
}

func TestReadBatchAddressesCachedAndBatched(t *testing.T) {
	a, f := newTestAdapter(t, transport.Capabilities{}, v4Local)
	froms := []netip.AddrPort{v4Remote, v4Remote, v6Remote, v4Remote}
	for i, from := range froms {
		f.deliver(transport.Message{Buf: []byte{byte(i)}, Addr: from})
	}
	ms := newMsgs(8)
	n, err := a.ReadBatch(ms, 0)
	if err != nil || n != len(froms) {
		t.Fatalf("ReadBatch = %d, %v; want %d datagrams in one call", n, err, len(froms))
	}
	for i, from := range froms {
		ua, ok := ms[i].Addr.(*net.UDPAddr)
		if !ok || ua.AddrPort() != from {
			t.Fatalf("message %d from %v, want *net.UDPAddr %v", i, ms[i].Addr, from)
		}
		if from.Addr().Is4() && len(ua.IP) != net.IPv4len {
			t.Errorf("IPv4 source as %d-byte IP", len(ua.IP))
		}
		if ms[i].N != 1 || ms[i].Buffers[0][0] != byte(i) {
			t.Errorf("message %d payload wrong", i)
		}
	}
	if ms[0].Addr != ms[1].Addr || ms[0].Addr != ms[3].Addr {
		t.Error("the same source got different *net.UDPAddr values")
	}
	if a.rmsgs[0].Buf != nil {
		t.Error("adapter kept a reference to the caller's buffer")
	}
}

func TestReadBatchRejectsMultipleBuffers(t *testing.T) {
	a, _ := newTestAdapter(t, transport.Capabilities{}, v4Local)
	ms := []ipv4.Message{{Buffers: [][]byte{make([]byte, 10), make([]byte, 10)}}}
	if _, err := a.ReadBatch(ms, 0); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("ReadBatch with 2 buffers: %v, want EINVAL", err)
	}
	if n, err := a.ReadBatch(nil, 0); n != 0 || err != nil {
		t.Fatalf("ReadBatch(nil) = %d, %v", n, err)
	}
	// A bad message after good ones: the adapter keeps no reference to the good ones' buffers.
	ms = newMsgs(3)
	ms[2].Buffers = nil
	if _, err := a.ReadBatch(ms, 0); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("ReadBatch with a message without buffers: %v, want EINVAL", err)
	}
	for i, m := range a.rmsgs {
		if m.Buf != nil {
			t.Errorf("after the refused ReadBatch, message %d still holds the caller's buffer", i)
		}
	}
}

func TestWriteMsgUDPControlMessages(t *testing.T) {
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	mapped := &net.UDPAddr{IP: net.ParseIP("192.0.2.2"), Port: 5000} // 16-byte form
	tests := []struct {
		name string
		oob  []byte
		to   *net.UDPAddr
		want transport.Message // Buf ignored
	}{
		{name: "none", to: net.UDPAddrFromAddrPort(v4Remote), want: transport.Message{Addr: v4Remote}},
		{
			name: "quic-go IPv4: TOS and segment",
			oob:  cat(testCmsg(unix.IPPROTO_UDP, unix.UDP_SEGMENT, u16(1200)), testCmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{0b10})),
			to:   mapped,
			want: transport.Message{Addr: v4Remote, SegmentSize: 1200, ECN: transport.ECNECT0},
		},
		{
			name: "IP_TOS as int",
			oob:  testCmsg(unix.IPPROTO_IP, unix.IP_TOS, u32(0b01)),
			to:   net.UDPAddrFromAddrPort(v4Remote),
			want: transport.Message{Addr: v4Remote, ECN: transport.ECNECT1},
		},
		{
			name: "IPv4 packet info (x/net marshal)",
			oob:  (&ipv4.ControlMessage{Src: net.IPv4(192, 0, 2, 1).To4(), IfIndex: 3}).Marshal(),
			to:   net.UDPAddrFromAddrPort(v4Remote),
			want: transport.Message{Addr: v4Remote, Local: v4Local.Addr()},
		},
		{
			name: "IPv6 traffic class and packet info (x/net marshal)",
			oob:  (&ipv6.ControlMessage{TrafficClass: 0b11, Src: v6Local.Addr().AsSlice()}).Marshal(),
			to:   net.UDPAddrFromAddrPort(v6Remote),
			want: transport.Message{Addr: v6Remote, Local: v6Local.Addr(), ECN: transport.ECNCE},
		},
		{
			name: "unknown message ignored",
			oob:  testCmsg(unix.SOL_SOCKET, unix.SO_MARK, u32(7)),
			to:   net.UDPAddrFromAddrPort(v4Remote),
			want: transport.Message{Addr: v4Remote},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, f := newTestAdapter(t, transport.Capabilities{}, v4Local)
			f.record()
			payload := bytes.Repeat([]byte{0xab}, 2500)
			n, oobn, err := a.WriteMsgUDP(payload, tt.oob, tt.to)
			if err != nil || n != len(payload) || oobn != len(tt.oob) {
				t.Fatalf("WriteMsgUDP = %d, %d, %v; want %d, %d, nil", n, oobn, err, len(payload), len(tt.oob))
			}
			w := f.written()
			if len(w) != 1 {
				t.Fatalf("%d messages written, want 1", len(w))
			}
			got := w[0]
			if !bytes.Equal(got.Buf, payload) {
				t.Error("payload changed")
			}
			if got.Addr != tt.want.Addr || got.Local != tt.want.Local || got.SegmentSize != tt.want.SegmentSize || got.ECN != tt.want.ECN {
				t.Errorf("wrote %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestWriteMsgUDPMalformedControl(t *testing.T) {
	good := testCmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{1})
	long := bytes.Clone(good)
	long[0] = 200 // length beyond the buffer
	tests := map[string][]byte{
		"short header":      good[:8],
		"length too large":  long,
		"length too small":  make([]byte, 16),
		"segment wrong len": testCmsg(unix.IPPROTO_UDP, unix.UDP_SEGMENT, u32(1200)),
		"TOS wrong len":     testCmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{1, 2}),
		"TCLASS wrong len":  testCmsg(unix.IPPROTO_IPV6, unix.IPV6_TCLASS, []byte{1}),
		"PKTINFO wrong len": testCmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, make([]byte, 8)),
		"PKTINFO6 wrong":    testCmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, make([]byte, 16)),
	}
	for name, oob := range tests {
		t.Run(name, func(t *testing.T) {
			a, f := newTestAdapter(t, transport.Capabilities{}, v4Local)
			f.record()
			_, _, err := a.WriteMsgUDP([]byte("x"), oob, net.UDPAddrFromAddrPort(v4Remote))
			if !errors.Is(err, syscall.EINVAL) {
				t.Fatalf("err = %v, want EINVAL", err)
			}
			if len(f.written()) != 0 {
				t.Error("a malformed write reached the transport")
			}
		})
	}
}

func FuzzTxControl(f *testing.F) {
	f.Add([]byte{})
	f.Add(testCmsg(unix.IPPROTO_UDP, unix.UDP_SEGMENT, u16(1200)))
	f.Add(append(testCmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{2}), testCmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, make([]byte, 12))...))
	f.Add((&ipv6.ControlMessage{TrafficClass: 1, Src: v6Local.Addr().AsSlice()}).Marshal())
	f.Fuzz(func(t *testing.T, oob []byte) {
		var m transport.Message
		if err := txControl(oob, &m); err != nil && !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("error %v does not match EINVAL", err)
		}
		if m.ECN > 3 || m.SegmentSize < 0 || m.SegmentSize > 0xffff {
			t.Fatalf("out-of-range message %+v", m)
		}
	})
}

func TestReadFromWriteTo(t *testing.T) {
	a, f := newTestAdapter(t, transport.Capabilities{ECN: true}, v4Local)
	f.record()
	f.deliver(transport.Message{Buf: []byte("hello"), Addr: v6Remote, ECN: transport.ECNECT0})
	buf := make([]byte, 64)
	n, from, err := a.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hello" || from.(*net.UDPAddr).AddrPort() != v6Remote {
		t.Fatalf("ReadFrom = %d %q, %v, %v", n, buf[:n], from, err)
	}

	f.deliver(transport.Message{Buf: []byte("again"), Addr: v6Remote, ECN: transport.ECNCE})
	oob := make([]byte, 64)
	n, oobn, flags, ua, err := a.ReadMsgUDP(buf, oob)
	if err != nil || string(buf[:n]) != "again" || flags != 0 || ua != from {
		t.Fatalf("ReadMsgUDP = %d %q, flags %d, %v (cached %p), %v", n, buf[:n], flags, ua, from, err)
	}
	cms, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(cms) != 1 || cms[0].Header.Type != unix.IPV6_TCLASS || !bytes.Equal(cms[0].Data, u32(3)) {
		t.Fatalf("ReadMsgUDP control %+v, %v", cms, err)
	}

	if n, err := a.WriteTo([]byte("one"), net.UDPAddrFromAddrPort(v4Remote)); err != nil || n != 3 {
		t.Fatalf("WriteTo(*net.UDPAddr) = %d, %v", n, err)
	}
	if n, err := a.WriteTo([]byte("two"), otherAddr(v6Remote.String())); err != nil || n != 3 {
		t.Fatalf("WriteTo(other net.Addr) = %d, %v", n, err)
	}
	if _, err := a.WriteTo([]byte("bad"), otherAddr("not an address")); err == nil {
		t.Fatal("WriteTo(unparsable address) succeeded")
	}
	if _, err := a.WriteTo([]byte("nil"), nil); !errors.Is(err, syscall.EDESTADDRREQ) {
		t.Fatalf("WriteTo(nil) = %v, want EDESTADDRREQ", err)
	}
	w := f.written()
	if len(w) != 2 || string(w[0].Buf) != "one" || w[0].Addr != v4Remote || string(w[1].Buf) != "two" || w[1].Addr != v6Remote {
		t.Fatalf("written %+v", w)
	}
}

// otherAddr is a net.Addr that is not a *net.UDPAddr.
type otherAddr string

func (a otherAddr) Network() string { return "udp" }
func (a otherAddr) String() string  { return string(a) }

func TestErrors(t *testing.T) {
	t.Run("EMSGSIZE stays matchable", func(t *testing.T) {
		a, f := newTestAdapter(t, transport.Capabilities{}, v4Local)
		f.setWriteErr(&net.OpError{Op: "write", Net: "udp", Err: os.NewSyscallError("sendmsg", syscall.EMSGSIZE)})
		_, _, err := a.WriteMsgUDP(make([]byte, 9000), nil, net.UDPAddrFromAddrPort(v4Remote))
		if !errors.Is(err, syscall.EMSGSIZE) || !errors.Is(err, unix.EMSGSIZE) {
			t.Fatalf("err = %v, want EMSGSIZE", err)
		}
		var se *os.SyscallError
		if !errors.As(err, &se) {
			t.Fatalf("err = %v: *os.SyscallError lost (quic-go's GSO error check uses it)", err)
		}
	})
	t.Run("deadline is a temporary net.Error", func(t *testing.T) {
		a, _ := newTestAdapter(t, transport.Capabilities{}, v4Local)
		if err := a.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		_, err := a.ReadBatch(newMsgs(2), 0)
		// quic-go asserts net.Error directly (no errors.As) and keeps reading on Temporary.
		ne, ok := err.(interface {
			net.Error
			Temporary() bool
		})
		if !ok || !ne.Timeout() || !ne.Temporary() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err = %#v, want a Timeout+Temporary net.Error matching os.ErrDeadlineExceeded", err)
		}
		if err := a.SetReadDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("write deadlines unsupported", func(t *testing.T) {
		a, _ := newTestAdapter(t, transport.Capabilities{}, v4Local)
		if err := a.SetWriteDeadline(time.Time{}); err != nil {
			t.Fatalf("SetWriteDeadline(zero) = %v", err)
		}
		if err := a.SetDeadline(time.Now().Add(time.Second)); !errors.Is(err, errors.ErrUnsupported) {
			t.Fatalf("SetDeadline = %v, want ErrUnsupported", err)
		}
	})
	t.Run("nil destination", func(t *testing.T) {
		a, _ := newTestAdapter(t, transport.Capabilities{}, v4Local)
		if _, _, err := a.WriteMsgUDP([]byte("x"), nil, nil); !errors.Is(err, syscall.EDESTADDRREQ) {
			t.Fatalf("err = %v", err)
		}
		if _, _, err := a.WriteMsgUDP([]byte("x"), nil, &net.UDPAddr{Port: 1}); !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestClose(t *testing.T) {
	a, f := newTestAdapter(t, transport.Capabilities{}, v4Local)
	ctl, err := a.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := a.ReadBatch(newMsgs(4), 0)
		readErr <- err
	}()
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked ReadBatch woke with %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake a blocked ReadBatch")
	}
	select {
	case <-f.closed:
	default:
		t.Fatal("Close did not close the transport")
	}
	if err := ctl.Control(func(uintptr) {}); err == nil {
		t.Error("option sink still open after Close")
	}
	buf := make([]byte, 10)
	checks := map[string]error{
		"Close":          a.Close(),
		"SyscallConn":    func() error { _, err := a.SyscallConn(); return err }(),
		"SetReadBuffer":  a.SetReadBuffer(1 << 20),
		"SetWriteBuffer": a.SetWriteBuffer(1 << 20),
		"ReadBatch":      func() error { _, err := a.ReadBatch(newMsgs(1), 0); return err }(),
		"ReadFrom":       func() error { _, _, err := a.ReadFrom(buf); return err }(),
		"ReadMsgUDP":     func() error { _, _, _, _, err := a.ReadMsgUDP(buf, nil); return err }(),
		"WriteTo":        func() error { _, err := a.WriteTo(buf, net.UDPAddrFromAddrPort(v4Remote)); return err }(),
		"WriteMsgUDP":    func() error { _, _, err := a.WriteMsgUDP(buf, nil, net.UDPAddrFromAddrPort(v4Remote)); return err }(),
	}
	for name, err := range checks {
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s after Close: %v, want net.ErrClosed", name, err)
		}
	}
}

func TestOptionSink(t *testing.T) {
	a, _ := newTestAdapter(t, transport.Capabilities{}, v4Local)
	rc, err := a.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var name, peer unix.Sockaddr
	var nameErr, peerErr, probeErr error
	if err := rc.Control(func(fd uintptr) {
		name, nameErr = unix.Getsockname(int(fd))
		peer, peerErr = unix.Getpeername(int(fd))
		_, probeErr = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	}); err != nil {
		t.Fatal(err)
	}
	if nameErr != nil || peerErr != nil {
		t.Fatalf("getsockname %v, getpeername %v", nameErr, peerErr)
	}
	sa, ok := name.(*unix.SockaddrInet4)
	if !ok || sa.Addr != [4]byte{127, 0, 0, 1} {
		t.Fatalf("sink bound to %+v, want 127.0.0.1", name)
	}
	if pa, ok := peer.(*unix.SockaddrInet4); !ok || *pa != *sa {
		t.Fatalf("sink connected to %+v, want itself %+v", peer, sa)
	}
	if probeErr != nil {
		t.Errorf("UDP_SEGMENT probe on the sink: %v (quic-go would disable GSO)", probeErr)
	}
	if err := a.SetReadBuffer(1 << 20); err != nil {
		t.Errorf("SetReadBuffer: %v", err)
	}
	if err := a.SetWriteBuffer(1 << 20); err != nil {
		t.Errorf("SetWriteBuffer: %v", err)
	}
}

// ctlConn is a fakeConn with its own control socket.
type ctlConn struct {
	*fakeConn
	uc *net.UDPConn
}

func (c ctlConn) SyscallConn() (syscall.RawConn, error) { return c.uc.SyscallConn() }

func TestTransportControlSocketUsed(t *testing.T) {
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	pc, err := PacketConn(ctlConn{newFakeConn(transport.Capabilities{}, v4Local), uc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	a := pc.(*adapter)
	if a.sink != nil {
		t.Fatal("adapter opened an option sink although the transport has a control socket")
	}
	if err := a.SetReadBuffer(256 << 10); err != nil {
		t.Fatal(err)
	}
	rc, _ := uc.SyscallConn()
	var got int
	var gerr error
	rc.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) })
	if gerr != nil || got < 256<<10 { // Linux doubles the value it stores
		t.Fatalf("SO_RCVBUF on the transport's control socket = %d, %v; want >= %d", got, gerr, 256<<10)
	}
}

func TestAdapterNoAllocs(t *testing.T) {
	a, f := newTestAdapter(t, transport.Capabilities{ECN: true, LocalAddr: true}, v4Local)
	ms := newMsgs(8)
	payload := make([]byte, 100)
	deliver := func() {
		for i := range 8 {
			f.deliver(transport.Message{Buf: payload, Addr: []netip.AddrPort{v4Remote, v6Remote}[i%2], Local: v4Local.Addr(), ECN: transport.ECNECT0})
		}
	}
	deliver()
	if _, err := a.ReadBatch(ms, 0); err != nil { // warm the address cache
		t.Fatal(err)
	}
	if allocs := testing.AllocsPerRun(100, func() {
		deliver()
		if n, err := a.ReadBatch(ms, 0); n != 8 || err != nil {
			t.Fatalf("ReadBatch = %d, %v", n, err)
		}
	}); allocs != 0 {
		t.Errorf("ReadBatch: %.1f allocations per batch of 8, want 0", allocs)
	}
	oob := append(testCmsg(unix.IPPROTO_UDP, unix.UDP_SEGMENT, u16(1200)), testCmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{2})...)
	to := net.UDPAddrFromAddrPort(v4Remote)
	big := make([]byte, 4000)
	if allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := a.WriteMsgUDP(big, oob, to); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("WriteMsgUDP: %.1f allocations per write, want 0", allocs)
	}
}

func TestAddrCacheGenerations(t *testing.T) {
	c := newAddrCache(2)
	ap := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(v4Remote.Addr(), port) }
	a1 := c.get(ap(1))
	c.get(ap(2))
	c.get(ap(3)) // current full: generation swap, 1 and 2 are now previous
	if c.get(ap(1)) != a1 {
		t.Fatal("address from the previous generation was not found again")
	}
	for p := uint16(10); p < 20; p++ {
		c.get(ap(p))
	}
	if len(c.cur)+len(c.prev) > 4 {
		t.Fatalf("cache holds %d entries, want at most 4", len(c.cur)+len(c.prev))
	}
	if got := c.get(ap(1)); got == a1 || got.AddrPort() != ap(1) {
		t.Fatalf("evicted address: got %v (same pointer %v)", got, got == a1)
	}
	if a1.AddrPort() != ap(1) {
		t.Fatal("an address handed out was mutated")
	}
}

// BenchmarkAdapterMemconn moves 1200-byte datagrams between two adapters over memconn, batches
// of 8 as quic-go does: the per-packet cost of the adapter path without QUIC.
func BenchmarkAdapterMemconn(b *testing.B) {
	s, c := memconn4(b)
	spc, err := PacketConn(s)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { spc.Close() })
	cpc, err := PacketConn(c)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cpc.Close() })
	server, client := spc.(*adapter), cpc.(*adapter)
	to := net.UDPAddrFromAddrPort(s.LocalAddr())
	oob := testCmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{2})
	payload := make([]byte, 1200)
	ms := newMsgs(8)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for range b.N {
		for range 8 {
			if _, _, err := client.WriteMsgUDP(payload, oob, to); err != nil {
				b.Fatal(err)
			}
		}
		for got := 0; got < 8; {
			n, err := server.ReadBatch(ms, 0)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	pkts := float64(b.N) * 8
	b.ReportMetric(pkts/b.Elapsed().Seconds(), "pkt/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/pkts, "allocs/pkt")
}
