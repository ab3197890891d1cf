package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/naquid/naquid/bench/internal/report"
	"github.com/naquid/naquid/bench/internal/xdpnet"
	"github.com/naquid/naquid/internal/netns"
)

// requireXDP skips the test, naming the reason, when nqbench cannot run afxdp here: not root,
// or a kernel without AF_XDP. On this project's machines the tests run.
func requireXDP(t *testing.T) {
	t.Helper()
	if err := xdpnet.Available(); err != nil {
		t.Skip(err)
	}
}

// nqbNamespaces returns the network namespaces nqbench creates (nqbA-..., nqbB-...) that exist
// now.
func nqbNamespaces(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	found := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && (strings.HasPrefix(f[0], "nqbA-") || strings.HasPrefix(f[0], "nqbB-")) {
			found[f[0]] = true
		}
	}
	return found
}

// TestAFXDPRuns runs a short pipeline and the idle workload (its clients in a child process,
// in the client namespace) on nq over afxdp, in this process: the server's AF_XDP socket must
// have carried the traffic, and the namespaces must be gone afterwards.
func TestAFXDPRuns(t *testing.T) {
	requireXDP(t)
	t.Setenv(runAsNQBench, "1")
	before := nqbNamespaces(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	args := []string{"-isolate=false", "-quiet", "-workloads", "pipeline,idle", "-stacks", "nq", "-transports", "afxdp",
		"-c", "4", "-n", "500", "-w", "8", "-idle-k", "20", "-timeout", "30s"}
	res := runPipelineIdle(t, ctx, args)
	pipe, idle := res[0], res[1]
	if pipe.Stack != "nq/afxdp" || pipe.Requests != 2000 || pipe.Errors != 0 {
		t.Errorf("pipeline result: %+v", pipe)
	}
	if idle.Stack != "nq/afxdp" || idle.Conns != 20 || idle.ServerKiBPerConn <= 0 || idle.ClientKiBPerConn <= 0 {
		t.Errorf("idle result: %+v", idle)
	}
	for _, r := range res {
		if !strings.Contains(r.Note, "server on AF_XDP on veth") || strings.Contains(r.Note, " 0 datagrams in") {
			t.Errorf("%s note %q: want the server's AF_XDP counts, with datagrams in", r.Workload, r.Note)
		}
	}
	if left := nqbNamespaces(t); len(left) > len(before) {
		t.Errorf("namespaces left behind: %v (before: %v)", left, before)
	}
}

// TestAFXDPInterrupt interrupts nqbench (only the parent: it must pass the interrupt on to the
// child running the afxdp pipeline) and checks that the child deleted its namespaces.
func TestAFXDPInterrupt(t *testing.T) {
	requireXDP(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	before := nqbNamespaces(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	cmd := commandContext(ctx, exe, "-stacks", "nq", "-transports", "afxdp", "-c", "10", "-n", "100000000", "-timeout", "1m")
	cmd.Env = append(os.Environ(), runAsNQBench+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The dial progress line ends when every connection is up: the network exists by then.
	dialed := make(chan bool, 1)
	var seen strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			seen.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "[dial nq/afxdp") {
				dialed <- true
				_, _ = io.Copy(io.Discard, stderr)
				return
			}
		}
		dialed <- false
	}()
	select {
	case ok := <-dialed:
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("nqbench ended before dialing:\n%s", seen.String())
		}
	case <-ctx.Done():
		t.Fatal("nqbench did not dial in time")
	}
	during := nqbNamespaces(t)
	if len(during) < len(before)+2 {
		t.Errorf("namespaces while running: %v (before: %v), want two more", during, before)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	var exitErr *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
		t.Errorf("interrupted nqbench: %v, want exit status 1", err)
	}
	after := nqbNamespaces(t)
	for ns := range during {
		if !before[ns] && after[ns] {
			t.Errorf("namespace %s left behind after the interrupt", ns)
		}
	}
}

// TestAFXDPUnavailable runs nqbench without privileges: -transports afxdp must fail at once
// with a clear error, not a panic. As root, the capabilities are dropped with setpriv.
func TestAFXDPUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	args := []string{"-quiet", "-stacks", "nq,tcp", "-transports", "udp,afxdp", "-c", "2", "-n", "10"}
	if os.Geteuid() != 0 {
		var stdout, stderr bytes.Buffer
		err := run(ctx, args, &stdout, &stderr)
		if !errors.Is(err, xdpnet.ErrUnavailable) || stdout.Len() != 0 {
			t.Fatalf("run without root = %v (stdout %q), want ErrUnavailable before any run", err, stdout.String())
		}
		return
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not found: cannot drop root's capabilities")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := commandContext(ctx, setpriv, append([]string{"--bounding-set=-all", "--inh-caps=-all", "--", exe}, args...)...)
	cmd.Env = append(os.Environ(), runAsNQBench+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
		t.Fatalf("nqbench without capabilities: %v, want exit status 1\nstderr:\n%s", err, stderr.String())
	}
	msg := stderr.String()
	if !strings.Contains(msg, "nqbench: -transports afxdp: xdpnet: afxdp unavailable") || !strings.Contains(msg, "CAP_NET_ADMIN") ||
		strings.Contains(msg, "panic") || stdout.Len() != 0 {
		t.Errorf("stdout %q, stderr %q: want only a clear afxdp-unavailable error", stdout.String(), msg)
	}
}

// TestServerModeAFXDP serves nq over afxdp with -mode server -iface in one namespace of a veth
// pair and runs a pipeline against it with -mode client from the other.
func TestServerModeAFXDP(t *testing.T) {
	requireXDP(t)
	p := netns.NewPair(t, netns.Config{Prefix: "nqbt"})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	certs := t.TempDir()
	addr := p.A.Addr4(4433).String()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	srv := commandContext(ctx, "ip", "netns", "exec", p.A.Name, exe, "-mode", "server", "-stacks", "nq", "-transports", "afxdp",
		"-iface", p.A.Link, "-addr", addr, "-certs", certs, "-serve-for", "1m")
	srv.Env = append(os.Environ(), runAsNQBench+"=1")
	startServer(t, ctx, srv, "serving nq/afxdp on "+addr)
	cl := commandContext(ctx, "ip", "netns", "exec", p.B.Name, exe, "-mode", "client", "-isolate=false", "-quiet", "-stacks", "nq",
		"-addr", addr, "-certs", certs, "-c", "2", "-n", "100")
	cl.Env = srv.Env
	var stdout, stderr bytes.Buffer
	cl.Stdout, cl.Stderr = &stdout, &stderr
	if err := cl.Run(); err != nil {
		t.Fatalf("client: %v\n%s", err, stderr.String())
	}
	res, err := report.ReadJSON(&stdout)
	if err != nil || len(res) != 1 || res[0].Mode != "client" || res[0].Requests != 200 || res[0].Errors != 0 {
		t.Fatalf("client results %+v, %v", res, err)
	}
	if err := srv.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := srv.Wait(); err != nil {
		t.Errorf("server after interrupt: %v", err)
	}
}
