package workload

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/naquid/naquid/bench/internal/measure"
	"github.com/naquid/naquid/bench/internal/stack"
)

// TickConfig is the tick workload: a game server's clients each sending a small input message
// at a fixed rate. The zero value is 10 000 clients x 10 calls/s of 64 bytes, 10 s measured
// after 3 s of warm-up.
type TickConfig struct {
	// Clients is the number of client connections (C). Default 10000.
	Clients int
	// Rate is the calls per second of each client (R). Default 10.
	Rate int
	// Payload is the payload size in bytes. Default 64.
	Payload int
	// Duration is the measured phase. Default 10 s.
	Duration time.Duration
	// Warmup is the unmeasured phase before it. Default 3 s; negative means none.
	Warmup time.Duration
	// Schedulers is the number of goroutines issuing the calls; each owns an equal share of
	// the clients. Default GOMAXPROCS.
	Schedulers int
	// PerSocket is reported with the result (the stack was configured with it).
	PerSocket int
}

func (c TickConfig) withDefaults() TickConfig {
	if c.Clients == 0 {
		c.Clients = 10000
	}
	if c.Rate == 0 {
		c.Rate = 10
	}
	if c.Payload == 0 {
		c.Payload = 64
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	switch {
	case c.Warmup == 0:
		c.Warmup = 3 * time.Second
	case c.Warmup < 0:
		c.Warmup = 0
	}
	if c.Schedulers == 0 {
		c.Schedulers = runtime.GOMAXPROCS(0)
	}
	return c
}

func (c TickConfig) validate() error {
	switch {
	case c.Clients < 1:
		return fmt.Errorf("tick: Clients %d: need at least 1", c.Clients)
	case c.Rate < 1 || c.Rate > 1000:
		return fmt.Errorf("tick: Rate %d: need 1..1000 calls per second", c.Rate)
	case c.Payload < 1 || c.Payload > stack.MaxPayload:
		return fmt.Errorf("tick: Payload %d: need 1..%d", c.Payload, stack.MaxPayload)
	case c.Duration < 100*time.Millisecond:
		return fmt.Errorf("tick: Duration %v: need at least 100ms", c.Duration)
	case c.Schedulers < 1:
		return fmt.Errorf("tick: Schedulers %d: need at least 1", c.Schedulers)
	}
	return nil
}

// RunTick runs the tick workload. Each client i sends at start + k/Rate + i/(Clients*Rate), so
// the calls are spread evenly over each period; a call's latency runs from that scheduled time
// to its answer, whenever the sender actually managed to send it. The measured phase counts the
// calls that end within it (a steady-state window), and the calls scheduled within it that were
// still unsent one period (1/Rate) after its end (Missed: the stack, or the load generator on a
// saturated machine, could not keep up).
func RunTick(ctx context.Context, env Env, cfg TickConfig) (Result, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, env.timeout())
	defer cancel()
	name := env.Stack.Name()
	res := Result{
		Workload: Tick, Stack: name, Mode: env.mode(), Start: time.Now().Unix(),
		Conns: cfg.Clients, Rate: cfg.Rate, Payload: cfg.Payload, PerSock: cfg.PerSocket,
		Variant: fmt.Sprintf("%dx%dHz", cfg.Clients, cfg.Rate),
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
	conns, _, err := env.dialAll(ctx, d, addr, cfg.Clients)
	if err != nil {
		return res, fmt.Errorf("tick %s: %w", name, err)
	}
	defer closeAll(conns)

	payload := make([]byte, cfg.Payload)
	period := time.Second / time.Duration(cfg.Rate)
	rec := measure.NewRecorder(64)
	lag := measure.NewRecorder(cfg.Schedulers)
	t := &ticker{
		conns: conns, payload: payload, period: period, rec: rec, lag: lag,
		begin: time.Now().Add(50 * time.Millisecond),
	}
	t.measureFrom = t.begin.Add(cfg.Warmup)
	t.end = t.measureFrom.Add(cfg.Duration)

	warm := measure.StartProgress(env.progress(), fmt.Sprintf("[warm-up tick %s]", name), time.Second, env.Overwrite, t.count)
	var wg sync.WaitGroup
	for s := range cfg.Schedulers {
		wg.Go(func() { t.schedule(ctx, s, cfg.Schedulers) })
	}

	// The measured phase: CPU and progress from its first scheduled call to its last.
	reached := sleepUntil(ctx, nil, t.measureFrom)
	warm.Stop()
	if !reached {
		wg.Wait()
		return res, fmt.Errorf("tick %s: %w", name, ctx.Err())
	}
	before, err := measure.ProcessUsage()
	if err != nil && !errors.Is(err, measure.ErrUnsupported) {
		return res, err
	}
	t.measuring.Store(true)
	p := measure.StartProgress(env.progress(), fmt.Sprintf("[tick %s]", name), time.Second, env.Overwrite, rec.Count)
	sleepUntil(ctx, nil, t.end)
	t.closed.Store(true)
	after, _ := measure.ProcessUsage()
	p.Stop()
	wg.Wait()
	missed := t.scheduled.Load() - t.issued.Load()
	pending := t.pending.Load()
	requests, errs := rec.Count()
	res.Requests = requests
	res.Errors = errs + missed
	res.Missed = missed
	res.Seconds = round(cfg.Duration.Seconds(), 3)
	res.ReqPerSec = round(float64(requests)/cfg.Duration.Seconds(), 0)
	fillLatency(&res, rec.Latency())
	res.LagP99us = us(lag.Latency().P99)
	fillCost(&res, before, after, cfg.Duration)
	if missed > 0 {
		res.AddNote(fmt.Sprintf("overloaded: of %d calls scheduled in the measured phase, %d were not sent within a period after its end (the senders fell behind); %d calls were in flight when the senders stopped",
			t.scheduled.Load(), missed, pending))
	}
	addDiagnostics(&res, d)
	if ctx.Err() != nil {
		return res, fmt.Errorf("tick %s: %w", name, ctx.Err())
	}
	return res, nil
}

// ticker issues the open-loop calls.
type ticker struct {
	conns       []stack.Conn
	payload     []byte
	period      time.Duration
	rec, lag    *measure.Recorder
	begin       time.Time
	measureFrom time.Time
	end         time.Time

	measuring atomic.Bool  // calls ending now are counted
	closed    atomic.Bool  // the measured phase is over: calls ending now are not counted
	warm      atomic.Int64 // calls answered before the measured phase
	pending   atomic.Int64 // calls sent and not yet ended
	scheduled atomic.Int64 // calls scheduled in the measured phase
	issued    atomic.Int64 // of those, the calls sent by one period after its end
}

func (t *ticker) count() (int64, int64) { return t.warm.Load(), 0 }

// schedule issues the calls of the clients s, s+n, s+2n, ... in time order until t.end. When it
// is behind, it sends late calls at once (their latency counts from their scheduled time); the
// calls still unsent one period after t.end are counted as scheduled but never sent.
func (t *ticker) schedule(ctx context.Context, s, n int) {
	lag := t.lag.Shard(s)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	c := len(t.conns)
	var scheduled, issued int64
	defer func() {
		t.scheduled.Add(scheduled)
		t.issued.Add(issued)
	}()
	// A call due in the measured phase that its sender reaches only after the phase ended is
	// still sent if it is less than one period late (a stall at the boundary is latency, as it
	// would be anywhere else; its answer ends after the phase and is not counted); later, the
	// sender has fallen behind by a whole round, and the rest is counted as missed.
	deadline := t.end.Add(t.period)
	late := false // deadline passed: only count what remains
	for k := 0; ; k++ {
		round := t.begin.Add(time.Duration(k) * t.period)
		if !round.Before(t.end) {
			return
		}
		for i := s; i < c; i += n {
			due := round.Add(t.period * time.Duration(i) / time.Duration(c))
			if !due.Before(t.end) {
				return
			}
			measured := !due.Before(t.measureFrom)
			if measured {
				scheduled++ // due within the measured phase
			}
			if late {
				continue
			}
			if now := time.Now(); due.After(now) {
				if !sleepUntil(ctx, timer, due) {
					return
				}
			} else if ctx.Err() != nil {
				return
			} else if !now.Before(deadline) {
				late = true
				continue
			}
			if measured {
				issued++
			}
			if t.measuring.Load() {
				lag.Record(time.Since(due))
			}
			t.send(i, due)
		}
	}
}

// send issues client i's call due at due. Calls ending within the measured phase are counted:
// answered ones with their latency from due, failed ones as errors.
func (t *ticker) send(i int, due time.Time) {
	shard := t.rec.Shard(i)
	t.pending.Add(1)
	end := func(err error) {
		t.pending.Add(-1)
		switch {
		case !t.measuring.Load():
			t.warm.Add(1)
		case t.closed.Load():
		case err != nil:
			shard.Error()
		default:
			shard.Record(time.Since(due))
		}
	}
	if err := t.conns[i].Send(t.payload, end); err != nil {
		end(err)
	}
}

// sleepUntil sleeps until t or until ctx ends, with timer (reset here) or a new one when nil;
// it reports whether t was reached.
func sleepUntil(ctx context.Context, timer *time.Timer, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	if timer == nil {
		timer = time.NewTimer(d)
		defer timer.Stop()
	} else {
		timer.Reset(d)
	}
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
