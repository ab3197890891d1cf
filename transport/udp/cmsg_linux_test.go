package udp

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/transport"
)

// Receive-side control messages, built the way the kernel sends them.

func cmsgTOS(b []byte, tos byte) []byte {
	b, data := appendCmsg(b, unix.IPPROTO_IP, unix.IP_TOS, 1)
	data[0] = tos
	return b
}

func cmsgTClass(b []byte, tclass byte) []byte {
	b, data := appendCmsg(b, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, 4)
	binary.NativeEndian.PutUint32(data, uint32(tclass))
	return b
}

func cmsgPktinfo4(b []byte, dst netip.Addr) []byte {
	b, data := appendCmsg(b, unix.IPPROTO_IP, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo)
	binary.NativeEndian.PutUint32(data[0:4], 7) // ifindex
	copy(data[4:8], []byte{192, 0, 2, 99})      // spec_dst: the routing answer, not the header
	a := dst.As4()
	copy(data[8:12], a[:])
	return b
}

func cmsgPktinfo6(b []byte, dst netip.Addr) []byte {
	b, data := appendCmsg(b, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, unix.SizeofInet6Pktinfo)
	a := dst.As16()
	copy(data[:16], a[:])
	binary.NativeEndian.PutUint32(data[16:20], 7)
	return b
}

func cmsgOverflow(b []byte, drops uint32) []byte {
	b, data := appendCmsg(b, unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 4)
	binary.NativeEndian.PutUint32(data, drops)
	return b
}

func TestParseControl(t *testing.T) {
	v4 := netip.MustParseAddr("203.0.113.5")
	v6 := netip.MustParseAddr("2001:db8::5")
	unknown := func(b []byte) []byte {
		b, data := appendCmsg(b, unix.IPPROTO_IP, unix.IP_TTL, 4)
		data[0] = 64
		return b
	}
	tests := []struct {
		name string
		oob  []byte
		want control
	}{
		{"empty", nil, control{}},
		{"IPv4 TOS and packet info", cmsgPktinfo4(cmsgTOS(nil, 0xb8|0b10), v4),
			control{local: v4, ecn: transport.ECNECT0}},
		{"IPv6 traffic class and packet info", cmsgTClass(cmsgPktinfo6(nil, v6), 0b11),
			control{local: v6, ecn: transport.ECNCE}},
		{"IPv4 on a dual-stack socket: mapped packet info is unmapped",
			cmsgPktinfo6(cmsgTOS(nil, 0b01), netip.AddrFrom16(v4.As16())),
			control{local: v4, ecn: transport.ECNECT1}},
		{"unknown messages are skipped", cmsgOverflow(unknown(cmsgTOS(nil, 0b10)), 42),
			control{ecn: transport.ECNECT0, drops: 42, hasDrops: true}},
		{"truncated last message is ignored", cmsgTOS(nil, 0b10)[:cmsgHeader], control{}},
		{"length beyond the buffer stops the parse", func() []byte {
			b := cmsgTOS(cmsgTClass(nil, 0b11), 0b10)
			binary.NativeEndian.PutUint32(b[0:4], 1000)
			return b
		}(), control{}},
		{"length below the header stops the parse", func() []byte {
			b := cmsgTClass(nil, 0b11)
			binary.NativeEndian.PutUint32(b[0:4], 3)
			return b
		}(), control{}},
		{"short packet info is ignored", func() []byte {
			b, _ := appendCmsg(nil, unix.IPPROTO_IP, unix.IP_PKTINFO, 8)
			return b
		}(), control{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseControl(tc.oob); got != tc.want {
				t.Fatalf("parseControl = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestSendControl: the messages WriteBatch sends are well formed and carry what was asked.
func TestSendControl(t *testing.T) {
	v4 := netip.MustParseAddr("127.0.0.1")
	v6 := netip.MustParseAddr("::1")
	for _, tc := range []struct {
		name  string
		v4    bool
		ecn   transport.ECN
		local netip.Addr
		want  []int32 // level, type pairs
	}{
		{"nothing", true, transport.ECNNotECT, netip.Addr{}, nil},
		{"IPv4 ECN", true, transport.ECNECT0, netip.Addr{}, []int32{unix.IPPROTO_IP, unix.IP_TOS}},
		{"IPv6 ECN and source", false, transport.ECNCE, v6,
			[]int32{unix.IPPROTO_IPV6, unix.IPV6_TCLASS, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO}},
		{"IPv4 source", true, transport.ECNNotECT, v4, []int32{unix.IPPROTO_IP, unix.IP_PKTINFO}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := appendSendControl(nil, tc.v4, tc.ecn, tc.local)
			msgs, err := unix.ParseSocketControlMessage(b)
			if err != nil {
				t.Fatalf("x/sys cannot parse what we built: %v", err)
			}
			if len(msgs) != len(tc.want)/2 {
				t.Fatalf("%d messages, want %d", len(msgs), len(tc.want)/2)
			}
			for i, m := range msgs {
				if m.Header.Level != tc.want[2*i] || m.Header.Type != tc.want[2*i+1] {
					t.Fatalf("message %d is level %d type %d, want %d %d", i, m.Header.Level, m.Header.Type,
						tc.want[2*i], tc.want[2*i+1])
				}
				switch m.Header.Type {
				case unix.IP_TOS, unix.IPV6_TCLASS:
					if got := binary.NativeEndian.Uint32(m.Data); got != uint32(tc.ecn) {
						t.Errorf("codepoint %d, want %d", got, tc.ecn)
					}
				case unix.IP_PKTINFO:
					if got := netip.AddrFrom4([4]byte(m.Data[4:8])); got != tc.local {
						t.Errorf("spec_dst %v, want %v", got, tc.local)
					}
				case unix.IPV6_PKTINFO:
					if got := netip.AddrFrom16([16]byte(m.Data[:16])); got != tc.local {
						t.Errorf("source %v, want %v", got, tc.local)
					}
				}
			}
			seg := appendSegmentControl(b, 1200)
			all, err := unix.ParseSocketControlMessage(seg)
			if err != nil || len(all) != len(msgs)+1 {
				t.Fatalf("with UDP_SEGMENT: %d messages, err %v", len(all), err)
			}
			if last := all[len(all)-1]; last.Header.Type != unix.UDP_SEGMENT ||
				binary.NativeEndian.Uint16(last.Data) != 1200 {
				t.Fatalf("UDP_SEGMENT message %+v", last)
			}
		})
	}
}

// FuzzParseControl: arbitrary control bytes never panic and yield a 2-bit codepoint and a plain
// address.
func FuzzParseControl(f *testing.F) {
	f.Add([]byte{})
	f.Add(cmsgPktinfo4(cmsgTOS(nil, 0b10), netip.MustParseAddr("192.0.2.1")))
	f.Add(cmsgOverflow(cmsgTClass(cmsgPktinfo6(nil, netip.MustParseAddr("2001:db8::1")), 3), 9))
	f.Add(cmsgTOS(nil, 1)[:cmsgHeader+1])
	f.Fuzz(func(t *testing.T, b []byte) {
		ctl := parseControl(b)
		if ctl.ecn > transport.ECNCE {
			t.Fatalf("codepoint %d", ctl.ecn)
		}
		if ctl.local.Is4In6() {
			t.Fatalf("IPv4-mapped local address %v", ctl.local)
		}
	})
}

// FuzzControlRoundTrip: whatever the kernel could send is parsed back exactly, in any order and
// with unknown messages in between.
func FuzzControlRoundTrip(f *testing.F) {
	f.Add(byte(0b10), []byte{127, 0, 0, 1}, uint32(0), uint8(0))
	f.Add(byte(0xff), []byte{0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint32(5), uint8(3))
	f.Fuzz(func(t *testing.T, tos byte, ip []byte, drops uint32, layout uint8) {
		local, ok := netip.AddrFromSlice(ip)
		if !ok {
			return
		}
		parts := []func([]byte) []byte{
			func(b []byte) []byte {
				if layout&1 == 0 {
					return cmsgTOS(b, tos)
				}
				return cmsgTClass(b, tos)
			},
			func(b []byte) []byte {
				if local.Is4() {
					return cmsgPktinfo4(b, local)
				}
				return cmsgPktinfo6(b, local)
			},
			func(b []byte) []byte { return cmsgOverflow(b, drops) },
		}
		var b []byte
		for i := range parts {
			b = parts[(i+int(layout>>1))%len(parts)](b)
			if layout&0x80 != 0 {
				b, _ = appendCmsg(b, unix.IPPROTO_IP, unix.IP_TTL, 4)
			}
		}
		want := control{local: local.Unmap(), ecn: transport.ECN(tos & 0b11), drops: drops, hasDrops: true}
		if got := parseControl(b); got != want {
			t.Fatalf("parseControl = %+v, want %+v (layout %#x)", got, want, layout)
		}
	})
}
