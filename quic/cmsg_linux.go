package quic

import (
	"encoding/binary"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/transport"
)

// Control messages, as the kernel and quic-go lay them out. Headers are copied byte-wise, so
// neither the parser nor the builder depends on the alignment of the caller's buffer.

var cmsgHdrSpace = unix.CmsgSpace(0) // aligned header size: where the data of a cmsg starts

// cmsgAlign rounds n up to the control-message alignment.
func cmsgAlign(n int) int { return unix.CmsgSpace(n) - cmsgHdrSpace }

// putCmsg writes a control message header for level/typ with dataLen bytes of data at the start of
// b and returns the data part and the total (aligned) space used. ok is false when b is too short.
func putCmsg(b []byte, level, typ int32, dataLen int) (data []byte, space int, ok bool) {
	space = unix.CmsgSpace(dataLen)
	if len(b) < space {
		return nil, 0, false
	}
	h := unix.Cmsghdr{Level: level, Type: typ}
	h.SetLen(unix.CmsgLen(dataLen))
	copy(b, unsafe.Slice((*byte)(unsafe.Pointer(&h)), unix.SizeofCmsghdr))
	clear(b[unix.SizeofCmsghdr:space])
	return b[cmsgHdrSpace : cmsgHdrSpace+dataLen], space, true
}

// nextCmsg parses the control message at the start of b. ok is false when b holds no complete,
// well-formed message; rest is what follows it.
func nextCmsg(b []byte) (level, typ int32, data, rest []byte, ok bool) {
	if len(b) < unix.SizeofCmsghdr {
		return 0, 0, nil, nil, false
	}
	var h unix.Cmsghdr
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&h)), unix.SizeofCmsghdr), b)
	l := uint64(h.Len)
	if l < uint64(cmsgHdrSpace) || l > uint64(len(b)) {
		return 0, 0, nil, nil, false
	}
	n := int(l)
	next := min(cmsgAlign(n), len(b))
	return h.Level, h.Type, b[cmsgHdrSpace:n], b[next:], true
}

// rxControl encodes what quic-go's reader parses for one received datagram into oob: the ECN
// codepoint (when withECN) as IP_TOS or IPV6_TCLASS by the family of remote, and the local address
// (when valid) as IP_PKTINFO or IPV6_PKTINFO. It returns the bytes used and whether everything fit.
func rxControl(oob []byte, remote netip.AddrPort, local netip.Addr, withECN bool, ecn transport.ECN) (int, bool) {
	n := 0
	if withECN {
		bits := byte(ecn & 0b11)
		if remote.Addr().Unmap().Is4() {
			d, sp, ok := putCmsg(oob, unix.IPPROTO_IP, unix.IP_TOS, 1)
			if !ok {
				return n, false
			}
			d[0] = bits
			n += sp
		} else {
			d, sp, ok := putCmsg(oob, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, 4)
			if !ok {
				return n, false
			}
			binary.NativeEndian.PutUint32(d, uint32(bits))
			n += sp
		}
	}
	if local.IsValid() {
		local = local.Unmap()
		if local.Is4() {
			// struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
			d, sp, ok := putCmsg(oob[n:], unix.IPPROTO_IP, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo)
			if !ok {
				return n, false
			}
			a := local.As4()
			clear(d[:4])
			copy(d[4:8], a[:])
			copy(d[8:12], a[:])
			n += sp
		} else {
			// struct in6_pktinfo { in6_addr ipi6_addr; int ipi6_ifindex; }
			d, sp, ok := putCmsg(oob[n:], unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, unix.SizeofInet6Pktinfo)
			if !ok {
				return n, false
			}
			a := local.As16()
			copy(d[:16], a[:])
			clear(d[16:20])
			n += sp
		}
	}
	return n, true
}

// txControl reads the control messages quic-go attaches to a write into m: UDP_SEGMENT into
// SegmentSize, IP_TOS / IPV6_TCLASS into ECN, and the source address of IP_PKTINFO /
// IPV6_PKTINFO into Local. Unknown messages are ignored; a malformed one is an error.
func txControl(oob []byte, m *transport.Message) error {
	for len(oob) > 0 {
		level, typ, d, rest, ok := nextCmsg(oob)
		if !ok {
			return errMalformedControl
		}
		switch {
		case level == unix.IPPROTO_UDP && typ == unix.UDP_SEGMENT:
			if len(d) != 2 {
				return errMalformedControl
			}
			m.SegmentSize = int(binary.NativeEndian.Uint16(d))
		case level == unix.IPPROTO_IP && typ == unix.IP_TOS:
			if len(d) != 1 && len(d) != 4 {
				return errMalformedControl
			}
			if len(d) == 1 {
				m.ECN = transport.ECN(d[0] & 0b11)
			} else {
				m.ECN = transport.ECN(binary.NativeEndian.Uint32(d) & 0b11)
			}
		case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_TCLASS:
			if len(d) != 4 {
				return errMalformedControl
			}
			m.ECN = transport.ECN(binary.NativeEndian.Uint32(d) & 0b11)
		case level == unix.IPPROTO_IP && typ == unix.IP_PKTINFO:
			if len(d) != unix.SizeofInet4Pktinfo {
				return errMalformedControl
			}
			if a := netip.AddrFrom4([4]byte(d[4:8])); !a.IsUnspecified() {
				m.Local = a
			}
		case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_PKTINFO:
			if len(d) != unix.SizeofInet6Pktinfo {
				return errMalformedControl
			}
			if a := netip.AddrFrom16([16]byte(d[:16])).Unmap(); !a.IsUnspecified() {
				m.Local = a
			}
		}
		oob = rest
	}
	return nil
}
