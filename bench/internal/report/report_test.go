package report

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/naquid/naquid/bench/internal/workload"
)

func results() []workload.Result {
	return []workload.Result{
		{Workload: workload.Pipeline, Stack: "nq/udp", ReqPerSec: 1_000_000, P99us: 5000, CPUusPerReq: 1.5, PeakRSSKiB: 70 << 10},
		{Workload: workload.Pipeline, Stack: "nq/mmsg", ReqPerSec: 1_200_000, P99us: 4000},
		{Workload: workload.Pipeline, Stack: "quic", ReqPerSec: 1_000_000},
		{Workload: workload.Pipeline, Stack: "grpc", ReqPerSec: 50_000},
		{Workload: workload.Tick, Stack: "nq/udp", Variant: "100x10Hz", P99us: 2000},
		{Workload: workload.Tick, Stack: "quic", Variant: "100x10Hz", P99us: 3000},
		{Workload: workload.Tick, Stack: "nq/udp", Variant: "9x9Hz", P99us: 1000},
		{Workload: workload.Tick, Stack: "quic", Variant: "9x9Hz", P99us: 500},
		{Workload: workload.Idle, Stack: "nq/udp", ServerKiBPerConn: 40},
		{Workload: workload.Idle, Stack: "tcp", ServerKiBPerConn: 10},
		{Workload: workload.Storm, Stack: "nq/udp", Variant: "resume", RecoverySeconds: 3},
		{Workload: workload.Pipeline, Stack: "kcp"}, // failed: no figure, no ratio
	}
}

func TestRatios(t *testing.T) {
	var got []string
	for _, r := range Ratios(results()) {
		got = append(got, r.Line())
	}
	want := []string{
		"ratio nq/quic pipeline 1.200", // the best transport, mmsg
		"ratio nq/grpc pipeline 24.000",
		"ratio nq/quic tick/100x10Hz 1.500", // p99 peer over nq
		"ratio nq/quic tick/9x9Hz 0.500",
		"ratio nq/tcp idle 0.250", // KiB per connection peer over nq
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Ratios:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := len(TransportRatios(results())); n != 7 {
		t.Errorf("TransportRatios gave %d ratios, want 7 (2 transports x 2 pipeline peers, 2 ticks, idle)", n)
	}
}

func TestMarkdown(t *testing.T) {
	md := Markdown(results())
	for _, want := range []string{
		"### pipeline", "### tick", "### idle", "### storm", "| nq/mmsg | 1.20M |", "| nq/udp | resume |",
		"| pipeline | req/s, nq over peer | nq/udp | grpc | 20.000 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		us   float64
		want string
	}{{0, "-"}, {850, "850µs"}, {1234, "1.23ms"}, {2_500_000, "2.50s"}} {
		if got := Duration(tc.us); got != tc.want {
			t.Errorf("Duration(%v) = %q, want %q", tc.us, got, tc.want)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("[progress line]\n\n")
	for _, r := range results() {
		if err := WriteJSON(&b, r); err != nil {
			t.Fatal(err)
		}
	}
	b.WriteString("| a table |\nratio nq/quic pipeline 1.0\n")
	got, err := ReadJSON(&b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(results()) || got[1] != results()[1] {
		t.Errorf("read back %d results (second %+v)", len(got), got[1])
	}
	if _, err := ReadJSON(strings.NewReader("{not json\n")); err == nil {
		t.Error("ReadJSON accepted a broken line")
	}
}

func TestCompare(t *testing.T) {
	prev := results()
	cur := results()
	cur[0].ReqPerSec = 900_000 // 10% fewer: worse
	cur[0].CPUusPerReq = 1.2   // 20% less: better
	cur[0].PeakRSSKiB += 1     // tiny: neither
	cur = append(cur, workload.Result{Workload: workload.Pipeline, Stack: "tls", ReqPerSec: 1})
	out := Compare(prev, cur, 5)
	for _, want := range []string{
		"pipeline nq/udp req/s 1e+06 -> 9e+05 -10.0% (worse)",
		"pipeline nq/udp cpu_us/req 1.5 -> 1.2 -20.0% (better)",
		"pipeline tls: new",
		"storm nq/udp resume recovery_s 3 -> 3 +0.0%",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("Compare lacks %q:\n%s", want, out)
		}
	}
	// A storm that no longer recovers, and a result that is gone, are not silent.
	cur = results()
	storm := &cur[10]
	storm.RecoverySeconds, storm.Errors = 0, 812
	cur = slices.Delete(cur, 3, 4) // grpc
	out = Compare(prev, cur, 5)
	for _, want := range []string{
		"storm nq/udp resume recovery_s 3 -> not measured (worse)",
		"storm nq/udp resume errors 0 -> 812 (worse)",
		"pipeline grpc: gone (no result this run)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("Compare lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "peak_rss_kib 7.168e+04 -> 7.168e+04 +0.0% (") {
		t.Errorf("a tiny change was marked:\n%s", out)
	}
}
