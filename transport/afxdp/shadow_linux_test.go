package afxdp

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/transport"
)

// TestParseControl: the ECN codepoint and local address are found in received control messages
// of both families, and malformed buffers end the parse quietly.
func TestParseControl(t *testing.T) {
	tos := []byte{0xb8 | byte(transport.ECNECT1)}
	var tclass [4]byte
	binary.NativeEndian.PutUint32(tclass[:], uint32(transport.ECNCE))
	var pi4 [12]byte // ifindex, spec_dst, addr
	copy(pi4[8:], []byte{192, 0, 2, 1})
	var pi6 [20]byte // addr, ifindex
	a6 := netip.MustParseAddr("2001:db8::1").As16()
	copy(pi6[:], a6[:])
	var mapped [20]byte
	m := netip.MustParseAddr("::ffff:192.0.2.7").As16()
	copy(mapped[:], m[:])
	for _, tc := range []struct {
		name  string
		oob   []byte
		ecn   transport.ECN
		local netip.Addr
	}{
		{"empty", nil, 0, netip.Addr{}},
		{"ipv4", append(appendCmsg(nil, unix.IPPROTO_IP, unix.IP_TOS, tos), appendCmsg(nil, unix.IPPROTO_IP,
			unix.IP_PKTINFO, pi4[:])...), transport.ECNECT1, netip.MustParseAddr("192.0.2.1")},
		{"ipv6", append(appendCmsg(nil, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, pi6[:]), appendCmsg(nil,
			unix.IPPROTO_IPV6, unix.IPV6_TCLASS, tclass[:])...), transport.ECNCE, netip.MustParseAddr("2001:db8::1")},
		{"mapped", appendCmsg(nil, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, mapped[:]), 0, netip.MustParseAddr("192.0.2.7")},
		{"truncated", appendCmsg(nil, unix.IPPROTO_IP, unix.IP_TOS, tos)[:10], 0, netip.Addr{}},
		{"length too large", func() []byte {
			b := appendCmsg(nil, unix.IPPROTO_IP, unix.IP_TOS, tos)
			b[0] = 200
			return b
		}(), 0, netip.Addr{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ecn, local := parseControl(tc.oob)
			if ecn != tc.ecn || local != tc.local {
				t.Fatalf("parseControl = %v, %v; want %v, %v", ecn, local, tc.ecn, tc.local)
			}
		})
	}
}

// FuzzParseControl: parseControl never panics on any control buffer and returns plain
// (unmapped) addresses.
func FuzzParseControl(f *testing.F) {
	f.Add(appendSendControl(nil, true, transport.ECNCE, netip.MustParseAddr("192.0.2.1")))
	f.Add(appendSendControl(nil, false, transport.ECNECT0, netip.MustParseAddr("2001:db8::1")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, oob []byte) {
		ecn, local := parseControl(oob)
		if ecn > transport.ECNCE || local.Is4In6() {
			t.Fatalf("parseControl = %v, %v", ecn, local)
		}
	})
}
