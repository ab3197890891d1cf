package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/naquid/naquid/bench/internal/report"
	"github.com/naquid/naquid/bench/internal/workload"
)

// freeUDPPort returns a UDP port that was free a moment ago.
func freeUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return strconv.Itoa(c.LocalAddr().(*net.UDPAddr).Port)
}

func commandContext(ctx context.Context, exe string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// startServer starts srv (an nqbench -mode server command), stops it with an interrupt at the
// end of the test, and returns once its stderr says ready (a line containing readyLine). It
// fails the test when the server exits or ctx ends first.
func startServer(t *testing.T, ctx context.Context, srv *exec.Cmd, readyLine string) {
	t.Helper()
	srvErr, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Process.Signal(os.Interrupt)
		_ = srv.Wait()
	})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(srvErr)
		var seen []string
		for sc.Scan() {
			seen = append(seen, sc.Text())
			if strings.Contains(sc.Text(), readyLine) {
				ready <- ""
				_, _ = io.Copy(io.Discard, srvErr)
				return
			}
		}
		ready <- strings.Join(seen, "\n")
	}()
	select {
	case out := <-ready:
		if out != "" {
			t.Fatalf("server did not start: %s", out)
		}
	case <-ctx.Done():
		t.Fatal("server did not start in time")
	}
}

// runPipelineIdle runs nqbench in this process with args (which ask for the pipeline and idle
// workloads, in that order) and returns their two results.
func runPipelineIdle(t *testing.T, ctx context.Context, args []string) []workload.Result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	res, err := report.ReadJSON(&stdout)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Workload != workload.Pipeline || res[1].Workload != workload.Idle {
		t.Fatalf("results: %+v", res)
	}
	return res
}
