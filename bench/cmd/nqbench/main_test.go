package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/naquid/naquid/bench/internal/report"
	"github.com/naquid/naquid/bench/internal/workload"
)

// runAsNQBench makes the test binary act as nqbench when it is started as a child process by
// the command under test (isolated runs, the idle client).
const runAsNQBench = "NQBENCH_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runAsNQBench) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func TestParseOptionsRejects(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-workloads", "soak"}, "-workloads"},
		{[]string{"-workloads", ""}, "-workloads is empty"},
		{[]string{"-stacks", "enet"}, "-stacks"},
		{[]string{"-transports", "dpdk"}, "-transports"},
		{[]string{"-mode", "both"}, "-mode"},
		{[]string{"-addr", "127.0.0.1:1"}, "-addr is for"},
		{[]string{"-mode", "client"}, "needs -addr"},
		{[]string{"-mode", "client", "-addr", "127.0.0.1:1"}, "needs -certs"},
		{[]string{"-mode", "client", "-addr", "127.0.0.1:1", "-certs", "x", "-workloads", "storm"}, "cannot run storm"},
		{[]string{"-mode", "server", "-stacks", "nq,tcp"}, "exactly one"},
		{[]string{"-mode", "server", "-stacks", "nq", "-addr", "localhost"}, "-addr"},
		{[]string{"-per-socket", "-1"}, "-per-socket"},
		{[]string{"-timeout", "0s"}, "-timeout"},
		{[]string{"-storm-variants", "half"}, "-storm-variants"},
		{[]string{"-storm-variants", ""}, "-storm-variants is empty"},
		{[]string{"-storm-recovery", "0s"}, "-storm-recovery"},
		{[]string{"-threshold", "-1"}, "-threshold"},
		{[]string{"-rounds", "0"}, "-rounds"},
		{[]string{"-idle-k", "0"}, "-idle-k 0"}, // typed 0: refused, not the default 10,000
		{[]string{"-c", "0"}, "-c 0"},
		{[]string{"-tick-duration", "0s"}, "-tick-duration"},
		{[]string{"extra"}, "unexpected arguments"},
		{[]string{"-mode", "server", "-stacks", "nq", "-transports", "afxdp"}, "needs -iface"},
		{[]string{"-mode", "server", "-stacks", "nq", "-transports", "afxdp", "-iface", "eth0"}, "needs -addr"},
		{[]string{"-mode", "server", "-stacks", "nq", "-transports", "afxdp", "-iface", "eth0", "-addr", "127.0.0.1:4433"}, "loopback"},
		{[]string{"-mode", "server", "-stacks", "nq", "-transports", "afxdp", "-iface", "a-very-long-interface", "-addr", "192.0.2.1:1"}, "not an interface name"},
		{[]string{"-mode", "server", "-stacks", "tcp", "-transports", "afxdp", "-iface", "eth0", "-addr", "192.0.2.1:1"}, "-stacks nq"},
		{[]string{"-mode", "server", "-stacks", "nq", "-iface", "eth0"}, "-iface is for -transports afxdp"},
		{[]string{"-iface", "eth0"}, "-iface is for -mode server"},
		{[]string{"-mode", "client", "-addr", "192.0.2.1:1", "-certs", "x", "-iface", "eth0"}, "-iface is for -mode server"},
		{[]string{"-mode", "client", "-addr", "192.0.2.1:1", "-certs", "x", "-transports", "afxdp"}, "clients run on kernel sockets"},
		{[]string{"-idle-client", "-mode", "client", "-addr", "192.0.2.1:1", "-certs", "x", "-stacks", "nq", "-transports", "afxdp"}, "needs -client-netns"},
		{[]string{"-client-netns", "nqbB-1"}, "internal"},
	} {
		_, err := parseOptions(tc.args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseOptions(%q) = %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}
}

func TestParseOptionsAFXDP(t *testing.T) {
	o, err := parseOptions([]string{"-mode", "server", "-stacks", "nq", "-transports", "afxdp", "-iface", "eth0", "-addr", "0.0.0.0:4433"}, &bytes.Buffer{})
	if err != nil || o.iface != "eth0" || o.addr != "0.0.0.0:4433" {
		t.Fatalf("server over afxdp: %+v, %v", o, err)
	}
	o, err = parseOptions([]string{"-transports", "udp,afxdp", "-workloads", "pipeline,storm", "-stacks", "nq,quic"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range o.plan() {
		got = append(got, r.String())
	}
	if want := []string{"pipeline nq/udp", "pipeline nq/afxdp", "pipeline quic", "storm nq/udp", "storm nq/afxdp"}; !slices.Equal(got, want) || !o.usesXDP() {
		t.Errorf("plan = %q (uses afxdp: %v), want %q", got, o.usesXDP(), want)
	}
	if o, _ := parseOptions([]string{"-transports", "afxdp", "-stacks", "tcp"}, &bytes.Buffer{}); o.usesXDP() {
		t.Error("a plan without nq uses afxdp")
	}
}

func TestPlan(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"pipeline nq/udp", "pipeline quic", "pipeline tcp", "pipeline tls", "pipeline grpc", "pipeline kcp"}},
		{[]string{"-workloads", "tick,storm", "-transports", "udp,mmsg"}, []string{
			"tick nq/udp", "tick nq/mmsg", "tick quic", "storm nq/udp", "storm nq/mmsg"}},
		{[]string{"-workloads", "idle,storm", "-stacks", "tcp,nq"}, []string{"idle tcp", "idle nq/udp", "storm nq/udp"}},
	} {
		o, err := parseOptions(tc.args, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range o.plan() {
			got = append(got, r.String())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("plan(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
	o, _ := parseOptions([]string{"-per-socket", "7"}, &bytes.Buffer{})
	if o.perSocketFor(workload.Tick) != 7 {
		t.Error("-per-socket does not override the workload default")
	}
}

func TestChildArgsOverride(t *testing.T) {
	args := childArgs([]string{"-stacks", "nq,tcp", "-json", "out.jsonl", "-from", "a.jsonl"}, runSpec{workload: "storm", stack: "nq", transport: "mmsg"})
	o, err := parseOptions(args, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !o.child || o.isolate || o.jsonPath != "" || len(o.from) != 0 || len(o.plan()) != 1 || o.plan()[0].String() != "storm nq/mmsg" {
		t.Errorf("child options: %+v, plan %v", o, o.plan())
	}
}

// TestSuiteInProcess runs two small pipelines in this process and checks every output.
func TestRepeatPlan(t *testing.T) {
	a, b, c := runSpec{workload: "pipeline", stack: "nq", transport: "udp"}, runSpec{workload: "pipeline", stack: "quic"},
		runSpec{workload: "pipeline", stack: "kcp"}
	for _, tc := range []struct {
		rounds int
		want   []runSpec
	}{
		{1, []runSpec{a, b, c}},
		{2, []runSpec{a, b, c, c, b, a}},
		{3, []runSpec{a, b, c, c, b, a, a, b, c}},
	} {
		if got := repeatPlan([]runSpec{a, b, c}, tc.rounds); !slices.Equal(got, tc.want) {
			t.Errorf("repeatPlan(%d rounds) = %v, want %v", tc.rounds, got, tc.want)
		}
	}
}

// TestMedianRuns: repeated runs of a stack collapse to their median run by the report's metric
// (higher req/s, lower tick p99), other stacks and variants are kept apart, and storm runs (no
// metric) keep their first.
func TestMedianRuns(t *testing.T) {
	pipe := func(stack string, rps float64) workload.Result {
		return workload.Result{Workload: workload.Pipeline, Stack: stack, Mode: "inproc", ReqPerSec: rps}
	}
	tick := func(variant string, p99 float64) workload.Result {
		return workload.Result{Workload: workload.Tick, Variant: variant, Stack: "quic", Mode: "inproc", P99us: p99}
	}
	storm := func(errors int64) workload.Result {
		return workload.Result{Workload: workload.Storm, Variant: "resume", Stack: "nq/udp", Mode: "inproc", Errors: errors}
	}
	in := []workload.Result{
		pipe("nq/udp", 900), pipe("quic", 1000), pipe("quic", 800), pipe("nq/udp", 1100), pipe("nq/udp", 1000),
		pipe("quic", 1200), tick("1000x10Hz", 30), tick("1000x10Hz", 10), tick("1000x10Hz", 20), tick("10000x10Hz", 5),
		storm(3), storm(1),
	}
	want := []workload.Result{pipe("nq/udp", 1000), pipe("quic", 1000), tick("1000x10Hz", 20), tick("10000x10Hz", 5), storm(3)}
	got := medianRuns(in)
	if len(got) != len(want) {
		t.Fatalf("medianRuns kept %d results, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("result %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if even := medianRuns([]workload.Result{pipe("tcp", 2), pipe("tcp", 1)}); len(even) != 1 || even[0].ReqPerSec != 1 {
		t.Errorf("median of two runs: %+v, want the lower", even)
	}
	// Storms by recovery time (a storm that did not recover ranks last).
	recovered := func(s float64) workload.Result { r := storm(0); r.RecoverySeconds = s; return r }
	if got := medianRuns([]workload.Result{recovered(1.5), recovered(3.5), recovered(2.5)}); len(got) != 1 || got[0].RecoverySeconds != 2.5 {
		t.Errorf("median of storms 1.5, 3.5, 2.5 s: %+v, want 2.5 s", got)
	}
	if got := medianRuns([]workload.Result{recovered(0), recovered(1.5), recovered(2.5)}); got[0].RecoverySeconds != 2.5 {
		t.Errorf("median of storms never, 1.5, 2.5 s: %+v, want 2.5 s", got)
	}
}

func TestSuiteInProcess(t *testing.T) {
	dir := t.TempDir()
	jsonPath, mdPath := filepath.Join(dir, "r.jsonl"), filepath.Join(dir, "r.md")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	args := []string{"-isolate=false", "-quiet", "-stacks", "nq,tcp", "-c", "2", "-n", "100", "-w", "4",
		"-json", jsonPath, "-md", mdPath, "-compare", filepath.Join(dir, "missing.jsonl")}
	var stdout, stderr bytes.Buffer
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "ratio nq/tcp pipeline ") {
		t.Errorf("last line %q, want the ratio line", last)
	}
	saved, err := readResults(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(saved) != 2 || saved[0].Stack != "nq/udp" || saved[1].Stack != "tcp" || saved[0].Requests != 200 {
		t.Errorf("saved results: %+v", saved)
	}
	md, err := os.ReadFile(mdPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"### pipeline", "| nq/udp |", "ratio nq/tcp pipeline", "no previous results"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("%s lacks %q", mdPath, want)
		}
	}

	// A second run compares itself with the first.
	stdout.Reset()
	args[len(args)-1] = jsonPath
	args = append(args, "-json", filepath.Join(dir, "second.jsonl"))
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if !strings.Contains(stdout.String(), "pipeline tcp req/s ") {
		t.Errorf("second run printed no comparison:\n%s", stdout.String())
	}
}

// TestIsolatedRuns runs a pipeline and the idle workload in child processes (this test binary
// acting as nqbench), with profiles.
func TestIsolatedRuns(t *testing.T) {
	t.Setenv(runAsNQBench, "1")
	prof := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	args := []string{"-quiet", "-workloads", "pipeline,idle", "-stacks", "tcp", "-c", "2", "-n", "100",
		"-idle-k", "20", "-timeout", "30s", "-profile-dir", prof}
	res := runPipelineIdle(t, ctx, args)
	if res[1].Conns != 20 || res[1].ConnsPerSec <= 0 || res[0].PeakRSSKiB <= 0 {
		t.Errorf("implausible results: %+v", res)
	}
	for _, name := range []string{"pipeline-tcp.cpu.pprof", "pipeline-tcp.heap.pprof", "idle-tcp.mutex.pprof", "idle-tcp.block.pprof"} {
		if fi, err := os.Stat(filepath.Join(prof, name)); err != nil || fi.Size() == 0 {
			t.Errorf("profile %s: %v", name, err)
		}
	}
}

// TestServerAndClientModes serves nq in one process and runs a pipeline against it from this
// one, with the certificates going through files.
func TestServerAndClientModes(t *testing.T) {
	t.Setenv(runAsNQBench, "1")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	certs := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	addr := "127.0.0.1:" + freeUDPPort(t)
	srv := commandContext(ctx, exe, "-mode", "server", "-stacks", "nq", "-addr", addr, "-certs", certs, "-serve-for", "1m")
	// The server writes the certificates, listens, then says so.
	startServer(t, ctx, srv, "serving nq/udp on")
	var stdout, stderr bytes.Buffer
	args := []string{"-mode", "client", "-isolate=false", "-quiet", "-stacks", "nq", "-addr", addr, "-certs", certs, "-c", "2", "-n", "100"}
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("client run: %v\n%s", err, stderr.String())
	}
	res, err := report.ReadJSON(&stdout)
	if err != nil || len(res) != 1 || res[0].Mode != "client" || res[0].Requests != 200 {
		t.Fatalf("client results %+v, %v", res, err)
	}
}
