package measure

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRecorderSummarisesAcrossShards(t *testing.T) {
	r := NewRecorder(4)
	var wg sync.WaitGroup
	for s := range 4 {
		wg.Go(func() {
			sh := r.Shard(s)
			for i := 1; i <= 250; i++ {
				sh.Record(time.Duration(s*250+i) * time.Microsecond) // 1..1000 µs overall
			}
			sh.Error()
		})
	}
	wg.Wait()
	n, errs := r.Count()
	if n != 1000 || errs != 4 {
		t.Fatalf("Count = %d, %d; want 1000, 4", n, errs)
	}
	l := r.Latency()
	near := func(name string, got, want time.Duration) {
		t.Helper()
		if d := got - want; d < -want/100 || d > want/100 {
			t.Errorf("%s = %v, want %v within 1%%", name, got, want)
		}
	}
	if l.Count != 1000 {
		t.Errorf("Latency().Count = %d, want 1000", l.Count)
	}
	near("P50", l.P50, 500*time.Microsecond)
	near("P99", l.P99, 990*time.Microsecond)
	near("P999", l.P999, 999*time.Microsecond)
	near("Max", l.Max, 1000*time.Microsecond)

	r.Reset()
	if n, errs := r.Count(); n != 0 || errs != 0 {
		t.Errorf("after Reset, Count = %d, %d", n, errs)
	}
	if l := r.Latency(); l != (Latency{}) {
		t.Errorf("after Reset, Latency = %+v, want zero", l)
	}
}

func TestRecorderClampsOutOfRange(t *testing.T) {
	r := NewRecorder(0) // at least one shard
	r.Shard(-3).Record(-time.Second)
	r.Shard(7).Record(time.Hour)
	l := r.Latency()
	if l.Count != 2 {
		t.Fatalf("Count = %d, want 2", l.Count)
	}
	if l.Max < 59*time.Second || l.Max > 61*time.Second {
		t.Errorf("Max = %v, want about 60s (the clamp)", l.Max)
	}
}

func TestSI(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0, "0.00"}, {7.5, "7.50"}, {12.34, "12.3"}, {999.4, "999"}, {999.7, "1.00k"},
		{45600, "45.6k"}, {1_234_567, "1.23M"}, {999_999_999, "1.00G"}, {2.5e9, "2.50G"},
	} {
		if got := SI(tc.v); got != tc.want {
			t.Errorf("SI(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

func TestProgressPrintsTotalsOnStop(t *testing.T) {
	for _, overwrite := range []bool{false, true} {
		var buf bytes.Buffer
		var mu sync.Mutex
		w := writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return buf.Write(p)
		})
		p := StartProgress(w, "[test]", time.Hour, overwrite, func() (int64, int64) { return 1234, 5 })
		p.Stop()
		p.Stop() // twice is harmless
		mu.Lock()
		out := buf.String()
		mu.Unlock()
		if !strings.Contains(out, "[test]") || !strings.Contains(out, "1234 req") || !strings.Contains(out, "5 err") {
			t.Errorf("overwrite=%v: output %q lacks the label or totals", overwrite, out)
		}
		if overwrite != strings.Contains(out, "\r") {
			t.Errorf("overwrite=%v: output %q", overwrite, out)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestProcessUsage(t *testing.T) {
	u, err := ProcessUsage()
	if err != nil {
		t.Skipf("ProcessUsage: %v", err)
	}
	if u.MaxRSSKiB <= 0 || u.CPU <= 0 {
		t.Errorf("ProcessUsage = %+v, want positive CPU and peak RSS", u)
	}
	if GoMemory() == 0 {
		t.Error("GoMemory = 0")
	}
}
