// Package netns is a test helper that builds small networks out of Linux network namespaces:
// two namespaces joined by a veth pair, addressed from the documentation ranges (TEST-NET-1,
// 192.0.2.0/24, and 2001:db8::/64), so tests can send real packets through a real device
// without touching the host's network.
//
// Typical use:
//
//	p := netns.NewPair(t, netns.Config{})
//	var c *net.UDPConn
//	err := p.A.Do(func() (err error) {
//		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: p.A.IPv4.Addr().AsSlice()})
//		return err
//	})
//
// A socket keeps the namespace it was created in, so it is opened inside Do and used anywhere
// afterwards. Everything NewPair creates is deleted by t.Cleanup, also when the test fails.
//
// NewPair returns only when both links are running, so the first packet is not lost to a device
// that is still coming up (the two veth ends get distinct interface indexes, which makes the
// kernel bring them up at once instead of up to a second later).
//
// NewPair skips the test (naming the reason) when the process cannot create namespaces: not
// root or missing CAP_NET_ADMIN / CAP_SYS_ADMIN, no namespace support in the kernel, or the
// iproute2 `ip` command missing (`make setup`, i.e. scripts/setup.sh, installs iproute2 and
// ethtool).
package netns

import (
	"errors"
	"net"
	"net/netip"
)

// ErrUnsupported reports that network namespaces cannot be used on this system or by this
// process. Available wraps it with the reason.
var ErrUnsupported = errors.New("netns: network namespaces unavailable")

// Config tunes NewPair. The zero value is ready to use.
type Config struct {
	// MTU is the MTU of both veth ends. 0 keeps the kernel default (1500). Note that native XDP
	// on veth fails with ERANGE for large MTUs (9000).
	MTU int
	// Prefix starts the names of the namespaces and veth devices; it must be at most 6 bytes of
	// [a-zA-Z0-9] so that a random suffix fits the 15-byte interface-name limit. Default "nq".
	Prefix string
}

// Pair is two network namespaces, A and B, joined by a veth pair whose ends are up and
// addressed: A has 192.0.2.1/24 and 2001:db8::1/64, B has 192.0.2.2/24 and 2001:db8::2/64
// (IPv6 addresses without duplicate address detection, so they are usable at once).
type Pair struct {
	A, B *NS
}

// NS is one network namespace of a Pair and its end of the veth pair.
type NS struct {
	// Name is the namespace name as `ip netns` knows it (nqA-xxxxxxxx).
	Name string
	// Link is the name of the veth end inside this namespace.
	Link string
	// Index is the interface index of Link inside this namespace.
	Index int
	// MAC is the hardware address of Link.
	MAC net.HardwareAddr
	// IPv4 and IPv6 are the addresses (with prefix length) assigned to Link.
	IPv4, IPv6 netip.Prefix
	// Peer is the other namespace of the Pair.
	Peer *NS
}

// Addr4 returns the IPv4 address of the namespace with the given port.
func (n *NS) Addr4(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(n.IPv4.Addr(), port)
}

// Addr6 returns the IPv6 address of the namespace with the given port.
func (n *NS) Addr6(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(n.IPv6.Addr(), port)
}
