package mmsg

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/transport"
)

// cmsg builds one control message as the kernel would.
func cmsg(level, typ int32, data []byte) []byte {
	b, d := appendCmsg(nil, level, typ, len(data))
	copy(d, data)
	return b
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func pktinfo4(addr string) []byte {
	b := make([]byte, unix.SizeofInet4Pktinfo)
	a := netip.MustParseAddr(addr).As4()
	copy(b[8:], a[:]) // ipi_addr: the header destination
	return b
}

func pktinfo6(addr string) []byte {
	b := make([]byte, unix.SizeofInet6Pktinfo)
	a := netip.MustParseAddr(addr).As16()
	copy(b, a[:])
	return b
}

func TestParseControl(t *testing.T) {
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want rxControl
	}{
		{"empty", nil, rxControl{}},
		{"ipv4 pktinfo and tos",
			cat(cmsg(unix.SOL_IP, unix.IP_PKTINFO, pktinfo4("192.0.2.1")), cmsg(unix.SOL_IP, unix.IP_TOS, []byte{0xb9})),
			rxControl{local: netip.MustParseAddr("192.0.2.1"), ecn: transport.ECNECT1}},
		{"ipv6 pktinfo and tclass",
			cat(cmsg(unix.SOL_IPV6, unix.IPV6_PKTINFO, pktinfo6("2001:db8::5")), cmsg(unix.SOL_IPV6, unix.IPV6_TCLASS, u32(0x03))),
			rxControl{local: netip.MustParseAddr("2001:db8::5"), ecn: transport.ECNCE}},
		{"mapped ipv6 pktinfo is unmapped",
			cmsg(unix.SOL_IPV6, unix.IPV6_PKTINFO, pktinfo6("::ffff:192.0.2.9")),
			rxControl{local: netip.MustParseAddr("192.0.2.9")}},
		{"gro and overflow count",
			cat(cmsg(unix.SOL_UDP, unix.UDP_GRO, u32(1200)), cmsg(unix.SOL_SOCKET, unix.SO_RXQ_OVFL, u32(42))),
			rxControl{seg: 1200, drops: 42, hasDrops: true}},
		{"16-bit gro size", cmsg(unix.SOL_UDP, unix.UDP_GRO, []byte{0xb0, 0x04}[:2]),
			rxControl{seg: int(binary.NativeEndian.Uint16([]byte{0xb0, 0x04}))}},
		{"negative gro size ignored", cmsg(unix.SOL_UDP, unix.UDP_GRO, u32(0xffffffff)), rxControl{}},
		{"unknown messages skipped",
			cat(cmsg(unix.SOL_SOCKET, unix.SO_TIMESTAMP, make([]byte, 16)), cmsg(unix.SOL_IP, unix.IP_TOS, []byte{2})),
			rxControl{ecn: transport.ECNECT0}},
		{"short data ignored", cmsg(unix.SOL_IP, unix.IP_PKTINFO, []byte{1, 2, 3}), rxControl{}},
		{"truncated header", cmsg(unix.SOL_IP, unix.IP_TOS, []byte{2})[:unix.SizeofCmsghdr-1], rxControl{}},
		{"length beyond buffer", func() []byte {
			b := cmsg(unix.SOL_IP, unix.IP_TOS, []byte{2})
			binary.NativeEndian.PutUint32(b, 1000)
			return b
		}(), rxControl{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseControl(tc.b); got != tc.want {
				t.Fatalf("parseControl = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseControl(f *testing.F) {
	f.Add(cmsg(unix.SOL_IP, unix.IP_PKTINFO, pktinfo4("192.0.2.1")))
	f.Add(append(cmsg(unix.SOL_UDP, unix.UDP_GRO, u32(1200)), cmsg(unix.SOL_IPV6, unix.IPV6_TCLASS, u32(2))...))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		rx := parseControl(b)
		if rx.seg < 0 || rx.ecn > 3 {
			t.Fatalf("out-of-range result %+v", rx)
		}
	})
}

func TestAppendControl(t *testing.T) {
	v4dst := netip.MustParseAddrPort("192.0.2.1:443")
	v6dst := netip.MustParseAddrPort("[2001:db8::1]:443")
	mapped := netip.MustParseAddrPort("[::ffff:192.0.2.1]:443")
	type want struct {
		level, typ int32
		data       []byte
	}
	spec4 := func(a string) []byte { // in_pktinfo with ipi_spec_dst set
		b := make([]byte, unix.SizeofInet4Pktinfo)
		x := netip.MustParseAddr(a).As4()
		copy(b[4:8], x[:])
		return b
	}
	seg := func(n uint16) []byte { return binary.NativeEndian.AppendUint16(nil, n) }
	for _, tc := range []struct {
		name  string
		dst   netip.AddrPort
		local string
		ecn   transport.ECN
		seg   int
		want  []want
	}{
		{"nothing", v4dst, "", 0, 0, nil},
		{"ipv4 all", v4dst, "192.0.2.10", transport.ECNECT0, 1200, []want{
			{unix.SOL_IP, unix.IP_PKTINFO, spec4("192.0.2.10")},
			{unix.SOL_IP, unix.IP_TOS, u32(2)},
			{unix.SOL_UDP, unix.UDP_SEGMENT, seg(1200)}}},
		{"mapped destination takes ipv4 forms", mapped, "", transport.ECNCE, 0, []want{
			{unix.SOL_IP, unix.IP_TOS, u32(3)}}},
		{"ipv6 all", v6dst, "2001:db8::2", transport.ECNECT1, 500, []want{
			{unix.SOL_IPV6, unix.IPV6_PKTINFO, pktinfo6("2001:db8::2")},
			{unix.SOL_IPV6, unix.IPV6_TCLASS, u32(1)},
			{unix.SOL_UDP, unix.UDP_SEGMENT, seg(500)}}},
		{"source of the other family ignored", v6dst, "192.0.2.10", 0, 0, nil},
		{"unspecified source ignored", v4dst, "0.0.0.0", 0, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var local netip.Addr
			if tc.local != "" {
				local = netip.MustParseAddr(tc.local)
			}
			b := appendControl(make([]byte, 0, oobSize), tc.dst, local, tc.ecn, tc.seg)
			msgs, err := unix.ParseSocketControlMessage(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != len(tc.want) {
				t.Fatalf("%d control messages, want %d", len(msgs), len(tc.want))
			}
			for i, m := range msgs {
				w := tc.want[i]
				if m.Header.Level != w.level || m.Header.Type != w.typ || string(m.Data) != string(w.data) {
					t.Errorf("message %d: level %d type %d data %x, want %d %d %x", i,
						m.Header.Level, m.Header.Type, m.Data, w.level, w.typ, w.data)
				}
			}
		})
	}
	// A full set must fit the per-packet control buffer without growing it.
	buf := make([]byte, 0, oobSize)
	out := appendControl(buf, v6dst, netip.MustParseAddr("2001:db8::2"), transport.ECNCE, 1200)
	if &out[:1][0] != &buf[:1][0] {
		t.Error("appendControl reallocated an oobSize buffer")
	}
	// A buffer that is too small is grown, not overrun.
	small := appendControl(make([]byte, 0, 8), v4dst, netip.MustParseAddr("192.0.2.10"), transport.ECNCE, 1200)
	if _, err := unix.ParseSocketControlMessage(small); err != nil {
		t.Fatal(err)
	}
}

func TestSockaddr(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ap      string
		v6      bool
		namelen uint32
		back    string // what decodeSockaddr returns; "" = the input
	}{
		{"ipv4 on ipv4 socket", "192.0.2.1:53", false, unix.SizeofSockaddrInet4, ""},
		{"ipv4 on ipv6 socket is mapped", "192.0.2.1:65535", true, unix.SizeofSockaddrInet6, ""},
		{"mapped input on ipv4 socket", "[::ffff:192.0.2.1]:1", false, unix.SizeofSockaddrInet4, "192.0.2.1:1"},
		{"ipv6", "[2001:db8::1]:443", true, unix.SizeofSockaddrInet6, ""},
		{"ipv6 on ipv4 socket passed through", "[2001:db8::1]:443", false, unix.SizeofSockaddrInet6, ""},
		{"invalid", "", true, 0, "invalid AddrPort"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ap netip.AddrPort
			if tc.ap != "" {
				ap = netip.MustParseAddrPort(tc.ap)
			}
			var sa unix.RawSockaddrInet6
			l := encodeSockaddr(&sa, ap, tc.v6)
			if l != tc.namelen {
				t.Fatalf("namelen %d, want %d", l, tc.namelen)
			}
			want := tc.back
			if want == "" {
				want = tc.ap
			}
			if got := decodeSockaddr(&sa, l); got.String() != want {
				t.Fatalf("round trip gives %s, want %s", got, want)
			}
		})
	}
	var sa unix.RawSockaddrInet6
	sa.Family = unix.AF_UNIX
	if got := decodeSockaddr(&sa, unix.SizeofSockaddrInet6); got.IsValid() {
		t.Errorf("decoded %v from a non-IP family", got)
	}
	encodeSockaddr(&sa, netip.MustParseAddrPort("[2001:db8::1]:1"), true)
	if got := decodeSockaddr(&sa, 8); got.IsValid() {
		t.Errorf("decoded %v from a short name", got)
	}
}

func TestParseKernelVersion(t *testing.T) {
	for _, tc := range []struct {
		in           string
		major, minor int
		ok           bool
	}{
		{"6.18.44-fc-v669", 6, 18, true},
		{"5.12.0", 5, 12, true},
		{"4.19", 4, 19, true},
		{"5.4-generic", 5, 4, true},
		{"", 0, 0, false},
		{"six.1", 0, 0, false},
		{"6", 0, 0, false},
	} {
		major, minor, ok := parseKernelVersion(tc.in)
		if ok != tc.ok || ok && (major != tc.major || minor != tc.minor) {
			t.Errorf("parseKernelVersion(%q) = %d, %d, %v", tc.in, major, minor, ok)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{}, ""},
		{Config{BatchSize: MaxBatchSize, ReadBuffer: 1, WriteBuffer: 1}, ""},
		{Config{BatchSize: -1}, "BatchSize"},
		{Config{BatchSize: MaxBatchSize + 1}, "BatchSize"},
		{Config{ReadBuffer: -1}, "ReadBuffer"},
		{Config{WriteBuffer: -1}, "WriteBuffer"},
	} {
		err := tc.cfg.validate()
		if tc.field == "" && err != nil || tc.field != "" && (err == nil || !strings.Contains(err.Error(), "Config."+tc.field)) {
			t.Errorf("validate(%+v) = %v, want error naming %q", tc.cfg, err, tc.field)
		}
	}
}
