package main

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// udp4Frame builds an Ethernet frame with an IPv4 UDP datagram to port carrying payload.
// Checksums are left zero: udp4Payload does not check them.
func udp4Frame(port uint16, payload []byte) []byte {
	f := make([]byte, ethHeaderLen+ipv4MinHeader+udpHeaderLen+len(payload))
	binary.BigEndian.PutUint16(f[12:14], ethTypeIPv4)
	ip := f[ethHeaderLen:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(ipv4MinHeader+udpHeaderLen+len(payload)))
	binary.BigEndian.PutUint16(ip[6:8], 0x4000) // don't fragment
	ip[8] = 64
	ip[9] = protoUDP
	copy(ip[12:16], []byte{198, 51, 100, 1})
	copy(ip[16:20], []byte{198, 51, 100, 2})
	udp := ip[ipv4MinHeader:]
	binary.BigEndian.PutUint16(udp[0:2], 9000)
	binary.BigEndian.PutUint16(udp[2:4], port)
	binary.BigEndian.PutUint16(udp[4:6], uint16(udpHeaderLen+len(payload)))
	copy(udp[udpHeaderLen:], payload)
	return f
}

func TestUDP4Payload(t *testing.T) {
	payload := []byte("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqr")[:64]
	good := udp4Frame(9001, payload)
	ipOff := ethHeaderLen
	udpOff := ethHeaderLen + ipv4MinHeader
	mod := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		want  []byte
	}{
		{"valid", good, payload},
		{"Ethernet padding after the datagram is ignored", append(bytes.Clone(good), 0, 0, 0, 0), payload},
		{"empty payload", udp4Frame(9001, nil), []byte{}},
		{"other port", udp4Frame(9002, payload), nil},
		{"ARP", mod(func(b []byte) { binary.BigEndian.PutUint16(b[12:14], 0x0806) }), nil},
		{"IPv6 ethertype", mod(func(b []byte) { binary.BigEndian.PutUint16(b[12:14], 0x86dd) }), nil},
		{"IP version 6 in an IPv4 frame", mod(func(b []byte) { b[ipOff] = 0x65 }), nil},
		{"header length below 20", mod(func(b []byte) { b[ipOff] = 0x44 }), nil},
		{"header length past the datagram", mod(func(b []byte) { b[ipOff] = 0x4f }), nil},
		{"TCP", mod(func(b []byte) { b[ipOff+9] = 6 }), nil},
		{"more fragments", mod(func(b []byte) { b[ipOff+6] |= 0x20 }), nil},
		{"fragment offset", mod(func(b []byte) { b[ipOff+7] = 1 }), nil},
		{"total length past the frame", mod(func(b []byte) { binary.BigEndian.PutUint16(b[ipOff+2:], 2000) }), nil},
		{"total length below the headers", mod(func(b []byte) { binary.BigEndian.PutUint16(b[ipOff+2:], 27) }), nil},
		{"UDP length past the datagram", mod(func(b []byte) { binary.BigEndian.PutUint16(b[udpOff+4:], 200) }), nil},
		{"UDP length below its header", mod(func(b []byte) { binary.BigEndian.PutUint16(b[udpOff+4:], 7) }), nil},
		{"truncated", good[:40], nil},
		{"empty", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := udp4Payload(tc.frame, 9001)
			if ok != (tc.want != nil) || !bytes.Equal(got, tc.want) {
				t.Errorf("udp4Payload = %q, %v; want %q", got, ok, tc.want)
			}
		})
	}
}

func FuzzUDP4Payload(f *testing.F) {
	f.Add(udp4Frame(9001, []byte("hello")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		p, ok := udp4Payload(frame, 9001)
		if ok && len(p) > len(frame) {
			t.Fatalf("payload of %d bytes from a %d-byte frame", len(p), len(frame))
		}
	})
}
