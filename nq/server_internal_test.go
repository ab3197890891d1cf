package nq

import (
	"net/netip"
	"testing"
	"time"
)

func TestAttemptRate(t *testing.T) {
	var r attemptRate
	base := time.Unix(1000, 0)
	for i := 0; i < 100; i++ {
		r.add(base.Add(time.Duration(i) * time.Millisecond))
	}
	if got := r.add(base.Add(500 * time.Millisecond)); got != 101 {
		t.Fatalf("101 attempts within one second counted as %d", got)
	}
	// Half a second into the next second, half of the previous second's attempts still count.
	if got := r.add(base.Add(1500 * time.Millisecond)); got != 1+101/2 {
		t.Fatalf("rate half a second later = %d, want %d", got, 1+101/2)
	}
	// After a gap, nothing old counts.
	if got := r.add(base.Add(10 * time.Second)); got != 1 {
		t.Fatalf("rate after a gap = %d, want 1", got)
	}
}

func TestVerifySourceThreshold(t *testing.T) {
	s := &Server{RetryAbove: 3}
	var retried int
	for i := 0; i < 10; i++ {
		if s.verifySource(nil) {
			retried++
		}
	}
	if retried != 7 || s.retries.Load() != 7 {
		t.Fatalf("10 attempts over a limit of 3: %d retries (counter %d), want 7", retried, s.retries.Load())
	}
	if (&Server{RetryAbove: -1}).verifySource(nil) {
		t.Fatal("RetryAbove < 0 must never ask for Retry")
	}
}

// TestAttemptRateSameSource: Initial packets from one address within sameAttemptWindow count as
// one attempt; another address, or the same one later, counts anew.
func TestAttemptRateSameSource(t *testing.T) {
	var r attemptRate
	base := time.Unix(2000, 0)
	a := netip.MustParseAddrPort("198.51.100.7:4000")
	b := netip.MustParseAddrPort("198.51.100.8:4000")
	steps := []struct {
		addr netip.AddrPort
		at   time.Duration
		want int
	}{
		{a, 0, 1},
		{a, 2 * time.Millisecond, 1}, // the second packet of a's first flight
		{b, 3 * time.Millisecond, 2},
		{a, 50 * time.Millisecond, 2},
		{a, 150 * time.Millisecond, 3}, // a new attempt from a
	}
	for i, st := range steps {
		if got := r.addFrom(st.addr, base.Add(st.at)); got != st.want {
			t.Fatalf("step %d (%v at %v): rate %d, want %d", i, st.addr, st.at, got, st.want)
		}
	}
	// Only the last few sources are remembered: after eight others, a counts again.
	for i := range 8 {
		r.addFrom(netip.AddrPortFrom(netip.MustParseAddr("203.0.113.1"), uint16(5000+i)), base.Add(160*time.Millisecond))
	}
	if got := r.addFrom(a, base.Add(170*time.Millisecond)); got != 12 {
		t.Fatalf("a after eight other sources: rate %d, want 12", got)
	}
}
