// Command nq-demo runs naquid's headline workload in one process: a server and C client
// connections on loopback, each pipelining N Ping calls with W in flight on one RPC stream, with
// certificates made in memory. It prints requests per second, latency percentiles, CPU time per
// request and how many RPC frames each QUIC packet carried; with -compare (the default) it then
// runs the same workload as a hand-written pipelined echo on raw quic-go and prints the ratio;
// -rounds R (default 3) repeats both R times, alternating which goes first, and prints the
// median ratio (one run's ratio moves by a tenth on a busy machine).
// With -metrics host:port it serves the Prometheus metrics of the nq server and client
// (package github.com/naquid/naquid/metrics) at http://host:port/metrics while the nq workload
// runs.
//
// Usage:
//
//	nq-demo [-transport udp|mmsg|memconn] [-c 100] [-n 5000] [-w 32] [-size 8] [-compare=true]
//	        [-rounds 3] [-timeout 50s, scaled with the work] [-cpuprofile file] [-metrics host:port]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"time"
)

// config is what one run does. The zero value of a field means its default.
type config struct {
	// Transport is the packet-I/O backend: "udp" (kernel UDP), "mmsg" (recvmmsg/sendmmsg with
	// GSO) or "memconn" (in-memory network).
	// Default "udp".
	Transport string
	// Conns is the number of client connections (C). Default 100.
	Conns int
	// Calls is the number of calls each connection makes (N). Default 5000.
	Calls int
	// Window is the number of calls each connection keeps in flight (W). Default 32.
	Window int
	// Size is the payload size of a call in bytes, 8 to 65535. Default 8.
	Size int
	// Compare also runs the raw quic-go echo peer and prints the ratio.
	Compare bool
	// Rounds is how many times both workloads run (with Compare), alternating which runs
	// first so that neither always meets a fresh heap; the ratio printed last is the median of
	// the rounds' ratios. Default 3.
	Rounds int
	// Timeout bounds the whole run (every workload, so `make demo` ends within a minute); when
	// it passes, the run reports what it measured and fails. Default 50s for the default
	// workload, scaled up in proportion to Rounds x Conns x Calls when they ask for more.
	Timeout time.Duration
	// CPUProfile, when set, is the file a CPU profile of the nq workload is written to; the raw
	// quic-go workload's profile goes to the same name with ".quic-go" appended.
	CPUProfile string
	// Metrics, when set, is the address (host:port, port 0 picks one) on which /metrics serves
	// the Prometheus metrics of the nq server and client while the nq workload runs. Default:
	// no metrics.
	Metrics string

	// afterLoad, when set (by tests), runs once the nq workload has finished, before its server
	// and client close.
	afterLoad func()
}

// Defaults for zero config fields.
const (
	defaultTransport = "udp"
	defaultConns     = 100
	defaultCalls     = 5000
	defaultWindow    = 32
	defaultSize      = 8
	defaultTimeout   = 50 * time.Second
	defaultRounds    = 3
	maxTimeout       = 24 * time.Hour // the scaled default's ceiling
	maxSize          = 65535          // the echo peer's 2-byte length prefix
	minSize          = 8              // room for the sequence number
)

// withDefaults returns c with zero fields set to their defaults.
func (c config) withDefaults() config {
	if c.Transport == "" {
		c.Transport = defaultTransport
	}
	if c.Conns == 0 {
		c.Conns = defaultConns
	}
	if c.Calls == 0 {
		c.Calls = defaultCalls
	}
	if c.Window == 0 {
		c.Window = defaultWindow
	}
	if c.Size == 0 {
		c.Size = defaultSize
	}
	if c.Rounds == 0 {
		c.Rounds = defaultRounds
	}
	if c.Timeout == 0 {
		c.Timeout = defaultTimeout
		work := float64(c.Rounds) * float64(c.Conns) * float64(c.Calls)
		if scale := work / (defaultRounds * defaultConns * defaultCalls); scale > 1 {
			c.Timeout = time.Duration(min(scale*float64(defaultTimeout), float64(maxTimeout))).Round(time.Second)
		}
	}
	return c
}

// validate reports the first invalid field of c (after defaults).
func (c config) validate() error {
	switch {
	case c.Transport != "udp" && c.Transport != "mmsg" && c.Transport != "memconn":
		return fmt.Errorf("transport %q: want udp, mmsg or memconn", c.Transport)
	case c.Conns < 1:
		return fmt.Errorf("connections %d: want at least 1", c.Conns)
	case c.Calls < 1:
		return fmt.Errorf("calls %d: want at least 1 per connection", c.Calls)
	case c.Window < 1:
		return fmt.Errorf("window %d: want at least 1", c.Window)
	case c.Size < minSize || c.Size > maxSize:
		return fmt.Errorf("size %d: want %d to %d bytes", c.Size, minSize, maxSize)
	case c.Timeout < 0:
		return fmt.Errorf("timeout %v: want a positive duration", c.Timeout)
	case c.Rounds < 1:
		return fmt.Errorf("rounds %d: want at least 1", c.Rounds)
	}
	if c.Metrics != "" {
		if _, _, err := net.SplitHostPort(c.Metrics); err != nil {
			return fmt.Errorf("metrics address %q: want host:port: %w", c.Metrics, err)
		}
	}
	return nil
}

func main() {
	var cfg config
	flag.StringVar(&cfg.Transport, "transport", defaultTransport, "packet I/O: udp, mmsg or memconn")
	flag.IntVar(&cfg.Conns, "c", defaultConns, "client connections")
	flag.IntVar(&cfg.Calls, "n", defaultCalls, "calls per connection")
	flag.IntVar(&cfg.Window, "w", defaultWindow, "calls in flight per connection")
	flag.IntVar(&cfg.Size, "size", defaultSize, "payload bytes per call")
	flag.BoolVar(&cfg.Compare, "compare", true, "also run the same workload on raw quic-go and print the ratio")
	flag.IntVar(&cfg.Rounds, "rounds", defaultRounds, "with -compare, run both workloads this many times, alternating their order, and print the median ratio")
	flag.DurationVar(&cfg.Timeout, "timeout", 0, "bound on the whole run (every round of both workloads); 0: 50s for the default workload, scaled up with rounds x connections x calls")
	flag.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the nq workload to this file (and of the raw quic-go workload to file.quic-go)")
	flag.StringVar(&cfg.Metrics, "metrics", "", "serve Prometheus metrics at http://`host:port`/metrics while the nq workload runs")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "nq-demo: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	// Flag values are checked as given: a 0 the user typed is an error, not a default.
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "nq-demo: %v: %v\n", errConfig, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, cfg, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nq-demo:", err)
		if errors.Is(err, errConfig) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// errConfig marks an invalid configuration.
var errConfig = errors.New("invalid configuration")

// run performs the workloads described by cfg and writes the report to out. It returns an error
// wrapping context.DeadlineExceeded when cfg.Timeout passes first (after reporting what it
// measured).
func run(ctx context.Context, cfg config, out io.Writer) error {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("%w: %w", errConfig, err)
	}
	fmt.Fprintf(out, "nq-demo: %d connections x %d calls, %d in flight, %d-byte payload, transport %s\n",
		cfg.Conns, cfg.Calls, cfg.Window, cfg.Size, cfg.Transport)
	var ms *metricsServer
	if cfg.Metrics != "" {
		var err error
		if ms, err = listenMetrics(cfg.Metrics); err != nil {
			return err
		}
		fmt.Fprintf(out, "metrics    %s while the nq workload runs\n", ms.url())
	}
	deadline := time.Now().Add(cfg.Timeout) // one bound for every workload
	nqRes, err := runWorkload(ctx, deadline, cfg, func(ctx context.Context) (*result, error) { return runNQ(ctx, cfg, ms) })
	merr := ms.close()
	nqRes.report(out, cfg)
	if err != nil {
		return err
	}
	if merr != nil {
		return merr
	}
	if !cfg.Compare {
		return nil
	}
	echo := func(ctx context.Context) (*result, error) { return runEcho(ctx, cfg) }
	echoRes, err := runWorkload(ctx, deadline, cfg, echo)
	echoRes.report(out, cfg)
	if err != nil {
		return err
	}
	ratios := []float64{nqRes.rate() / echoRes.rate()}
	later := cfg
	later.CPUProfile = "" // profiles and metrics cover the first round
	nqLater := func(ctx context.Context) (*result, error) { return runNQ(ctx, later, nil) }
	for round := 2; round <= cfg.Rounds; round++ {
		// Even rounds run the peer first, odd rounds nq first.
		first, second, order := echo, nqLater, "quic-go first"
		if round%2 == 1 {
			first, second, order = nqLater, echo, "nq first"
		}
		a, err := runWorkload(ctx, deadline, later, first)
		if err != nil {
			return failedRound(out, later, round, a, ratios, err)
		}
		b, err := runWorkload(ctx, deadline, later, second)
		if err != nil {
			return failedRound(out, later, round, b, ratios, err)
		}
		if round%2 == 0 {
			a, b = b, a
		}
		ratios = append(ratios, a.rate()/b.rate())
		fmt.Fprintf(out, "round %d    nq %.0f req/s, quic-go %.0f req/s (%s), ratio %.2f\n",
			round, a.rate(), b.rate(), order, ratios[len(ratios)-1])
	}
	if len(ratios) == 1 {
		fmt.Fprintf(out, "ratio nq/quic-go req/s %.2f\n", ratios[0])
		return nil
	}
	fmt.Fprintf(out, "ratio nq/quic-go req/s %.2f (median of %d rounds)\n", median(ratios), len(ratios))
	return nil
}

// failedRound reports the workload of a later round that failed (what it measured) and the median
// ratio of the rounds that completed, and returns err.
func failedRound(out io.Writer, cfg config, round int, res *result, ratios []float64, err error) error {
	fmt.Fprintf(out, "round %d    failed:\n", round)
	res.report(out, cfg)
	fmt.Fprintf(out, "ratio nq/quic-go req/s %.2f (median of the %d completed rounds of %d)\n", median(ratios), len(ratios), cfg.Rounds)
	return err
}

// runWorkload runs one workload under the run's deadline and names it in the error it returns.
func runWorkload(ctx context.Context, deadline time.Time, cfg config, w func(context.Context) (*result, error)) (*result, error) {
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	res, err := w(wctx)
	if err != nil {
		err = workloadErr(res.name, cfg, err)
	}
	return res, err
}

// median returns the median of v, which must not be empty; v is sorted in place.
func median(v []float64) float64 {
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func workloadErr(name string, cfg config, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s over %s: timed out after %v: %w", name, cfg.Transport, cfg.Timeout, err)
	}
	return fmt.Errorf("%s over %s: %w", name, cfg.Transport, err)
}
