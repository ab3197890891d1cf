package main

import (
	"math"
	"slices"
	"testing"
	"time"
)

// mkStep makes a one-second step at offered rate with the given sent and received counts.
func mkStep(offered float64, sent, received uint64) step {
	return step{Offered: offered, Sent: sent, Received: received, Elapsed: time.Second,
		ProcCPU: time.Duration(received) * 500, CoreCPU: time.Duration(received) * 800}
}

func TestStepMetrics(t *testing.T) {
	for _, tc := range []struct {
		name           string
		st             step
		sent, recv     float64
		loss, proc     float64
		procUndefined  bool
		corePerPktWant float64
	}{
		{"lossless", mkStep(100e3, 100e3, 100e3), 100e3, 100e3, 0, 500, false, 800},
		{"half lost", mkStep(1e6, 1e6, 5e5), 1e6, 5e5, 0.5, 500, false, 800},
		{"more received than sent counts as no loss", mkStep(1e3, 1000, 1001), 1000, 1001, 0, 500, false, 800},
		{"nothing sent", step{Offered: 1e3, Elapsed: time.Second}, 0, 0, 1, 0, true, 0},
		{"no elapsed time", step{Sent: 5, Received: 5}, 0, 0, 0, 0, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.st
			if got := st.SentRate(); got != tc.sent {
				t.Errorf("SentRate = %v, want %v", got, tc.sent)
			}
			if got := st.RecvRate(); got != tc.recv {
				t.Errorf("RecvRate = %v, want %v", got, tc.recv)
			}
			if got := st.Loss(); math.Abs(got-tc.loss) > 1e-9 {
				t.Errorf("Loss = %v, want %v", got, tc.loss)
			}
			got := st.ProcPerPacket()
			if tc.procUndefined {
				if !math.IsNaN(got) {
					t.Errorf("ProcPerPacket = %v, want NaN", got)
				}
				return
			}
			if st.Received > 0 && (math.Abs(got-tc.proc) > 1e-9 || math.Abs(st.CorePerPacket()-tc.corePerPktWant) > 1e-9) {
				t.Errorf("per packet = %v / %v, want %v / %v", got, st.CorePerPacket(), tc.proc, tc.corePerPktWant)
			}
		})
	}
}

// runSweep drives a sweep with a sender and receiver model: the sender reaches at most
// senderMax, or 0.93 of the offered rate when senderMax is negative; recv(sent) says what
// arrives.
func runSweep(rates, keep []float64, senderMax float64, refine int, recv func(sent float64) float64) []float64 {
	sw := newSweep(rates, keep, refine)
	var got []float64
	for i := 0; i < 100; i++ { // bounded: a sweep never has more steps than rates
		r, ok := sw.Next()
		if !ok {
			break
		}
		got = append(got, r)
		var sent float64
		switch {
		case senderMax < 0 && r > 0:
			sent = 0.93 * r
		case senderMax < 0:
			sent = 1.6e6
		case r > 0:
			sent = min(r, senderMax)
		default:
			sent = senderMax
		}
		sw.Record(mkStep(r, uint64(sent), uint64(recv(sent))))
	}
	return got
}

func TestSweepOrder(t *testing.T) {
	rates := []float64{100e3, 200e3, 400e3, 700e3, 1e6, 1.3e6, 0}
	lossless := func(s float64) float64 { return s }
	capAt := func(c float64) func(float64) float64 { return func(s float64) float64 { return min(s, c) } }
	for _, tc := range []struct {
		name      string
		senderMax float64
		recv      func(float64) float64
		want      []float64
	}{
		{"lossless receiver runs every rate", 1.6e6, lossless, rates},
		{"two lossy rates skip to the reference rate and max", 1.6e6, capAt(250e3),
			[]float64{100e3, 200e3, 400e3, 700e3, 1e6, 0}},
		{"lossy from the start", 1.6e6, capAt(50e3), []float64{100e3, 200e3, 1e6, 0}},
		{"one lossy rate then lossless again does not skip", 1.6e6,
			func(s float64) float64 {
				if s == 400e3 {
					return s * 0.9
				}
				return s
			}, rates},
		{"sender-limited skips higher paced rates", 450e3, lossless,
			[]float64{100e3, 200e3, 400e3, 700e3, 1e6, 0}},
		{"a sender short of every rate but getting faster is not limited", -1, lossless, rates},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := runSweep(rates, []float64{1e6}, tc.senderMax, 0, tc.recv)
			if !slices.Equal(got, tc.want) {
				t.Errorf("rates %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSweepKeepsEveryReferenceRate(t *testing.T) {
	rates := []float64{100e3, 200e3, 400e3, 700e3, 1e6, 1.3e6, 0}
	got := runSweep(rates, []float64{1e6, 1.3e6}, 1.6e6, 0, func(s float64) float64 { return min(s, 50e3) })
	if want := []float64{100e3, 200e3, 1e6, 1.3e6, 0}; !slices.Equal(got, want) {
		t.Errorf("rates %v, want %v", got, want)
	}
}

func TestSweepRefine(t *testing.T) {
	rates := []float64{100e3, 200e3, 400e3, 700e3, 1e6, 1.3e6, 0}
	grid := []float64{100e3, 200e3, 400e3, 700e3, 1e6, 0}
	capAt := func(c float64) func(float64) float64 { return func(s float64) float64 { return min(s, c) } }
	for _, tc := range []struct {
		name   string
		refine int
		recv   func(float64) float64
		want   []float64
	}{
		{"bisects between 400k and 700k", 3, capAt(550e3), append(slices.Clone(grid), 550e3, 625e3, 588e3)},
		{"stops when the bracket is narrow", 10, capAt(550e3),
			append(slices.Clone(grid), 550e3, 625e3, 588e3, 569e3)},
		{"no refinement asked", 0, capAt(550e3), grid},
		{"nothing to refine when no rate is lossy", 3, func(s float64) float64 { return s }, rates},
		{"nothing to refine when every rate is lossy", 3, capAt(10e3), []float64{100e3, 200e3, 1e6, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := runSweep(rates, []float64{1e6}, 1.6e6, tc.refine, tc.recv)
			if !slices.Equal(got, tc.want) {
				t.Errorf("rates %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBracket(t *testing.T) {
	steps := []step{
		mkStep(100e3, 100e3, 90e3), // lossy below the capacity (noise): ignored as an upper bound
		mkStep(400e3, 400e3, 400e3),
		mkStep(1e6, 900e3, 500e3), // the sender reached 900k: that is where loss was seen
		mkStep(700e3, 700e3, 600e3),
	}
	if lo, hi := bracket(steps); lo != 400e3 || hi != 700e3 {
		t.Errorf("bracket = %v, %v; want 400k, 700k", lo, hi)
	}
	if lo, hi := bracket(nil); lo != 0 || hi != 0 {
		t.Errorf("empty bracket = %v, %v", lo, hi)
	}
}

func TestSweepEmptyAndSingle(t *testing.T) {
	if _, ok := newSweep(nil, []float64{1e6}, 3).Next(); ok {
		t.Error("empty sweep returned a rate")
	}
	sw := newSweep([]float64{0}, []float64{1e6}, 3)
	if r, ok := sw.Next(); !ok || r != 0 {
		t.Errorf("Next = %v, %v; want max", r, ok)
	}
	if _, ok := sw.Next(); ok {
		t.Error("sweep of one rate returned two")
	}
}

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		name               string
		steps              []step
		capacity           float64
		senderBound        bool
		overSent, overRecv float64
		procAtRef          float64 // NaN: not measured
	}{
		{
			name: "receiver limit",
			steps: []step{mkStep(100e3, 100e3, 100e3), mkStep(400e3, 400e3, 398e3),
				mkStep(1e6, 1e6, 500e3), mkStep(0, 1.5e6, 450e3)},
			capacity: 400e3, overSent: 1.5e6, overRecv: 450e3, procAtRef: 500,
		},
		{
			name:     "sender-bound",
			steps:    []step{mkStep(100e3, 100e3, 100e3), mkStep(1e6, 1e6, 1e6), mkStep(0, 1.4e6, 1.4e6)},
			capacity: 1.4e6, senderBound: true, overSent: 1.4e6, overRecv: 1.4e6, procAtRef: 500,
		},
		{
			name: "refinement steps after the overload step",
			steps: []step{mkStep(400e3, 400e3, 400e3), mkStep(700e3, 700e3, 500e3), mkStep(0, 1.5e6, 450e3),
				mkStep(550e3, 550e3, 550e3), mkStep(625e3, 625e3, 560e3)},
			capacity: 550e3, overSent: 1.5e6, overRecv: 450e3, procAtRef: math.NaN(),
		},
		{
			name:     "paced only: the highest rate is the overload",
			steps:    []step{mkStep(700e3, 700e3, 500e3), mkStep(1e6, 1e6, 400e3), mkStep(550e3, 550e3, 550e3)},
			capacity: 550e3, overSent: 1e6, overRecv: 400e3, procAtRef: 500,
		},
		{
			name: "overload at the overload rate, not at max",
			steps: []step{mkStep(400e3, 400e3, 400e3), mkStep(1.3e6, 1.3e6, 300e3), mkStep(0, 1.5e6, 200e3),
				mkStep(550e3, 550e3, 550e3)},
			capacity: 550e3, overSent: 1.3e6, overRecv: 300e3, procAtRef: math.NaN(),
		},
		{
			name:     "lossy everywhere",
			steps:    []step{mkStep(100e3, 100e3, 90e3), mkStep(0, 1e6, 100e3)},
			capacity: 0, overSent: 1e6, overRecv: 100e3, procAtRef: math.NaN(),
		},
		{
			name:      "no steps",
			procAtRef: math.NaN(),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := summarize(tc.steps, 1e6, 1.3e6)
			if s.Capacity != tc.capacity || s.SenderBound != tc.senderBound {
				t.Errorf("capacity %v sender-bound %v, want %v %v", s.Capacity, s.SenderBound, tc.capacity, tc.senderBound)
			}
			if s.OverloadSent != tc.overSent || s.OverloadRecv != tc.overRecv {
				t.Errorf("overload %v of %v, want %v of %v", s.OverloadRecv, s.OverloadSent, tc.overRecv, tc.overSent)
			}
			if math.IsNaN(tc.procAtRef) != math.IsNaN(s.ProcAtRef) || (!math.IsNaN(tc.procAtRef) && s.ProcAtRef != tc.procAtRef) {
				t.Errorf("CPU at reference %v, want %v", s.ProcAtRef, tc.procAtRef)
			}
		})
	}
}

func TestCoreBusy(t *testing.T) {
	if got := mkStep(1e6, 1e6, 1e6).CoreBusy(); math.Abs(got-0.8) > 1e-9 {
		t.Errorf("CoreBusy = %v, want 0.8", got)
	}
	if got := (step{}).CoreBusy(); got != 0 {
		t.Errorf("CoreBusy without time = %v", got)
	}
}

func TestTxResult(t *testing.T) {
	r := txResult{Sent: 2e6, Bytes: 2e6 * 1200, Elapsed: 2 * time.Second, CPU: time.Second, Delivered: 1e6}
	if r.PPS() != 1e6 || r.Gbps() != 9.6 || r.CPUPerPacket() != 500 || r.DeliveredPPS() != 5e5 {
		t.Errorf("pps %v Gbit/s %v cpu %v delivered %v", r.PPS(), r.Gbps(), r.CPUPerPacket(), r.DeliveredPPS())
	}
	var zero txResult
	if zero.PPS() != 0 || zero.Gbps() != 0 || !math.IsNaN(zero.CPUPerPacket()) {
		t.Errorf("zero result: pps %v Gbit/s %v cpu %v", zero.PPS(), zero.Gbps(), zero.CPUPerPacket())
	}
}

func TestWorthRetry(t *testing.T) {
	for _, tc := range []struct {
		st   step
		want bool
	}{
		{mkStep(100e3, 100e3, 100e3), false},  // no loss
		{mkStep(100e3, 100e3, 99.5e3), false}, // below 1%
		{mkStep(100e3, 100e3, 95e3), true},
		{mkStep(700e3, 700e3, 360e3), true},
		{mkStep(1e6, 1e6, 300e3), false}, // most lost: the receiver's limit
		{mkStep(0, 1e6, 900e3), false},   // unpaced: the overload step
	} {
		if got := worthRetry(tc.st); got != tc.want {
			t.Errorf("offered %v loss %.3f: worthRetry = %v, want %v", tc.st.Offered, tc.st.Loss(), got, tc.want)
		}
	}
}
