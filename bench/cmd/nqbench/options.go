package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/naquid/naquid/bench/internal/stack"
	"github.com/naquid/naquid/bench/internal/workload"
)

// Modes.
const (
	modeInproc = "inproc"
	modeServer = "server"
	modeClient = "client"
)

// options are the parsed flags.
type options struct {
	workloads  []string
	stacks     []string // empty: each workload's default set
	transports []string
	mode       string
	addr       string
	iface      string
	certsDir   string
	perSocket  int
	timeout    time.Duration
	serveFor   time.Duration
	isolate    bool
	rounds     int
	quiet      bool
	jsonPath   string
	mdPath     string
	compare    string
	threshold  float64
	profileDir string
	from       []string

	pipe  workload.PipelineConfig
	tick  workload.TickConfig
	idle  workload.IdleConfig
	storm workload.StormConfig

	// Internal: set by nqbench on its own child processes.
	child       bool
	idleClient  bool
	clientNetns string
}

// xdpTransport is the nq transport that needs an interface (package xdpnet builds one in-process).
const xdpTransport = "afxdp"

// defaultStacks is each workload's stack set when -stacks is not given.
var defaultStacks = map[string][]string{
	workload.Pipeline: stack.Names(),
	workload.Tick:     {stack.NQ, stack.QUIC},
	workload.Idle:     {stack.NQ, stack.QUIC, stack.TCP},
	workload.Storm:    {stack.NQ},
}

// defaultPerSocket is each workload's connections per client socket when -per-socket is 0.
var defaultPerSocket = map[string]int{
	workload.Pipeline: 1,
	workload.Tick:     100,
	workload.Idle:     100,
	workload.Storm:    100,
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("nqbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var workloads, stacks, transports string
	fs.StringVar(&workloads, "workloads", workload.Pipeline, "comma-separated workloads: "+strings.Join(workload.Names(), ", "))
	fs.StringVar(&stacks, "stacks", "", "comma-separated stacks: "+strings.Join(stack.Names(), ", ")+" (default: each workload's set)")
	fs.StringVar(&transports, "transports", "udp", "comma-separated nq transports: "+strings.Join(stack.Transports(), ", "))
	fs.StringVar(&o.mode, "mode", modeInproc, "inproc (server and clients here), server (serve one stack), client (run against -addr)")
	fs.StringVar(&o.addr, "addr", "", "server address: where -mode server listens (default 127.0.0.1:4433), what -mode client dials")
	fs.StringVar(&o.iface, "iface", "", "-mode server -transports afxdp: the interface to attach AF_XDP to (in-process runs build their own veth pair between two network namespaces)")
	fs.StringVar(&o.certsDir, "certs", "", "certificate directory: -mode server writes a dev CA and leaf there (or uses the ones there), -mode client trusts its ca.pem")
	fs.IntVar(&o.perSocket, "per-socket", 0, "client connections per client socket for nq and quic (0: 1 for pipeline, 100 for the others)")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "bound on each run")
	fs.DurationVar(&o.serveFor, "serve-for", time.Hour, "-mode server: stop after this long")
	fs.BoolVar(&o.isolate, "isolate", true, "run each workload and stack in its own child process (honest peak RSS and heap)")
	fs.IntVar(&o.rounds, "rounds", 1, "run the plan this many times, its order reversed every other round, and report each run's median (by req/s, tick p99, idle KiB or storm recovery time): stacks measured one after another differ by up to a tenth with their order alone")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress line on stderr")
	fs.StringVar(&o.jsonPath, "json", "", "also write the JSON lines to this file")
	fs.StringVar(&o.mdPath, "md", "", "also write the Markdown report and ratio lines to this file")
	fs.StringVar(&o.compare, "compare", "", "JSON lines of a previous run: print the change of every figure")
	fs.Float64Var(&o.threshold, "threshold", 5, "-compare: percent change marked better or worse")
	var from string
	fs.StringVar(&from, "from", "", "comma-separated JSON lines files of earlier runs: report them (merged, in order) instead of running anything")
	fs.StringVar(&o.profileDir, "profile-dir", "", "write pprof CPU, heap, mutex and block profiles of each run into this directory")

	fs.IntVar(&o.pipe.Conns, "c", 100, "pipeline: connections")
	fs.IntVar(&o.pipe.Calls, "n", 5000, "pipeline: calls per connection")
	fs.IntVar(&o.pipe.Window, "w", 32, "pipeline: calls in flight per connection")
	fs.IntVar(&o.pipe.Payload, "size", 8, "pipeline: payload bytes")
	fs.IntVar(&o.pipe.Warmup, "warmup", 0, "pipeline: warm-up calls per connection (0: n/5, at least w; -1: none)")

	fs.IntVar(&o.tick.Clients, "tick-c", 10000, "tick: clients")
	fs.IntVar(&o.tick.Rate, "tick-rate", 10, "tick: calls per second per client")
	fs.IntVar(&o.tick.Payload, "tick-size", 64, "tick: payload bytes")
	fs.DurationVar(&o.tick.Duration, "tick-duration", 10*time.Second, "tick: measured phase")
	fs.DurationVar(&o.tick.Warmup, "tick-warmup", 3*time.Second, "tick: warm-up phase (0: 3s; negative: none)")

	fs.IntVar(&o.idle.Conns, "idle-k", 10000, "idle: connections")
	fs.IntVar(&o.storm.Conns, "storm-k", 10000, "storm: clients")
	var stormVariants string
	fs.StringVar(&stormVariants, "storm-variants", "resume,full", "storm: the restarts to make, in order: resume (the new server keeps the ticket and token keys), full (it has neither)")
	fs.DurationVar(&o.storm.Recovery, "storm-recovery", 30*time.Second, "storm: how long to wait for the clients after each restart")
	fs.DurationVar(&o.storm.Spread, "storm-spread", 0, "storm: reconnect after a wait uniform in [0, this) instead of nq's default back-off")

	fs.BoolVar(&o.child, "child", false, "internal: run exactly one workload and stack, print its JSON line")
	fs.BoolVar(&o.idleClient, "idle-client", false, "internal: the idle workload's client process")
	fs.StringVar(&o.clientNetns, "client-netns", "", "internal: the idle client process of an afxdp run opens its sockets in this network namespace")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.workloads = splitList(workloads)
	o.stacks = splitList(stacks)
	o.transports = splitList(transports)
	o.from = splitList(from)
	o.storm.Variants = splitList(stormVariants)
	if err := o.validate(); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *options) validate() error {
	if len(o.workloads) == 0 {
		return fmt.Errorf("-workloads is empty")
	}
	if o.rounds < 1 {
		return fmt.Errorf("-rounds %d: want at least 1", o.rounds)
	}
	for _, w := range o.workloads {
		if !slices.Contains(workload.Names(), w) {
			return fmt.Errorf("-workloads: unknown workload %q (want %s)", w, strings.Join(workload.Names(), ", "))
		}
	}
	for _, s := range o.stacks {
		if !slices.Contains(stack.Names(), s) {
			return fmt.Errorf("-stacks: unknown stack %q (want %s)", s, strings.Join(stack.Names(), ", "))
		}
	}
	if len(o.transports) == 0 {
		return fmt.Errorf("-transports is empty")
	}
	for _, t := range o.transports {
		if !slices.Contains(stack.Transports(), t) {
			return fmt.Errorf("-transports: unknown transport %q (want %s)", t, strings.Join(stack.Transports(), ", "))
		}
	}
	switch o.mode {
	case modeInproc:
		if o.addr != "" {
			return fmt.Errorf("-addr is for -mode server or client")
		}
	case modeServer:
		if len(o.stacks) != 1 || len(o.transports) != 1 {
			return fmt.Errorf("-mode server serves one stack: give exactly one -stacks and one -transports")
		}
		if err := o.validateServerXDP(); err != nil {
			return err
		}
		if o.addr == "" {
			o.addr = "127.0.0.1:4433"
		}
	case modeClient:
		switch {
		case slices.Contains(o.transports, xdpTransport) && !o.idleClient:
			return fmt.Errorf("-mode client -transports afxdp: nqbench's clients run on kernel sockets (udp or mmsg); AF_XDP is the server's transport (-mode server -transports afxdp -iface ...)")
		case slices.Contains(o.transports, xdpTransport) && o.clientNetns == "":
			return fmt.Errorf("-idle-client -transports afxdp needs -client-netns")
		}
		if o.addr == "" {
			return fmt.Errorf("-mode client needs -addr")
		}
		if o.certsDir == "" {
			return fmt.Errorf("-mode client needs -certs (the directory holding the server's ca.pem)")
		}
		if slices.Contains(o.workloads, workload.Storm) {
			return fmt.Errorf("-mode client cannot run storm: it restarts the server in its own process")
		}
	default:
		return fmt.Errorf("-mode %q: want inproc, server or client", o.mode)
	}
	if o.addr != "" {
		if _, err := netip.ParseAddrPort(o.addr); err != nil {
			return fmt.Errorf("-addr %q: want ip:port: %w", o.addr, err)
		}
	}
	if o.iface != "" && o.mode != modeServer {
		return fmt.Errorf("-iface is for -mode server -transports afxdp; in-process afxdp runs build their own veth pair")
	}
	if o.clientNetns != "" && !o.idleClient {
		return fmt.Errorf("-client-netns is internal to the idle workload's client process")
	}
	if o.perSocket < 0 {
		return fmt.Errorf("-per-socket %d is negative", o.perSocket)
	}
	// Sizes are taken as given: a 0 typed on the command line is an error, not the default.
	for _, f := range []struct {
		flag string
		v    int
	}{
		{"-c", o.pipe.Conns}, {"-n", o.pipe.Calls}, {"-w", o.pipe.Window}, {"-size", o.pipe.Payload},
		{"-tick-c", o.tick.Clients}, {"-tick-rate", o.tick.Rate}, {"-tick-size", o.tick.Payload},
		{"-idle-k", o.idle.Conns}, {"-storm-k", o.storm.Conns},
	} {
		if f.v < 1 {
			return fmt.Errorf("%s %d: want at least 1", f.flag, f.v)
		}
	}
	if o.tick.Duration <= 0 {
		return fmt.Errorf("-tick-duration %v: must be positive", o.tick.Duration)
	}
	if o.timeout <= 0 {
		return fmt.Errorf("-timeout %v: must be positive", o.timeout)
	}
	if len(o.storm.Variants) == 0 {
		return fmt.Errorf("-storm-variants is empty")
	}
	for _, v := range o.storm.Variants {
		if v != workload.StormResume && v != workload.StormFull {
			return fmt.Errorf("-storm-variants: %q is not %s or %s", v, workload.StormResume, workload.StormFull)
		}
	}
	if o.storm.Recovery <= 0 {
		return fmt.Errorf("-storm-recovery %v: must be positive", o.storm.Recovery)
	}
	if o.threshold < 0 {
		return fmt.Errorf("-threshold %v is negative", o.threshold)
	}
	return nil
}

// validateServerXDP checks -iface and -addr for -mode server: AF_XDP needs an interface and an
// address that traffic reaches through it.
func (o *options) validateServerXDP() error {
	if o.transports[0] != xdpTransport {
		if o.iface != "" {
			return fmt.Errorf("-iface is for -transports afxdp, not %s", o.transports[0])
		}
		return nil
	}
	if o.stacks[0] != stack.NQ {
		return fmt.Errorf("-transports afxdp is an nq transport: use -stacks nq")
	}
	if o.iface == "" {
		return fmt.Errorf("-mode server -transports afxdp needs -iface: the interface to attach AF_XDP to, such as eth0")
	}
	if len(o.iface) > 15 || strings.ContainsAny(o.iface, "/ \t") {
		return fmt.Errorf("-iface %q is not an interface name", o.iface)
	}
	if o.addr == "" {
		return fmt.Errorf("-mode server -transports afxdp needs -addr: an address of -iface %s with a port (or 0.0.0.0:port)", o.iface)
	}
	if ap, err := netip.ParseAddrPort(o.addr); err == nil && ap.Addr().IsLoopback() {
		return fmt.Errorf("-addr %s is a loopback address: AF_XDP sees only what arrives on -iface %s; give one of its addresses (or 0.0.0.0:port)", o.addr, o.iface)
	}
	return nil
}

// usesXDP reports whether the runs planned include nq on afxdp.
func (o *options) usesXDP() bool {
	return slices.ContainsFunc(o.plan(), func(r runSpec) bool { return r.transport == xdpTransport })
}

// runSpec is one run: one workload on one stack (and nq transport).
type runSpec struct {
	workload, stack, transport string
}

func (r runSpec) String() string {
	s := r.workload + " " + r.stack
	if r.transport != "" {
		s += "/" + r.transport
	}
	return s
}

// plan lists the runs the options ask for, in report order.
func (o *options) plan() []runSpec {
	var out []runSpec
	for _, wl := range o.workloads {
		stacks := o.stacks
		if len(stacks) == 0 {
			stacks = defaultStacks[wl]
		}
		for _, st := range stacks {
			if wl == workload.Storm && st != stack.NQ {
				continue // storm measures nq's reconnects; the peers have none
			}
			transports := []string{""}
			if st == stack.NQ {
				transports = o.transports
			}
			for _, tr := range transports {
				out = append(out, runSpec{workload: wl, stack: st, transport: tr})
			}
		}
	}
	return out
}

// perSocketFor is the connections per client socket of a workload.
func (o *options) perSocketFor(wl string) int {
	if o.perSocket > 0 {
		return o.perSocket
	}
	return defaultPerSocket[wl]
}
