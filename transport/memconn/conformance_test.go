package memconn

import (
	"net/netip"
	"testing"
	"time"

	"github.com/naquid/naquid/transport/transporttest"
)

func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name, a, b string
		link       LinkConfig
	}{
		{"IPv4", "192.0.2.1:0", "198.51.100.1:0", LinkConfig{}},
		{"IPv6", "[2001:db8::1]:0", "[2001:db8::2]:0", LinkConfig{}},
		{"loopback", "127.0.0.1:0", "127.0.0.1:0", LinkConfig{}},
		// Delay without loss or reordering obeys the contract too, through the delay queue.
		{"delayed", "192.0.2.1:0", "192.0.2.2:0", LinkConfig{Latency: 100 * time.Microsecond, Jitter: 100 * time.Microsecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNet(t, Config{Link: tc.link})
			transporttest.Run(t, transporttest.FactoryPair(n.Factory(),
				netip.MustParseAddrPort(tc.a), netip.MustParseAddrPort(tc.b)))
		})
	}
}
