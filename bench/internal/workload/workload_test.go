package workload

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/naquid/naquid/bench/internal/measure"
	"github.com/naquid/naquid/bench/internal/stack"
	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/udp"
)

func newStack(t *testing.T, name string, cfg stack.Config) stack.Stack {
	t.Helper()
	if cfg.Certs == nil {
		c, err := stack.NewCerts()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certs = c
	}
	st, err := stack.New(name, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestPipeline(t *testing.T) {
	for _, name := range []string{stack.TCP, stack.NQ} {
		t.Run(name, func(t *testing.T) {
			env := Env{Stack: newStack(t, name, stack.Config{}), Timeout: 30 * time.Second}
			res, err := RunPipeline(context.Background(), env, PipelineConfig{Conns: 3, Calls: 200, Window: 4})
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests != 600 || res.Errors != 0 {
				t.Errorf("requests %d errors %d, want 600 and 0", res.Requests, res.Errors)
			}
			if res.ReqPerSec <= 0 || res.P50us <= 0 || res.P99us < res.P50us || res.MaxUs < res.P99us {
				t.Errorf("implausible figures: %+v", res)
			}
			if res.Workload != Pipeline || res.Stack != env.Stack.Name() || res.Mode != "inproc" || res.Payload != 8 {
				t.Errorf("labels: %+v", res)
			}
		})
	}
}

func TestPipelineConfigValidation(t *testing.T) {
	env := Env{Stack: newStack(t, stack.TCP, stack.Config{})}
	for _, tc := range []struct {
		cfg  PipelineConfig
		want string
	}{
		{PipelineConfig{Conns: -1}, "Conns"},
		{PipelineConfig{Calls: -1}, "Calls"},
		{PipelineConfig{Window: -2}, "Window"},
		{PipelineConfig{Payload: 70000}, "Payload"},
	} {
		if _, err := RunPipeline(context.Background(), env, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("RunPipeline(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}

func TestTick(t *testing.T) {
	env := Env{Stack: newStack(t, stack.TCP, stack.Config{}), Timeout: 30 * time.Second}
	cfg := TickConfig{Clients: 20, Rate: 50, Duration: 400 * time.Millisecond, Warmup: 100 * time.Millisecond}
	res, err := RunTick(context.Background(), env, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// 20 clients x 50/s x 0.4 s = 400 calls scheduled in the measured phase; the calls ending
	// in it are counted, give or take the few in flight at either edge.
	if n := res.Requests + res.Errors; n < 380 || n > 420 {
		t.Errorf("requests %d + errors %d, want about 400 calls in the measured phase", res.Requests, res.Errors)
	}
	if res.Errors > 0 || res.Missed > 0 {
		t.Errorf("errors %d (missed %d) at a light load; note: %s", res.Errors, res.Missed, res.Note)
	}
	if res.P50us <= 0 || res.Rate != 50 || res.Conns != 20 {
		t.Errorf("implausible result: %+v", res)
	}
}

// TestTickOverload checks that a stack whose Send blocks is reported as overloaded, and that
// the run ends on time.
func TestTickOverload(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	env := Env{Stack: silentStack{block: release}, Timeout: 30 * time.Second}
	cfg := TickConfig{Clients: 4, Rate: 100, Duration: 200 * time.Millisecond, Warmup: -1, Schedulers: 1}
	done := make(chan struct{})
	var res Result
	var err error
	go func() {
		defer close(done)
		res, err = RunTick(context.Background(), env, cfg)
	}()
	// The only scheduler is stuck in its first Send until released: let it go once the
	// measured phase is surely over.
	select {
	case <-done:
		t.Fatal("RunTick returned while its sender was blocked")
	case <-time.After(time.Second):
	}
	release <- struct{}{}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("RunTick did not return after its sender was released")
	}
	if err != nil {
		t.Fatal(err)
	}
	// 4 clients x 100/s x 0.2 s = 80 calls scheduled; one was sent (late), 79 never were.
	if res.Requests != 0 || res.Missed != 79 || res.Errors != 79 || !strings.Contains(res.Note, "overloaded") {
		t.Errorf("requests %d missed %d errors %d note %q; want 0, 79, 79 and an overload note", res.Requests, res.Missed, res.Errors, res.Note)
	}
}

// silentStack accepts calls and never answers them; the first Send blocks until block yields.
type silentStack struct{ block chan struct{} }

func (silentStack) Name() string { return "silent" }
func (silentStack) Listen(context.Context, string) (stack.Server, error) {
	return silentServer{}, nil
}
func (s silentStack) NewDialer() (stack.Dialer, error) { return silentDialer(s), nil }

type silentServer struct{}

func (silentServer) Addr() string { return "127.0.0.1:9" }
func (silentServer) Close() error { return nil }

type silentDialer struct{ block chan struct{} }

func (d silentDialer) Dial(context.Context, string) (stack.Conn, error) {
	return silentConn(d), nil
}
func (silentDialer) Close() error { return nil }

type silentConn struct{ block chan struct{} }

func (silentConn) Pipeline(context.Context, int, int, []byte, *measure.Shard) (int64, error) {
	return 0, errors.New("silent")
}
func (c silentConn) Send([]byte, func(error)) error {
	<-c.block
	return nil
}
func (silentConn) Close() error { return nil }

func TestStorm(t *testing.T) {
	certs, err := stack.NewCerts()
	if err != nil {
		t.Fatal(err)
	}
	scfg := stack.Config{Certs: certs, PerSocket: 5}
	env := Env{Stack: newStack(t, stack.NQ, scfg), Timeout: 30 * time.Second}
	rs, err := RunStorm(context.Background(), env, scfg, StormConfig{Conns: 12, Spread: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Variant != StormResume || rs[1].Variant != StormFull {
		t.Fatalf("results %+v, want resume then full", rs)
	}
	for _, res := range rs {
		if res.Errors != 0 || res.RecoverySeconds <= 0 {
			t.Fatalf("%s: errors %d, recovery %vs; note: %s", res.Variant, res.Errors, res.RecoverySeconds, res.Note)
		}
		wantResumed := res.Variant == StormResume
		if (res.Resumed == 12) != wantResumed || (res.FullHandshakes == 12) == wantResumed {
			t.Errorf("%s: resumed %d, full %d after the restart", res.Variant, res.Resumed, res.FullHandshakes)
		}
	}
}

// TestStormRestartFails: when the restarted server cannot open its socket, the storm returns the
// variants it measured and an error naming the restart (it used to panic closing a nil server).
func TestStormRestartFails(t *testing.T) {
	certs, err := stack.NewCerts()
	if err != nil {
		t.Fatal(err)
	}
	var opens atomic.Int32
	kernel := udp.Factory(udp.Config{})
	factory := func(ctx context.Context, local netip.AddrPort) (transport.Conn, error) {
		if opens.Add(1) > 2 { // the first server and the resume variant's restart open
			return nil, errors.New("injected: port taken")
		}
		return kernel(ctx, local)
	}
	scfg := stack.Config{Certs: certs, PerSocket: 5, ServerFactory: factory}
	env := Env{Stack: newStack(t, stack.NQ, scfg), Timeout: 30 * time.Second}
	rs, err := RunStorm(context.Background(), env, scfg, StormConfig{Conns: 4, Spread: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("RunStorm = %v, want the restart's error", err)
	}
	if len(rs) != 1 || rs[0].Variant != StormResume {
		t.Fatalf("results %+v, want the resume variant's", rs)
	}
}

func TestStormRejectsRemoteServer(t *testing.T) {
	env := Env{Stack: newStack(t, stack.NQ, stack.Config{}), Addr: "127.0.0.1:1"}
	if _, err := RunStorm(context.Background(), env, stack.Config{}, StormConfig{}); err == nil {
		t.Error("RunStorm with Env.Addr succeeded")
	}
	if _, err := RunStorm(context.Background(), Env{}, stack.Config{}, StormConfig{Variants: []string{"half"}}); err == nil {
		t.Error("RunStorm with an unknown variant succeeded")
	}
}

// inProcessClients runs the idle workload's client side in this process, for the test.
type inProcessClients struct {
	res     chan Result
	errc    chan error
	release chan struct{}
	done    chan error
}

func (c *inProcessClients) Result(ctx context.Context) (Result, error) {
	select {
	case r := <-c.res:
		return r, nil
	case err := <-c.errc:
		return Result{}, err
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

func (c *inProcessClients) Release() error {
	close(c.release)
	return <-c.done
}

func TestIdle(t *testing.T) {
	certs, err := stack.NewCerts()
	if err != nil {
		t.Fatal(err)
	}
	cfg := IdleConfig{Conns: 20, Settle: 10 * time.Millisecond}
	st := newStack(t, stack.NQ, stack.Config{Certs: certs, PerSocket: 10})
	spawn := func(ctx context.Context, addr string) (ClientProcess, error) {
		cp := &inProcessClients{res: make(chan Result, 1), errc: make(chan error, 1), release: make(chan struct{}), done: make(chan error, 1)}
		go func() {
			env := Env{Stack: st, Addr: addr, Timeout: 30 * time.Second}
			err := RunIdleClient(ctx, env, cfg, func(r Result) error { cp.res <- r; return nil },
				func(ctx context.Context) {
					select {
					case <-cp.release:
					case <-ctx.Done():
					}
				})
			if err != nil {
				cp.errc <- err
			}
			cp.done <- err
		}()
		return cp, nil
	}
	res, err := RunIdle(context.Background(), Env{Stack: st, Timeout: 30 * time.Second}, cfg, spawn)
	if err != nil {
		t.Fatal(err)
	}
	if res.Workload != Idle || res.Conns != 20 || res.ConnsPerSec <= 0 || res.Note != "" {
		t.Errorf("implausible result: %+v", res)
	}
	// Both sides share this process here, so only check that memory was measured at all.
	if res.ServerKiBPerConn == 0 && res.ClientKiBPerConn == 0 {
		t.Errorf("no memory measured: %+v", res)
	}
	if _, err := RunIdle(context.Background(), Env{Stack: st, Addr: "127.0.0.1:1"}, cfg, spawn); err == nil {
		t.Error("RunIdle with Env.Addr succeeded")
	}
	if err := RunIdleClient(context.Background(), Env{Stack: st}, cfg, nil, nil); err == nil {
		t.Error("RunIdleClient without Env.Addr succeeded")
	}
}

func TestRound(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		d    int
		want float64
	}{{1.2345, 2, 1.23}, {1.235, 1, 1.2}, {-2.55, 1, -2.6}, {1234.5, 0, 1235}} {
		if got := round(tc.v, tc.d); got != tc.want {
			t.Errorf("round(%v, %d) = %v, want %v", tc.v, tc.d, got, tc.want)
		}
	}
}
