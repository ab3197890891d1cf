package workload

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/naquid/naquid/bench/internal/measure"
	"github.com/naquid/naquid/bench/internal/stack"
)

// PipelineConfig is the pipeline workload. The zero value is naquid's reference workload:
// 100 connections x 5000 calls, 32 in flight, 8-byte payload.
type PipelineConfig struct {
	// Conns is the number of connections (C). Default 100.
	Conns int
	// Calls is the number of measured calls per connection (N). Default 5000.
	Calls int
	// Window is the number of calls in flight per connection (W). Default 32.
	Window int
	// Payload is the payload size in bytes. Default 8; at most stack.MaxPayload.
	Payload int
	// Warmup is the number of unmeasured calls per connection made first. Default Calls/5,
	// at least Window; -1 means none.
	Warmup int
}

func (c PipelineConfig) withDefaults() PipelineConfig {
	if c.Conns == 0 {
		c.Conns = 100
	}
	if c.Calls == 0 {
		c.Calls = 5000
	}
	if c.Window == 0 {
		c.Window = 32
	}
	if c.Payload == 0 {
		c.Payload = 8
	}
	switch {
	case c.Warmup == 0:
		c.Warmup = max(c.Calls/5, c.Window)
	case c.Warmup < 0:
		c.Warmup = 0
	}
	return c
}

func (c PipelineConfig) validate() error {
	switch {
	case c.Conns < 1:
		return fmt.Errorf("pipeline: Conns %d: need at least 1", c.Conns)
	case c.Calls < 1:
		return fmt.Errorf("pipeline: Calls %d: need at least 1", c.Calls)
	case c.Window < 1:
		return fmt.Errorf("pipeline: Window %d: need at least 1", c.Window)
	case c.Payload < 1 || c.Payload > stack.MaxPayload:
		return fmt.Errorf("pipeline: Payload %d: need 1..%d", c.Payload, stack.MaxPayload)
	}
	return nil
}

// RunPipeline runs the pipeline workload.
func RunPipeline(ctx context.Context, env Env, cfg PipelineConfig) (Result, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, env.timeout())
	defer cancel()
	name := env.Stack.Name()
	res := Result{
		Workload: Pipeline, Stack: name, Mode: env.mode(), Start: time.Now().Unix(),
		Conns: cfg.Conns, Calls: cfg.Calls, Window: cfg.Window, Payload: cfg.Payload,
	}
	addr, stop, err := env.server(ctx)
	if err != nil {
		return res, err
	}
	defer stop()
	d, err := env.Stack.NewDialer()
	if err != nil {
		return res, err
	}
	defer d.Close()
	conns, _, err := env.dialAll(ctx, d, addr, cfg.Conns)
	if err != nil {
		addDiagnostics(&res, d)
		return res, fmt.Errorf("pipeline %s: %w", name, err)
	}
	defer closeAll(conns)

	payload := make([]byte, cfg.Payload)
	for i := range payload {
		payload[i] = byte(i)
	}
	rec := measure.NewRecorder(min(cfg.Conns, 64))
	if cfg.Warmup > 0 {
		p := measure.StartProgress(env.progress(), fmt.Sprintf("[warm-up pipeline %s]", name), time.Second, env.Overwrite, rec.Count)
		_, err := runCalls(ctx, conns, cfg.Warmup, cfg.Window, payload, rec)
		p.Stop()
		if err != nil {
			return res, fmt.Errorf("pipeline %s: warm-up: %w", name, err)
		}
		rec.Reset()
	}

	before, err := measure.ProcessUsage()
	if err != nil && !errors.Is(err, measure.ErrUnsupported) {
		return res, err
	}
	p := measure.StartProgress(env.progress(), fmt.Sprintf("[pipeline %s]", name), time.Second, env.Overwrite, rec.Count)
	start := time.Now()
	answered, runErr := runCalls(ctx, conns, cfg.Calls, cfg.Window, payload, rec)
	elapsed := time.Since(start)
	p.Stop()
	after, _ := measure.ProcessUsage()

	_, errs := rec.Count()
	res.Requests = answered
	res.Errors = errs
	res.Seconds = round(elapsed.Seconds(), 3)
	if elapsed > 0 {
		res.ReqPerSec = round(float64(answered)/elapsed.Seconds(), 0)
	}
	fillLatency(&res, rec.Latency())
	fillCost(&res, before, after, elapsed)
	addDiagnostics(&res, d)
	if runErr != nil {
		res.AddNote(runErr.Error())
		if answered == 0 {
			return res, fmt.Errorf("pipeline %s: %w", name, runErr)
		}
	}
	return res, nil
}

// runCalls runs a pipeline of n calls on every connection at once and returns the total answered
// and the first error.
func runCalls(ctx context.Context, conns []stack.Conn, n, w int, payload []byte, rec *measure.Recorder) (int64, error) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int64
		first error
	)
	for i, c := range conns {
		wg.Go(func() {
			got, err := c.Pipeline(ctx, n, w, payload, rec.Shard(i))
			mu.Lock()
			total += got
			if err != nil && first == nil {
				first = fmt.Errorf("connection %d: %w", i, err)
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return total, first
}
