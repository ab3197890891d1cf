package main

import (
	"math"
	"slices"
	"time"
)

// Thresholds of the sweep.
const (
	// lossLimit is the loss below which a step counts as received without loss (the capacity
	// criterion: < 1%).
	lossLimit = 0.01
	// lossyRun is how many consecutive lossy steps make the sweep skip the remaining paced rates
	// (except the CPU reference rate) and go to the overload step.
	lossyRun = 2
	// senderShortfall and senderProgress: a paced step whose achieved rate is below
	// senderShortfall of the offered rate, and not above senderProgress times the best rate
	// achieved before, shows that the sender cannot go faster; higher paced rates are then
	// skipped.
	senderShortfall = 0.95
	// retryBelow: a paced step that lost at least lossLimit but less than this is measured
	// again (see options.Retries).
	retryBelow     = 0.5
	senderProgress = 1.05
)

// step is one measured interval of a receive sweep: the sender sent at a paced (or unpaced)
// rate for a while, the receiver counted what arrived.
type step struct {
	// Offered is the paced rate asked of the sender in packets per second; 0 means unpaced.
	Offered float64
	// Sent is the number of datagrams the sender handed to the network, Received the number the
	// receiver delivered to the application.
	Sent, Received uint64
	// Elapsed is how long the sender sent.
	Elapsed time.Duration
	// ProcCPU is the CPU time of the receiver process plus its pinned NAPI thread (when XDP is
	// attached), NAPICPU the NAPI thread's share of it (the kernel's receive work, which the
	// receiver does not choose); CoreCPU is the busy time of the receiver's core from /proc/stat
	// (everything on that core: the receiver, softirq work, and any other load).
	ProcCPU, NAPICPU, CoreCPU time.Duration
}

// SentRate is the achieved offered rate in packets per second.
func (s step) SentRate() float64 { return perSecond(s.Sent, s.Elapsed) }

// RecvRate is the received rate in packets per second.
func (s step) RecvRate() float64 { return perSecond(s.Received, s.Elapsed) }

// Loss is the fraction of sent datagrams that were not received (1 when nothing was sent).
func (s step) Loss() float64 {
	if s.Sent == 0 {
		return 1
	}
	if s.Received >= s.Sent {
		return 0
	}
	return 1 - float64(s.Received)/float64(s.Sent)
}

// CoreBusy is the share of the step's time the receiver's core was busy.
func (s step) CoreBusy() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return s.CoreCPU.Seconds() / s.Elapsed.Seconds()
}

// ProcPerPacket is ProcCPU per received datagram in nanoseconds (NaN when none arrived).
func (s step) ProcPerPacket() float64 { return nsPer(s.ProcCPU, s.Received) }

// AppPerPacket is the receiver process's own CPU time (ProcCPU without the NAPI thread) per
// received datagram in nanoseconds (NaN when none arrived).
func (s step) AppPerPacket() float64 { return nsPer(s.ProcCPU-s.NAPICPU, s.Received) }

// CorePerPacket is CoreCPU per received datagram in nanoseconds (NaN when none arrived).
func (s step) CorePerPacket() float64 { return nsPer(s.CoreCPU, s.Received) }

func perSecond(n uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func nsPer(d time.Duration, n uint64) float64 {
	if n == 0 {
		return math.NaN()
	}
	return float64(d.Nanoseconds()) / float64(n)
}

// sweep chooses the offered rates of a receive sweep. It walks the configured rates in order,
// but once the receiver has lost packets at lossyRun consecutive rates, or the sender fell
// short of a paced rate without getting faster than at the previous rates, it skips the
// remaining paced rates (they tell nothing new and cost seconds each) except the reference
// rates (CPU and overload comparisons), and always measures the last configured rate ("max").
// Then it refines the capacity: up to refine more steps bisect between the highest rate
// received without loss and the lowest lossy rate above it, until they are within refineGap.
type sweep struct {
	rates   []float64
	keep    []float64 // reference rates (CPU, overload), never skipped
	refine  int       // bisection steps left
	next    int       // index of the next rate to consider
	lossy   int       // consecutive lossy steps so far
	best    float64   // the best achieved rate so far
	limited bool      // the sender stopped getting faster
	steps   []step    // what was recorded
}

// refineGap ends the bisection: the capacity is known within this fraction.
const refineGap = 0.05

func newSweep(rates, keep []float64, refine int) *sweep {
	return &sweep{rates: rates, keep: keep, refine: refine}
}

// Next returns the next rate to measure, or false when the sweep is over.
func (s *sweep) Next() (float64, bool) {
	for s.next < len(s.rates) {
		r := s.rates[s.next]
		s.next++
		last := s.next == len(s.rates)
		if last || slices.Contains(s.keep, r) || (s.lossy < lossyRun && !s.limited) {
			return r, true
		}
	}
	if s.refine <= 0 {
		return 0, false
	}
	lo, hi := bracket(s.steps)
	if lo <= 0 || hi <= lo*(1+refineGap) {
		return 0, false
	}
	s.refine--
	return math.Round((lo+hi)/2/1000) * 1000, true
}

// Record tells the sweep what the last step measured.
func (s *sweep) Record(st step) {
	s.steps = append(s.steps, st)
	if st.Loss() >= lossLimit {
		s.lossy++
	} else {
		s.lossy = 0
	}
	r := st.SentRate()
	if st.Offered > 0 && r < senderShortfall*st.Offered && r <= senderProgress*s.best {
		s.limited = true
	}
	s.best = max(s.best, r)
}

// bracket returns the highest achieved rate received without loss (lo) and the lowest rate
// above it at which datagrams were lost (hi: the achieved rate, or the offered one when the
// sender fell short of it), or 0 for what is unknown.
func bracket(steps []step) (lo, hi float64) {
	for _, st := range steps {
		if st.Loss() < lossLimit {
			lo = max(lo, st.SentRate())
		}
	}
	for _, st := range steps {
		if st.Loss() < lossLimit {
			continue
		}
		r := st.SentRate()
		if r > lo && (hi == 0 || r < hi) {
			hi = r
		}
	}
	return lo, hi
}

// worthRetry reports whether a step's loss may be due to other load on the machine rather than
// the receiver's limit: a paced step that lost some, but not most, of what was sent.
func worthRetry(st step) bool {
	l := st.Loss()
	return st.Offered > 0 && l >= lossLimit && l < retryBelow
}

// rxSummary condenses the sweep of one receiver at one payload size.
type rxSummary struct {
	// Capacity is the highest achieved offered rate received with less than 1% loss (0 when
	// every step lost more).
	Capacity float64
	// SenderBound reports that no step lost 1% or more: the capacity is at least the sender's
	// best rate, not the receiver's limit.
	SenderBound bool
	// OverloadSent and OverloadRecv are the achieved offered and received rates of the step at
	// the overload reference rate (of the step with the highest offered load when that rate
	// was not measured).
	OverloadSent, OverloadRecv float64
	// ProcAtRef, AppAtRef and CoreAtRef are the CPU times per received datagram (ns) at the CPU
	// reference rate (see step); NaN when that rate was not measured or nothing arrived.
	ProcAtRef, AppAtRef, CoreAtRef float64
}

// summarize computes a receiver's summary from its steps (in the order measured) and the CPU and
// overload reference rates.
func summarize(steps []step, cpuRate, overloadRate float64) rxSummary {
	sum := rxSummary{ProcAtRef: math.NaN(), AppAtRef: math.NaN(), CoreAtRef: math.NaN(), SenderBound: len(steps) > 0}
	for _, st := range steps {
		if st.Loss() < lossLimit {
			sum.Capacity = max(sum.Capacity, st.SentRate())
		} else {
			sum.SenderBound = false
		}
		if st.Offered == cpuRate {
			sum.ProcAtRef, sum.AppAtRef, sum.CoreAtRef = st.ProcPerPacket(), st.AppPerPacket(), st.CorePerPacket()
		}
	}
	if i := overloadStep(steps, overloadRate); i >= 0 {
		sum.OverloadSent, sum.OverloadRecv = steps[i].SentRate(), steps[i].RecvRate()
	}
	return sum
}

// overloadStep returns the index of the step at rate, else of the step with the highest offered
// load: the last unpaced one, else the one with the highest paced rate (-1 without steps).
func overloadStep(steps []step, rate float64) int {
	for i, st := range steps {
		if st.Offered == rate {
			return i
		}
	}
	best := -1
	for i, st := range steps {
		switch {
		case best < 0, st.Offered == 0:
			best = i
		case steps[best].Offered != 0 && st.Offered > steps[best].Offered:
			best = i
		}
	}
	return best
}

// txResult is one send test: a sender sending unpaced for a while.
type txResult struct {
	// Sent is the number of datagrams the sender handed to the network, Bytes their payload.
	Sent, Bytes uint64
	// Elapsed is how long it sent.
	Elapsed time.Duration
	// CPU is the sender process's CPU time.
	CPU time.Duration
	// Delivered is the number of datagrams the receiver got.
	Delivered uint64
}

// PPS is the send rate in packets per second.
func (t txResult) PPS() float64 { return perSecond(t.Sent, t.Elapsed) }

// Gbps is the payload throughput in Gbit/s.
func (t txResult) Gbps() float64 {
	if t.Elapsed <= 0 {
		return 0
	}
	return float64(t.Bytes) * 8 / t.Elapsed.Seconds() / 1e9
}

// CPUPerPacket is the sender's CPU time per sent datagram in nanoseconds.
func (t txResult) CPUPerPacket() float64 { return nsPer(t.CPU, t.Sent) }

// DeliveredPPS is the rate at which datagrams reached the receiver.
func (t txResult) DeliveredPPS() float64 { return perSecond(t.Delivered, t.Elapsed) }
