package workload

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/naquid/naquid/bench/internal/measure"
)

// IdleConfig is the idle workload. The zero value is 10 000 connections.
type IdleConfig struct {
	// Conns is the number of idle connections (K). Default 10000.
	Conns int
	// PerSocket is reported with the result (the stack was configured with it).
	PerSocket int
	// Settle is how long the connections sit idle before memory is measured, so that
	// post-handshake traffic (session tickets, acknowledgements) is over. Default 1 s.
	Settle time.Duration
}

func (c IdleConfig) withDefaults() IdleConfig {
	if c.Conns == 0 {
		c.Conns = 10000
	}
	if c.Settle == 0 {
		c.Settle = time.Second
	}
	return c
}

func (c IdleConfig) validate() error {
	if c.Conns < 1 {
		return fmt.Errorf("idle: Conns %d: need at least 1", c.Conns)
	}
	if c.Settle < 0 {
		return fmt.Errorf("idle: Settle %v is negative", c.Settle)
	}
	return nil
}

// ClientProcess is the idle workload's client side running in another process (so that each
// side's memory is its own).
type ClientProcess interface {
	// Result waits for the client's report: its connections are open and measured.
	Result(ctx context.Context) (Result, error)
	// Release tells the client to close its connections and exit, and waits for it.
	Release() error
}

// RunIdle runs the idle workload's server side: it starts the server in this process, has spawn
// start the clients against it in another process, and measures the server's memory once they
// are all connected.
func RunIdle(ctx context.Context, env Env, cfg IdleConfig, spawn func(ctx context.Context, addr string) (ClientProcess, error)) (Result, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	if env.Addr != "" {
		return Result{}, errors.New("idle: the server side runs its own server: Env.Addr must be empty")
	}
	ctx, cancel := context.WithTimeout(ctx, env.timeout())
	defer cancel()
	name := env.Stack.Name()
	srv, err := env.Stack.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		return Result{}, err
	}
	defer srv.Close()
	base := measure.GoMemory()
	cp, err := spawn(ctx, srv.Addr())
	if err != nil {
		return Result{}, fmt.Errorf("idle %s: start clients: %w", name, err)
	}
	res, err := cp.Result(ctx)
	if err != nil {
		_ = cp.Release()
		return res, fmt.Errorf("idle %s: clients: %w", name, err)
	}
	// The clients settled before reporting; the server's last acknowledgements are out too.
	mem := measure.GoMemory()
	res.Mode = "inproc"
	res.ServerKiBPerConn = round((float64(mem)-float64(base))/1024/float64(cfg.Conns), 1)
	if u, err := measure.ProcessUsage(); err == nil {
		res.PeakRSSKiB = u.MaxRSSKiB
	}
	if err := cp.Release(); err != nil {
		res.AddNote(fmt.Sprintf("client process: %v", err))
	}
	return res, nil
}

// RunIdleClient runs the idle workload's client side: it dials the connections, lets them
// settle, measures its own memory and calls ready with the result; then it holds the
// connections until hold returns (or ctx ends) and closes them.
func RunIdleClient(ctx context.Context, env Env, cfg IdleConfig, ready func(Result) error, hold func(ctx context.Context)) error {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	if env.Addr == "" {
		return errors.New("idle: the client side needs the server's address (Env.Addr)")
	}
	ctx, cancel := context.WithTimeout(ctx, env.timeout())
	defer cancel()
	name := env.Stack.Name()
	res := Result{Workload: Idle, Stack: name, Mode: "client", Start: time.Now().Unix(), Conns: cfg.Conns, PerSock: cfg.PerSocket}
	base := measure.GoMemory()
	d, err := env.Stack.NewDialer()
	if err != nil {
		return err
	}
	defer d.Close()
	conns, took, err := env.dialAll(ctx, d, env.Addr, cfg.Conns)
	if err != nil {
		return fmt.Errorf("idle %s: %w", name, err)
	}
	defer closeAll(conns)
	res.Seconds = round(took.Seconds(), 3)
	res.ConnsPerSec = round(float64(cfg.Conns)/took.Seconds(), 0)
	if !sleepUntil(ctx, nil, time.Now().Add(cfg.Settle)) {
		return fmt.Errorf("idle %s: %w", name, ctx.Err())
	}
	mem := measure.GoMemory()
	res.ClientKiBPerConn = round((float64(mem)-float64(base))/1024/float64(cfg.Conns), 1)
	if u, err := measure.ProcessUsage(); err == nil {
		res.PeakRSSKiB = u.MaxRSSKiB
	}
	addDiagnostics(&res, d)
	if err := ready(res); err != nil {
		return err
	}
	hold(ctx)
	return nil
}
