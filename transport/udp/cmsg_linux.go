package udp

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/transport"
)

// Control messages (cmsg) are built and parsed here by hand, so that reads and writes allocate
// nothing. The layout is the kernel's struct cmsghdr { size_t len; int level; int type; } followed
// by the data, each message padded to the size of a pointer.

// cmsgLenSize is the size of cmsghdr.len (size_t).
const cmsgLenSize = unix.SizeofCmsghdr - 8

// cmsgHeader is the aligned header length: where a message's data starts.
var cmsgHeader = unix.CmsgLen(0)

// control is what a read learned from its control messages.
type control struct {
	local    netip.Addr    // destination address of the datagram (IP_PKTINFO, IPV6_PKTINFO)
	ecn      transport.ECN // ECN bits of the TOS / traffic class byte
	drops    uint32        // SO_RXQ_OVFL: datagrams the socket dropped so far
	hasDrops bool
}

// parseControl extracts what naquid uses from the control messages in b. It never fails:
// malformed or truncated input ends the parse, unknown messages are skipped.
func parseControl(b []byte) control {
	var ctl control
	for len(b) >= cmsgHeader {
		l := cmsgLen(b)
		if l < uint64(cmsgHeader) || l > uint64(len(b)) {
			break
		}
		level := int32(binary.NativeEndian.Uint32(b[cmsgLenSize:]))
		typ := int32(binary.NativeEndian.Uint32(b[cmsgLenSize+4:]))
		data := b[cmsgHeader:l]
		switch {
		case level == unix.IPPROTO_IP && typ == unix.IP_TOS,
			level == unix.IPPROTO_IPV6 && typ == unix.IPV6_TCLASS:
			if v, ok := cmsgInt(data); ok {
				ctl.ecn = transport.ECN(v & 0b11)
			}
		case level == unix.IPPROTO_IP && typ == unix.IP_PKTINFO:
			// struct in_pktinfo { int ifindex; struct in_addr spec_dst; struct in_addr addr; }:
			// addr is the header's destination address.
			if len(data) >= unix.SizeofInet4Pktinfo {
				ctl.local = netip.AddrFrom4([4]byte(data[8:12]))
			}
		case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_PKTINFO:
			// struct in6_pktinfo { struct in6_addr addr; int ifindex; }
			if len(data) >= unix.SizeofInet6Pktinfo {
				ctl.local = netip.AddrFrom16([16]byte(data[:16])).Unmap()
			}
		case level == unix.SOL_SOCKET && typ == unix.SO_RXQ_OVFL:
			if len(data) >= 4 {
				ctl.drops, ctl.hasDrops = binary.NativeEndian.Uint32(data), true
			}
		}
		next := unix.CmsgSpace(int(l) - cmsgHeader)
		if next >= len(b) {
			break
		}
		b = b[next:]
	}
	return ctl
}

// cmsgLen reads cmsghdr.len.
func cmsgLen(b []byte) uint64 {
	if cmsgLenSize == 8 {
		return binary.NativeEndian.Uint64(b)
	}
	return uint64(binary.NativeEndian.Uint32(b))
}

// cmsgInt reads a byte or an int: the kernel sends IP_TOS as one byte, IPV6_TCLASS as an int.
func cmsgInt(data []byte) (uint32, bool) {
	switch {
	case len(data) >= 4:
		return binary.NativeEndian.Uint32(data), true
	case len(data) == 1:
		return uint32(data[0]), true
	default:
		return 0, false
	}
}

// appendCmsg appends a control message with dataLen bytes of zeroed data to b and returns the
// extended buffer and the data to fill in. It allocates only when b lacks the capacity.
func appendCmsg(b []byte, level, typ int32, dataLen int) (out, data []byte) {
	start, space := len(b), unix.CmsgSpace(dataLen)
	b = slices.Grow(b, space)[:start+space]
	clear(b[start:])
	h := b[start:]
	if cmsgLenSize == 8 {
		binary.NativeEndian.PutUint64(h, uint64(unix.CmsgLen(dataLen)))
	} else {
		binary.NativeEndian.PutUint32(h, uint32(unix.CmsgLen(dataLen)))
	}
	binary.NativeEndian.PutUint32(h[cmsgLenSize:], uint32(level))
	binary.NativeEndian.PutUint32(h[cmsgLenSize+4:], uint32(typ))
	return b, h[cmsgHeader : cmsgHeader+dataLen]
}

// appendSendControl appends the control messages that make the kernel send with the ECN
// codepoint ecn (none for Not-ECT) and, when local is valid, from source address local. v4
// selects the IPv4 messages (also on a dual-stack socket sending to an IPv4 address).
func appendSendControl(b []byte, v4 bool, ecn transport.ECN, local netip.Addr) []byte {
	var data []byte
	if ecn&0b11 != 0 {
		if v4 {
			b, data = appendCmsg(b, unix.IPPROTO_IP, unix.IP_TOS, 4)
		} else {
			b, data = appendCmsg(b, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, 4)
		}
		binary.NativeEndian.PutUint32(data, uint32(ecn&0b11))
	}
	if local.IsValid() {
		if v4 {
			b, data = appendCmsg(b, unix.IPPROTO_IP, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo)
			a := local.As4()
			copy(data[4:8], a[:]) // spec_dst: the source address to use
		} else {
			b, data = appendCmsg(b, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, unix.SizeofInet6Pktinfo)
			a := local.As16()
			copy(data[:16], a[:])
		}
	}
	return b
}

// appendSegmentControl appends a UDP_SEGMENT message: the kernel splits the payload into
// datagrams of seg bytes.
func appendSegmentControl(b []byte, seg int) []byte {
	b, data := appendCmsg(b, unix.IPPROTO_UDP, unix.UDP_SEGMENT, 2)
	binary.NativeEndian.PutUint16(data, uint16(seg))
	return b
}
