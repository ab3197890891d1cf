package main

import "encoding/binary"

// Header sizes and fields of the frames the asavie receiver inspects.
const (
	ethHeaderLen  = 14
	ethTypeIPv4   = 0x0800
	ipv4MinHeader = 20
	udpHeaderLen  = 8
	protoUDP      = 17
)

// udp4Payload returns the UDP payload of an Ethernet frame carrying an unfragmented IPv4 UDP
// datagram to port, or false. It checks what a receiver must check before trusting offsets
// (lengths, version, header length, fragment bits, protocol, port) but not checksums: the
// asavie receiver's per-frame work is kept to the minimum an application needs, which favours
// the peer in the comparison.
func udp4Payload(frame []byte, port uint16) ([]byte, bool) {
	if len(frame) < ethHeaderLen+ipv4MinHeader+udpHeaderLen ||
		binary.BigEndian.Uint16(frame[12:14]) != ethTypeIPv4 {
		return nil, false
	}
	ip := frame[ethHeaderLen:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < ipv4MinHeader || ip[9] != protoUDP {
		return nil, false
	}
	// More-fragments flag or a fragment offset: not a whole datagram.
	if binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
		return nil, false
	}
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if total > len(ip) || total < ihl+udpHeaderLen {
		return nil, false
	}
	udp := ip[ihl:total]
	if binary.BigEndian.Uint16(udp[2:4]) != port {
		return nil, false
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if ulen < udpHeaderLen || ulen > len(udp) {
		return nil, false
	}
	return udp[udpHeaderLen:ulen], true
}
