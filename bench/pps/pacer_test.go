package main

import (
	"testing"
	"time"
)

// simulate drives a pacer with a fake clock for total time: each loop either sends what is due
// (taking cost per call) or advances the clock by Wait (at least tick). stall, when > 0, makes
// the sender lose that much time once, at stallAt. It returns the datagrams sent and the
// largest single send.
func simulate(t *testing.T, p *pacer, total, cost, tick, stallAt, stall time.Duration) (sent, largest int) {
	t.Helper()
	var now time.Duration
	stalled := false
	for i := 0; i < 10_000_000 && now < total; i++ {
		if stall > 0 && !stalled && now >= stallAt {
			now += stall
			stalled = true
		}
		n := p.Due(now)
		if n == 0 {
			w := p.Wait(now)
			if w <= 0 {
				t.Fatalf("at %v: nothing due and no wait", now)
			}
			now += max(w, tick)
			continue
		}
		if n > p.batch {
			t.Fatalf("at %v: %d due, more than the batch %d", now, n, p.batch)
		}
		p.Sent(n)
		sent += n
		largest = max(largest, n)
		now += cost
	}
	return sent, largest
}

func TestPacerRates(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rate     float64
		batch    int
		cost     time.Duration
		min, max int // datagrams in one simulated second
		largest  int
	}{
		{"100k in quanta of 5", 100e3, 64, time.Microsecond, 99_990, 100_000, 5},
		{"1M in quanta of 50", 1e6, 64, time.Microsecond, 999_900, 1_000_000, 64},
		{"slow rate sends one at a time", 1000, 64, time.Microsecond, 999, 1000, 1},
		{"sender slower than the rate", 1e6, 64, 100 * time.Microsecond, 639_000, 641_000, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPacer(tc.rate, tc.batch, 256)
			sent, largest := simulate(t, p, time.Second, tc.cost, time.Microsecond, 0, 0)
			if sent < tc.min || sent > tc.max {
				t.Errorf("sent %d in 1s, want %d..%d", sent, tc.min, tc.max)
			}
			if largest > tc.largest {
				t.Errorf("largest send %d, want at most %d", largest, tc.largest)
			}
		})
	}
}

func TestPacerStallIsNotMadeUp(t *testing.T) {
	// A 100 ms stall at 1M pps owes 100k datagrams; only maxDebt of them are made up.
	p := newPacer(1e6, 64, 256)
	sent, _ := simulate(t, p, time.Second, 100*time.Nanosecond, time.Microsecond, 300*time.Millisecond, 100*time.Millisecond)
	if sent < 900_000 || sent > 900_000+256+64 {
		t.Errorf("sent %d, want about 900k (the stall's 100k not made up beyond the debt cap)", sent)
	}
}

func TestPacerUnpaced(t *testing.T) {
	p := newPacer(0, 64, 256)
	for _, el := range []time.Duration{0, time.Nanosecond, time.Hour} {
		if n := p.Due(el); n != 64 {
			t.Errorf("Due(%v) = %d, want the batch", el, n)
		}
		if w := p.Wait(el); w != 0 {
			t.Errorf("Wait(%v) = %v, want 0", el, w)
		}
		p.Sent(64)
	}
}

func TestPacerWaitLeadsToDue(t *testing.T) {
	p := newPacer(300e3, 64, 256)
	now := time.Duration(0)
	for i := 0; i < 1000; i++ {
		if n := p.Due(now); n > 0 {
			p.Sent(n)
			continue
		}
		w := p.Wait(now)
		// At most one nanosecond of rounding left after waiting.
		if n := p.Due(now + w + time.Nanosecond); n == 0 {
			t.Fatalf("at %v: waited %v, still nothing due", now, w)
		}
		now += w + time.Nanosecond
	}
}
