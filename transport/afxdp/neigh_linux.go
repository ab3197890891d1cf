package afxdp

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds and lifetimes of the next-hop caches.
const (
	// maxLearned bounds the learned Ethernet addresses and the cached next hops; a full table
	// is cleared and refilled by the traffic that follows.
	maxLearned = 1 << 16
	// hopTTL is how long a next hop found in the neighbour table is used before it is looked up
	// again.
	hopTTL = 10 * time.Second
	// missTTL is how long a destination without a known Ethernet address keeps going through
	// the shadow socket before the neighbour table is asked again: the kernel resolves it in the
	// meantime.
	missTTL = 100 * time.Millisecond
	// routeTTL is how long a destination whose route does not leave through this interface
	// keeps going through the shadow socket before the route is looked up again.
	routeTTL = time.Second
)

// macTable holds the Ethernet addresses learned from received frames, by source IP address (no
// zone). The reader writes it; the writer reads it.
type macTable struct {
	mu  sync.RWMutex
	m   map[netip.Addr][6]byte
	gen atomic.Uint64 // bumped on every change
}

func (t *macTable) learn(ip netip.Addr, mac [6]byte) {
	t.mu.Lock()
	if len(t.m) >= maxLearned {
		clear(t.m)
	}
	t.m[ip] = mac
	t.mu.Unlock()
	t.gen.Add(1)
}

func (t *macTable) lookup(ip netip.Addr) ([6]byte, bool) {
	t.mu.RLock()
	mac, ok := t.m[ip]
	t.mu.RUnlock()
	return mac, ok
}

// nextHop is how datagrams to one destination leave.
type nextHop struct {
	shadow  bool       // through the shadow socket
	mac     [6]byte    // the next hop's Ethernet address, unless shadow
	src     netip.Addr // the source address to use (may be invalid when shadow)
	routeOK bool       // the route leaves through our interface
	expires int64      // Conn.now() after which it is looked up again
	gen     uint64     // macTable generation it was checked against
}

// resolver finds next hops. It is used by the combiner's leader only.
type resolver struct {
	nl      *netlink
	ifindex int
	bound   netip.Addr // the Conn's local address, possibly unspecified
	macs    *macTable
	hops    map[netip.Addr]*nextHop
}

// lookup returns the next hop for dst (no zone needed), from the cache when it is fresh.
func (r *resolver) lookup(dst netip.Addr, now int64) *nextHop {
	key := dst.WithZone("")
	h := r.hops[key]
	if h == nil {
		if len(r.hops) >= maxLearned {
			clear(r.hops)
		}
		h = &nextHop{}
		r.hops[key] = h
		r.resolve(h, dst, now)
		return h
	}
	if now >= h.expires {
		r.resolve(h, dst, now)
		return h
	}
	if gen := r.macs.gen.Load(); gen != h.gen {
		// Something was learned since: prefer it once the route is known to be ours.
		h.gen = gen
		if mac, ok := r.macs.lookup(key); ok && h.routeOK && h.src.IsValid() {
			h.mac, h.shadow = mac, false
		}
	}
	return h
}

// resolve fills h for dst: the route must be a unicast route leaving through our interface (not
// to a local address, not broadcast or multicast); the Ethernet address is
// the one learned from dst's frames, else the neighbour table's entry for the next hop; without
// either, datagrams go through the shadow socket for a while.
func (r *resolver) resolve(h *nextHop, dst netip.Addr, now int64) {
	key := dst.WithZone("")
	h.gen = r.macs.gen.Load()
	*h = nextHop{gen: h.gen, shadow: true}
	ri, err := r.nl.route(dst, r.ifindex)
	if err != nil || !ri.unicast || ri.oif != r.ifindex {
		h.expires = now + int64(routeTTL)
		return
	}
	h.routeOK = true
	h.src = r.bound
	if h.src.IsUnspecified() {
		h.src = ri.src
	}
	if h.src.IsValid() && h.src.Is4() != dst.Is4() {
		h.src = netip.Addr{}
	}
	if !h.src.IsValid() {
		h.expires = now + int64(routeTTL)
		return
	}
	if mac, ok := r.macs.lookup(key); ok {
		h.mac, h.shadow = mac, false
		h.expires = now + int64(hopTTL)
		return
	}
	via := dst
	if ri.gateway.IsValid() {
		via = ri.gateway
	}
	mac, ok, err := r.nl.neighbour(via, r.ifindex)
	if err != nil || !ok {
		h.expires = now + int64(missTTL)
		return
	}
	h.mac, h.shadow = mac, false
	h.expires = now + int64(hopTTL)
}
