// Package memconn is an in-memory network of transport.Conn endpoints with fault injection: loss,
// latency and jitter, reordering, duplication, corruption, bandwidth caps with bounded queues,
// path size limits, write-error bursts and partitions. It is the test bed of naquid and a feature
// for users who want to see how their game behaves on a bad network.
//
// A [Network] holds endpoints bound to any IP addresses the caller names (TEST-NET addresses such
// as 192.0.2.1, loopback, IPv6); nothing touches the host's network stack. Each direction between
// two IP addresses is a link with its own [LinkConfig] and its own random streams derived from
// [Config.Seed], so the fault decisions on a link depend only on the seed and on the datagrams
// written on that link (and, when Bandwidth is set, on when they were written). Delivery times
// follow the clock: run a test under testing/synctest to make delays, and therefore every delivery
// order, exactly reproducible.
//
// Delays need no goroutine per datagram: a network keeps one delivery queue ordered by delivery
// time, served by one timer. Buffers are pooled: a fault-free network delivers without allocating.
//
// Addressing: IPv4-mapped IPv6 addresses are unmapped and zones dropped. A Conn bound to an
// unspecified address (0.0.0.0 or ::, or the zero netip.AddrPort, which means 0.0.0.0) receives
// datagrams sent to any address of its family on its port, and reports the address a datagram was
// sent to in Message.Local. It sends from Message.Local when that is set, else from the loopback
// address of the destination's family. As on Linux without SO_REUSEADDR, a port bound by the
// unspecified address cannot also be bound by a specific address of the same family, nor the
// reverse. A datagram to an address and port nobody is bound to is dropped and counted, as UDP
// does.
package memconn

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/naquid/naquid/transport"
)

// Defaults applied to zero Config fields.
const (
	// DefaultMaxDatagram is the largest datagram payload when Config.MaxDatagram is zero: a
	// 1500-byte Ethernet MTU minus IPv6 and UDP headers, the size quic-go never exceeds.
	DefaultMaxDatagram = 1452
	// DefaultQueueLen is the receive queue bound of each Conn, in datagrams, when Config.QueueLen
	// is zero.
	DefaultQueueLen = 1024
)

// maxUDPPayload is the largest payload a UDP datagram can carry (IPv6, no jumbograms).
const maxUDPPayload = 65527

// Ephemeral port range used when Listen is asked for port 0 (Linux's default).
const (
	ephemeralLow  = 32768
	ephemeralHigh = 60999
)

// Config configures a Network. The zero value is a fault-free network.
type Config struct {
	// Seed seeds every random fault decision. Two networks with the same seed, configuration and
	// writes make the same decisions. Zero is a valid seed.
	Seed uint64
	// MaxDatagram is the largest payload a Conn may write, reported in
	// transport.Capabilities.MaxDatagram; larger datagrams fail with an error matching
	// syscall.EMSGSIZE. Zero means DefaultMaxDatagram (1452); at most 65527.
	MaxDatagram int
	// QueueLen bounds each Conn's receive queue, in datagrams. A datagram arriving at a full
	// queue is dropped and counted (Stats.ReceiveDrops); writers never block. Zero means
	// DefaultQueueLen (1024).
	QueueLen int
	// Link configures every direction that has no configuration of its own (see
	// Network.SetLink). The zero value is a perfect link.
	Link LinkConfig
}

func (c *Config) validate() error {
	if c.MaxDatagram < 0 || c.MaxDatagram > maxUDPPayload {
		return fmt.Errorf("memconn: config: MaxDatagram %d outside [0, %d]", c.MaxDatagram, maxUDPPayload)
	}
	if c.QueueLen < 0 {
		return fmt.Errorf("memconn: config: QueueLen %d is negative", c.QueueLen)
	}
	if err := c.Link.validate(); err != nil {
		return fmt.Errorf("memconn: config: Link.%w", err)
	}
	return nil
}

// Stats counts what a network, or one link of it, did to datagrams. Every datagram a Conn writes
// successfully is counted in Sent; each copy then ends in exactly one of Delivered, Lost,
// Partitioned, TooBig, QueueDrops, ReceiveDrops and Unreachable, or is still InFlight:
//
//	Sent + Duplicated = Delivered + Lost + Partitioned + TooBig + QueueDrops + ReceiveDrops + Unreachable + InFlight
//
// until the Network is closed: Close discards what is in flight without counting it.
type Stats struct {
	// Sent counts datagrams accepted by WriteBatch (each segment counts one).
	Sent uint64
	// Delivered counts datagrams placed in a receive queue.
	Delivered uint64
	// Lost counts datagrams dropped by LinkConfig.Loss.
	Lost uint64
	// Duplicated counts extra copies made by LinkConfig.Duplicate.
	Duplicated uint64
	// Corrupted counts datagrams whose bits were flipped by LinkConfig.Corrupt.
	Corrupted uint64
	// Reordered counts datagrams held back by LinkConfig.Reorder (whether or not a later
	// datagram actually overtook them).
	Reordered uint64
	// Delayed counts datagrams that went through the delay queue instead of being delivered at
	// once.
	Delayed uint64
	// WriteErrors counts messages failed by a write-error burst.
	WriteErrors uint64
	// SizeErrors counts messages failed with EMSGSIZE (larger than Config.MaxDatagram).
	SizeErrors uint64
	// TooBig counts datagrams dropped for exceeding LinkConfig.MaxDatagram.
	TooBig uint64
	// QueueDrops counts datagrams dropped at a full bandwidth queue (LinkConfig.QueueBytes).
	QueueDrops uint64
	// ReceiveDrops counts datagrams dropped at a full receive queue (Config.QueueLen).
	ReceiveDrops uint64
	// Unreachable counts datagrams sent to an address and port nobody was bound to when they
	// arrived.
	Unreachable uint64
	// Partitioned counts datagrams dropped by a partition (at send or at delivery time).
	Partitioned uint64
	// InFlight is the number of datagrams in the delay queue now (a gauge, not a counter).
	InFlight uint64
}

func (s *Stats) add(o *Stats) {
	s.Sent += o.Sent
	s.Delivered += o.Delivered
	s.Lost += o.Lost
	s.Duplicated += o.Duplicated
	s.Corrupted += o.Corrupted
	s.Reordered += o.Reordered
	s.Delayed += o.Delayed
	s.WriteErrors += o.WriteErrors
	s.SizeErrors += o.SizeErrors
	s.TooBig += o.TooBig
	s.QueueDrops += o.QueueDrops
	s.ReceiveDrops += o.ReceiveDrops
	s.Unreachable += o.Unreachable
	s.Partitioned += o.Partitioned
	s.InFlight += o.InFlight
}

// pairKey names an unordered pair of addresses (a partition).
type pairKey struct {
	a, b netip.Addr
}

func newPairKey(a, b netip.Addr) pairKey {
	a, b = normAddr(a), normAddr(b)
	if b.Less(a) {
		a, b = b, a
	}
	return pairKey{a, b}
}

// portKey names a port of one address family, for wildcard bind conflicts.
type portKey struct {
	is4  bool
	port uint16
}

// Network is an in-memory network. Its methods are safe for concurrent use.
type Network struct {
	seed     uint64
	maxDgram int
	queueLen int
	pool     *packetPool

	mu         sync.Mutex
	closed     bool
	defLink    LinkConfig // with defaults applied
	links      map[linkKey]*link
	conns      map[netip.AddrPort]*Conn
	specific   map[portKey]int // Conns bound to a specific address, per family and port
	partitions map[pairKey]struct{}
	cuts       map[linkKey]struct{} // one-way partitions
	nextPort   uint16
	delay      delayQueue
	seq        uint64
	timer      *time.Timer
	timerArmed bool
	timerAt    time.Time
}

// NewNetwork returns an empty network configured by cfg.
func NewNetwork(cfg Config) (*Network, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.MaxDatagram == 0 {
		cfg.MaxDatagram = DefaultMaxDatagram
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	return &Network{
		seed:       cfg.Seed,
		maxDgram:   cfg.MaxDatagram,
		queueLen:   cfg.QueueLen,
		pool:       newPacketPool(cfg.MaxDatagram),
		defLink:    cfg.Link.withDefaults(),
		links:      make(map[linkKey]*link),
		conns:      make(map[netip.AddrPort]*Conn),
		specific:   make(map[portKey]int),
		partitions: make(map[pairKey]struct{}),
		cuts:       make(map[linkKey]struct{}),
		nextPort:   ephemeralLow,
	}, nil
}

// Listen binds a Conn to local. Port 0 picks a free port. Binding an address and port already
// bound (or a specific address on a port bound by the unspecified address of its family, or the
// reverse) fails with an error matching syscall.EADDRINUSE. ctx bounds the setup only.
func (n *Network) Listen(ctx context.Context, local netip.AddrPort) (*Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memconn: listen %s: %w", local, err)
	}
	addr := normAddr(local.Addr())
	if !addr.IsValid() {
		addr = netip.IPv4Unspecified()
	}
	local = netip.AddrPortFrom(addr, local.Port())

	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, fmt.Errorf("memconn: listen %s: %w", local, net.ErrClosed)
	}
	if local.Port() == 0 {
		port, ok := n.freePortLocked(addr)
		if !ok {
			return nil, fmt.Errorf("memconn: listen %s: no free port in [%d, %d]: %w",
				local, ephemeralLow, ephemeralHigh, syscall.EADDRINUSE)
		}
		local = netip.AddrPortFrom(addr, port)
	} else if n.inUseLocked(local) {
		return nil, fmt.Errorf("memconn: listen %s: %w", local, syscall.EADDRINUSE)
	}
	c := newConn(n, local)
	n.conns[local] = c
	if !addr.IsUnspecified() {
		n.specific[portKey{addr.Is4(), local.Port()}]++
	}
	return c, nil
}

// inUseLocked reports whether binding ap would conflict with an existing Conn.
func (n *Network) inUseLocked(ap netip.AddrPort) bool {
	if _, ok := n.conns[ap]; ok {
		return true
	}
	a := ap.Addr()
	if a.IsUnspecified() {
		return n.specific[portKey{a.Is4(), ap.Port()}] > 0
	}
	_, ok := n.conns[netip.AddrPortFrom(unspecified(a), ap.Port())]
	return ok
}

// freePortLocked finds a port in the ephemeral range that addr can bind, scanning from where the
// previous search stopped.
func (n *Network) freePortLocked(addr netip.Addr) (uint16, bool) {
	const span = ephemeralHigh - ephemeralLow + 1
	for range span {
		p := n.nextPort
		n.nextPort++
		if n.nextPort > ephemeralHigh {
			n.nextPort = ephemeralLow
		}
		if !n.inUseLocked(netip.AddrPortFrom(addr, p)) {
			return p, true
		}
	}
	return 0, false
}

// Factory returns a transport.Factory that binds Conns on n.
func (n *Network) Factory() transport.Factory {
	return func(ctx context.Context, local netip.AddrPort) (transport.Conn, error) {
		c, err := n.Listen(ctx, local)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// SetLink configures the direction from -> to, overriding the default link. Datagrams already in
// flight keep the delay they were given.
func (n *Network) SetLink(from, to netip.Addr, cfg LinkConfig) error {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("memconn: set link %s -> %s: %w", from, to, err)
	}
	key := linkKey{normAddr(from), normAddr(to)}
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.linkLocked(key)
	l.setConfig(cfg.withDefaults(), true)
	return nil
}

// ClearLink makes the direction from -> to follow the default link again.
func (n *Network) ClearLink(from, to netip.Addr) {
	key := linkKey{normAddr(from), normAddr(to)}
	n.mu.Lock()
	defer n.mu.Unlock()
	if l, ok := n.links[key]; ok {
		l.setConfig(n.defLink, false)
	}
}

// SetDefaultLink replaces the configuration of every direction not configured by SetLink.
func (n *Network) SetDefaultLink(cfg LinkConfig) error {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("memconn: set default link: %w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.defLink = cfg.withDefaults()
	for _, l := range n.links {
		if !l.override {
			l.setConfig(n.defLink, false)
		}
	}
	return nil
}

// Partition cuts every datagram between a and b, both ways, including those already in flight,
// until Heal(a, b). Partitioning an address from itself cuts its traffic to itself.
func (n *Network) Partition(a, b netip.Addr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.partitions[newPairKey(a, b)] = struct{}{}
}

// Heal undoes Partition(a, b) (in either argument order). Healing a pair that is not partitioned
// does nothing.
func (n *Network) Heal(a, b netip.Addr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.partitions, newPairKey(a, b))
}

// PartitionOneWay cuts every datagram from -> to, including those already in flight, until
// HealOneWay(from, to); the direction to -> from keeps working (an asymmetric failure: a NAT or
// firewall that drops one direction, a radio that still receives but cannot send).
func (n *Network) PartitionOneWay(from, to netip.Addr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cuts[linkKey{normAddr(from), normAddr(to)}] = struct{}{}
}

// HealOneWay undoes PartitionOneWay(from, to). It does not heal a Partition of the pair.
func (n *Network) HealOneWay(from, to netip.Addr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.cuts, linkKey{normAddr(from), normAddr(to)})
}

// Stats returns the sum of the counters of every link.
func (n *Network) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	var s Stats
	for _, l := range n.links {
		s.add(&l.stats)
	}
	return s
}

// LinkStats returns the counters of the direction from -> to (zero if it never carried a
// datagram).
func (n *Network) LinkStats(from, to netip.Addr) Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	if l, ok := n.links[linkKey{normAddr(from), normAddr(to)}]; ok {
		return l.stats
	}
	return Stats{}
}

// Close closes every Conn of the network, discards the datagrams in flight and stops its timer.
// Later Listen calls fail with an error matching net.ErrClosed. It always returns nil; a second
// Close does nothing.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	if n.timer != nil {
		n.timer.Stop()
	}
	n.delay.drain(func(p *packet) {
		p.link.stats.InFlight--
		n.pool.put(p)
	})
	conns := make([]*Conn, 0, len(n.conns))
	for _, c := range n.conns {
		conns = append(conns, c)
	}
	n.mu.Unlock()
	for _, c := range conns {
		_ = c.Close() // always nil
	}
	return nil
}

// linkLocked returns the link for key, creating it with the default configuration.
func (n *Network) linkLocked(key linkKey) *link {
	l, ok := n.links[key]
	if !ok {
		l = newLink(n.seed, key, n.defLink, false)
		n.links[key] = l
	}
	return l
}

// partitionedLocked reports whether traffic in the direction key is cut, by a partition of the
// pair or a one-way partition.
func (n *Network) partitionedLocked(key linkKey) bool {
	if len(n.cuts) > 0 {
		if _, ok := n.cuts[key]; ok {
			return true
		}
	}
	if len(n.partitions) == 0 {
		return false
	}
	_, ok := n.partitions[newPairKey(key.from, key.to)]
	return ok
}

// sendLocked takes one datagram that passed the write checks through the link's faults and
// either delivers it, queues it for later delivery, or drops it.
func (n *Network) sendLocked(now time.Time, l *link, sender *Conn, src, dst netip.AddrPort, payload []byte, ecn transport.ECN) {
	st := &l.stats
	st.Sent++
	cfg := &l.cfg
	switch {
	case n.partitionedLocked(l.key):
		st.Partitioned++
		sender.drops.Add(1)
		return
	case cfg.MaxDatagram > 0 && len(payload) > cfg.MaxDatagram:
		st.TooBig++
		sender.drops.Add(1)
		return
	case l.chance(streamLoss, cfg.Loss):
		st.Lost++
		sender.drops.Add(1)
		return
	}

	delay := cfg.Latency
	if cfg.Bandwidth > 0 {
		start := now
		if l.busy.After(now) {
			start = l.busy
			backlog := float64(l.busy.Sub(now)) * float64(cfg.Bandwidth) / float64(time.Second)
			if backlog+float64(len(payload)) > float64(cfg.QueueBytes) {
				st.QueueDrops++
				sender.drops.Add(1)
				return
			}
		}
		l.busy = start.Add(time.Duration(int64(len(payload)) * int64(time.Second) / cfg.Bandwidth))
		delay += l.busy.Sub(now)
	}
	if cfg.Jitter > 0 {
		delay += time.Duration(l.rnd[streamJitter].Int64N(int64(cfg.Jitter) + 1))
	}
	at := now.Add(delay)
	if l.chance(streamReorder, cfg.Reorder) {
		st.Reordered++
		at = at.Add(cfg.ReorderDelay)
	} else {
		if at.Before(l.last) {
			at = l.last
		}
		l.last = at
	}

	p := n.pool.get(payload)
	p.src, p.dst, p.ecn, p.link = src, dst, ecn, l
	if len(payload) > 0 && l.chance(streamCorrupt, cfg.Corrupt) {
		st.Corrupted++
		l.corrupt(p.buf)
	}
	var dup *packet
	if l.chance(streamDuplicate, cfg.Duplicate) {
		st.Duplicated++
		dup = n.pool.get(p.buf)
		dup.src, dup.dst, dup.ecn, dup.link = src, dst, ecn, l
	}
	for _, q := range [2]*packet{p, dup} {
		if q == nil {
			continue
		}
		if !at.After(now) {
			n.deliverLocked(q)
			continue
		}
		st.Delayed++
		st.InFlight++
		q.at = at
		q.seq = n.seq
		n.seq++
		n.delay.push(q)
	}
	if n.delay.len() > 0 {
		n.armLocked(now)
	}
}

// deliverLocked hands p to the Conn bound to its destination, or drops it.
func (n *Network) deliverLocked(p *packet) {
	st := &p.link.stats
	if n.partitionedLocked(p.link.key) {
		st.Partitioned++
		n.pool.put(p)
		return
	}
	c, ok := n.conns[p.dst]
	if !ok {
		c, ok = n.conns[netip.AddrPortFrom(unspecified(p.dst.Addr()), p.dst.Port())]
	}
	if !ok {
		st.Unreachable++
		n.pool.put(p)
		return
	}
	if !c.enqueue(p) {
		st.ReceiveDrops++
		n.pool.put(p)
		return
	}
	st.Delivered++
}

// runDueLocked delivers every queued datagram whose time has come.
func (n *Network) runDueLocked(now time.Time) {
	for n.delay.len() > 0 && !n.delay.peek().at.After(now) {
		p := n.delay.pop()
		p.link.stats.InFlight--
		n.deliverLocked(p)
	}
}

// armLocked makes sure the timer fires no later than the earliest queued delivery.
func (n *Network) armLocked(now time.Time) {
	if n.delay.len() == 0 {
		return
	}
	at := n.delay.peek().at
	if n.timerArmed && !at.Before(n.timerAt) {
		return
	}
	d := at.Sub(now)
	if n.timer == nil {
		n.timer = time.AfterFunc(d, n.onTimer)
	} else {
		n.timer.Reset(d)
	}
	n.timerArmed, n.timerAt = true, at
}

// onTimer runs on the timer's goroutine: it delivers what is due and re-arms for the rest. A stale
// firing (after a Reset) is harmless: it delivers what is due and re-arms.
func (n *Network) onTimer() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.timerArmed = false
	if n.closed {
		return
	}
	now := time.Now()
	n.runDueLocked(now)
	n.armLocked(now)
}

// normAddr unmaps IPv4-mapped IPv6 addresses and drops zones.
func normAddr(a netip.Addr) netip.Addr {
	return a.Unmap().WithZone("")
}

func normAddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(normAddr(ap.Addr()), ap.Port())
}

// unspecified returns the unspecified address of a's family.
func unspecified(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// loopback returns the loopback address of a's family.
func loopback(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	return netip.IPv6Loopback()
}
