package mmsg

import (
	"encoding/binary"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/transport"
)

// Control-message layout. The header is {len (size_t), level (int32), type (int32)}; data and
// the next header start at size_t alignment.
const (
	cmsgLenSize = unix.SizeofCmsghdr - 8
	cmsgAlign   = cmsgLenSize // alignment of control messages (sizeof(size_t))
)

// oobSize is the control buffer of one read or write slot. Reads can get IP_PKTINFO (32),
// IPV6_PKTINFO (40), IP_TOS (24), IPV6_TCLASS (24), UDP_GRO (24) and SO_RXQ_OVFL (24) with 8-byte
// size_t; writes at most a packet-info, a TOS/traffic-class and a UDP_SEGMENT message.
const oobSize = 256

// rxControl is what the control messages of one received datagram say.
type rxControl struct {
	local    netip.Addr    // destination address of the datagram (IP_PKTINFO / IPV6_PKTINFO)
	ecn      transport.ECN // from IP_TOS / IPV6_TCLASS
	seg      int           // UDP_GRO segment size; 0 when the datagram was not coalesced
	drops    uint32        // SO_RXQ_OVFL: datagrams the socket dropped so far
	hasDrops bool
}

// parseControl reads the control messages in b, ignoring any it does not know and stopping at
// the first malformed header. It never fails and never reads outside b.
func parseControl(b []byte) rxControl {
	var rx rxControl
	for len(b) >= unix.SizeofCmsghdr {
		var l uint64
		if cmsgLenSize == 8 {
			l = binary.NativeEndian.Uint64(b)
		} else {
			l = uint64(binary.NativeEndian.Uint32(b))
		}
		if l < unix.SizeofCmsghdr || l > uint64(len(b)) {
			break
		}
		level := int32(binary.NativeEndian.Uint32(b[cmsgLenSize:]))
		typ := int32(binary.NativeEndian.Uint32(b[cmsgLenSize+4:]))
		data := b[unix.CmsgLen(0):l]
		switch {
		case level == unix.SOL_IP && typ == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			rx.local = netip.AddrFrom4([4]byte(data[8:12]))
		case level == unix.SOL_IPV6 && typ == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			rx.local = netip.AddrFrom16([16]byte(data[:16])).Unmap()
		case level == unix.SOL_IP && typ == unix.IP_TOS && len(data) >= 1:
			rx.ecn = transport.ECN(data[0] & 0b11)
		case level == unix.SOL_IPV6 && typ == unix.IPV6_TCLASS && len(data) >= 4:
			rx.ecn = transport.ECN(binary.NativeEndian.Uint32(data) & 0b11)
		case level == unix.SOL_UDP && typ == unix.UDP_GRO && len(data) >= 4:
			rx.seg = max(int(int32(binary.NativeEndian.Uint32(data))), 0)
		case level == unix.SOL_UDP && typ == unix.UDP_GRO && len(data) >= 2:
			rx.seg = int(binary.NativeEndian.Uint16(data))
		case level == unix.SOL_SOCKET && typ == unix.SO_RXQ_OVFL && len(data) >= 4:
			rx.drops, rx.hasDrops = binary.NativeEndian.Uint32(data), true
		}
		next := (l + cmsgAlign - 1) &^ (cmsgAlign - 1)
		if next >= uint64(len(b)) {
			break
		}
		b = b[next:]
	}
	return rx
}

// appendControl appends to b the control messages for sending one packet to dst: the source
// address (when local is valid, not unspecified and of dst's family), the ECN codepoint (when
// not Not-ECT) and the GSO segment size (when seg > 0). IPv4 destinations, also on an IPv6
// socket, take the IPv4 (SOL_IP) forms. b should have room for oobSize bytes; it is grown
// otherwise.
func appendControl(b []byte, dst netip.AddrPort, local netip.Addr, ecn transport.ECN, seg int) []byte {
	v4 := dst.Addr().Unmap().Is4()
	local = local.Unmap()
	if local.IsValid() && !local.IsUnspecified() && local.Is4() == v4 {
		if v4 {
			var d []byte
			b, d = appendCmsg(b, unix.SOL_IP, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo)
			a := local.As4()
			copy(d[4:8], a[:]) // ipi_spec_dst: the source address to use
		} else {
			var d []byte
			b, d = appendCmsg(b, unix.SOL_IPV6, unix.IPV6_PKTINFO, unix.SizeofInet6Pktinfo)
			a := local.As16()
			copy(d[:16], a[:])
		}
	}
	if ecn&0b11 != 0 {
		var d []byte
		if v4 {
			b, d = appendCmsg(b, unix.SOL_IP, unix.IP_TOS, 4)
		} else {
			b, d = appendCmsg(b, unix.SOL_IPV6, unix.IPV6_TCLASS, 4)
		}
		binary.NativeEndian.PutUint32(d, uint32(ecn&0b11))
	}
	if seg > 0 {
		var d []byte
		b, d = appendCmsg(b, unix.SOL_UDP, unix.UDP_SEGMENT, 2)
		binary.NativeEndian.PutUint16(d, uint16(seg))
	}
	return b
}

// appendCmsg appends one zeroed control message with room for n data bytes and returns the
// grown buffer and the data.
func appendCmsg(b []byte, level, typ int32, n int) (out, data []byte) {
	off := len(b)
	space := unix.CmsgSpace(n)
	if cap(b)-off < space {
		nb := make([]byte, off, 2*cap(b)+space)
		copy(nb, b)
		b = nb
	}
	b = b[:off+space]
	h := b[off:]
	clear(h)
	if cmsgLenSize == 8 {
		binary.NativeEndian.PutUint64(h, uint64(unix.CmsgLen(n)))
	} else {
		binary.NativeEndian.PutUint32(h, uint32(unix.CmsgLen(n)))
	}
	binary.NativeEndian.PutUint32(h[cmsgLenSize:], uint32(level))
	binary.NativeEndian.PutUint32(h[cmsgLenSize+4:], uint32(typ))
	return b, h[unix.CmsgLen(0) : unix.CmsgLen(0)+n]
}

// encodeSockaddr writes ap into sa as the socket's address family wants it (IPv4 destinations
// as IPv4-mapped IPv6 on an IPv6 socket) and returns the address length for msg_namelen. An
// invalid ap gives 0 (no address: the kernel then fails the send). A zone is not encoded.
func encodeSockaddr(sa *unix.RawSockaddrInet6, ap netip.AddrPort, v6 bool) uint32 {
	addr := ap.Addr().Unmap()
	if !addr.IsValid() {
		return 0
	}
	port := ap.Port()
	if !v6 && addr.Is4() {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: addr.As4()}
		putPort(&sa4.Port, port)
		return unix.SizeofSockaddrInet4
	}
	// On an IPv4 socket an IPv6 destination is passed as is; the kernel refuses it.
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: addr.As16()}
	putPort(&sa.Port, port)
	return unix.SizeofSockaddrInet6
}

// decodeSockaddr returns the address in sa (IPv4-mapped addresses unmapped), or the zero
// AddrPort when namelen or the family is not an IPv4 or IPv6 address. Scope ids are dropped.
func decodeSockaddr(sa *unix.RawSockaddrInet6, namelen uint32) netip.AddrPort {
	switch {
	case sa.Family == unix.AF_INET && namelen >= unix.SizeofSockaddrInet4:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), getPort(&sa4.Port))
	case sa.Family == unix.AF_INET6 && namelen >= unix.SizeofSockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), getPort(&sa.Port))
	}
	return netip.AddrPort{}
}

// putPort and getPort access a sockaddr port, which is in network byte order.
func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

func getPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}
