package quic

import (
	"net"
	"net/netip"
)

// addrCacheGeneration is how many distinct remote addresses one generation of an addrCache holds
// before it is retired. Two generations are kept, so an address that keeps sending is found again
// without allocating as long as at most this many distinct peers send while one generation fills;
// with more (a server with over 16,384 active peers), some lookups after each swap miss and
// allocate a new *net.UDPAddr (the datagram is handled all the same).
const addrCacheGeneration = 16384

// addrCache maps remote addresses to *net.UDPAddr values handed to quic-go, so that a steady
// stream of datagrams from known peers allocates nothing. A returned *net.UDPAddr is never
// mutated: quic-go keeps it as the connection's remote address.
//
// It is a two-generation cache: lookups try the current map, then the previous one (promoting the
// hit); when the current map is full the previous one is emptied and they swap. Memory stays
// bounded and active peers survive a swap. It is not safe for concurrent use.
type addrCache struct {
	cur, prev map[netip.AddrPort]*net.UDPAddr
	limit     int
}

func newAddrCache(limit int) *addrCache {
	return &addrCache{
		cur:   make(map[netip.AddrPort]*net.UDPAddr),
		prev:  make(map[netip.AddrPort]*net.UDPAddr),
		limit: limit,
	}
}

// get returns the cached *net.UDPAddr for ap, creating it on a miss.
func (c *addrCache) get(ap netip.AddrPort) *net.UDPAddr {
	if a, ok := c.cur[ap]; ok {
		return a
	}
	a, ok := c.prev[ap]
	if !ok {
		a = net.UDPAddrFromAddrPort(ap)
	}
	if len(c.cur) >= c.limit {
		clear(c.prev)
		c.cur, c.prev = c.prev, c.cur
	}
	c.cur[ap] = a
	return a
}
