package afxdp

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/naquid/naquid/transport"
)

const testPort = 4433

var (
	testMACA = [6]byte{0x02, 0, 0, 0, 0, 0x0a}
	testMACB = [6]byte{0x02, 0, 0, 0, 0, 0x0b}
	testV4A  = netip.MustParseAddrPort("192.0.2.1:50000")
	testV4B  = netip.MustParseAddrPort("192.0.2.2:4433")
	testV6A  = netip.MustParseAddrPort("[2001:db8::1]:50000")
	testV6B  = netip.MustParseAddrPort("[2001:db8::2]:4433")
)

// refChecksum is the textbook Internet checksum accumulation: 16-bit words, one at a time.
func refChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func TestChecksumMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if n%7 == 0 {
			for i := range b {
				b[i] = 0xff // carries everywhere
			}
		}
		got, want := fold(checksum(b, 0)), refChecksum(b)
		// 0x0000 and 0xffff are the same number in ones' complement; only all-zero input folds
		// to 0 in both.
		if got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
			t.Fatalf("len %d: checksum %#04x, reference %#04x", n, got, want)
		}
	}
}

// frame builds a valid frame with buildFrame.
func frame(src, dst netip.AddrPort, ecn transport.ECN, payload []byte) []byte {
	h := frameHeader{dstMAC: testMACB, srcMAC: testMACA, src: src, dst: dst, ecn: ecn}
	buf := make([]byte, h.headerLen()+len(payload))
	return buf[:buildFrame(buf, &h, payload)]
}

// TestBuildDecodesWithGopacket checks buildFrame's output with an independent decoder: every
// field, and checksums recomputed by gopacket.
func TestBuildDecodesWithGopacket(t *testing.T) {
	for _, tc := range []struct {
		name     string
		src, dst netip.AddrPort
		size     int
	}{
		{"ipv4 empty", testV4A, testV4B, 0},
		{"ipv4 odd", testV4A, testV4B, 333},
		{"ipv4 1472", testV4A, testV4B, 1472},
		{"ipv6 empty", testV6A, testV6B, 0},
		{"ipv6 odd", testV6A, testV6B, 1001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := make([]byte, tc.size)
			for i := range payload {
				payload[i] = byte(i*7 + 3)
			}
			f := frame(tc.src, tc.dst, transport.ECNECT1, payload)
			pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
			if el := pkt.ErrorLayer(); el != nil {
				t.Fatalf("gopacket: %v", el.Error())
			}
			eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			if !bytes.Equal(eth.SrcMAC, testMACA[:]) || !bytes.Equal(eth.DstMAC, testMACB[:]) {
				t.Errorf("MACs %v -> %v", eth.SrcMAC, eth.DstMAC)
			}
			udp := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if int(udp.SrcPort) != int(tc.src.Port()) || int(udp.DstPort) != int(tc.dst.Port()) ||
				!bytes.Equal(udp.Payload, payload) {
				t.Fatalf("UDP %d -> %d, %d bytes", udp.SrcPort, udp.DstPort, len(udp.Payload))
			}
			wantUDPSum := udp.Checksum
			var nl gopacket.NetworkLayer
			if ip4, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
				if ip4.TOS != 1 || ip4.TTL != ttl || ip4.Flags != layers.IPv4DontFragment ||
					!ip4.SrcIP.Equal(tc.src.Addr().AsSlice()) || !ip4.DstIP.Equal(tc.dst.Addr().AsSlice()) {
					t.Errorf("IPv4 header %+v", ip4)
				}
				if refChecksum(f[ethLen:ethLen+ipv4MinLen]) != 0xffff {
					t.Errorf("IPv4 header checksum %#04x does not verify", ip4.Checksum)
				}
				nl = ip4
			} else {
				ip6 := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
				if ip6.TrafficClass != 1 || ip6.HopLimit != ttl || !ip6.SrcIP.Equal(tc.src.Addr().AsSlice()) {
					t.Errorf("IPv6 header %+v", ip6)
				}
				nl = ip6
			}
			// Let gopacket compute the UDP checksum over the same datagram and compare.
			if err := udp.SetNetworkLayerForChecksum(nl); err != nil {
				t.Fatal(err)
			}
			buf := gopacket.NewSerializeBuffer()
			if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true},
				udp, gopacket.Payload(payload)); err != nil {
				t.Fatal(err)
			}
			if got := binary.BigEndian.Uint16(buf.Bytes()[6:8]); got != wantUDPSum {
				t.Errorf("UDP checksum %#04x, gopacket computes %#04x", wantUDPSum, got)
			}
		})
	}
}

// serialize builds a frame with gopacket, checksums and lengths computed.
func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

// gopacketFrame builds a UDP frame with gopacket (IPv4 options allowed).
func gopacketFrame(t testing.TB, src, dst netip.AddrPort, payload []byte, opts []layers.IPv4Option) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(testMACA[:]), DstMAC: net.HardwareAddr(testMACB[:])}
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	if src.Addr().Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.Addr().AsSlice(),
			DstIP: dst.Addr().AsSlice(), Options: opts, TOS: 2}
		_ = udp.SetNetworkLayerForChecksum(ip)
		return serialize(t, eth, ip, udp, gopacket.Payload(payload))
	}
	eth.EthernetType = layers.EthernetTypeIPv6
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: src.Addr().AsSlice(),
		DstIP: dst.Addr().AsSlice(), TrafficClass: 2}
	_ = udp.SetNetworkLayerForChecksum(ip)
	return serialize(t, eth, ip, udp, gopacket.Payload(payload))
}

// fixIPv4 recomputes the IPv4 header checksum of f after a mutation.
func fixIPv4(f []byte) {
	ihl := int(f[ethLen]&0x0f) * 4
	if ihl < ipv4MinLen || ethLen+ihl > len(f) {
		return
	}
	f[ethLen+10], f[ethLen+11] = 0, 0
	binary.BigEndian.PutUint16(f[ethLen+10:], ^refChecksum(f[ethLen:ethLen+ihl]))
}

// TestParseFrame: one row per kind of frame, valid or not, with the reason expected.
func TestParseFrame(t *testing.T) {
	payload := []byte("hello, frame")
	v4 := func() []byte { return frame(testV4A, testV4B, transport.ECNCE, payload) }
	v6 := func() []byte { return frame(testV6A, testV6B, transport.ECNECT0, payload) }
	v4udp := ethLen + ipv4MinLen
	v6udp := ethLen + ipv6Len
	tests := []struct {
		name string
		f    func() []byte
		want dropReason
	}{
		{"ipv4", v4, frameOK},
		{"ipv6", v6, frameOK},
		{"ipv4 built by gopacket", func() []byte { return gopacketFrame(t, testV4A, testV4B, payload, nil) }, frameOK},
		{"ipv6 built by gopacket", func() []byte { return gopacketFrame(t, testV6A, testV6B, payload, nil) }, frameOK},
		{"ipv4 with options", func() []byte {
			return gopacketFrame(t, testV4A, testV4B, payload, []layers.IPv4Option{{OptionType: 1}, {OptionType: 1},
				{OptionType: 1}, {OptionType: 0}})
		}, frameOK},
		{"ethernet padding", func() []byte {
			return append(frame(testV4A, testV4B, 0, []byte("x")), make([]byte, 20)...)
		}, frameOK},
		{"ipv4 zero UDP checksum", func() []byte {
			f := v4()
			f[v4udp+6], f[v4udp+7] = 0, 0
			return f
		}, frameOK},
		{"ipv4 partial UDP checksum", func() []byte {
			f := v4()
			ps := checksum(f[ethLen+12:ethLen+20], protoUDP+uint64(udpLen+len(payload)))
			binary.BigEndian.PutUint16(f[v4udp+6:], fold(ps))
			return f
		}, frameOK},
		{"ipv6 partial UDP checksum", func() []byte {
			f := v6()
			ps := checksum(f[ethLen+8:ethLen+40], protoUDP+uint64(udpLen+len(payload)))
			binary.BigEndian.PutUint16(f[v6udp+6:], fold(ps))
			return f
		}, frameOK},
		{"empty frame", func() []byte { return nil }, dropShort},
		{"13 bytes", func() []byte { return v4()[:13] }, dropShort},
		{"ipv4 header cut", func() []byte { return v4()[:ethLen+19] }, dropShort},
		{"ipv6 header cut", func() []byte { return v6()[:ethLen+39] }, dropShort},
		{"arp", func() []byte {
			f := v4()
			binary.BigEndian.PutUint16(f[12:], 0x0806)
			return f
		}, dropNotIP},
		{"vlan", func() []byte {
			f := v4()
			binary.BigEndian.PutUint16(f[12:], 0x8100)
			return f
		}, dropNotIP},
		{"ipv4 version 5", func() []byte {
			f := v4()
			f[ethLen] = 0x55
			fixIPv4(f)
			return f
		}, dropBadIPHeader},
		{"ipv4 IHL 4", func() []byte {
			f := v4()
			f[ethLen] = 0x44
			return f
		}, dropBadIPHeader},
		{"ipv4 total length below IHL", func() []byte {
			f := v4()
			binary.BigEndian.PutUint16(f[ethLen+2:], 19)
			fixIPv4(f)
			return f
		}, dropBadIPHeader},
		{"ipv4 total length beyond frame", func() []byte {
			f := v4()
			binary.BigEndian.PutUint16(f[ethLen+2:], uint16(len(f)))
			fixIPv4(f)
			return f
		}, dropShort},
		{"ipv4 header checksum", func() []byte {
			f := v4()
			f[ethLen+10] ^= 1
			return f
		}, dropBadIPChecksum},
		{"ipv4 more fragments", func() []byte {
			f := v4()
			f[ethLen+6] |= 0x20
			fixIPv4(f)
			return f
		}, dropFragment},
		{"ipv4 fragment offset", func() []byte {
			f := v4()
			binary.BigEndian.PutUint16(f[ethLen+6:], 185)
			fixIPv4(f)
			return f
		}, dropFragment},
		{"ipv4 tcp", func() []byte {
			f := v4()
			f[ethLen+9] = 6
			fixIPv4(f)
			return f
		}, dropNotUDP},
		{"ipv6 version 4", func() []byte {
			f := v6()
			f[ethLen] = 0x40
			return f
		}, dropBadIPHeader},
		{"ipv6 payload beyond frame", func() []byte { return v6()[:v6udp+udpLen] }, dropShort},
		{"ipv6 hop-by-hop", func() []byte {
			f := v6()
			f[ethLen+6] = 0
			return f
		}, dropNotUDP},
		{"ipv6 fragment header", func() []byte {
			f := v6()
			f[ethLen+6] = 44
			return f
		}, dropNotUDP},
		{"ipv4 multicast source", func() []byte {
			return frame(netip.MustParseAddrPort("224.0.0.1:5"), testV4B, 0, payload)
		}, dropBadAddress},
		{"ipv4 broadcast source", func() []byte {
			return frame(netip.MustParseAddrPort("255.255.255.255:5"), testV4B, 0, payload)
		}, dropBadAddress},
		{"ipv4 loopback source", func() []byte {
			return frame(netip.MustParseAddrPort("127.0.0.1:53"), testV4B, 0, payload)
		}, dropBadAddress},
		{"ipv6 loopback source", func() []byte {
			return frame(netip.MustParseAddrPort("[::1]:53"), testV6B, 0, payload)
		}, dropBadAddress},
		{"ipv4-mapped ipv6 source", func() []byte {
			return frame(netip.MustParseAddrPort("[::ffff:127.0.0.1]:53"), testV6B, 0, payload)
		}, dropBadAddress},
		{"ipv4 broadcast destination", func() []byte {
			return frame(testV4A, netip.AddrPortFrom(netip.MustParseAddr("255.255.255.255"), testV4B.Port()), 0, payload)
		}, dropBadAddress},
		{"ipv4 multicast destination", func() []byte {
			return frame(testV4A, netip.AddrPortFrom(netip.MustParseAddr("239.1.2.3"), testV4B.Port()), 0, payload)
		}, dropBadAddress},
		{"ipv6 multicast destination", func() []byte {
			return frame(testV6A, netip.AddrPortFrom(netip.MustParseAddr("ff02::1"), testV6B.Port()), 0, payload)
		}, dropBadAddress},
		{"ipv6 unspecified source", func() []byte {
			return frame(netip.MustParseAddrPort("[::]:5"), testV6B, 0, payload)
		}, dropBadAddress},
		{"source port 0", func() []byte {
			return frame(netip.AddrPortFrom(testV4A.Addr(), 0), testV4B, 0, payload)
		}, dropBadAddress},
		{"ipv4 payload shorter than UDP header", func() []byte {
			f := v4()
			binary.BigEndian.PutUint16(f[ethLen+2:], ipv4MinLen+7)
			fixIPv4(f)
			return f
		}, dropBadUDPLength},
		{"UDP length 7", func() []byte {
			f := v4()
			binary.BigEndian.PutUint16(f[v4udp+4:], 7)
			return f
		}, dropBadUDPLength},
		{"UDP length beyond IP payload", func() []byte {
			f := v6()
			binary.BigEndian.PutUint16(f[v6udp+4:], uint16(udpLen+len(payload)+1))
			return f
		}, dropBadUDPLength},
		{"other port", func() []byte { return frame(testV4A, netip.AddrPortFrom(testV4B.Addr(), 53), 0, payload) }, dropOtherPort},
		{"ipv4 UDP checksum", func() []byte {
			f := v4()
			f[len(f)-1] ^= 0x40
			return f
		}, dropBadUDPChecksum},
		{"ipv6 UDP checksum", func() []byte {
			f := v6()
			f[v6udp+8] ^= 1
			return f
		}, dropBadUDPChecksum},
		{"ipv6 zero UDP checksum", func() []byte {
			f := v6()
			f[v6udp+6], f[v6udp+7] = 0, 0
			return f
		}, dropBadUDPChecksum},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f()
			var d datagram
			if got := parseFrame(f, testPort, &d); got != tc.want {
				t.Fatalf("parseFrame = %v, want %v", got, tc.want)
			}
			if tc.want != frameOK {
				return
			}
			if string(d.payload) != string(payload) && len(d.payload) != 1 {
				t.Errorf("payload %q", d.payload)
			}
			if d.srcMAC != testMACA || d.dst.Port() != testPort {
				t.Errorf("datagram %+v", d)
			}
		})
	}
}

// TestBuildParseRoundTrip: what buildFrame writes, parseFrame reads back unchanged, for both
// families, every ECN codepoint and many sizes.
func TestBuildParseRoundTrip(t *testing.T) {
	for _, pair := range [][2]netip.AddrPort{{testV4A, testV4B}, {testV6A, testV6B}} {
		for size := 0; size < 1500; size += 97 {
			for ecn := range transport.ECN(4) {
				payload := bytes.Repeat([]byte{byte(size)}, size)
				f := frame(pair[0], pair[1], ecn, payload)
				var d datagram
				if r := parseFrame(f, testPort, &d); r != frameOK {
					t.Fatalf("%v size %d ecn %v: %v", pair, size, ecn, r)
				}
				if d.src != pair[0] || d.dst != pair[1] || d.ecn != ecn || !bytes.Equal(d.payload, payload) ||
					d.srcMAC != testMACA {
					t.Fatalf("%v size %d ecn %v: got %+v", pair, size, ecn, d)
				}
			}
		}
	}
}

func BenchmarkBuildFrame(b *testing.B) {
	for _, size := range []int{64, 1200} {
		b.Run(sizeName(size), func(b *testing.B) {
			h := frameHeader{dstMAC: testMACB, srcMAC: testMACA, src: testV4A, dst: testV4B}
			payload := make([]byte, size)
			buf := make([]byte, 2048)
			b.SetBytes(int64(size))
			for b.Loop() {
				buildFrame(buf, &h, payload)
			}
		})
	}
}

func BenchmarkParseFrame(b *testing.B) {
	for _, size := range []int{64, 1200} {
		b.Run(sizeName(size), func(b *testing.B) {
			f := frame(testV4A, testV4B, 0, make([]byte, size))
			var d datagram
			b.SetBytes(int64(size))
			for b.Loop() {
				if parseFrame(f, testPort, &d) != frameOK {
					b.Fatal("parse failed")
				}
			}
		})
	}
}

func sizeName(n int) string {
	return string(rune('0'+n/1000%10)) + string(rune('0'+n/100%10)) + string(rune('0'+n/10%10)) +
		string(rune('0'+n%10)) + "B"
}
