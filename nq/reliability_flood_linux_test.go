package nq_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/nq"
	"github.com/naquid/naquid/quic"
	"github.com/naquid/naquid/transport"
	"github.com/naquid/naquid/transport/mmsg"
)

// floodPlan sizes the handshake flood test.
type floodPlan struct {
	tickers    int           // established clients running the tick workload
	period     time.Duration // tick period of each
	warm       time.Duration // tick workload before the baseline, not measured
	quiet      time.Duration // baseline phase
	flood      time.Duration // flood phase
	rate       int           // garbage and forged packets per second
	sockets    int           // source ports the flood comes from
	handshakes int           // real handshakes during the flood, from fresh clients
	// maxFloodHeap bounds how far the live heap (HeapInuse after a collection) rises above its
	// value before the flood while the flood runs alone; maxHeapGrowth bounds it after the real
	// handshakes, whose server connections stay open until their clients' closes arrive.
	maxFloodHeap, maxHeapGrowth uint64
	// floodSlack and bothSlack are added to 2x the quiet p99 to bound the tick p99 under the
	// flood alone and with the real handshakes.
	floodSlack, bothSlack time.Duration
	// minRate is the share of rate the flood must reach (the attacker process runs at the lowest
	// priority; under -race on a busy machine it may fall behind).
	minRate float64
}

// floodMaxHandshakes is the handshake cap of the flood test's server: 4 per core on 2 cores.
const floodMaxHandshakes = 8

// TestReliabilityHandshakeFlood floods a server with forged QUIC Initials (valid v1 headers,
// random connection IDs, padded to 1200 bytes; from many source ports and, as root, from spoofed
// source addresses), unknown-version and short-header packets and pure garbage, while hundreds
// of fresh clients handshake and established clients run the tick workload (one small call every
// 100 ms each, open loop, latency measured from the scheduled time). It checks that the server
// answers forged Initials with Retry (address validation) once attempts exceed RetryAbove, that
// real clients still connect (through Retry, and past the server's MaxHandshakes cap, which
// refuses attempts beyond it: they retry after their back-off), that the established clients lose
// no call and their p99 stays within the bound, that memory stays bounded, and that Retry stops
// once the flood has.
//
// This process is the server alone. The attackers (the flood and the fresh clients) run in a
// child process at the lowest priority, this test binary re-executed
// (TestHelperProcessFloodAttacker), and the established clients in another at normal priority
// (TestHelperProcessFloodTickers): real attackers and players are remote, and in this process
// they would share the server's Go scheduler and garbage collector, so the figures would measure
// them as much as the server (a tick's timer and its reply's receive loop would wait behind the
// server's handshakes in the same run queues). They still share the machine's cores.
//
// The p99 bound, checked separately for the flood alone and for the flood with real handshakes,
// is 2x the quiet p99 of the same run plus 1 ms in soak mode (run it without -race). The reduced
// form runs for seconds, usually under -race and next to other test packages on 2 cores: its p99
// is the 5th-worst of ~500 samples a phase, and the race detector slows the server several-fold
// and unevenly, so it is not stable enough for a 2x bound and only guards against a collapse
// (ticks stalled for a large part of a second).
//
// The server runs with MaxHandshakes floodMaxHandshakes, the setting for a server that puts its
// established players' latency before the speed of new logins; the default cap (128 on 2 cores)
// favours logins and keeps less of the latency (docs/RELIABILITY.md has both).
func TestReliabilityHandshakeFlood(t *testing.T) {
	plan := pick(
		floodPlan{tickers: 16, period: 100 * time.Millisecond, warm: time.Second, quiet: 3 * time.Second, flood: 4 * time.Second,
			rate: 3000, sockets: 128, handshakes: 200, maxFloodHeap: 32 * mib, maxHeapGrowth: 64 * mib,
			floodSlack: 250 * time.Millisecond, bothSlack: 500 * time.Millisecond, minRate: 0.5},
		floodPlan{tickers: 64, period: 100 * time.Millisecond, warm: 5 * time.Second, quiet: 10 * time.Second, flood: 20 * time.Second,
			rate: 10000, sockets: 512, handshakes: 1000, maxFloodHeap: 32 * mib, maxHeapGrowth: 64 * mib,
			floodSlack: time.Millisecond, bothSlack: time.Millisecond, minRate: 0.9},
	)
	e := envs(t)[0](t)
	f := startFixture(t, e, fixtureOptions{maxHandshakes: floodMaxHandshakes})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)

	// Established clients, in their own process (see the test's comment), ticking from here on.
	tk := startTickers(t, tickersPlan{Server: f.addr, CAPEM: certs(t).CAPEM, Transport: e.name,
		Clients: plan.tickers, Period: plan.period, Deadline: 2 * time.Minute})
	setPhase := func(p int) { tk.call(ctx, fmt.Sprintf("phase %d", p), nil) }

	// The attacker process opens its sockets before the quiet phase.
	var ready attackReport
	att := startHelper(t, helperSpec{name: "attacker", test: "TestHelperProcessFloodAttacker", env: attackerEnv,
		plan: attackPlan{Server: f.addr, CAPEM: certs(t).CAPEM, Sockets: plan.sockets, Rate: plan.rate, Flood: plan.flood,
			Handshakes: plan.handshakes, Waves: 4, Span: plan.flood * 3 / 8, Deadline: 2 * time.Minute},
		deadline: 2 * time.Minute, lowPriority: true}, &ready)
	if !ready.Raw {
		t.Log("the attacker has no raw socket: no spoofed source addresses")
	}

	// Warm-up, then the quiet phase. The phases are timed: the tick workload runs on the clock.
	// On these VMs the first seconds of load after an idle spell run several times slower: without
	// a warm-up the baseline, and the bound with it, would be inflated.
	time.Sleep(plan.warm)
	setPhase(phaseQuiet)
	cpu0, t0 := processCPU(), time.Now()
	time.Sleep(plan.quiet)
	cpu1, t1 := processCPU(), time.Now()
	// The live heap (after two forced collections) is measured at the end of the quiet phase and
	// of each flood phase. The ticks then are not counted: the forced collections stop the server.
	setPhase(phaseUnmeasured)
	baseHeap := heapInUse()

	// Flood phase. First half: the flood alone. Second half: the flood and real handshakes.
	floodUntil := time.Now().Add(plan.flood)
	att.call(ctx, "flood", nil)
	setPhase(phaseFlood)
	cpu2, t2 := processCPU(), time.Now()
	time.Sleep(plan.flood / 2)
	cpu3, t3 := processCPU(), time.Now()
	setPhase(phaseUnmeasured)
	floodHeap := heapInUse()
	setPhase(phaseHandshakes)
	cpu4, t4 := processCPU(), time.Now()
	var hs attackReport
	att.call(ctx, "handshakes", &hs)
	cpu5, t5 := processCPU(), time.Now()
	setPhase(phaseUnmeasured)
	bothHeap := heapInUse()
	setPhase(phaseHandshakes)
	time.Sleep(time.Until(floodUntil))
	var fl attackReport
	att.call(ctx, "stop", &fl)
	setPhase(phaseAfter)
	var ticks tickersReport
	tk.call(ctx, "stop", &ticks)
	if ticks.Outstanding != 0 {
		t.Fatalf("%d tick calls never completed", ticks.Outstanding)
	}

	// Results.
	st := f.srv.Stats()
	quiet, flood, both := ticks.Samples[phaseQuiet], ticks.Samples[phaseFlood], ticks.Samples[phaseHandshakes]
	q50, q99 := percentile(quiet, 50), percentile(quiet, 99)
	f50, f99 := percentile(flood, 50), percentile(flood, 99)
	h50, h99 := percentile(both, 50), percentile(both, 99)
	t.Logf("tick workload, %d clients: quiet %d calls p50 %v p99 %v; flood %d calls p50 %v p99 %v (%.1fx); flood+handshakes %d calls p50 %v p99 %v (%.1fx)",
		plan.tickers, len(quiet), q50, q99, len(flood), f50, f99, ratio(f99, q99), len(both), h50, h99, ratio(h99, q99))
	floodRate := float64(fl.Sent) / fl.Elapsed.Seconds()
	t.Logf("flood: %d packets in %v (%.0f/s) from %d ports (%d from spoofed addresses); replies: %d Retry, %d version negotiation, %d other; server counted %d Retries",
		fl.Sent, fl.Elapsed.Round(time.Millisecond), floodRate, plan.sockets, fl.Spoofed,
		fl.Retries, fl.VN, fl.Other, st.Retries)
	t.Logf("real handshakes: %d of %d connected and answered, %d saw Retry, dial p50 %v p99 %v; server refused %d attempts' packets (MaxHandshakes)",
		hs.OK, plan.handshakes, hs.Retried, percentile(hs.Dial, 50), percentile(hs.Dial, 99), st.HandshakesRefused)
	t.Logf("CPU of this process (the server), in cores: quiet %.2f, flood %.2f, flood+handshakes %.2f (until the handshakes ended); tickers process %v, attacker process %v in all",
		cores(cpu1-cpu0, t1.Sub(t0)), cores(cpu3-cpu2, t3.Sub(t2)), cores(cpu5-cpu4, t5.Sub(t4)), ticks.CPU.Round(time.Millisecond), fl.CPU.Round(time.Millisecond))
	t.Logf("live heap (HeapInuse after GC): %.1f MiB before the flood, %.1f MiB under the flood alone, %.1f MiB after the handshakes",
		float64(baseHeap)/mib, float64(floodHeap)/mib, float64(bothHeap)/mib)

	if n := ticks.Failed; n != 0 {
		t.Errorf("%d tick calls failed (first: %v)", n, ticks.FirstErr)
	}
	if n := ticks.Closes; n != 0 {
		t.Errorf("established clients lost their connection %d times during the flood", n)
	}
	if len(quiet) < plan.tickers || len(flood) < plan.tickers || len(both) < plan.tickers {
		t.Fatalf("too few tick samples: quiet %d, flood %d, flood+handshakes %d", len(quiet), len(flood), len(both))
	}
	// The bound: 2x the quiet p99, plus the slack (1 ms in soak mode, for timer and scheduler
	// granularity; see the test's comment for the reduced form's).
	floodBound, bothBound := 2*q99+plan.floodSlack, 2*q99+plan.bothSlack
	if f99 > floodBound {
		t.Errorf("tick p99 under the flood %v exceeds %v (quiet p99 %v)", f99, floodBound, q99)
	}
	if h99 > bothBound {
		t.Errorf("tick p99 under the flood and %d real handshakes %v exceeds %v (quiet p99 %v)", plan.handshakes, h99, bothBound, q99)
	}
	if floodRate < float64(plan.rate)*plan.minRate {
		t.Errorf("the flood went out at %.0f packets/s, below %.0f%% of its %d/s: the attacker process was starved",
			floodRate, plan.minRate*100, plan.rate)
	}
	if fl.Retries == 0 {
		t.Error("the server never answered a forged Initial with Retry")
	}
	if st.Retries < uint64(fl.Retries) {
		t.Errorf("Server.Stats().Retries = %d, but %d Retry packets reached the flood's sockets", st.Retries, fl.Retries)
	}
	if hs.Retried == 0 {
		t.Error("no real client was asked to Retry during the flood")
	}
	if hs.OK < plan.handshakes*95/100 {
		t.Errorf("only %d of %d real handshakes succeeded during the flood (first error: %v)", hs.OK, plan.handshakes, hs.FirstErr)
	}
	if floodHeap > baseHeap+plan.maxFloodHeap {
		t.Errorf("live heap %.1f MiB under the flood alone, more than %d MiB over the %.1f MiB before it",
			float64(floodHeap)/mib, plan.maxFloodHeap/mib, float64(baseHeap)/mib)
	}
	if bothHeap > baseHeap+plan.maxHeapGrowth {
		t.Errorf("live heap %.1f MiB after the handshakes, more than %d MiB over the %.1f MiB before the flood",
			float64(bothHeap)/mib, plan.maxHeapGrowth/mib, float64(baseHeap)/mib)
	}
	if !eventually(20*time.Second, func() bool { return f.srv.NumConns() == plan.tickers }) {
		t.Errorf("server holds %d connections after the flood, want the %d established ones", f.srv.NumConns(), plan.tickers)
	}
	if !eventually(10*time.Second, func() bool { return f.srv.Stats().Handshakes == 0 }) {
		t.Errorf("server counts %d handshakes in progress after the flood, want 0", f.srv.Stats().Handshakes)
	}

	// Once attempts fall below RetryAbove (the rate is measured over one second), new clients
	// connect without the extra round trip.
	time.Sleep(2500 * time.Millisecond)
	after := runHandshakeWaves(ctx, certs(t).CertPool(), f.addr, 1, 1, 0)
	if after.OK != 1 || after.Retried != 0 {
		t.Errorf("after the flood: %d of 1 handshakes, %d Retry; want a plain handshake (err %v)", after.OK, after.Retried, after.FirstErr)
	}
}

// processCPU returns the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cores returns cpu / wall: how many cores were busy on average.
func cores(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return cpu.Seconds() / wall.Seconds()
}

// ratio returns a / b, or 0 when b is 0.
func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// attackerEnv carries the attacker process's plan (JSON) to the re-executed test binary.
const attackerEnv = "NQ_FLOOD_ATTACKER"

// attackPlan is what the attacker process does. It takes commands on its standard input, one a
// line, and answers each with one attackReport line: "flood" starts the flood (it stops by itself
// after Flood), "handshakes" runs the real handshakes and reports them, "stop" ends the flood and
// reports its counts. It reports once before the first command (ready) and exits at the end of
// its input or after Deadline.
type attackPlan struct {
	Server            string // the server's address
	CAPEM             []byte // the server's CA: the real clients verify the server
	Sockets, Rate     int
	Flood             time.Duration
	Handshakes, Waves int
	Span              time.Duration
	Deadline          time.Duration
}

// attackReport is one answer of the attacker process.
type attackReport struct {
	Err string `json:",omitempty"`
	// ready
	Raw bool `json:",omitempty"` // the flood has a raw socket (spoofed sources)
	// handshakes (handshakeResult)
	OK, Retried int             `json:",omitempty"`
	Dial        []time.Duration `json:",omitempty"`
	FirstErr    string          `json:",omitempty"`
	// stop (the flood's counters, and how long it ran)
	Sent, Spoofed, Retries, VN, Other int64         `json:",omitempty"`
	Elapsed                           time.Duration `json:",omitempty"`
	CPU                               time.Duration `json:",omitempty"` // the process's, in all
}

// TestHelperProcessFloodAttacker is not a test of its own: it is the attacker process of
// TestReliabilityHandshakeFlood (see attackPlan), which re-executes this test binary to run only
// it, with the plan in NQ_FLOOD_ATTACKER. Without that variable it skips.
func TestHelperProcessFloodAttacker(t *testing.T) {
	var plan attackPlan
	child, ok := startHelperChild(t, attackerEnv, &plan, func() time.Duration { return plan.Deadline })
	if !ok {
		return
	}
	ctx := child.ctx
	report := func(r attackReport) { child.report(r) }
	server, err := netip.ParseAddrPort(plan.Server)
	if err != nil {
		report(attackReport{Err: err.Error()})
		return
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(plan.CAPEM) {
		report(attackReport{Err: "no CA certificate in the plan"})
		return
	}
	fl := startFlood(t, server, plan.Sockets)

	var (
		senders    sync.WaitGroup
		stopFlood  = func() {}
		floodStart time.Time
		floodEnd   = make(chan time.Time, 1)
	)
	defer func() {
		stopFlood()
		senders.Wait()
	}()
	report(attackReport{Raw: fl.rawFD >= 0})
	for {
		command, ok := child.next()
		if !ok {
			if ctx.Err() != nil {
				t.Fatalf("attacker: %v", ctx.Err())
			}
			return
		}
		switch command {
		case "flood":
			if !floodStart.IsZero() {
				report(attackReport{Err: "the flood runs once"})
				continue
			}
			fctx, fcancel := context.WithTimeout(ctx, plan.Flood)
			stopFlood = fcancel
			floodStart = time.Now()
			for w := range 2 {
				senders.Add(1)
				go func() {
					defer senders.Done()
					fl.send(fctx, plan.Rate/2, uint64(w))
				}()
			}
			go func() { // the flood ends at its deadline or at "stop"
				<-fctx.Done()
				floodEnd <- time.Now()
			}()
			report(attackReport{})
		case "handshakes":
			hs := runHandshakeWaves(ctx, roots, plan.Server, plan.Handshakes, plan.Waves, plan.Span)
			r := attackReport{OK: hs.OK, Retried: hs.Retried, Dial: hs.Dial}
			if hs.FirstErr != nil {
				r.FirstErr = hs.FirstErr.Error()
			}
			report(r)
		case "stop":
			stopFlood()
			senders.Wait()
			var elapsed time.Duration
			if !floodStart.IsZero() {
				elapsed = (<-floodEnd).Sub(floodStart)
			}
			report(attackReport{Sent: fl.sent.Load(), Spoofed: fl.spoofed.Load(),
				Retries: fl.retries.Load(), VN: fl.vn.Load(), Other: fl.other.Load(), Elapsed: elapsed, CPU: processCPU()})
		default:
			report(attackReport{Err: fmt.Sprintf("unknown command %q", command)})
		}
	}
}

// tickersEnv carries the tickers process's plan (JSON) to the re-executed test binary.
const tickersEnv = "NQ_FLOOD_TICKERS"

// tickersPlan is what the tickers process does: it connects Clients established clients to
// Server, makes one call on each, reports ready, and runs the tick workload (one call per Period
// each, unmeasured at first) until "stop". "phase N" sets the phase the following ticks count
// in; "stop" ends the ticks, waits (30 s at most) for the calls still out and reports every
// latency sample by phase. It keeps its clients connected until its input ends or Deadline.
type tickersPlan struct {
	Server    string // the server's address
	CAPEM     []byte // the server's CA
	Transport string // the clients' backend: udp or mmsg
	Clients   int
	Period    time.Duration
	Deadline  time.Duration
}

// tickersReport is one answer of the tickers process.
type tickersReport struct {
	Err string `json:",omitempty"`
	// stop
	Samples     [numPhases][]time.Duration `json:",omitempty"`
	Failed      int64                      `json:",omitempty"` // calls that returned an error
	FirstErr    string                     `json:",omitempty"`
	Outstanding int64                      `json:",omitempty"` // calls still out after 30 s
	Closes      int32                      `json:",omitempty"` // connections lost after ready
	CPU         time.Duration              `json:",omitempty"` // the process's, in all
}

// startTickers starts the tickers process of TestReliabilityHandshakeFlood at normal priority
// and returns once its clients are connected and ticking.
func startTickers(t *testing.T, plan tickersPlan) *helperProcess {
	return startHelper(t, helperSpec{name: "tickers", test: "TestHelperProcessFloodTickers", env: tickersEnv,
		plan: plan, deadline: plan.Deadline}, nil)
}

// TestHelperProcessFloodTickers is not a test of its own: it is the established clients'
// process of TestReliabilityHandshakeFlood (see tickersPlan), which re-executes this test binary
// to run only it, with the plan in NQ_FLOOD_TICKERS. Without that variable it skips.
func TestHelperProcessFloodTickers(t *testing.T) {
	var plan tickersPlan
	child, ok := startHelperChild(t, tickersEnv, &plan, func() time.Duration { return plan.Deadline })
	if !ok {
		return
	}
	ctx := child.ctx
	fail := func(err error) { child.report(tickersReport{Err: err.Error()}) }
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(plan.CAPEM) {
		fail(errors.New("no CA certificate in the plan"))
		return
	}
	var factory transport.Factory
	switch plan.Transport {
	case "udp":
	case "mmsg":
		factory = mmsg.Factory(mmsg.Config{})
	default:
		fail(fmt.Errorf("transport %q: want udp or mmsg", plan.Transport))
		return
	}
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{}); err != nil {
		fail(err)
		return
	}
	var closes atomic.Int32
	conns := make([]*nq.Conn, plan.Clients)
	for i := range conns {
		cl := &nq.Client{
			TLS:       &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13},
			Mux:       mux,
			Transport: factory,
			QUIC:      patientQUIC(false),
			OnClose: func(*nq.Conn, error, int) time.Duration {
				closes.Add(1)
				return 10 * time.Millisecond
			},
		}
		defer cl.Close()
		c, err := cl.Dial(ctx, plan.Server)
		if err == nil {
			_, err = c.RPC("rpc").Call(ctx, mPing, []byte("warm"))
		}
		if err != nil {
			fail(fmt.Errorf("client %d: %w", i, err))
			return
		}
		conns[i] = c
	}
	closesBefore := closes.Load()

	ticks := newTickLoad(plan.Period)
	var tickers sync.WaitGroup
	stopTicks := make(chan struct{})
	stop := sync.OnceFunc(func() {
		close(stopTicks)
		tickers.Wait()
	})
	defer stop()
	for i, c := range conns {
		tickers.Add(1)
		go func() {
			defer tickers.Done()
			ticks.run(ctx, c.RPC("rpc"), time.Duration(i)*plan.Period/time.Duration(len(conns)), stopTicks)
		}()
	}
	child.report(tickersReport{})
	for {
		command, ok := child.next()
		if !ok {
			return
		}
		name, arg, _ := strings.Cut(command, " ")
		switch name {
		case "stop":
			stop()
			r := tickersReport{Closes: closes.Load() - closesBefore}
			if !ticks.drain(30 * time.Second) {
				r.Outstanding = ticks.outstanding.Load()
			}
			for p := range numPhases {
				r.Samples[p] = ticks.samples(p)
			}
			r.Failed = ticks.errors.Load()
			if err := ticks.firstErr(); err != nil {
				r.FirstErr = err.Error()
			}
			r.CPU = processCPU()
			child.report(r)
		case "phase":
			phase, err := strconv.Atoi(arg)
			if err != nil || phase < 0 || phase >= numPhases {
				fail(fmt.Errorf("bad phase in %q", command))
				continue
			}
			ticks.setPhase(phase)
			child.report(tickersReport{})
		default:
			fail(fmt.Errorf("unknown command %q", command))
		}
	}
}

// Tick workload phases.
const (
	phaseUnmeasured = iota // warm-up, and while the test itself collects garbage
	phaseQuiet
	phaseFlood
	phaseHandshakes
	phaseAfter
	numPhases
)

// tickLoad is the open-loop tick workload: each client makes one call per period, on schedule
// whether or not the previous call has returned; latency counts from the scheduled time, so a
// late timer or a queued call shows up in it.
type tickLoad struct {
	period      time.Duration
	phase       atomic.Int32
	outstanding atomic.Int64
	errors      atomic.Int64
	drained     chan struct{}

	mu    sync.Mutex
	lat   [numPhases][]time.Duration
	first error
}

func newTickLoad(period time.Duration) *tickLoad {
	return &tickLoad{period: period, drained: make(chan struct{}, 1)}
}

func (l *tickLoad) setPhase(p int) { l.phase.Store(int32(p)) }

func (l *tickLoad) run(ctx context.Context, rpc *nq.RPC, offset time.Duration, stop <-chan struct{}) {
	next := time.Now().Add(offset)
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	payload := be64(0)
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		at, phase := next, int(l.phase.Load())
		l.outstanding.Add(1)
		err := rpc.Go(ctx, mPing, payload, func(_ []byte, err error) { l.record(phase, at, err) })
		if err != nil {
			l.record(phase, at, err)
		}
		next = next.Add(l.period)
		timer.Reset(time.Until(next))
	}
}

func (l *tickLoad) record(phase int, at time.Time, err error) {
	d := time.Since(at)
	l.mu.Lock()
	if err != nil {
		l.errors.Add(1)
		if l.first == nil {
			l.first = err
		}
	} else {
		l.lat[phase] = append(l.lat[phase], d)
	}
	l.mu.Unlock()
	if l.outstanding.Add(-1) == 0 {
		select {
		case l.drained <- struct{}{}:
		default:
		}
	}
}

// drain waits until no call is outstanding (after the tickers stopped).
func (l *tickLoad) drain(d time.Duration) bool {
	deadline := time.After(d)
	for l.outstanding.Load() > 0 {
		select {
		case <-l.drained:
		case <-deadline:
			return false
		}
	}
	return true
}

func (l *tickLoad) samples(phase int) []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Duration(nil), l.lat[phase]...)
}

func (l *tickLoad) firstErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first
}

// handshakeResult sums up a batch of real handshakes.
type handshakeResult struct {
	OK, Retried int
	Dial        []time.Duration
	FirstErr    error
}

// runHandshakeWaves starts total fresh clients (each its own kernel UDP socket, session cache
// and token store, so each is a first contact, as remote players are) in waves spread over
// span; each dials, makes one call and closes. It returns when all have finished. The clients
// trust roots, use nq's default reconnect back-off (a refused attempt is retried) and plain
// kernel UDP whatever the server's backend: they stand for remote machines, and an mmsg socket's
// 4 MiB of receive buffers each would only measure the test.
func runHandshakeWaves(ctx context.Context, roots *x509.CertPool, addr string, total, waves int, span time.Duration) handshakeResult {
	var (
		mu  sync.Mutex
		res handshakeResult
		wg  sync.WaitGroup
	)
	mux := nq.NewMux()
	if err := mux.HandleRPC("rpc", nq.RPCHandler{}); err != nil {
		return handshakeResult{FirstErr: err}
	}
	per := (total + waves - 1) / waves
	for w := 0; w < waves; w++ {
		if w > 0 {
			select {
			case <-time.After(span / time.Duration(waves)):
			case <-ctx.Done():
			}
		}
		for i := w * per; i < min(total, (w+1)*per); i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var retries atomic.Int64
				conf := quic.ClientConfig()
				conf.HandshakeIdleTimeout = 20 * time.Second
				conf.MaxIdleTimeout = 30 * time.Second
				conf.Tracer = func(context.Context, bool, quicgo.ConnectionID) qlogwriter.Trace {
					return retryCounter{&retries}
				}
				tlsConf := &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13}
				cl := &nq.Client{TLS: tlsConf, Mux: mux, QUIC: conf}
				defer cl.Close()
				dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				start := time.Now()
				c, err := cl.Dial(dctx, addr)
				dial := time.Since(start)
				if err == nil {
					_, err = c.RPC("rpc").Call(dctx, mPing, []byte("hello"))
				}
				mu.Lock()
				defer mu.Unlock()
				if retries.Load() > 0 {
					res.Retried++
				}
				if err != nil {
					if res.FirstErr == nil {
						res.FirstErr = err
					}
					return
				}
				res.OK++
				res.Dial = append(res.Dial, dial)
			}()
		}
	}
	wg.Wait()
	return res
}

// retryCounter is a qlog trace that counts the Retry packets a client connection receives.
type retryCounter struct{ n *atomic.Int64 }

func (r retryCounter) AddProducer() qlogwriter.Recorder { return r }

func (r retryCounter) RecordEvent(ev qlogwriter.Event) {
	if p, ok := ev.(qlog.PacketReceived); ok && p.Header.PacketType == qlog.PacketTypeRetry {
		r.n.Add(1)
	}
}

func (r retryCounter) Close() error { return nil }

// flood sends forged and garbage packets to a server from many UDP sockets (and, when raw
// sockets are allowed, from spoofed source addresses) and classifies what comes back.
type flood struct {
	t       *testing.T
	server  netip.AddrPort
	socks   []*net.UDPConn
	rawFD   int // -1 without a raw socket
	readers sync.WaitGroup

	sent, spoofed      atomic.Int64
	retries, vn, other atomic.Int64
	closeOnce          sync.Once
}

func startFlood(t *testing.T, server netip.AddrPort, sockets int) *flood {
	fl := &flood{t: t, server: server, rawFD: -1}
	for range sockets {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
		if err != nil {
			fl.close()
			t.Fatalf("flood socket: %v", err)
		}
		fl.socks = append(fl.socks, c)
		fl.readers.Add(1)
		go fl.read(c)
	}
	// A raw socket lets the flood forge source addresses (127.0.0.0/8, all local). Without
	// CAP_NET_RAW the flood comes from the sockets' ports only.
	if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err == nil {
		fl.rawFD = fd
	} else {
		t.Logf("no raw socket (%v): no spoofed source addresses", err)
	}
	t.Cleanup(fl.close)
	return fl
}

func (fl *flood) close() {
	fl.closeOnce.Do(func() {
		for _, c := range fl.socks {
			c.Close()
		}
		fl.readers.Wait()
		if fl.rawFD >= 0 {
			unix.Close(fl.rawFD)
		}
	})
}

// read classifies the server's answers arriving at one flood socket.
func (fl *flood) read(c *net.UDPConn) {
	defer fl.readers.Done()
	buf := make([]byte, 2048)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		switch {
		case n >= 5 && buf[0]&0x80 != 0 && binary.BigEndian.Uint32(buf[1:5]) == 0:
			fl.vn.Add(1)
		case n >= 5 && buf[0]&0xf0 == 0xf0 && binary.BigEndian.Uint32(buf[1:5]) == 1:
			fl.retries.Add(1) // long header, fixed bit, type 3: Retry (QUIC v1)
		default:
			fl.other.Add(1)
		}
	}
}

// send paces perSec packets per second until ctx ends.
func (fl *flood) send(ctx context.Context, perSec int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x51ab))
	const step = 5 * time.Millisecond
	tk := time.NewTicker(step)
	defer tk.Stop()
	buf := make([]byte, 0, 1500)
	raw := make([]byte, 0, 1600)
	start, due := time.Now(), 0
	for k := uint64(0); ; {
		select {
		case <-ctx.Done():
			return
		case now := <-tk.C:
			want := int(now.Sub(start).Seconds() * float64(perSec))
			for ; due < want; due++ {
				k++
				buf = forgePacket(buf[:0], rng, k)
				if fl.rawFD >= 0 && k%4 == 0 {
					src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, byte(rng.IntN(255) + 1), byte(rng.IntN(256)), byte(rng.IntN(254) + 1)}),
						uint16(rng.IntN(60000)+1024))
					raw = appendIPv4UDP(raw[:0], src, fl.server, buf)
					dst := &unix.SockaddrInet4{Addr: fl.server.Addr().As4()}
					if unix.Sendto(fl.rawFD, raw, 0, dst) == nil {
						fl.spoofed.Add(1)
						fl.sent.Add(1)
					}
					continue
				}
				c := fl.socks[rng.IntN(len(fl.socks))]
				if _, err := c.WriteToUDPAddrPort(buf, fl.server); err == nil {
					fl.sent.Add(1)
				}
			}
		}
	}
}

// forgePacket appends one flood packet to b: half are well-formed QUIC v1 Initials with random
// connection IDs padded to 1200 bytes, the rest Initials with a bogus token, undersized Initials,
// unknown-version long headers, short headers and pure garbage.
func forgePacket(b []byte, rng *rand.Rand, k uint64) []byte {
	randBytes := func(b []byte, n int) []byte {
		for ; n >= 8; n -= 8 {
			b = binary.LittleEndian.AppendUint64(b, rng.Uint64())
		}
		for ; n > 0; n-- {
			b = append(b, byte(rng.Uint32()))
		}
		return b
	}
	longHeader := func(b []byte, version uint32, token int) []byte {
		b = append(b, 0xc3) // long header, fixed bit, type Initial, 4-byte packet number
		b = binary.BigEndian.AppendUint32(b, version)
		dcid := 8 + rng.IntN(13)
		b = append(b, byte(dcid))
		b = randBytes(b, dcid)
		scid := rng.IntN(21)
		b = append(b, byte(scid))
		b = randBytes(b, scid)
		b = append(b, byte(token)) // token length (< 64: a one-byte varint)
		return randBytes(b, token)
	}
	pad := func(b []byte, size int) []byte {
		rest := size - len(b) - 2 // the 2-byte Length field
		b = binary.BigEndian.AppendUint16(b, 0x4000|uint16(rest))
		return randBytes(b, rest)
	}
	switch k % 10 {
	case 0, 1, 2, 3, 4:
		return pad(longHeader(b, 1, 0), 1200)
	case 5:
		return pad(longHeader(b, 1, 16+rng.IntN(40)), 1200)
	case 6:
		return pad(longHeader(b, 1, 0), 200+rng.IntN(900))
	case 7:
		return pad(longHeader(b, 0x1a2a3a4a, 0), 1200)
	case 8:
		b = append(b, 0x40|byte(rng.IntN(64)))
		return randBytes(b, 20+rng.IntN(1180))
	default:
		return randBytes(b, 1+rng.IntN(1400))
	}
}

// appendIPv4UDP appends an IPv4 header and a UDP header (checksum 0: none) around payload. The
// kernel fills in the IP checksum, total length and id.
func appendIPv4UDP(b []byte, src, dst netip.AddrPort, payload []byte) []byte {
	s, d := src.Addr().As4(), dst.Addr().As4()
	b = append(b, 0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, unix.IPPROTO_UDP, 0, 0)
	b = append(b, s[:]...)
	b = append(b, d[:]...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	b = binary.BigEndian.AppendUint16(b, uint16(8+len(payload)))
	b = binary.BigEndian.AppendUint16(b, 0)
	return append(b, payload...)
}
