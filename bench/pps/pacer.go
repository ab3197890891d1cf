package main

import (
	"math"
	"time"
)

// paceQuantum is the sending interval a paced sender aims for: it sends once about this much
// time's worth of datagrams is owed (at least one, at most a batch), so bursts stay short and
// slow rates do not cost a system call per datagram.
const paceQuantum = 50 * time.Microsecond

// pacer spreads sends over time at a fixed rate, in batches of at most batch datagrams. A
// sender that falls behind (descheduled, a slow system call) catches up by at most maxDebt
// datagrams; time lost beyond that is not made up, so that no burst larger than that hits the
// receiver's queues (the kernel's per-CPU backlog holds 1000 packets). The achieved rate then
// falls below the asked one, which the caller measures.
type pacer struct {
	rate    float64 // datagrams per second; 0 means unpaced
	batch   int
	quantum int // datagrams owed before a send is due
	maxDebt int
	base    time.Duration // time from which the schedule counts
	sent    int64         // datagrams sent since base
}

// newPacer returns a pacer for rate datagrams per second (0: unpaced) in batches of at most
// batch (>= 1), with at most maxDebt (>= batch) datagrams made up after a stall.
func newPacer(rate float64, batch, maxDebt int) *pacer {
	q := int(rate * paceQuantum.Seconds())
	return &pacer{rate: rate, batch: batch, quantum: min(max(q, 1), batch), maxDebt: max(maxDebt, batch)}
}

// Due returns how many datagrams may be sent at elapsed (time since the start): 0, or between
// the quantum and batch.
func (p *pacer) Due(elapsed time.Duration) int {
	if p.rate == 0 {
		return p.batch
	}
	// The epsilon absorbs floating-point rounding, so that Due is positive at the time Wait
	// named.
	owed := int64(p.rate*(elapsed-p.base).Seconds()+1e-6) - p.sent
	if owed > int64(p.maxDebt) {
		// Forget the time lost: restart the schedule so that maxDebt datagrams are owed now.
		p.base = elapsed - p.span(int64(p.maxDebt))
		p.sent = 0
		owed = int64(p.maxDebt)
	}
	if owed < int64(p.quantum) {
		return 0
	}
	return int(min(owed, int64(p.batch)))
}

// Sent records that n datagrams were sent.
func (p *pacer) Sent(n int) { p.sent += int64(n) }

// Wait returns how long after elapsed the next send is due (0 when one is due now or the
// pacer is unpaced).
func (p *pacer) Wait(elapsed time.Duration) time.Duration {
	if p.rate == 0 {
		return 0
	}
	at := p.base + p.span(p.sent+int64(p.quantum))
	if at <= elapsed {
		return 0
	}
	return at - elapsed
}

// span is the time n datagrams take at the pacer's rate, rounded up to a nanosecond.
func (p *pacer) span(n int64) time.Duration {
	return time.Duration(math.Ceil(float64(n) / p.rate * float64(time.Second)))
}
