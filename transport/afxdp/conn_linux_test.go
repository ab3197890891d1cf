package afxdp

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"

	"github.com/naquid/naquid/transport"
)

// TestExchange sends datagrams both ways between an afxdp Conn in namespace A and a kernel UDP
// Conn in namespace B, over IPv4 and IPv6, with the afxdp Conn bound to its address or to a
// wildcard address (dual-stack for [::]), and checks payloads, addresses, ECN and where the
// datagrams travelled (the AF_XDP rings, not the shadow socket).
func TestExchange(t *testing.T) {
	p := newPair(t)
	for _, tc := range []struct {
		name string
		bind netip.Addr // the afxdp Conn's address
		v6   bool       // the peer's family
	}{
		{"ipv4", p.A.IPv4.Addr(), false},
		{"ipv6", p.A.IPv6.Addr(), true},
		{"ipv4-wildcard", netip.IPv4Unspecified(), false},
		{"dual-stack-ipv4", netip.IPv6Unspecified(), false},
		{"dual-stack-ipv6", netip.IPv6Unspecified(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lb, dstAddr := p.B.Addr4(0), p.A.IPv4.Addr()
			if tc.v6 {
				lb, dstAddr = p.B.Addr6(0), p.A.IPv6.Addr()
			}
			x := openXDP(t, p.A, netip.AddrPortFrom(tc.bind, 0), Config{})
			u := openUDP(t, p.B, lb)
			if info := x.Info(); info.ZeroCopy || len(info.Queues) != 1 || info.Attach != AttachDriver {
				t.Errorf("Info on veth = %+v, want copy mode on one queue, driver attach", info)
			}
			dst := netip.AddrPortFrom(dstAddr, x.LocalAddr().Port()) // also the answers' source

			const count = 20
			for i := range count {
				writeAll(t, u, transport.Message{Buf: fmt.Appendf(nil, "to xdp %d", i), Addr: dst,
					ECN: transport.ECN(i % 4)})
			}
			got := readN(t, x, count)
			for i, m := range got {
				if want := fmt.Sprintf("to xdp %d", i); string(m.Buf) != want {
					t.Fatalf("datagram %d = %q, want %q", i, m.Buf, want)
				}
				if m.Addr != u.LocalAddr() || m.Local != dstAddr || m.ECN != transport.ECN(i%4) {
					t.Fatalf("datagram %d from %v to %v ECN %v; want from %v to %v ECN %v", i, m.Addr, m.Local,
						m.ECN, u.LocalAddr(), dstAddr, transport.ECN(i%4))
				}
			}
			if s := x.shadowReads.Load(); s != 0 {
				t.Errorf("%d datagrams came through the shadow socket, want all through the rings", s)
			}

			// The answers go through the TX ring: the peer's address was learned.
			for i := range count {
				writeAll(t, x, transport.Message{Buf: bytes.Repeat([]byte{byte(i)}, 100+i), Addr: u.LocalAddr(),
					ECN: transport.ECN(i % 4)})
			}
			got = readN(t, u, count)
			for i, m := range got {
				if !bytes.Equal(m.Buf, bytes.Repeat([]byte{byte(i)}, 100+i)) || m.Addr != dst ||
					m.ECN != transport.ECN(i%4) {
					t.Fatalf("answer %d: %d bytes from %v ECN %v", i, len(m.Buf), m.Addr, m.ECN)
				}
			}
			if s := x.shadowWrites.Load(); s != 0 {
				t.Errorf("%d answers went through the shadow socket, want all through the TX ring", s)
			}
			st := x.Stats()
			if st.PacketsRead != count || st.PacketsWritten != count || st.Drops != 0 {
				t.Errorf("Stats = %+v", st)
			}
		})
	}
}
