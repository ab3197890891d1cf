package afxdp

import (
	"net/netip"
	"testing"

	"github.com/naquid/naquid/internal/netns"
	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/transporttest"
)

// TestConformance runs the transport contract suite over a veth pair between two namespaces: an
// afxdp Conn in A against a kernel UDP Conn in B (IPv4 and IPv6), and afxdp on both ends.
// (Dual-stack Conns are covered by TestExchange: the suite sends to LocalAddr, which is [::].)
func TestConformance(t *testing.T) {
	p := newPair(t)
	for _, tc := range []struct {
		name   string
		a, b   func(p *netns.Pair) netip.AddrPort
		bIsXDP bool
	}{
		{name: "afxdp-udp/ipv4", a: a4, b: b4},
		{name: "afxdp-udp/ipv6", a: a6, b: b6},
		{name: "afxdp-afxdp/ipv4", a: a4, b: b4, bIsXDP: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			transporttest.Run(t, func(t *testing.T) (transport.Conn, transport.Conn) {
				a := openXDP(t, p.A, tc.a(p), Config{})
				if tc.bIsXDP {
					return a, openXDP(t, p.B, tc.b(p), Config{})
				}
				return a, openUDP(t, p.B, tc.b(p))
			})
		})
	}
}

func a4(p *netns.Pair) netip.AddrPort { return p.A.Addr4(0) }
func b4(p *netns.Pair) netip.AddrPort { return p.B.Addr4(0) }
func a6(p *netns.Pair) netip.AddrPort { return p.A.Addr6(0) }
func b6(p *netns.Pair) netip.AddrPort { return p.B.Addr6(0) }
