package memconn

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"time"
)

// Defaults applied to zero LinkConfig fields.
const (
	// DefaultReorderDelay is the extra delay of a reordered datagram when LinkConfig.ReorderDelay
	// is zero.
	DefaultReorderDelay = time.Millisecond
	// DefaultQueueBytes is the bandwidth queue bound when LinkConfig.QueueBytes is zero.
	DefaultQueueBytes = 64 << 10
)

// maxCorruptBits bounds LinkConfig.CorruptBits.
const maxCorruptBits = 64

// maxDelay bounds LinkConfig.Latency, Jitter and ReorderDelay, so that delay arithmetic never
// overflows.
const maxDelay = 24 * time.Hour

// ErrInjected is the error a write fails with during a write-error burst when
// LinkConfig.WriteError is nil. It does not match syscall.EMSGSIZE, so quic-go treats it as a
// broken path, as it would a real send error.
var ErrInjected = errors.New("memconn: injected write error")

// LinkConfig describes one direction of the path between two IP addresses. The zero value is a
// perfect link: no delay, no loss, unlimited bandwidth.
//
// A datagram written on a link goes through these steps, in order: the size check against
// Config.MaxDatagram (EMSGSIZE), the write-error burst, a partition, MaxDatagram (path limit),
// Loss, the Bandwidth queue, Latency and Jitter, Reorder, Corrupt, Duplicate. Each probabilistic
// fault draws from its own random stream, so turning one fault on does not change the decisions
// another makes.
type LinkConfig struct {
	// Loss is the probability, in [0, 1], that a datagram is dropped.
	Loss float64
	// Latency is the minimum one-way delay of every datagram. Zero delivers at once. Latency,
	// Jitter and ReorderDelay are each at most 24 hours.
	Latency time.Duration
	// Jitter adds a uniformly random extra delay in [0, Jitter] to each datagram. Datagrams still
	// arrive in the order they were sent (a datagram never overtakes an earlier one) unless
	// Reorder is set.
	Jitter time.Duration
	// Reorder is the probability, in [0, 1], that a datagram is held back by ReorderDelay on top
	// of its normal delay, so that datagrams sent after it may arrive first.
	Reorder float64
	// ReorderDelay is the extra delay of a reordered datagram. Zero means DefaultReorderDelay
	// (1 ms).
	ReorderDelay time.Duration
	// Duplicate is the probability, in [0, 1], that a datagram is delivered twice.
	Duplicate float64
	// Corrupt is the probability, in [0, 1], that a non-empty datagram has bits of its payload
	// flipped. Its length never changes.
	Corrupt float64
	// CorruptBits is the most bits flipped in a corrupted datagram: between 1 and CorruptBits
	// distinct bits, chosen at random, flip (never more than the payload holds). Zero means 1;
	// at most 64.
	CorruptBits int
	// Bandwidth caps the link in payload bytes per second: each datagram occupies the link for
	// its serialization time and later datagrams queue behind it. Zero means unlimited.
	Bandwidth int64
	// QueueBytes bounds the bytes waiting behind the datagram being serialized when Bandwidth is
	// set; a datagram that would exceed it is dropped and counted (Stats.QueueDrops). A datagram
	// reaching an idle link is always accepted. Zero means DefaultQueueBytes (64 KiB).
	QueueBytes int
	// MaxDatagram is the largest payload the path carries. Larger datagrams are dropped silently
	// and counted (Stats.TooBig), as a router drops a too-big packet with DF set; no ICMP error is
	// simulated, so the writer sees success (DPLPMTUD probes are simply lost). Zero means no limit
	// beyond Config.MaxDatagram, whose violations fail the write with EMSGSIZE instead.
	MaxDatagram int
	// WriteErrorsAfter and WriteErrors inject write-error bursts: after WriteErrorsAfter messages
	// written on the link succeed, the next WriteErrors messages fail with WriteError, and the
	// pattern repeats. A failed message sends nothing. WriteErrors zero disables the bursts.
	// Setting the link config (SetLink, ClearLink, SetDefaultLink) restarts the pattern.
	WriteErrorsAfter, WriteErrors int
	// WriteError is the error injected writes fail with (wrapped in a *net.OpError). Nil means
	// ErrInjected.
	WriteError error
}

// validate reports the first invalid field of c.
func (c *LinkConfig) validate() error {
	prob := func(name string, p float64) error {
		if math.IsNaN(p) || p < 0 || p > 1 {
			return fmt.Errorf("%s %v outside [0, 1]", name, p)
		}
		return nil
	}
	nonNeg := func(name string, v int64) error {
		if v < 0 {
			return fmt.Errorf("%s %d is negative", name, v)
		}
		return nil
	}
	for _, err := range []error{
		prob("Loss", c.Loss),
		prob("Reorder", c.Reorder),
		prob("Duplicate", c.Duplicate),
		prob("Corrupt", c.Corrupt),
		nonNeg("Latency", int64(c.Latency)),
		nonNeg("Jitter", int64(c.Jitter)),
		nonNeg("ReorderDelay", int64(c.ReorderDelay)),
		nonNeg("CorruptBits", int64(c.CorruptBits)),
		nonNeg("Bandwidth", c.Bandwidth),
		nonNeg("QueueBytes", int64(c.QueueBytes)),
		nonNeg("MaxDatagram", int64(c.MaxDatagram)),
		nonNeg("WriteErrorsAfter", int64(c.WriteErrorsAfter)),
		nonNeg("WriteErrors", int64(c.WriteErrors)),
	} {
		if err != nil {
			return err
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Latency", c.Latency}, {"Jitter", c.Jitter}, {"ReorderDelay", c.ReorderDelay}} {
		if d.v > maxDelay {
			return fmt.Errorf("%s %v exceeds %v", d.name, d.v, maxDelay)
		}
	}
	if c.CorruptBits > maxCorruptBits {
		return fmt.Errorf("CorruptBits %d exceeds %d", c.CorruptBits, maxCorruptBits)
	}
	return nil
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c LinkConfig) withDefaults() LinkConfig {
	if c.ReorderDelay == 0 {
		c.ReorderDelay = DefaultReorderDelay
	}
	if c.CorruptBits == 0 {
		c.CorruptBits = 1
	}
	if c.QueueBytes == 0 {
		c.QueueBytes = DefaultQueueBytes
	}
	if c.WriteError == nil {
		c.WriteError = ErrInjected
	}
	return c
}

// Random streams of a link, one per probabilistic decision.
const (
	streamLoss = iota
	streamJitter
	streamReorder
	streamDuplicate
	streamCorrupt
	numStreams
)

// linkKey names one direction between two IP addresses.
type linkKey struct {
	from, to netip.Addr
}

// link is the state of one direction. All fields are guarded by Network.mu.
type link struct {
	key      linkKey
	cfg      LinkConfig // with defaults applied
	override bool       // cfg was set by SetLink rather than inherited from the default
	pcg      [numStreams]rand.PCG
	rnd      [numStreams]*rand.Rand
	writes   uint64    // messages counted by the write-error pattern since cfg was set
	busy     time.Time // when the bandwidth-limited link finishes serializing what it holds
	last     time.Time // delivery time of the latest in-order datagram (FIFO floor)
	stats    Stats
}

func newLink(seed uint64, key linkKey, cfg LinkConfig, override bool) *link {
	l := &link{key: key, cfg: cfg, override: override}
	f, t := key.from.As16(), key.to.As16()
	h := mix(seed ^ 0x6d656d636f6e6e00) // "memconn\0"
	for _, b := range [][16]byte{f, t} {
		h = mix(h ^ be64(b[:8]))
		h = mix(h ^ be64(b[8:]))
	}
	for s := range l.pcg {
		s1 := mix(h ^ uint64(s+1))
		l.pcg[s] = *rand.NewPCG(s1, mix(s1))
		l.rnd[s] = rand.New(&l.pcg[s])
	}
	return l
}

// setConfig installs cfg (defaults applied) and restarts the write-error pattern.
func (l *link) setConfig(cfg LinkConfig, override bool) {
	l.cfg = cfg
	l.override = override
	l.writes = 0
}

// chance draws from stream s and reports whether an event of probability p happens. It draws
// nothing when p is 0, so a fault that is off consumes no randomness.
func (l *link) chance(s int, p float64) bool {
	if p <= 0 {
		return false
	}
	return l.rnd[s].Float64() < p
}

// writeFails advances the write-error pattern by one message and reports whether it fails.
func (l *link) writeFails() bool {
	c := &l.cfg
	if c.WriteErrors == 0 {
		return false
	}
	period := uint64(c.WriteErrorsAfter) + uint64(c.WriteErrors)
	pos := l.writes % period
	l.writes++
	return pos >= uint64(c.WriteErrorsAfter)
}

// corrupt flips between 1 and cfg.CorruptBits distinct random bits of p.
func (l *link) corrupt(p []byte) {
	r := l.rnd[streamCorrupt]
	bits := len(p) * 8
	k := 1 + r.IntN(l.cfg.CorruptBits)
	k = min(k, bits)
	var chosen [maxCorruptBits]int
	for i := 0; i < k; {
		b := r.IntN(bits)
		dup := false
		for _, c := range chosen[:i] {
			if c == b {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		chosen[i] = b
		i++
		p[b/8] ^= 1 << (b % 8)
	}
}

// mix is the SplitMix64 finalizer: a bijective scramble of x.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func be64(b []byte) uint64 {
	var v uint64
	for _, c := range b[:8] {
		v = v<<8 | uint64(c)
	}
	return v
}
