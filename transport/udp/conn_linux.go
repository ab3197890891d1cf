package udp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/transport"
)

// readBuffer and writeBuffer return the socket buffer sizes to set.
func (c Config) readBuffer() int  { return orDefault(c.ReadBuffer, DefaultBufferSize) }
func (c Config) writeBuffer() int { return orDefault(c.WriteBuffer, DefaultBufferSize) }

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Largest UDP payloads: 65535 minus the IPv4 (20) and UDP (8) headers, and for IPv6 the 16-bit
// payload length minus the UDP header.
const (
	maxDatagram4 = 65535 - 20 - 8
	maxDatagram6 = 65535 - 8
)

// readOOBSize is the control-message buffer of a read: room for TOS/traffic class, packet info
// of both families and the drop counter, with margin.
const readOOBSize = 256

// sysState is the Linux-specific state of a Conn.
type sysState struct {
	// gso is cleared when the kernel refuses GSO for this socket's route (EIO).
	gso atomic.Bool
	// Read state, owned by the single reader.
	readOOB [readOOBSize]byte
	ovflOn  bool // SO_RXQ_OVFL enabled
}

// GSO limits: the kernel takes at most 64 segments per send (UDP_MAX_SEGMENTS on older kernels)
// and at most one IP datagram's worth of payload.
const (
	maxGSOSegments = 64
	maxGSOBytes    = maxDatagram4
)

// writeOOBSize is the control-message buffer of a write: TOS or traffic class, packet info and
// UDP_SEGMENT.
const writeOOBSize = 128

// listen opens and sets up the socket; Listen has validated cfg and local.
func listen(ctx context.Context, local netip.AddrPort, cfg Config) (*Conn, error) {
	network, v6, dual := "udp4", false, false
	switch a := local.Addr(); {
	case a.Is4():
	case a.IsUnspecified():
		network, v6, dual = "udp", true, true // Go makes [::] with "udp" a dual-stack socket
	default:
		network, v6 = "udp6", true
	}
	var gso bool
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) { gso, err = setupSocket(int(fd), v6, cfg) }); cerr != nil {
			return cerr
		}
		return err
	}}
	pc, err := lc.ListenPacket(ctx, network, local.String())
	if err != nil {
		// The net package's error repeats the address; keep its cause.
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Err != nil {
			err = opErr.Err
		}
		return nil, fmt.Errorf("udp: listen %s: %w", local, err)
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		_ = pc.Close()
		return nil, fmt.Errorf("udp: listen %s: got a %T, want a *net.UDPConn", local, pc)
	}
	bound := uc.LocalAddr().(*net.UDPAddr).AddrPort()
	c := &Conn{
		uc:    uc,
		local: netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port()),
		caps: transport.Capabilities{
			MaxDatagram: maxDatagram4,
			GSO:         gso,
			ECN:         true,
			LocalAddr:   true,
			BatchSize:   1,
		},
	}
	if v6 && !dual {
		c.caps.MaxDatagram = maxDatagram6
	}
	c.sys.gso.Store(gso)
	return c, nil
}

// setupSocket sets the options of a new socket, before bind, and probes UDP GSO support.
func setupSocket(fd int, v6 bool, cfg Config) (gso bool, err error) {
	if err := setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, "SO_RCVBUF", cfg.readBuffer()); err != nil {
		return false, err
	}
	if err := setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, "SO_SNDBUF", cfg.writeBuffer()); err != nil {
		return false, err
	}
	type option struct {
		level, name int
		what        string
	}
	// The IPv4 options also apply to IPv4 traffic on a dual-stack socket.
	options := []option{
		{unix.IPPROTO_IP, unix.IP_RECVTOS, "IP_RECVTOS"},
		{unix.IPPROTO_IP, unix.IP_PKTINFO, "IP_PKTINFO"},
	}
	if v6 {
		options = append(options,
			option{unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS, "IPV6_RECVTCLASS"},
			option{unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO"})
	}
	for _, o := range options {
		if err := unix.SetsockoptInt(fd, o.level, o.name, 1); err != nil {
			return false, fmt.Errorf("set %s: %w", o.what, err)
		}
	}
	if cfg.DisableGSO {
		return false, nil
	}
	// The option is readable exactly when the kernel supports UDP GSO.
	_, err = unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	return err == nil, nil
}

// setBuffer sets a socket buffer size with the FORCE option (which passes the sysctl limit but
// needs CAP_NET_ADMIN), falling back to the plain option.
func setBuffer(fd, force, plain int, what string, size int) error {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) == nil {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size); err != nil {
		return fmt.Errorf("set %s to %d: %w", what, size, err)
	}
	return nil
}

// ReadBatch blocks until a datagram arrives and returns it in msgs[0] (one datagram per call),
// with its source address, local address and ECN codepoint. A datagram longer than Buf is
// truncated. It fails only for the read deadline (os.ErrDeadlineExceeded), Close (net.ErrClosed)
// or a broken socket. An empty msgs returns 0 at once.
func (c *Conn) ReadBatch(msgs []transport.Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	if c.closed.Load() {
		return 0, fmt.Errorf("udp: %s: read: %w", c.local, net.ErrClosed)
	}
	if !c.sys.ovflOn {
		c.sys.ovflOn = true
		c.enableDropCount()
	}
	m := &msgs[0]
	n, oobn, _, addr, err := c.uc.ReadMsgUDPAddrPort(m.Buf, c.sys.readOOB[:])
	c.readCalls.Add(1)
	if err != nil {
		return 0, fmt.Errorf("udp: %s: read: %w", c.local, err)
	}
	ctl := parseControl(c.sys.readOOB[:oobn])
	m.N = n
	m.Addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	m.Local = ctl.local
	m.ECN = ctl.ecn
	m.SegmentSize = 0
	c.packetsRead.Add(1)
	c.bytesRead.Add(uint64(n))
	if ctl.hasDrops {
		c.kernelDrops.Store(uint64(ctl.drops))
	}
	return 1, nil
}

// enableDropCount asks the kernel to report, with every datagram, how many it dropped for a full
// receive buffer (SO_RXQ_OVFL). It is enabled on the first ReadBatch only: quic-go reads the
// socket with its own fixed control buffer when it owns it. Without kernel support the count
// stays 0.
func (c *Conn) enableDropCount() {
	rc, err := c.uc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
	})
}

// WriteBatch sends msgs in order, one sendmsg per message (a segmented message is one sendmsg
// with UDP GSO, or one per segment without). It returns an error matching syscall.EMSGSIZE for a
// datagram or segment larger than MaxDatagram (or than the path allows), net.ErrClosed after
// Close, ErrInvalidAddress for an invalid destination or a source of the wrong family; n counts
// the messages sent before the one that failed. Datagrams the kernel has no buffer for (ENOBUFS)
// are dropped and counted in Stats().Drops; a full send buffer makes WriteBatch wait.
func (c *Conn) WriteBatch(msgs []transport.Message) (int, error) {
	for i := range msgs {
		if c.closed.Load() {
			return i, fmt.Errorf("udp: %s: write: %w", c.local, net.ErrClosed)
		}
		if err := c.writeOne(&msgs[i]); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

func (c *Conn) writeOne(m *transport.Message) error {
	dst := netip.AddrPortFrom(m.Addr.Addr().Unmap(), m.Addr.Port())
	if !dst.IsValid() || dst.Port() == 0 {
		return fmt.Errorf("udp: %s: write to %v: %w", c.local, m.Addr, ErrInvalidAddress)
	}
	v4 := dst.Addr().Is4()
	local := m.Local.Unmap()
	if local.IsValid() && local.Is4() != v4 {
		return fmt.Errorf("udp: %s: write to %s from %s: %w", c.local, dst, local, ErrInvalidAddress)
	}
	var oob [writeOOBSize]byte
	ctl := appendSendControl(oob[:0], v4, m.ECN, local)
	buf, seg := m.Buf, m.SegmentSize
	if seg <= 0 || seg >= len(buf) {
		seg = len(buf)
	}
	if seg > c.caps.MaxDatagram {
		return fmt.Errorf("udp: %s: write %d-byte datagram to %s (MaxDatagram %d): %w", c.local, seg, dst,
			c.caps.MaxDatagram, syscall.EMSGSIZE)
	}
	if seg == len(buf) {
		return c.send(buf, dst, ctl, 1)
	}
	if !c.sys.gso.Load() {
		return c.sendSplit(buf, seg, dst, ctl)
	}
	perSend := max(min(maxGSOSegments, maxGSOBytes/seg), 1)
	for off := 0; off < len(buf); off += perSend * seg {
		chunk := buf[off:min(off+perSend*seg, len(buf))]
		if len(chunk) <= seg {
			if err := c.send(chunk, dst, ctl, 1); err != nil {
				return err
			}
			continue
		}
		segs := (len(chunk) + seg - 1) / seg
		err := c.send(chunk, dst, appendSegmentControl(ctl, seg), segs)
		if errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EINVAL) {
			// EIO: the route's device cannot checksum for GSO; stop using it on this socket.
			// EINVAL: the kernel refuses this segmentation (a segment above the route's MTU);
			// single datagrams then get the errors (EMSGSIZE) or fragmentation they should.
			if errors.Is(err, syscall.EIO) {
				c.sys.gso.Store(false)
			}
			err = c.sendSplit(chunk, seg, dst, ctl)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// sendSplit sends buf as datagrams of seg bytes (the last possibly shorter).
func (c *Conn) sendSplit(buf []byte, seg int, dst netip.AddrPort, ctl []byte) error {
	for off := 0; off < len(buf); off += seg {
		if err := c.send(buf[off:min(off+seg, len(buf))], dst, ctl, 1); err != nil {
			return err
		}
	}
	return nil
}

// send makes one sendmsg carrying segs datagrams. ENOBUFS (no kernel buffer) drops them and
// counts the drop instead of failing.
func (c *Conn) send(b []byte, dst netip.AddrPort, ctl []byte, segs int) error {
	_, _, err := c.uc.WriteMsgUDPAddrPort(b, ctl, dst)
	c.writeCalls.Add(1)
	switch {
	case err == nil:
		c.packetsWritten.Add(uint64(segs))
		c.bytesWritten.Add(uint64(len(b)))
		return nil
	case errors.Is(err, syscall.ENOBUFS):
		c.drops.Add(uint64(segs))
		return nil
	default:
		return fmt.Errorf("udp: %s: write %d bytes to %s: %w", c.local, len(b), dst, err)
	}
}
