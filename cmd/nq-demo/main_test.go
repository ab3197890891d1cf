package main

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	for _, kind := range []string{"memconn", "udp", "mmsg"} {
		t.Run(kind, func(t *testing.T) {
			var out bytes.Buffer
			cfg := config{Transport: kind, Conns: 3, Calls: 101, Window: 8, Compare: true, Timeout: 20 * time.Second}
			if err := run(context.Background(), cfg, &out); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			t.Logf("\n%s", out.String())
			for _, want := range []string{"transport " + kind, "3 connections x 101 calls", "\nnq\n", "\nquic-go echo\n",
				"calls      303 of 303", "req/s", "p50", "p999", "us per call", "of it in the kernel", "frames per QUIC packet", "ratio nq/quic-go req/s"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("report lacks %q", want)
				}
			}
		})
	}
}

// TestRunRounds: with Rounds, both workloads run again in alternating order, each later round
// prints its ratio, and the last line is their median.
func TestRunRounds(t *testing.T) {
	var out bytes.Buffer
	cfg := config{Transport: "memconn", Conns: 2, Calls: 50, Window: 4, Compare: true, Rounds: 3, Timeout: 20 * time.Second}
	if err := run(context.Background(), cfg, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	report := out.String()
	for _, want := range []string{"round 2 ", "(quic-go first)", "round 3 ", "(nq first)", "(median of 3 rounds)"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if strings.Contains(report, "round 4") {
		t.Errorf("report has a fourth round:\n%s", report)
	}
}

func TestMedian(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{0.9, 0.7, 0.8}, 0.8},
		{[]float64{1, 4, 2, 3}, 2.5},
	} {
		if got := median(append([]float64(nil), tt.in...)); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestRunTimeoutReportsPartialResults(t *testing.T) {
	var out bytes.Buffer
	cfg := config{Transport: "memconn", Conns: 2, Calls: 5_000_000, Window: 1, Timeout: 500 * time.Millisecond}
	start := time.Now()
	err := run(context.Background(), cfg, &out)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("run = %v, want a deadline error\n%s", err, out.String())
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("run took %v after a 500ms timeout", d)
	}
	m := regexp.MustCompile(`calls +(\d+) of 10000000`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no request count in the report:\n%s", out.String())
	}
	if done, _ := strconv.Atoi(m[1]); done >= cfg.Conns*cfg.Calls {
		t.Errorf("%d requests completed before the timeout", done)
	}
	// Packets are counted per completed call: one call in flight takes at least a packet each
	// way (it was divided by the planned calls, which gave 0.009 here).
	p := regexp.MustCompile(`packets +([0-9.]+) per call`).FindStringSubmatch(out.String())
	if p == nil {
		t.Fatalf("no packet count in the report:\n%s", out.String())
	}
	if perCall, _ := strconv.ParseFloat(p[1], 64); perCall < 1 {
		t.Errorf("%v packets per completed call with one call in flight, want at least 1", perCall)
	}
}

func TestFailedRoundReportsCompletedRounds(t *testing.T) {
	var out bytes.Buffer
	cfg := config{Conns: 2, Calls: 10, Rounds: 5}
	res := &result{name: "nq", elapsed: time.Second, latencies: []time.Duration{time.Millisecond}}
	want := errors.New("round failed")
	if err := failedRound(&out, cfg, 3, res, []float64{0.9, 1.1}, want); err != want {
		t.Fatalf("failedRound = %v, want its error", err)
	}
	for _, line := range []string{"round 3    failed", "calls      1 of 20", "ratio nq/quic-go req/s 1.00 (median of the 2 completed rounds of 5)"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("report lacks %q:\n%s", line, out.String())
		}
	}
}

func TestDefaultTimeoutScalesWithWork(t *testing.T) {
	for _, tt := range []struct {
		cfg  config
		want time.Duration
	}{
		{config{}, defaultTimeout},
		{config{Conns: 10, Calls: 20000}, defaultTimeout}, // less work than the default
		{config{Calls: 20000, Rounds: 7}, 467 * time.Second},
		{config{Calls: 20000, Rounds: 7, Timeout: time.Minute}, time.Minute}, // set: kept
		{config{Conns: 100000, Calls: 1000000000, Rounds: 100}, maxTimeout},  // no overflow
	} {
		if got := tt.cfg.withDefaults().Timeout; got != tt.want {
			t.Errorf("%+v: timeout %v, want %v", tt.cfg, got, tt.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg   config
		field string
	}{
		{config{Transport: "tcp"}, "transport"},
		{config{Conns: -1}, "connections"},
		{config{Calls: -5}, "calls"},
		{config{Window: -2}, "window"},
		{config{Size: 4}, "size"},
		{config{Size: 70000}, "size"},
		{config{Timeout: -time.Second}, "timeout"},
		{config{Rounds: -1}, "rounds"},
	}
	for _, tt := range tests {
		err := run(context.Background(), tt.cfg, &bytes.Buffer{})
		if !errors.Is(err, errConfig) || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("run(%+v) = %v, want a config error naming %q", tt.cfg, err, tt.field)
		}
	}
	if err := (config{}).withDefaults().validate(); err != nil {
		t.Errorf("defaults invalid: %v", err)
	}
}
