package main

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// sampleResults is a run whose ratios are known: at 64 B udp holds 400k, mmsg 600k, afxdp 1.4M
// (sender-bound), asavie 1M; with GRO on the link udp holds 300k and mmsg 1.2M.
func sampleResults() *results {
	rx := func(name string, capacity, overload, cpuNs, napiNs float64) rxRun {
		steps := []step{
			{Offered: 100e3, Sent: 100e3, Received: 100e3, Elapsed: time.Second},
			{Offered: capacity, Sent: uint64(capacity), Received: uint64(capacity), Elapsed: time.Second},
			{Offered: 1e6, Sent: 1e6, Received: uint64(min(capacity, 1e6)), Elapsed: time.Second,
				ProcCPU: time.Duration(cpuNs * min(capacity, 1e6)), NAPICPU: time.Duration(napiNs * min(capacity, 1e6))},
			{Offered: 0, Sent: 1.4e6, Received: uint64(overload), Elapsed: time.Second},
		}
		return rxRun{Receiver: name, Size: 64, Steps: steps}
	}
	tx := func(name string, pps float64) txRun {
		return txRun{Sender: name, Size: 64, Result: txResult{Sent: uint64(pps), Bytes: uint64(pps) * 64,
			Elapsed: time.Second, CPU: time.Second / 2, Delivered: uint64(pps)}}
	}
	return &results{
		CPURate:      1e6,
		OverloadRate: 1.3e6,
		RX: []rxRun{
			rx(nameUDP, 400e3, 200e3, 1500, 0),
			rx(nameMmsg, 600e3, 500e3, 1000, 0),
			rx(nameUDPNAPI, 300e3, 250e3, 1800, 900),
			rx(nameMmsgNAPI, 1.2e6, 1.1e6, 500, 300),
			rx(nameAFXDP, 1.4e6, 1.4e6, 600, 450),
			rx(nameAsavie, 1e6, 900e3, 1000, 700),
		},
		TX: []txRun{tx(nameUDP, 800e3), tx(nameMmsg, 900e3), tx(nameAFXDP, 1.6e6)},
	}
}

func TestRatios(t *testing.T) {
	want := map[string]float64{
		"mmsg/udp rx-64":                  1.5,
		"mmsg/udp tx-64":                  1.125,
		"mmsg/udp overload-64":            2.5,
		"mmsg-napi/udp-napi rx-64":        4,
		"mmsg-napi/udp-napi overload-64":  4.4,
		"afxdp/udp rx-64":                 3.5,
		"afxdp/asavie rx-64":              1.4,
		"afxdp/asavie cpu-per-pkt-64":     0.6,
		"afxdp/asavie app-cpu-per-pkt-64": 0.5,
		"afxdp/udp tx-64":                 2,
	}
	got := sampleResults().ratios()
	if len(got) != len(want) {
		t.Fatalf("%d ratios, want %d", len(got), len(want))
	}
	for _, r := range got {
		w, ok := want[r.Name()]
		if !ok {
			t.Errorf("unexpected ratio %q", r.Name())
			continue
		}
		if math.Abs(r.Value-w) > 1e-9 {
			t.Errorf("%s = %v, want %v", r.Name(), r.Value, w)
		}
		if !r.Met() {
			t.Errorf("%s = %v does not meet its goal %v", r.Name(), r.Value, r.Goal)
		}
	}
}

func TestRatioMissingSide(t *testing.T) {
	r := sampleResults()
	r.RX = r.RX[:5] // no asavie
	r.TX = nil
	for _, q := range r.ratios() {
		missing := q.B == nameAsavie || q.Metric == "tx"
		if missing != math.IsNaN(q.Value) {
			t.Errorf("%s = %v; missing side: %v", q.Name(), q.Value, missing)
		}
		if missing && q.Met() {
			t.Errorf("%s: an unknown value meets its goal", q.Name())
		}
	}
}

func TestRatioMet(t *testing.T) {
	for _, tc := range []struct {
		r    ratio
		want bool
	}{
		{ratio{Value: 1.4, Goal: 1.4}, true},
		{ratio{Value: 1.39, Goal: 1.4}, false},
		{ratio{Value: 0.8, Goal: 0.8, Lower: true}, true},
		{ratio{Value: 0.81, Goal: 0.8, Lower: true}, false},
		{ratio{Value: math.NaN(), Goal: 0.8, Lower: true}, false},
	} {
		if got := tc.r.Met(); got != tc.want {
			t.Errorf("%+v: Met = %v, want %v", tc.r, got, tc.want)
		}
	}
}

func TestWriteReport(t *testing.T) {
	r := sampleResults()
	r.note("whole run  took\n3m.")
	var buf bytes.Buffer
	if err := r.write(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, s := range []string{
		"## Receive sweep", "## Receive summary", "## Send", "## Goals at 64 B",
		"| 64 B | udp | 100k | 100k | 100k | 0.0% |",
		"| 0.0% |\n",
		"| 64 B | afxdp | >= 1.40M (sender-bound) | 1.40M (1.40M) | 1.00 |",
		"| 64 B | udp | 400k | 200k (1.40M) | 0.50 | 1500 |",
		"| 64 B | afxdp | 1.60M | 0.82 | 312 | 1.60M |",
		"| afxdp/asavie cpu-per-pkt-64 | 0.600 | <= 0.80 | yes |",
		"| afxdp/asavie app-cpu-per-pkt-64 | 0.500 | <= 0.80 | yes |",
		"| 64 B | afxdp | 1M | 1.00M | 1.00M | 0.0% | 600 | 150 |",
		"| afxdp overload/capacity-64 | 1.000 | >= 0.90 | yes |",
		"- whole run took 3m.\n",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("report lacks %q:\n%s", s, out)
		}
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	wantLast := []string{
		"ratio mmsg/udp rx-64 1.50",
		"ratio mmsg/udp tx-64 1.12",
		"ratio mmsg/udp overload-64 2.50",
		"ratio mmsg-napi/udp-napi rx-64 4.00",
		"ratio mmsg-napi/udp-napi overload-64 4.40",
		"ratio afxdp/udp rx-64 3.50",
		"ratio afxdp/asavie rx-64 1.40",
		"ratio afxdp/asavie cpu-per-pkt-64 0.60",
		"ratio afxdp/asavie app-cpu-per-pkt-64 0.50",
		"ratio afxdp/udp tx-64 2.00",
	}
	if len(lines) < len(wantLast) {
		t.Fatalf("report too short:\n%s", out)
	}
	tail := lines[len(lines)-len(wantLast):]
	for i := range wantLast {
		if tail[i] != wantLast[i] {
			t.Errorf("line %d from the end: %q, want %q", len(wantLast)-i, tail[i], wantLast[i])
		}
	}
}

func TestWriteReportEmptyAndUnknown(t *testing.T) {
	var buf bytes.Buffer
	r := &results{CPURate: 1e6, OverloadRate: 1.3e6}
	if err := r.write(&buf); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "## Receive") || !strings.Contains(buf.String(), "ratio afxdp/udp tx-64 n/a") {
		t.Errorf("empty report:\n%s", buf.String())
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(b []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("disk full")
	}
	f.n--
	return len(b), nil
}

func TestWriteReportError(t *testing.T) {
	if err := sampleResults().write(&failWriter{n: 3}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("write error = %v, want the writer's", err)
	}
}

func TestFormatters(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{fmtPPS(1.349e6), "1.35M"},
		{fmtPPS(712_400), "712k"},
		{fmtPPS(950), "950"},
		{fmtPPS(0), "0"},
		{fmtPPS(math.NaN()), "0"},
		{fmtPercent(0.0123), "1.2%"},
		{fmtNs(812.4), "812"},
		{fmtNs(math.NaN()), "-"},
		{fmtRatio(1.434), "1.43"},
		{fmtRatio(math.Inf(1)), "n/a"},
		{fmtRatio(div(1, 0)), "n/a"},
		{fmtRatio(div(-1, 2)), "n/a"},
		{fmtRatio3(2.4963), "2.496"},
		{fmtRatio3(math.NaN()), "n/a"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
