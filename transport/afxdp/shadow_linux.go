package afxdp

import (
	"encoding/binary"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/transport"
)

// shadowOOBSize is the control buffer of one received datagram: TOS or traffic class and packet
// info of either family, with room to spare.
const shadowOOBSize = 128

// mmsghdr is struct mmsghdr.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// shadowReader reads the shadow socket with recvmmsg straight into the callers' buffers. Its
// arrays grow to the largest batch asked for and are reused, so reads allocate nothing.
type shadowReader struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	oob   []byte
	k     int // messages offered to the pending recvmmsg
	n     int // its result
}

// prepare points the headers at msgs' buffers.
func (sh *shadowReader) prepare(msgs []transport.Message) {
	k := min(len(msgs), batchSize)
	if len(sh.hdrs) < k {
		sh.hdrs = make([]mmsghdr, k)
		sh.iovs = make([]unix.Iovec, k)
		sh.names = make([]unix.RawSockaddrInet6, k)
		sh.oob = make([]byte, k*shadowOOBSize)
	}
	for i := range k {
		buf := msgs[i].Buf
		iov := &sh.iovs[i]
		iov.Base = nil
		if len(buf) > 0 {
			iov.Base = &buf[0]
		}
		iov.SetLen(len(buf))
		h := &sh.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&sh.names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Iov = iov
		h.Iovlen = 1
		h.Control = &sh.oob[i*shadowOOBSize]
		h.SetControllen(shadowOOBSize)
		h.Flags = 0
		sh.hdrs[i].n = 0
	}
	sh.k, sh.n = k, 0
}

// recv runs recvmmsg on fd without waiting.
func (sh *shadowReader) recv(fd int) {
	r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&sh.hdrs[0])),
		uintptr(sh.k), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		sh.n = 0
		return
	}
	sh.n = int(r)
}

// finish fills msgs from the datagrams received, drops the references to their buffers and
// returns how many there were.
func (sh *shadowReader) finish(msgs []transport.Message) int {
	for i := range sh.k {
		sh.iovs[i].Base = nil
	}
	for i := range sh.n {
		m := &msgs[i]
		m.N = int(sh.hdrs[i].n)
		m.Addr = sockaddrAddrPort(&sh.names[i])
		ctl := sh.oob[i*shadowOOBSize : i*shadowOOBSize+int(sh.hdrs[i].hdr.Controllen)]
		m.ECN, m.Local = parseControl(ctl)
		m.SegmentSize = 0
	}
	return sh.n
}

// sockaddrAddrPort decodes a received IPv4 or IPv6 socket address (IPv4-mapped addresses are
// unmapped).
func sockaddrAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	if sa.Family == unix.AF_INET {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	}
	a := netip.AddrFrom16(sa.Addr).Unmap()
	return netip.AddrPortFrom(a, port)
}

// cmsgAlign rounds n up to the control message alignment.
func cmsgAlign(n int) int { return (n + unix.SizeofPtr - 1) &^ (unix.SizeofPtr - 1) }

// parseControl extracts the ECN codepoint and the local (destination) address from the control
// messages of a received datagram. Malformed messages end the parse; it never panics.
func parseControl(oob []byte) (ecn transport.ECN, local netip.Addr) {
	for len(oob) >= unix.SizeofCmsghdr {
		var h unix.Cmsghdr
		copy((*[unix.SizeofCmsghdr]byte)(unsafe.Pointer(&h))[:], oob)
		l, level, typ := int(h.Len), h.Level, h.Type
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return ecn, local
		}
		data := oob[unix.SizeofCmsghdr:l]
		switch {
		case level == unix.IPPROTO_IP && typ == unix.IP_TOS && len(data) >= 1:
			ecn = transport.ECN(data[0] & 0b11)
		case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_TCLASS && len(data) >= 4:
			ecn = transport.ECN(binary.NativeEndian.Uint32(data[0:4]) & 0b11)
		case level == unix.IPPROTO_IP && typ == unix.IP_PKTINFO && len(data) >= 12:
			local = netip.AddrFrom4([4]byte(data[8:12])) // ipi_addr: the header's destination
		case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_PKTINFO && len(data) >= 16:
			local = netip.AddrFrom16([16]byte(data[0:16])).Unmap()
		}
		next := cmsgAlign(l)
		if next >= len(oob) {
			break
		}
		oob = oob[next:]
	}
	return ecn, local
}

// appendSendControl appends the control messages of a datagram sent through the shadow socket:
// the ECN codepoint (when not Not-ECT) and the source address (when valid).
func appendSendControl(b []byte, v4 bool, ecn transport.ECN, src netip.Addr) []byte {
	if ecn != transport.ECNNotECT {
		var v [4]byte
		binary.NativeEndian.PutUint32(v[:], uint32(ecn&0b11))
		if v4 {
			b = appendCmsg(b, unix.IPPROTO_IP, unix.IP_TOS, v[:])
		} else {
			b = appendCmsg(b, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, v[:])
		}
	}
	if src.IsValid() {
		if v4 {
			var pi [12]byte // struct in_pktinfo: ifindex, spec_dst, addr
			a := src.As4()
			copy(pi[4:8], a[:])
			b = appendCmsg(b, unix.IPPROTO_IP, unix.IP_PKTINFO, pi[:])
		} else {
			var pi [20]byte // struct in6_pktinfo: addr, ifindex
			a := src.As16()
			copy(pi[0:16], a[:])
			b = appendCmsg(b, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, pi[:])
		}
	}
	return b
}

// appendCmsg appends one control message.
func appendCmsg(b []byte, level, typ int, data []byte) []byte {
	h := unix.Cmsghdr{Level: int32(level), Type: int32(typ)}
	h.SetLen(unix.SizeofCmsghdr + len(data))
	b = append(b, (*[unix.SizeofCmsghdr]byte)(unsafe.Pointer(&h))[:]...)
	b = append(b, data...)
	for len(b)%unix.SizeofPtr != 0 {
		b = append(b, 0)
	}
	return b
}
