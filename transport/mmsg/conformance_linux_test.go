package mmsg

import (
	"net/netip"
	"testing"

	"github.com/naquid/naquid/internal/netns"
	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/transporttest"
)

// TestConformance runs the transport conformance suite over IPv4, IPv6 and dual-stack loopback,
// with the offloads on and off, and over a veth pair.
func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr string
		cfg  Config
	}{
		{"ipv4", "127.0.0.1:0", Config{}},
		{"ipv6", "[::1]:0", Config{}},
		{"dualstack", "[::]:0", Config{}},
		{"ipv4-no-offload", "127.0.0.1:0", Config{DisableGSO: true, DisableGRO: true, BatchSize: 8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := netip.MustParseAddrPort(tc.addr)
			transporttest.Run(t, transporttest.FactoryPair(Factory(tc.cfg), addr, addr))
		})
	}
	// Over a real device: a veth pair between two namespaces (1500-byte MTU, so the larger
	// datagrams of the suite are fragmented and GSO runs of them fall back to single sends).
	t.Run("veth4", func(t *testing.T) {
		transporttest.Run(t, func(t *testing.T) (transport.Conn, transport.Conn) {
			p := netns.NewPair(t, netns.Config{})
			return listenIn(t, p.A, p.A.Addr4(0), Config{}), listenIn(t, p.B, p.B.Addr4(0), Config{})
		})
	})
}
