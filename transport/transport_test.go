package transport

import "testing"

func TestCountersAdd(t *testing.T) {
	a := Counters{PacketsRead: 1, PacketsWritten: 2, BytesRead: 3, BytesWritten: 4, ReadCalls: 5,
		WriteCalls: 6, Drops: 7, KernelDrops: 8, RingFull: 9, RingEmpty: 10}
	sum := a
	sum.Add(a)
	want := Counters{2, 4, 6, 8, 10, 12, 14, 16, 18, 20}
	if sum != want {
		t.Fatalf("sum %+v, want %+v", sum, want)
	}
}

func TestECNString(t *testing.T) {
	for e, want := range map[ECN]string{ECNNotECT: "Not-ECT", ECNECT1: "ECT(1)", ECNECT0: "ECT(0)", ECNCE: "CE"} {
		if got := e.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", e, got, want)
		}
	}
}
