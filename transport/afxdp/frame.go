package afxdp

import (
	"encoding/binary"
	"math/bits"
	"net/netip"

	"github.com/naquid/naquid/transport"
)

// Header sizes and field values of the frames this package reads and writes.
const (
	ethLen     = 14
	ipv4MinLen = 20
	ipv6Len    = 40
	udpLen     = 8

	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	protoUDP      = 17

	// ipv4FlagsFragMask covers the MF flag and the fragment offset.
	ipv4FlagsFragMask = 0x3fff
	// ipv4DF is the Don't Fragment flag: datagrams are sent with it, as quic-go asks.
	ipv4DF = 0x4000
	// ttl is the IPv4 TTL and IPv6 hop limit of sent datagrams.
	ttl = 64
)

// dropReason says why parseFrame rejected a frame. Every rejected frame is counted in Drops.
type dropReason uint8

// Drop reasons.
const (
	frameOK            dropReason = iota
	dropShort                     // shorter than the headers it announces
	dropNotIP                     // EtherType neither IPv4 nor IPv6
	dropBadIPHeader               // wrong IP version, IHL, or lengths
	dropBadIPChecksum             // IPv4 header checksum wrong
	dropFragment                  // IPv4 fragment
	dropNotUDP                    // another protocol, or an IPv6 extension header
	dropBadUDPLength              // UDP length below 8 or beyond the IP payload
	dropBadUDPChecksum            // UDP checksum wrong (or zero over IPv6)
	dropOtherPort                 // UDP destination port is not ours
	dropBadAddress                // multicast, broadcast or unspecified source, or port 0
	numDropReasons
)

// String names the reason, for test failures.
func (r dropReason) String() string {
	switch r {
	case frameOK:
		return "ok"
	case dropShort:
		return "short"
	case dropNotIP:
		return "not IP"
	case dropBadIPHeader:
		return "bad IP header"
	case dropBadIPChecksum:
		return "bad IPv4 header checksum"
	case dropFragment:
		return "fragment"
	case dropNotUDP:
		return "not UDP"
	case dropBadUDPLength:
		return "bad UDP length"
	case dropBadUDPChecksum:
		return "bad UDP checksum"
	case dropOtherPort:
		return "other port"
	case dropBadAddress:
		return "bad address"
	default:
		return "unknown"
	}
}

// datagram is a UDP datagram found in a frame by parseFrame.
type datagram struct {
	src, dst netip.AddrPort
	srcMAC   [6]byte
	ecn      transport.ECN
	payload  []byte // within the frame
}

// parseFrame checks that frame is an untagged Ethernet frame carrying a complete, unfragmented
// IPv4 or IPv6 UDP datagram to port with valid checksums, and fills d. Bytes after the IP packet
// (Ethernet padding) are ignored. It never panics, whatever the input.
//
// A UDP checksum equal to the folded pseudo-header sum is accepted as valid: it is what a kernel
// leaves in datagrams whose checksum it meant to offload (CHECKSUM_PARTIAL), and veth hands such
// frames over as they are.
func parseFrame(frame []byte, port uint16, d *datagram) dropReason {
	if len(frame) < ethLen {
		return dropShort
	}
	copy(d.srcMAC[:], frame[6:12])
	var (
		pkt       []byte // the IP packet, without padding
		udp       []byte // from the UDP header to the end of the IP payload
		pseudoSum uint64
	)
	switch binary.BigEndian.Uint16(frame[12:14]) {
	case etherTypeIPv4:
		ip := frame[ethLen:]
		if len(ip) < ipv4MinLen {
			return dropShort
		}
		ihl := int(ip[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(ip[2:4]))
		switch {
		case ip[0]>>4 != 4 || ihl < ipv4MinLen || total < ihl:
			return dropBadIPHeader
		case total > len(ip):
			return dropShort
		}
		pkt = ip[:total]
		if fold(checksum(pkt[:ihl], 0)) != 0xffff {
			return dropBadIPChecksum
		}
		if binary.BigEndian.Uint16(pkt[6:8])&ipv4FlagsFragMask != 0 {
			return dropFragment
		}
		if pkt[9] != protoUDP {
			return dropNotUDP
		}
		src, dst := netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		if !validSource(src) || !validDestination(dst) {
			return dropBadAddress
		}
		d.ecn = transport.ECN(pkt[1] & 0b11)
		udp = pkt[ihl:]
		if len(udp) < udpLen {
			return dropBadUDPLength
		}
		d.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(udp[0:2]))
		d.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(udp[2:4]))
		pseudoSum = checksum(pkt[12:20], 0)
	case etherTypeIPv6:
		ip := frame[ethLen:]
		if len(ip) < ipv6Len {
			return dropShort
		}
		if ip[0]>>4 != 6 {
			return dropBadIPHeader
		}
		payloadLen := int(binary.BigEndian.Uint16(ip[4:6]))
		if ipv6Len+payloadLen > len(ip) {
			return dropShort
		}
		pkt = ip[:ipv6Len+payloadLen]
		if pkt[6] != protoUDP {
			return dropNotUDP
		}
		src, dst := netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		if !validSource(src) || !validDestination(dst) {
			return dropBadAddress
		}
		d.ecn = transport.ECN(binary.BigEndian.Uint16(pkt[0:2]) >> 4 & 0b11)
		udp = pkt[ipv6Len:]
		if len(udp) < udpLen {
			return dropBadUDPLength
		}
		d.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(udp[0:2]))
		d.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(udp[2:4]))
		pseudoSum = checksum(pkt[8:40], 0)
	default:
		return dropNotIP
	}
	length := int(binary.BigEndian.Uint16(udp[4:6]))
	if length < udpLen || length > len(udp) {
		return dropBadUDPLength
	}
	udp = udp[:length]
	if d.dst.Port() != port {
		return dropOtherPort
	}
	if d.src.Port() == 0 {
		return dropBadAddress
	}
	pseudoSum += protoUDP + uint64(length)
	switch field := binary.BigEndian.Uint16(udp[6:8]); {
	case field == 0:
		if d.src.Addr().Is6() {
			return dropBadUDPChecksum // mandatory over IPv6 (RFC 8200)
		}
	case fold(checksum(udp, pseudoSum)) == 0xffff:
	case field == fold(pseudoSum):
		// Partial checksum left for an offload that never ran (see above).
	default:
		return dropBadUDPChecksum
	}
	d.payload = udp[udpLen:]
	return frameOK
}

// validSource reports whether a can be the source of a datagram we answer, as the kernel's input
// path would: not unspecified, multicast, the IPv4 broadcast address, loopback (which never
// arrives on a device; an answer would go to this host's own services) or an IPv4-mapped IPv6
// address (the transport contract hands out plain IPv4 only).
func validSource(a netip.Addr) bool {
	return validDestination(a) && !a.IsLoopback()
}

// validDestination reports whether a can be the destination of a datagram we serve: its address
// becomes the source of the answers, so not unspecified, multicast, the IPv4 broadcast address
// or IPv4-mapped IPv6.
func validDestination(a netip.Addr) bool {
	return !a.IsUnspecified() && !a.IsMulticast() && !a.Is4In6() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// frameHeader describes the headers of frames to one destination.
type frameHeader struct {
	dstMAC, srcMAC [6]byte
	src, dst       netip.AddrPort // both IPv4 or both IPv6 (plain, not mapped)
	ecn            transport.ECN
}

// headerLen returns the length of the headers buildFrame writes for h.
func (h *frameHeader) headerLen() int {
	if h.dst.Addr().Is4() {
		return ethLen + ipv4MinLen + udpLen
	}
	return ethLen + ipv6Len + udpLen
}

// buildFrame writes into buf a frame carrying payload from h.src to h.dst and returns its length.
// buf must hold h.headerLen()+len(payload) bytes, and payload at most 65535 - 8 - IP header
// bytes. The IPv4 header checksum and the UDP checksum are computed.
func buildFrame(buf []byte, h *frameHeader, payload []byte) int {
	hl := h.headerLen()
	n := hl + len(payload)
	copy(buf[hl:n], payload)
	copy(buf[0:6], h.dstMAC[:])
	copy(buf[6:12], h.srcMAC[:])
	udpLength := udpLen + len(payload)
	var udp []byte
	var pseudoSum uint64
	if h.dst.Addr().Is4() {
		binary.BigEndian.PutUint16(buf[12:14], etherTypeIPv4)
		ip := buf[ethLen : ethLen+ipv4MinLen]
		ip[0] = 0x45
		ip[1] = byte(h.ecn & 0b11)
		binary.BigEndian.PutUint16(ip[2:4], uint16(ipv4MinLen+udpLength))
		binary.BigEndian.PutUint16(ip[4:6], 0) // identification: unused with DF (RFC 6864)
		binary.BigEndian.PutUint16(ip[6:8], ipv4DF)
		ip[8] = ttl
		ip[9] = protoUDP
		ip[10], ip[11] = 0, 0
		src, dst := h.src.Addr().As4(), h.dst.Addr().As4()
		copy(ip[12:16], src[:])
		copy(ip[16:20], dst[:])
		binary.BigEndian.PutUint16(ip[10:12], ^fold(checksum(ip, 0)))
		pseudoSum = checksum(ip[12:20], 0)
		udp = buf[ethLen+ipv4MinLen : n]
	} else {
		binary.BigEndian.PutUint16(buf[12:14], etherTypeIPv6)
		ip := buf[ethLen : ethLen+ipv6Len]
		// Version 6, the ECN codepoint in the low bits of the traffic class, flow label 0.
		binary.BigEndian.PutUint32(ip[0:4], 6<<28|uint32(h.ecn&0b11)<<20)
		binary.BigEndian.PutUint16(ip[4:6], uint16(udpLength))
		ip[6] = protoUDP
		ip[7] = ttl
		src, dst := h.src.Addr().As16(), h.dst.Addr().As16()
		copy(ip[8:24], src[:])
		copy(ip[24:40], dst[:])
		pseudoSum = checksum(ip[8:40], 0)
		udp = buf[ethLen+ipv6Len : n]
	}
	binary.BigEndian.PutUint16(udp[0:2], h.src.Port())
	binary.BigEndian.PutUint16(udp[2:4], h.dst.Port())
	binary.BigEndian.PutUint16(udp[4:6], uint16(udpLength))
	udp[6], udp[7] = 0, 0
	sum := ^fold(checksum(udp, pseudoSum+protoUDP+uint64(udpLength)))
	if sum == 0 {
		sum = 0xffff // 0 means "no checksum" over IPv4 and is invalid over IPv6
	}
	binary.BigEndian.PutUint16(udp[6:8], sum)
	return n
}

// checksum adds b, as big-endian 16-bit words (a last odd byte padded with zero), to the
// Internet checksum accumulator acc and returns the new accumulator. Fold it with fold.
//
// It adds 64-bit words with end-around carry, which is the ones' complement sum of the 16-bit
// words modulo 0xffff (2^64 = 1 modulo 0xffff). b must start at an even offset of the checksummed
// data (true for every header and payload here).
func checksum(b []byte, acc uint64) uint64 {
	var carry uint64
	for len(b) >= 32 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[0:8]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[8:16]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[16:24]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[24:32]), carry)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[0:8]), carry)
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, carry = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b[0:4])), carry)
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, carry = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b[0:2])), carry)
		b = b[2:]
	}
	if len(b) == 1 {
		acc, carry = bits.Add64(acc, uint64(b[0])<<8, carry)
	}
	acc, carry = bits.Add64(acc, carry, 0)
	return acc + carry // no overflow: a carry out leaves acc small
}

// fold reduces a checksum accumulator to 16 bits (not complemented).
func fold(acc uint64) uint16 {
	acc = acc&0xffffffff + acc>>32
	acc = acc&0xffff + acc>>16
	acc = acc&0xffff + acc>>16
	acc = acc&0xffff + acc>>16
	return uint16(acc)
}
