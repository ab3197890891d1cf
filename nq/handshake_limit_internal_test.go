package nq

import (
	"runtime"
	"testing"
)

func TestHandshakeGateLimits(t *testing.T) {
	for _, tc := range []struct {
		name           string
		max            int
		wantLimit      int64
		wantUnverified int64
	}{
		{"default", 0, int64(max(64*runtime.GOMAXPROCS(0), 128)), int64(max(64*runtime.GOMAXPROCS(0), 128)+1) / 2},
		{"no cap", -1, 0, 0},
		{"one", 1, 1, 1},
		{"odd", 5, 5, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g handshakeGate
			g.setLimit(tc.max)
			if g.limit != tc.wantLimit || g.unverifiedLimit != tc.wantUnverified {
				t.Fatalf("MaxHandshakes %d: limit %d, unvalidated share %d; want %d, %d",
					tc.max, g.limit, g.unverifiedLimit, tc.wantLimit, tc.wantUnverified)
			}
		})
	}
}

// TestHandshakeGateShares checks that unvalidated attempts take at most their share of the slots,
// validated ones the rest, that refusals are counted, and that a slot goes back exactly once.
func TestHandshakeGateShares(t *testing.T) {
	var g handshakeGate
	g.setLimit(4) // 2 slots at most for unvalidated addresses
	u1, u2 := g.acquire(false), g.acquire(false)
	if u1 == nil || u2 == nil {
		t.Fatal("the first two unvalidated attempts were refused")
	}
	if !g.unverifiedFull() {
		t.Fatal("two unvalidated attempts of a cap of 4: the unvalidated share should be full")
	}
	if g.acquire(false) != nil {
		t.Fatal("a third unvalidated attempt got a slot")
	}
	v1, v2 := g.acquire(true), g.acquire(true)
	if v1 == nil || v2 == nil {
		t.Fatal("validated attempts were refused while slots were free")
	}
	if g.acquire(true) != nil {
		t.Fatal("a fifth attempt got a slot of 4")
	}
	if got := g.refused.Load(); got != 2 {
		t.Fatalf("refused = %d, want 2", got)
	}
	u1.release()
	u1.release() // the context hook after the handshake-complete path: no double count
	if g.total.Load() != 3 || g.unverified.Load() != 1 || g.unverifiedFull() {
		t.Fatalf("after one release (twice): total %d, unvalidated %d; want 3, 1", g.total.Load(), g.unverified.Load())
	}
	for _, s := range []*handshakeSlot{u2, v1, v2} {
		s.release()
	}
	if g.total.Load() != 0 || g.unverified.Load() != 0 {
		t.Fatalf("after every release: total %d, unvalidated %d; want 0, 0", g.total.Load(), g.unverified.Load())
	}

	var open handshakeGate
	open.setLimit(-1)
	for range 100 {
		if open.acquire(false) == nil {
			t.Fatal("MaxHandshakes < 0 refused an attempt")
		}
	}
	if open.unverifiedFull() || open.total.Load() != 100 {
		t.Fatalf("without a cap: unvalidated full %v, total %d; want false, 100", open.unverifiedFull(), open.total.Load())
	}
}

// TestVerifySourceWhenSlotsFull checks that once unvalidated attempts hold their share of the
// handshake slots, new ones are asked to Retry even below RetryAbove, unless Retry is off.
func TestVerifySourceWhenSlotsFull(t *testing.T) {
	s := &Server{RetryAbove: 1000}
	s.handshakes.setLimit(2)
	if s.verifySource(nil) {
		t.Fatal("Retry with free slots and a low attempt rate")
	}
	s.handshakes.acquire(false)
	if !s.verifySource(nil) || s.retries.Load() != 1 {
		t.Fatalf("no Retry with the unvalidated share full (retries %d)", s.retries.Load())
	}
	off := &Server{RetryAbove: -1}
	off.handshakes.setLimit(2)
	off.handshakes.acquire(false)
	if off.verifySource(nil) {
		t.Fatal("RetryAbove < 0 must never ask for Retry")
	}
}
