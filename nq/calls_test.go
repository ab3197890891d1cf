package nq

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// testQuarantine is how long abandoned ids stay taken in the tables of these tests, on the
// tests' own clock.
const testQuarantine = 5 * time.Microsecond

// newTestTable returns a table whose timer never fires during the test (deadlines are far in
// the future on the real clock; the test drives expiry itself).
func newTestTable(t *testing.T) *callTable {
	tab := newCallTable(func() {}, testQuarantine)
	t.Cleanup(func() { tab.drain() })
	return &tab
}

// TestCallTableModel runs random adds, completions (in order, out of order, unknown ids) and
// expiries against a plain map and checks that the table agrees at every step: lookups, the
// set of calls each expiry returns, the pending count, and that the id of an expired call is
// not given again during its quarantine unless its late answer came.
func TestCallTableModel(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ops       int
		inOrder   float64 // probability that a completion takes the oldest pending call
		ownDL     float64 // probability that a call has a deadline earlier than the last one
		maxActive int
	}{
		{"in order", 20000, 1, 0, 64},
		{"mixed", 20000, 0.5, 0.1, 300},
		{"random with own deadlines", 20000, 0, 0.5, 1000},
		{"many pending", 40000, 0.9, 0.05, 9000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(tc.ops)))
			tab := newTestTable(t)
			model := map[uint64]call{}
			tombs := map[uint64]int64{} // ids of expired calls: the end of their quarantine
			var order []uint64          // ids in the order they were added
			var clock, lastDL int64 = 1e12, 0
			var prev uint64
			for range tc.ops {
				switch op := rng.IntN(10); {
				case op < 5 && len(model) < tc.maxActive:
					c := call{method: uint32(rng.Uint32())}
					c.id = tab.allocID(prev)
					prev = c.id
					if _, taken := model[c.id]; taken {
						t.Fatalf("id %d allocated while pending", c.id)
					}
					if _, buried := tombs[c.id]; buried {
						t.Fatalf("id %d allocated during its quarantine", c.id)
					}
					if len(model)+len(tombs) < shortIDPending && c.id > maxShortID {
						t.Fatalf("id %d with %d pending: want a two-byte id", c.id, len(model))
					}
					c.deadline = clock + 1000
					if rng.Float64() < tc.ownDL {
						c.deadline = clock + rng.Int64N(1000)
					}
					lastDL = max(lastDL, c.deadline)
					tab.add(c)
					model[c.id] = c
					order = append(order, c.id)
				case op < 8 && len(model) > 0:
					var id uint64
					if rng.Float64() < tc.inOrder {
						for _, ok := model[order[0]]; !ok; _, ok = model[order[0]] {
							order = order[1:]
						}
						id = order[0]
					} else {
						for id = range model {
							break
						}
					}
					if got, ok := tab.remove(id); !ok || !sameCall(got, model[id]) {
						t.Fatalf("remove(%d) = %+v, want %+v", id, got, model[id])
					}
					delete(model, id)
				case op < 9:
					id := uint64(rng.IntN(1 << 15))
					if len(tombs) > 0 && rng.IntN(2) == 0 {
						for id = range tombs { // a late answer to an expired call
							break
						}
					}
					got, ok := tab.remove(id)
					if _, buried := tombs[id]; buried && ok {
						t.Fatalf("remove(%d) of an expired call's id returned %+v", id, got)
					}
					delete(tombs, id)
					if ok && !sameCall(got, model[got.id]) {
						t.Fatalf("remove of an unknown id returned a call not pending")
					} else if ok {
						delete(model, got.id)
					}
				default:
					clock += rng.Int64N(600)
					var want []call
					for _, c := range model {
						if c.deadline <= clock {
							want = append(want, c)
						}
					}
					got := tab.expired(clock)
					byID := func(a, b call) int { return int(a.id) - int(b.id) }
					slices.SortFunc(want, byID)
					slices.SortFunc(got, byID)
					if !slices.EqualFunc(got, want, sameCall) {
						t.Fatalf("expired(%d): got %d calls, want %d", clock, len(got), len(want))
					}
					for id, end := range tombs {
						if end <= clock {
							delete(tombs, id)
						}
					}
					for _, c := range got {
						delete(model, c.id)
						tombs[c.id] = clock + int64(testQuarantine)
					}
				}
				if tab.pending() != len(model) {
					t.Fatalf("pending %d, model %d", tab.pending(), len(model))
				}
				if tab.n != len(model)+len(tombs) {
					t.Fatalf("%d slots in use, model %d calls and %d tombstones", tab.n, len(model), len(tombs))
				}
				if tab.fifoLen > 2*tab.n+minSlots+1 {
					t.Fatalf("FIFO holds %d entries for %d pending calls", tab.fifoLen, tab.n)
				}
			}
			for id, c := range model {
				if sl := tab.lookup(id); sl == nil || !sameCall(*sl, c) {
					t.Fatalf("lookup(%d) lost a pending call", id)
				}
			}
			if got := tab.drain(); len(got) != len(model) {
				t.Fatalf("drain returned %d calls, want %d", len(got), len(model))
			}
		})
	}
}

// sameCall reports whether a and b are the same call (the table sets heapIdx itself).
func sameCall(a, b call) bool {
	return a.id == b.id && a.deadline == b.deadline && a.method == b.method
}

// TestCallTableLongIDs: with more calls pending than two-byte ids can number, ids leave the
// two-byte range and stay unique.
func TestCallTableLongIDs(t *testing.T) {
	tab := newTestTable(t)
	seen := map[uint64]bool{}
	var prev uint64
	for i := range maxShortID + 100 {
		c := call{deadline: int64(i)}
		c.id = tab.allocID(prev)
		prev = c.id
		if seen[c.id] {
			t.Fatalf("id %d given twice", c.id)
		}
		seen[c.id] = true
		tab.add(c)
	}
	if prev <= maxShortID {
		t.Fatalf("last id %d: want ids past %d with %d pending", prev, maxShortID, tab.pending())
	}
}

// BenchmarkCallTable measures one call's add and in-order completion with 32 in flight.
func BenchmarkCallTable(b *testing.B) {
	tab := newCallTable(func() {}, testQuarantine)
	defer tab.drain()
	ids := make([]uint64, 64)
	var prev uint64
	for i := range b.N {
		if i >= 32 {
			tab.remove(ids[(i-32)%len(ids)])
		}
		id := tab.allocID(prev)
		prev = id
		ids[i%len(ids)] = id
		tab.add(call{id: id, deadline: int64(i)})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/call")
}

// TestCallTableTombstoneCap: expiring more calls than maxTombstones at once keeps maxTombstones
// ids in quarantine and frees the rest; a late answer frees its tombstone; tombstones are not
// pending calls and drain returns none.
func TestCallTableTombstoneCap(t *testing.T) {
	tab := newTestTable(t)
	const clock = int64(1e12)
	var prev uint64
	n := maxTombstones + 100
	for i := range n {
		id := tab.allocID(prev)
		prev = id
		tab.add(call{id: id, deadline: clock + int64(i)})
	}
	if got := len(tab.expired(clock + int64(n))); got != n {
		t.Fatalf("expired %d calls, want %d", got, n)
	}
	if tab.pending() != 0 || tab.dead != maxTombstones || tab.n != maxTombstones {
		t.Fatalf("after expiry: %d pending, %d tombstones, %d slots used; want 0, %d, %d",
			tab.pending(), tab.dead, tab.n, maxTombstones, maxTombstones)
	}
	if _, ok := tab.remove(1); ok || tab.dead != maxTombstones-1 {
		t.Fatalf("a late answer to id 1: ok %v, %d tombstones left; want false, %d", ok, tab.dead, maxTombstones-1)
	}
	if got := tab.drain(); len(got) != 0 || tab.n != 0 || tab.dead != 0 {
		t.Fatalf("drain returned %d calls and left %d slots used", len(got), tab.n)
	}
}
