package nq

import (
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
