package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Ports of the sender and the receiver.
const (
	txPort = 9000
	rxPort = 9001
)

// bench is one run: the topology, the options and what was measured so far.
type bench struct {
	o        options
	topo     *topology
	res      *results
	log      io.Writer
	deadline time.Time // children's deadline
}

// runBench runs the whole benchmark and writes the report to out (progress to log). The report
// is written, marked incomplete, even when the run fails part-way.
func runBench(o options, out, log io.Writer) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("pps: needs root (network namespaces, XDP, AF_XDP)")
	}
	for _, tool := range []string{"ip", "taskset", "ethtool"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("pps: %s not found (apt-get install iproute2 util-linux ethtool): %w", tool, err)
		}
	}
	if n := runtime.NumCPU(); o.TXCPU >= n || o.RXCPU >= n {
		return fmt.Errorf("pps: cores %d and %d requested, %d available", o.TXCPU, o.RXCPU, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	started := time.Now()
	background := backgroundLoad(o.TXCPU, o.RXCPU)
	if stale, err := removeStale(ctx); err != nil {
		return err
	} else if len(stale) > 0 {
		fmt.Fprintf(log, "pps: deleted namespaces left by killed runs: %v\n", stale)
	}
	topo, err := newTopology(ctx, strconv.Itoa(os.Getpid()), o.TXCPU, o.RXCPU)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := topo.close(); cerr != nil {
			err = errors.Join(err, cerr)
		} else {
			fmt.Fprintf(log, "pps: namespaces %s and %s deleted\n", topo.TX.NS, topo.RX.NS)
		}
	}()
	b := &bench{o: o, topo: topo, res: &results{CPURate: o.CPURate, OverloadRate: o.OverloadRate, Load: o.Load}, log: log, deadline: started.Add(o.Timeout)}
	fmt.Fprintf(log, "pps: namespaces %s (%s, cpu %d) and %s (%s, cpu %d)\n",
		topo.TX.NS, topo.TX.Addr, o.TXCPU, topo.RX.NS, topo.RX.Addr, o.RXCPU)
	runErr := b.run(ctx)
	warm := "no warm-up"
	if o.Warmup > 0 {
		warm = fmt.Sprintf("%v warm-up", o.Warmup)
	}
	b.res.note("sender on cpu %d, receiver and its kernel work on cpu %d; %v per step, %s; whole run %v.",
		o.TXCPU, o.RXCPU, o.Step, warm, time.Since(started).Round(time.Second))
	b.res.note("other load before the run: %s (this benchmark needs otherwise idle cores).", background)
	if runErr != nil {
		b.res.note("INCOMPLETE: %v", runErr)
	}
	if werr := b.res.write(out); werr != nil {
		return errors.Join(runErr, fmt.Errorf("pps: write report: %w", werr))
	}
	return runErr
}

func (b *bench) run(ctx context.Context) error {
	for _, size := range b.o.Sizes {
		if len(b.o.Receivers) > 0 {
			if err := b.receiveTests(ctx, size); err != nil {
				return err
			}
		}
		if len(b.o.Senders) > 0 {
			if err := b.sendTests(ctx, size); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *bench) txAddr() netip.AddrPort { return netip.AddrPortFrom(b.topo.TX.Addr.Addr(), txPort) }
func (b *bench) rxAddr() netip.AddrPort { return netip.AddrPortFrom(b.topo.RX.Addr.Addr(), rxPort) }

// startSender starts a sender child of the named backend.
func (b *bench) startSender(ctx context.Context, name string, size int) (*child, error) {
	cfg := childConfig{Role: roleSend, Transport: name, Dev: b.topo.TX.Dev, Local: b.txAddr(), Remote: b.rxAddr(),
		Size: size, CPU: b.o.TXCPU, Deadline: b.deadline}
	return startChild(ctx, fmt.Sprintf("tx %s %dB", name, size), b.topo.TX.NS, b.o.TXCPU, cfg.args(), b.note)
}

// startReceiver starts a receiver child of the named backend.
func (b *bench) startReceiver(ctx context.Context, name string) (*child, error) {
	cfg := childConfig{Role: roleRecv, Transport: name, Dev: b.topo.RX.Dev, Local: b.rxAddr(), CPU: b.o.RXCPU,
		Deadline: b.deadline}
	return startChild(ctx, "rx "+name, b.topo.RX.NS, b.o.RXCPU, cfg.args(), b.note)
}

func (b *bench) note(s string) { b.res.note("%s", s) }

// receiveTests sweeps every receiver with the load sender at one payload size.
func (b *bench) receiveTests(ctx context.Context, size int) (err error) {
	tx, err := b.startSender(ctx, b.o.Load, size)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, tx.close()) }()
	for _, name := range b.o.Receivers {
		run, err := b.sweepReceiver(ctx, tx, name, size)
		if len(run.Steps) > 0 {
			b.res.RX = append(b.res.RX, run)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) sweepReceiver(ctx context.Context, tx *child, name string, size int) (run rxRun, err error) {
	run = rxRun{Receiver: name, Size: size}
	if onNAPILink(name) {
		if err := b.topo.setGRO(ctx, true); err != nil {
			return run, err
		}
		defer func() {
			// After the receiver closed: the receivers that follow get veth's default back.
			err = errors.Join(err, b.topo.setGRO(context.WithoutCancel(ctx), false))
		}()
	}
	rx, err := b.startReceiver(ctx, name)
	if err != nil {
		return run, err
	}
	defer func() { err = errors.Join(err, rx.close()) }()
	if b.o.Warmup > 0 {
		if _, _, err := b.measure(ctx, tx, rx, b.o.CPURate, b.o.Warmup); err != nil {
			return run, err
		}
	}
	sw := newSweep(b.o.Rates, []float64{b.o.CPURate, b.o.OverloadRate}, max(b.o.Refine, 0))
	for rate, ok := sw.Next(); ok; rate, ok = sw.Next() {
		var st step
		for try := 0; try == 0 || (try <= b.o.Retries && worthRetry(st)); try++ {
			again, _, err := b.measure(ctx, tx, rx, rate, b.o.Step)
			if err != nil {
				return run, err
			}
			retry := ""
			if try > 0 {
				retry = " (retry)"
			}
			fmt.Fprintf(b.log, "pps: rx %-6s %4d B offered %-4s sent %8s received %8s loss %6s rx CPU %s ns/pkt%s\n",
				name, size, formatRate(rate), fmtPPS(again.SentRate()), fmtPPS(again.RecvRate()),
				fmtPercent(again.Loss()), fmtNs(again.ProcPerPacket()), retry)
			if try == 0 || again.Loss() < st.Loss() {
				st = again
			}
		}
		sw.Record(st)
		run.Steps = append(run.Steps, st)
	}
	return run, nil
}

// sendTests measures every sender at one payload size, with an afxdp receiver counting what
// arrives.
func (b *bench) sendTests(ctx context.Context, size int) (err error) {
	rx, err := b.startReceiver(ctx, nameAFXDP)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, rx.close()) }()
	for _, name := range b.o.Senders {
		if name == nameMmsgGSO && size != b.o.GSOSize {
			continue
		}
		res, err := b.sendTest(ctx, rx, name, size)
		if err != nil {
			return err
		}
		b.res.TX = append(b.res.TX, txRun{Sender: name, Size: size, Result: res})
		fmt.Fprintf(b.log, "pps: tx %-8s %4d B sent %8s (%.2f Gbit/s) delivered %8s tx CPU %s ns/pkt\n",
			name, size, fmtPPS(res.PPS()), res.Gbps(), fmtPPS(res.DeliveredPPS()), fmtNs(res.CPUPerPacket()))
	}
	return nil
}

func (b *bench) sendTest(ctx context.Context, rx *child, name string, size int) (res txResult, err error) {
	tx, err := b.startSender(ctx, name, size)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, tx.close()) }()
	if b.o.Warmup > 0 {
		if _, _, err := b.measure(ctx, tx, rx, 0, b.o.Warmup); err != nil {
			return res, err
		}
	}
	st, res, err := b.measure(ctx, tx, rx, 0, b.o.Step)
	res.Delivered = st.Received
	return res, err
}

// measure runs one step: the receiver starts counting, the sender sends at rate for d, the
// receiver drains and reports.
func (b *bench) measure(ctx context.Context, tx, rx *child, rate float64, d time.Duration) (step, txResult, error) {
	line, err := rx.call(ctx, msgStart, replyTimeout)
	if err == nil && line != msgOK {
		_, err = parseReply(line, msgOK, 0)
	}
	if err != nil {
		return step{}, txResult{}, err
	}
	line, err = tx.call(ctx, formatRun(rate, d), d+replyTimeout)
	if err != nil {
		return step{}, txResult{}, err
	}
	sent, err := parseReply(line, msgSent, 4)
	if err != nil {
		return step{}, txResult{}, fmt.Errorf("pps: %s: %w", tx.name, err)
	}
	line, err = rx.call(ctx, msgStop, replyTimeout)
	if err != nil {
		return step{}, txResult{}, err
	}
	recv, err := parseReply(line, msgRecv, 4)
	if err != nil {
		return step{}, txResult{}, fmt.Errorf("pps: %s: %w", rx.name, err)
	}
	st := step{Offered: rate, Sent: uint64(sent[0]), Received: uint64(recv[0]), Elapsed: time.Duration(sent[2]),
		ProcCPU: time.Duration(recv[1]), NAPICPU: time.Duration(recv[2]), CoreCPU: time.Duration(recv[3])}
	res := txResult{Sent: uint64(sent[0]), Bytes: uint64(sent[1]), Elapsed: time.Duration(sent[2]), CPU: time.Duration(sent[3])}
	return st, res, nil
}

// backgroundLoad measures how busy the two cores are for a moment before the run and describes
// it ("cpu 0 3%, cpu 1 40%").
func backgroundLoad(cpus ...int) string {
	const window = 500 * time.Millisecond
	before := make([]time.Duration, len(cpus))
	for i, c := range cpus {
		before[i], _ = coreBusy(c)
	}
	time.Sleep(window)
	var parts []string
	for i, c := range cpus {
		after, err := coreBusy(c)
		if err != nil {
			parts = append(parts, fmt.Sprintf("cpu %d unknown", c))
			continue
		}
		parts = append(parts, fmt.Sprintf("cpu %d %s", c, fmtPercent((after-before[i]).Seconds()/window.Seconds())))
	}
	return strings.Join(parts, ", ")
}
