// Package workload runs nqbench's workloads against a stack and measures them:
//
//   - pipeline: C connections each making N echo calls with W in flight (closed loop);
//   - tick: C clients each sending one call R times a second (open loop), latency measured from
//     the scheduled send time, so a slow server cannot hide its delay (no coordinated omission);
//   - idle: K idle connections: establishment rate and memory per connection on each side;
//   - storm: K nq clients reconnecting after a server restart, with and without TLS session
//     resumption: the time until all are back.
//
// Every workload is bounded by a deadline, every loop by a count; each returns a Result.
package workload

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/naquid/naquid/bench/internal/measure"
	"github.com/naquid/naquid/bench/internal/stack"
)

// Names of the workloads.
const (
	Pipeline = "pipeline"
	Tick     = "tick"
	Idle     = "idle"
	Storm    = "storm"
)

// Names returns the workload names in the order reports list them.
func Names() []string { return []string{Pipeline, Tick, Idle, Storm} }

// Result is one measured run: one workload on one stack. Fields a workload does not measure are
// zero and left out of the JSON.
type Result struct {
	Workload string `json:"workload"`
	Stack    string `json:"stack"`
	// Variant distinguishes runs of one workload and stack: the load for tick ("10000x10Hz"),
	// "resume" or "full" for storm.
	Variant string `json:"variant,omitempty"`
	// Mode is "inproc" (server and clients in one process: CPU covers both ends) or "client"
	// (clients only, against a server elsewhere).
	Mode string `json:"mode"`

	// Parameters.
	Conns   int   `json:"conns"`
	Calls   int   `json:"calls,omitempty"`  // pipeline: calls per connection
	Window  int   `json:"window,omitempty"` // pipeline: calls in flight per connection
	Payload int   `json:"payload,omitempty"`
	Rate    int   `json:"rate,omitempty"` // tick: calls per second per client
	PerSock int   `json:"per_socket,omitempty"`
	Start   int64 `json:"start_unix"`

	// Throughput and latency of the measured phase (after warm-up).
	Requests int64 `json:"requests,omitempty"`
	Errors   int64 `json:"errors"`
	// Missed counts tick calls scheduled in the measured phase but not sent within one period
	// (1/R) after its end: their sender fell a whole round behind (they are included in Errors).
	Missed    int64   `json:"missed,omitempty"`
	Seconds   float64 `json:"seconds"`
	ReqPerSec float64 `json:"req_per_s,omitempty"`
	P50us     float64 `json:"p50_us,omitempty"`
	P99us     float64 `json:"p99_us,omitempty"`
	P999us    float64 `json:"p999_us,omitempty"`
	MaxUs     float64 `json:"max_us,omitempty"`
	// LagP99us is the tick scheduler's own lateness (issue time minus scheduled time), p99:
	// how much of the latency is the load generator's.
	LagP99us float64 `json:"lag_p99_us,omitempty"`

	// Cost.
	CPUusPerReq float64 `json:"cpu_us_per_req,omitempty"`
	CPUCores    float64 `json:"cpu_cores,omitempty"` // CPU seconds per second of the phase
	PeakRSSKiB  int64   `json:"peak_rss_kib,omitempty"`

	// Idle and storm.
	ConnsPerSec      float64 `json:"conns_per_s,omitempty"`
	ServerKiBPerConn float64 `json:"server_kib_per_conn,omitempty"`
	ClientKiBPerConn float64 `json:"client_kib_per_conn,omitempty"`
	RecoverySeconds  float64 `json:"recovery_s,omitempty"`
	Resumed          int64   `json:"resumed,omitempty"`
	FullHandshakes   int64   `json:"full_handshakes,omitempty"`

	// Note explains anything unusual about the run (a missed deadline, lost calls).
	Note string `json:"note,omitempty"`
}

// Env is what every workload needs besides its own parameters.
type Env struct {
	// Stack is the stack under test.
	Stack stack.Stack
	// Addr is the server to run against; "" starts one in this process on 127.0.0.1:0.
	Addr string
	// Progress receives the live progress line; nil discards it.
	Progress io.Writer
	// Overwrite rewrites the progress line in place (a terminal).
	Overwrite bool
	// Timeout bounds the whole run. 0 means 2 minutes.
	Timeout time.Duration
	// DialConcurrency bounds the dials in flight. 0 means DefaultDialConcurrency.
	DialConcurrency int
}

// DefaultDialConcurrency is the number of dials in flight when Env.DialConcurrency is 0. It is
// quic-go's accept queue length: with no more handshakes in flight than that, a server whose
// accept loop is slow to run (a saturated machine) still never finds the queue full and
// refuses a connection; more would measure that queue rather than connection setup.
const DefaultDialConcurrency = 32

func (e Env) dialConcurrency() int {
	if e.DialConcurrency <= 0 {
		return DefaultDialConcurrency
	}
	return e.DialConcurrency
}

func (e Env) timeout() time.Duration {
	if e.Timeout <= 0 {
		return 2 * time.Minute
	}
	return e.Timeout
}

func (e Env) progress() io.Writer {
	if e.Progress == nil {
		return io.Discard
	}
	return e.Progress
}

func (e Env) mode() string {
	if e.Addr == "" {
		return "inproc"
	}
	return "client"
}

// server returns the address to dial, starting an in-process server when e.Addr is empty; stop
// closes that server.
func (e Env) server(ctx context.Context) (addr string, stop func(), err error) {
	if e.Addr != "" {
		return e.Addr, func() {}, nil
	}
	srv, err := e.Stack.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	return srv.Addr(), func() { _ = srv.Close() }, nil
}

// dialAll opens n connections with bounded concurrency, showing progress. It fails on the first
// dial error (after closing what it opened).
func (e Env) dialAll(ctx context.Context, d stack.Dialer, addr string, n int) ([]stack.Conn, time.Duration, error) {
	conns := make([]stack.Conn, n)
	var (
		next, dialed atomic.Int64
		wg           sync.WaitGroup
		mu           sync.Mutex
		first        error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := measure.StartProgress(e.progress(), fmt.Sprintf("[dial %s x%d]", e.Stack.Name(), n), time.Second, e.Overwrite,
		func() (int64, int64) { return dialed.Load(), 0 })
	start := time.Now()
	for range min(e.dialConcurrency(), n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := d.Dial(ctx, addr)
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("dial %d of %d: %w", i+1, n, err)
					}
					mu.Unlock()
					cancel()
					return
				}
				conns[i] = c
				dialed.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	p.Stop()
	if first != nil {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
		return nil, 0, first
	}
	return conns, elapsed, nil
}

// addDiagnostics appends what the dialer reports (if it reports anything) to r's note.
func addDiagnostics(r *Result, d stack.Dialer) {
	dg, ok := d.(stack.Diagnoser)
	if !ok {
		return
	}
	r.AddNote(dg.Diagnostics())
}

// AddNote appends msg to r.Note ("; " between notes); an empty msg adds nothing.
func (r *Result) AddNote(msg string) {
	if msg == "" {
		return
	}
	if r.Note != "" {
		r.Note += "; "
	}
	r.Note += msg
}

// fillLatency copies a latency summary into r.
func fillLatency(r *Result, l measure.Latency) {
	r.P50us = us(l.P50)
	r.P99us = us(l.P99)
	r.P999us = us(l.P999)
	r.MaxUs = us(l.Max)
}

// fillCost sets the CPU and memory figures from usage before and after the measured phase.
func fillCost(r *Result, before, after measure.Usage, elapsed time.Duration) {
	cpu := after.CPU - before.CPU
	if r.Requests > 0 {
		r.CPUusPerReq = round(float64(cpu)/float64(time.Microsecond)/float64(r.Requests), 3)
	}
	if elapsed > 0 {
		r.CPUCores = round(cpu.Seconds()/elapsed.Seconds(), 2)
	}
	r.PeakRSSKiB = after.MaxRSSKiB
}

func us(d time.Duration) float64 { return round(float64(d)/float64(time.Microsecond), 1) }

// round rounds v to digits decimals.
func round(v float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	if v < 0 {
		return -float64(int64(-v*p+0.5)) / p
	}
	return float64(int64(v*p+0.5)) / p
}

func closeAll(conns []stack.Conn) {
	var wg sync.WaitGroup
	for _, c := range conns {
		if c != nil {
			wg.Go(func() { _ = c.Close() })
		}
	}
	wg.Wait()
}
