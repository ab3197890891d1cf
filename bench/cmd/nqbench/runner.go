package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/naquid/naquid/bench/internal/measure"
	"github.com/naquid/naquid/bench/internal/report"
	"github.com/naquid/naquid/bench/internal/stack"
	"github.com/naquid/naquid/bench/internal/workload"
	"github.com/naquid/naquid/bench/internal/xdpnet"
	"github.com/naquid/naquid/transport/afxdp"
)

// runSuite runs every planned run (each in a child process unless -isolate=false), prints the
// JSON lines as they come, then the Markdown tables, the comparison and the ratio lines.
func runSuite(ctx context.Context, o *options, args []string, stdout, stderr io.Writer) error {
	var (
		results []workload.Result
		failed  []string
	)
	for _, path := range o.from {
		rs, err := readResults(path)
		if err != nil {
			return fmt.Errorf("-from %s: %w", path, err)
		}
		for _, r := range rs {
			if err := report.WriteJSON(stdout, r); err != nil {
				return err
			}
		}
		results = append(results, rs...)
	}
	plan := repeatPlan(o.plan(), o.rounds)
	if len(o.from) > 0 {
		plan = nil
	} else if o.usesXDP() {
		if err := xdpnet.Available(); err != nil {
			return fmt.Errorf("-transports afxdp: %w", err)
		}
	}
	for _, r := range plan {
		if ctx.Err() != nil {
			failed = append(failed, r.String()+": interrupted")
			break
		}
		var (
			got []workload.Result
			err error
		)
		began := time.Now()
		if o.isolate {
			got, err = runIsolated(ctx, o, args, r, stderr)
		} else {
			got, err = runOne(ctx, o, r, stderr)
		}
		if !o.quiet {
			fmt.Fprintf(stderr, "nqbench: %s took %.1fs\n", r, time.Since(began).Seconds())
		}
		if err != nil {
			fmt.Fprintf(stderr, "nqbench: %s: %v\n", r, err)
			failed = append(failed, fmt.Sprintf("%s: %v", r, err))
		}
		for _, res := range got {
			if err := report.WriteJSON(stdout, res); err != nil {
				return err
			}
			results = append(results, res)
		}
	}
	results = medianRuns(results)
	md := header(args) + report.Markdown(results)
	if len(failed) > 0 {
		md += "### failed runs\n\n"
		for _, f := range failed {
			md += "- " + f + "\n"
		}
		md += "\n"
	}
	var change string
	if o.compare != "" {
		prev, err := readResults(o.compare)
		switch {
		case errors.Is(err, os.ErrNotExist):
			change = "no previous results at " + o.compare + "\n"
		case err != nil:
			return err
		default:
			change = report.Compare(prev, results, o.threshold)
		}
	}
	var ratios strings.Builder
	for _, r := range report.Ratios(results) {
		ratios.WriteString(r.Line() + "\n")
	}
	fmt.Fprintf(stdout, "\n%s", md)
	if change != "" {
		fmt.Fprintf(stdout, "### change from the previous run\n\n%s\n", change)
	}
	fmt.Fprint(stdout, ratios.String())
	if o.mdPath != "" {
		body := md
		if change != "" {
			body += "### change from the previous run\n\n```\n" + change + "```\n\n"
		}
		if ratios.Len() > 0 {
			body += "### ratio lines\n\n```\n" + ratios.String() + "```\n"
		}
		if err := os.WriteFile(o.mdPath, []byte(body), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", o.mdPath, err)
		}
	}
	if o.jsonPath != "" {
		var b bytes.Buffer
		for _, r := range results {
			if err := report.WriteJSON(&b, r); err != nil {
				return err
			}
		}
		if err := os.WriteFile(o.jsonPath, b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", o.jsonPath, err)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of the runs failed", len(failed))
	}
	return nil
}

// repeatPlan returns plan run rounds times, every even round in reverse order, so that no run
// always comes first or last.
func repeatPlan(plan []runSpec, rounds int) []runSpec {
	out := make([]runSpec, 0, len(plan)*rounds)
	for round := 1; round <= rounds; round++ {
		if round%2 == 0 {
			rev := slices.Clone(plan)
			slices.Reverse(rev)
			out = append(out, rev...)
		} else {
			out = append(out, plan...)
		}
	}
	return out
}

// medianRuns keeps one result per workload variant, stack and mode: the median by medianMetric
// (the lower middle of an even count; the first run when the workload has no such figure), in
// the order the kept runs first appeared.
func medianRuns(results []workload.Result) []workload.Result {
	type key struct{ workload, variant, stack, mode string }
	byKey := map[key][]workload.Result{}
	var order []key
	for _, r := range results {
		k := key{r.Workload, r.Variant, r.Stack, r.Mode}
		if _, seen := byKey[k]; !seen {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], r)
	}
	out := make([]workload.Result, 0, len(order))
	for _, k := range order {
		runs := byKey[k]
		if _, ok := medianMetric(runs[0]); !ok {
			out = append(out, runs[0])
			continue
		}
		slices.SortStableFunc(runs, func(a, b workload.Result) int {
			va, _ := medianMetric(a)
			vb, _ := medianMetric(b)
			return cmp.Compare(va, vb)
		})
		out = append(out, runs[(len(runs)-1)/2])
	}
	return out
}

// medianMetric is the figure runs are ranked by, higher better: the report's metric (req/s,
// tick p99, idle KiB), or for a storm the inverse of its recovery time (0 when not all clients
// came back). ok is false for workloads with neither.
func medianMetric(r workload.Result) (v float64, ok bool) {
	if r.Workload == workload.Storm {
		if r.RecoverySeconds > 0 {
			v = 1 / r.RecoverySeconds
		}
		return v, true
	}
	if v, ok := report.Metric(r); ok {
		return v, true
	}
	switch r.Workload {
	case workload.Pipeline, workload.Tick, workload.Idle:
		return 0, true // a failed run: ranked lowest
	}
	return 0, false
}

func header(args []string) string {
	return fmt.Sprintf("## nqbench %s\n\n`nqbench %s` on %s/%s, %d CPUs, %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), strings.Join(args, " "),
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
}

func readResults(path string) ([]workload.Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return report.ReadJSON(f)
}

// childArgs are the arguments of the child process that runs r: the parent's own, then the
// overrides (the flag package keeps the last value of a repeated flag).
func childArgs(args []string, r runSpec) []string {
	out := append(slices.Clone(args), "-child", "-isolate=false",
		"-workloads", r.workload, "-stacks", r.stack, "-json=", "-md=", "-compare=", "-from=")
	if r.transport != "" {
		out = append(out, "-transports", r.transport)
	}
	return out
}

// runIsolated runs r in a child process of this executable and returns the results it printed.
func runIsolated(ctx context.Context, o *options, args []string, r runSpec, stderr io.Writer) ([]workload.Result, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, childArgs(args, r)...)
	cmd.Env = childEnv()
	cmd.Stderr = stderr
	interruptOnCancel(cmd)
	var out bytes.Buffer
	cmd.Stdout = &out
	runErr := cmd.Run()
	res, perr := report.ReadJSON(&out)
	if runErr != nil {
		return res, fmt.Errorf("child process: %w", runErr)
	}
	if perr != nil {
		return res, perr
	}
	if len(res) == 0 {
		return nil, errors.New("child process printed no result")
	}
	return res, nil
}

// interruptOnCancel makes cmd's context end the child with an interrupt, which it handles like
// the user's ^C (it stops, deletes the network namespaces of an afxdp run, and exits), and only
// 5 s later with SIGKILL.
func interruptOnCancel(cmd *exec.Cmd) {
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
}

// childEnv is the environment of child processes (tests add to it).
func childEnv() []string { return os.Environ() }

// runChild runs the single run the options describe and prints its JSON line.
func runChild(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	p := o.plan()
	if len(p) != 1 {
		return fmt.Errorf("-child needs exactly one run, the options describe %d", len(p))
	}
	res, err := runOne(ctx, o, p[0], stderr)
	for _, r := range res {
		if werr := report.WriteJSON(stdout, r); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

// certs returns the TLS material: generated in memory, or from -certs for a client.
func (o *options) certs() (*stack.Certs, error) {
	if o.certsDir != "" && (o.mode == modeClient || o.idleClient) {
		return stack.LoadCerts(o.certsDir)
	}
	return stack.NewCerts()
}

func (o *options) env(st stack.Stack, stderr io.Writer) workload.Env {
	env := workload.Env{Stack: st, Progress: stderr, Timeout: o.timeout}
	if f, ok := stderr.(*os.File); ok {
		env.Overwrite = measure.IsTerminal(f)
	}
	if o.quiet {
		env.Progress = io.Discard
	}
	if o.mode == modeClient || o.idleClient {
		env.Addr = o.addr
	}
	return env
}

func (o *options) stackConfig(r runSpec, certs *stack.Certs) stack.Config {
	return stack.Config{
		Certs:     certs,
		Transport: r.transport,
		PerSocket: o.perSocketFor(r.workload),
	}
}

// runOne runs r in this process, profiled when -profile-dir is set. It returns the results
// measured even when it fails (a run cut short by its deadline still reports what it saw).
func runOne(ctx context.Context, o *options, r runSpec, stderr io.Writer) ([]workload.Result, error) {
	prof, err := startProfiles(o.profileDir, r)
	if err != nil {
		return nil, err
	}
	res, err := runWorkload(ctx, o, r, stderr)
	if perr := prof.stop(); perr != nil && err == nil {
		err = perr
	}
	return res, err
}

// runWorkload runs r in this process; an afxdp run builds its network first (xdpnet) and
// deletes it before returning, and its results note what the server's AF_XDP socket did.
func runWorkload(ctx context.Context, o *options, r runSpec, stderr io.Writer) (res []workload.Result, err error) {
	certs, err := o.certs()
	if err != nil {
		return nil, err
	}
	scfg := o.stackConfig(r, certs)
	if r.transport == xdpTransport {
		xn, nerr := xdpnet.New()
		if nerr != nil {
			return nil, fmt.Errorf("%s: %w", r, nerr)
		}
		defer func() {
			for i := range res {
				res[i].AddNote(xn.Summary())
			}
			if cerr := xn.Close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}()
		scfg.ServerFactory, scfg.ClientFactory = xn.ServerFactory(), xn.ClientFactory()
		return runStack(ctx, o, r, certs, scfg, xn.ClientNamespace(), stderr)
	}
	return runStack(ctx, o, r, certs, scfg, "", stderr)
}

// runStack runs r on the stack scfg configures; clientNetns is where the idle workload's client
// process opens its sockets ("": where it runs).
func runStack(ctx context.Context, o *options, r runSpec, certs *stack.Certs, scfg stack.Config, clientNetns string, stderr io.Writer) ([]workload.Result, error) {
	st, err := stack.New(r.stack, scfg)
	if err != nil {
		return nil, err
	}
	env := o.env(st, stderr)
	one := func(res workload.Result, err error) ([]workload.Result, error) {
		if res.Workload == "" {
			return nil, err // nothing was measured
		}
		return []workload.Result{res}, err
	}
	switch r.workload {
	case workload.Pipeline:
		return one(workload.RunPipeline(ctx, env, o.pipe))
	case workload.Tick:
		cfg := o.tick
		cfg.PerSocket = scfg.PerSocket
		return one(workload.RunTick(ctx, env, cfg))
	case workload.Idle:
		cfg := o.idle
		cfg.PerSocket = scfg.PerSocket
		if o.mode == modeClient {
			var res workload.Result
			err := workload.RunIdleClient(ctx, env, cfg, func(r workload.Result) error { res = r; return nil }, func(context.Context) {})
			return one(res, err)
		}
		return one(runIdleServer(ctx, o, r, certs, env, cfg, clientNetns))
	case workload.Storm:
		cfg := o.storm
		cfg.PerSocket = scfg.PerSocket
		return workload.RunStorm(ctx, env, scfg, cfg)
	}
	return nil, fmt.Errorf("unknown workload %q", r.workload)
}

// runIdleServer runs the idle workload's server here and its clients in a child process that
// trusts certificates written to a temporary directory (and opens its sockets in clientNetns
// when not "").
func runIdleServer(ctx context.Context, o *options, r runSpec, certs *stack.Certs, env workload.Env, cfg workload.IdleConfig, clientNetns string) (workload.Result, error) {
	dir, err := os.MkdirTemp("", "nqbench-certs-")
	if err != nil {
		return workload.Result{}, fmt.Errorf("idle: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := certs.WriteFiles(dir); err != nil {
		return workload.Result{}, err
	}
	spawn := func(ctx context.Context, addr string) (workload.ClientProcess, error) {
		args := []string{"-idle-client", "-mode", modeClient, "-workloads", workload.Idle, "-stacks", r.stack,
			"-addr", addr, "-certs", dir, "-idle-k", fmt.Sprint(cfg.Conns),
			"-per-socket", fmt.Sprint(cfg.PerSocket), "-timeout", o.timeout.String()}
		if r.transport != "" {
			args = append(args, "-transports", r.transport)
		}
		if clientNetns != "" {
			args = append(args, "-client-netns", clientNetns)
		}
		if o.quiet {
			args = append(args, "-quiet")
		}
		return startClientProcess(ctx, args, env.Progress)
	}
	return workload.RunIdle(ctx, env, cfg, spawn)
}

// clientProcess is the idle workload's client child: it prints its JSON result line when its
// connections are up, and exits when its stdin closes.
type clientProcess struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	res   chan workload.Result
	errc  chan error
	once  sync.Once
	err   error
}

func startClientProcess(ctx context.Context, args []string, stderr io.Writer) (*clientProcess, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = childEnv()
	cmd.Stderr = stderr
	interruptOnCancel(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", exe, err)
	}
	cp := &clientProcess{cmd: cmd, stdin: stdin, res: make(chan workload.Result, 1), errc: make(chan error, 1)}
	go func() {
		// The client prints its result line and keeps its connections open: hand the first
		// result over as soon as its line is complete, then drain the rest.
		sc := bufio.NewScanner(stdout)
		reported := false
		for !reported && sc.Scan() {
			rs, err := report.ReadJSON(bytes.NewReader(sc.Bytes()))
			switch {
			case err != nil:
				cp.errc <- err
				reported = true
			case len(rs) > 0:
				cp.res <- rs[0]
				reported = true
			}
		}
		if !reported {
			err := sc.Err()
			if err == nil {
				err = errors.New("client process exited without a result")
			}
			cp.errc <- err
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	return cp, nil
}

// Result waits for the client's result line.
func (c *clientProcess) Result(ctx context.Context) (workload.Result, error) {
	select {
	case r := <-c.res:
		return r, nil
	case err := <-c.errc:
		return workload.Result{}, err
	case <-ctx.Done():
		return workload.Result{}, ctx.Err()
	}
}

func (c *clientProcess) Release() error {
	c.once.Do(func() {
		c.stdin.Close()
		c.err = c.cmd.Wait()
	})
	return c.err
}

// runIdleClient is the idle workload's client process: it reports its result on stdout, then
// holds its connections until stdin closes.
func runIdleClient(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	certs, err := o.certs()
	if err != nil {
		return err
	}
	r := runSpec{workload: workload.Idle, stack: o.stacks[0]}
	if r.stack == stack.NQ {
		r.transport = o.transports[0]
	}
	scfg := o.stackConfig(r, certs)
	if o.clientNetns != "" {
		scfg.ClientFactory = xdpnet.ClientFactoryIn(o.clientNetns)
	}
	st, err := stack.New(r.stack, scfg)
	if err != nil {
		return err
	}
	cfg := o.idle
	cfg.PerSocket = o.perSocketFor(workload.Idle)
	ready := func(res workload.Result) error { return report.WriteJSON(stdout, res) }
	hold := func(ctx context.Context) {
		done := make(chan struct{})
		go func() {
			_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	return workload.RunIdleClient(ctx, o.env(st, stderr), cfg, ready, hold)
}

// serve runs -mode server: one stack on -addr until interrupted or -serve-for passes.
func serve(ctx context.Context, o *options, stderr io.Writer) error {
	var certs *stack.Certs
	var err error
	if o.certsDir != "" {
		if certs, err = stack.LoadCerts(o.certsDir); err != nil || !certs.HasServer() {
			if certs, err = stack.NewCerts(); err != nil {
				return err
			}
			if err := certs.WriteFiles(o.certsDir); err != nil {
				return err
			}
		}
	} else if certs, err = stack.NewCerts(); err != nil {
		return err
	}
	r := runSpec{workload: workload.Pipeline, stack: o.stacks[0]}
	if r.stack == stack.NQ {
		r.transport = o.transports[0]
	}
	scfg := o.stackConfig(r, certs)
	if r.transport == xdpTransport {
		scfg.ServerFactory = afxdp.Factory(afxdp.Config{Interface: o.iface})
	}
	st, err := stack.New(r.stack, scfg)
	if err != nil {
		return err
	}
	srv, err := st.Listen(ctx, o.addr)
	if err != nil {
		return err
	}
	defer srv.Close()
	where := "in memory only (clients in other processes cannot verify it: use -certs)"
	if o.certsDir != "" {
		where = o.certsDir
	}
	fmt.Fprintf(stderr, "nqbench: serving %s on %s; certificates: %s\n", st.Name(), srv.Addr(), where)
	ctx, cancel := context.WithTimeout(ctx, o.serveFor)
	defer cancel()
	<-ctx.Done()
	return nil
}
