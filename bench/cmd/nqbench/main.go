// Command nqbench is naquid's load generator: it runs a workload against naquid and, in the same
// run and with the same workload, against the stacks a game team would otherwise pick, and
// reports each side by side with the ratios that decide.
//
// Workloads (-workloads, comma-separated):
//
//	pipeline  C connections x N echo calls, W in flight (closed loop): throughput, latency,
//	          CPU per request. Default C=100 N=5000 W=32, 8-byte payload.
//	tick      C clients each sending one 64-byte call R times a second (open loop), latency
//	          from the scheduled send time. Default C=10000 R=10 for 10 s after 3 s warm-up.
//	idle      K idle connections: establishment rate, server and client KiB per connection
//	          after GC (the clients run in a second process). Default K=10000.
//	storm     K nq clients reconnect after an in-process server restart: time until all are
//	          back, with TLS session resumption, then after a second restart without it.
//	          Default K=10000.
//
// Stacks (-stacks): nq (naquid, on the transports of -transports: udp, mmsg, afxdp), quic (raw
// quic-go, one pipelined stream per connection), tcp and tls (length-prefixed frames), grpc
// (gRPC-go unary over TLS), kcp (kcp-go fast mode + smux). Without -stacks each workload runs
// its default set: pipeline all, tick nq and quic, idle nq, quic and tcp, storm nq.
//
// afxdp needs a real interface. In-process, each afxdp run creates two network namespaces
// joined by a veth pair (192.0.2.1 and 192.0.2.2, TEST-NET-1), runs the nq server on AF_XDP on
// its veth end in one (copy mode: veth has no zero-copy) and the clients on kernel UDP in the
// other, and deletes both when the run ends, also on an error, SIGINT or SIGTERM (not on
// SIGKILL: `ip netns list` then shows nqbA-/nqbB- leftovers). Its results' note says so and
// counts the datagrams the AF_XDP socket carried; the other stacks stay on loopback, so ratios
// against nq/afxdp compare two network paths. It needs root (or CAP_NET_ADMIN, CAP_SYS_ADMIN,
// CAP_NET_RAW, CAP_BPF) and a kernel with AF_XDP; without them -transports afxdp fails before
// any run with the reason. With -mode server, -transports afxdp attaches to -iface (required)
// and -addr must be an address traffic reaches through it; -mode client runs its clients on
// kernel sockets (udp, mmsg) whatever the server's transport.
//
// By default every (workload, stack) runs in its own child process, so that peak RSS, heap and
// CPU are that stack's alone (-isolate=false runs everything in this process). Stacks run one
// after another, and on a shared machine the one run later tends to be faster (by up to a tenth
// here): -rounds R runs the whole plan R times, reversing its order every other round, and
// reports each (workload, stack)'s median run. Server and clients share the process, so CPU per
// request covers both ends. -mode server serves one stack
// until interrupted; -mode client runs the workloads against -addr (CPU is then the clients').
//
// Output: a live progress line on stderr; on stdout one JSON line per result, then a Markdown
// table per workload, then, last, one line per peer: "ratio nq/<peer> <workload> <value>",
// where value > 1 means naquid is better (pipeline: req/s nq over peer; tick: p99 peer over nq;
// idle: server KiB per connection peer over nq), using the best nq transport of the run. Tick
// results carry their load, so their workload reads "tick/10000x10Hz". -json and -md also
// write the results to files; -compare prints the change from a previous run's JSON lines;
// -from reports saved JSON lines (several runs merged) without running anything;
// -profile-dir writes pprof profiles of every run.
//
// Examples:
//
//	go run ./cmd/nqbench -c 10 -n 2000
//	go run ./cmd/nqbench -workloads tick -stacks nq -transports udp,mmsg
//	go run ./cmd/nqbench -stacks nq,quic -transports udp,afxdp            # as root
//	go run ./cmd/nqbench -mode server -stacks nq -addr 127.0.0.1:4433 -certs /tmp/nqcerts
//	go run ./cmd/nqbench -mode client -stacks nq -addr 127.0.0.1:4433 -certs /tmp/nqcerts
//	go run ./cmd/nqbench -mode server -stacks nq -transports afxdp -iface eth0 -addr 0.0.0.0:4433 -certs /tmp/nqcerts
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "nqbench:", err)
		}
		os.Exit(1)
	}
}

// run is the whole command, with its arguments and outputs as parameters (tests call it).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	switch {
	case o.idleClient:
		return runIdleClient(ctx, o, stdout, stderr)
	case o.mode == modeServer:
		return serve(ctx, o, stderr)
	case o.child:
		return runChild(ctx, o, stdout, stderr)
	}
	return runSuite(ctx, o, args, stdout, stderr)
}
