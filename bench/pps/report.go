package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// rxRun is the receive sweep of one receiver at one payload size.
type rxRun struct {
	Receiver string
	Size     int
	Steps    []step
}

// txRun is the send test of one sender at one payload size.
type txRun struct {
	Sender string
	Size   int
	Result txResult
}

// results is everything a run measured, in the order measured.
type results struct {
	RX []rxRun
	TX []txRun
	// CPURate and OverloadRate are the offered rates at which CPU per packet and overload
	// behaviour are compared.
	CPURate, OverloadRate float64
	// Load names the sender of the receive tests.
	Load string
	// Notes are remarks printed under the tables (setup fallbacks, pinning failures).
	Notes []string
}

func (r *results) rx(receiver string, size int) (rxRun, bool) {
	for _, x := range r.RX {
		if x.Receiver == receiver && x.Size == size {
			return x, true
		}
	}
	return rxRun{}, false
}

func (r *results) tx(sender string, size int) (txResult, bool) {
	for _, x := range r.TX {
		if x.Sender == sender && x.Size == size {
			return x.Result, true
		}
	}
	return txResult{}, false
}

// ratio is one figure of merit of the form "a/b metric-size value".
type ratio struct {
	A, B   string  // the two backends compared
	Metric string  // rx, tx, overload, cpu-per-pkt, app-cpu-per-pkt
	Size   int     // payload size
	Value  float64 // NaN when a side is missing or zero
	// Goal is the value to reach (from the issues); Lower reports that lower is better.
	Goal  float64
	Lower bool
}

// Name is "a/b metric-size".
func (r ratio) Name() string { return fmt.Sprintf("%s/%s %s-%d", r.A, r.B, r.Metric, r.Size) }

// Met reports whether the value reaches the goal.
func (r ratio) Met() bool {
	if math.IsNaN(r.Value) {
		return false
	}
	if r.Lower {
		return r.Value <= r.Goal
	}
	return r.Value >= r.Goal
}

// ratios computes the figures of merit at 64 B, in the order they are printed.
func (r *results) ratios() []ratio {
	const size = 64
	rxSum := func(name string) (rxSummary, bool) {
		run, ok := r.rx(name, size)
		if !ok {
			return rxSummary{}, false
		}
		return summarize(run.Steps, r.CPURate, r.OverloadRate), true
	}
	rxMetric := func(a, b string, f func(rxSummary) float64) float64 {
		sa, okA := rxSum(a)
		sb, okB := rxSum(b)
		if !okA || !okB {
			return math.NaN()
		}
		return div(f(sa), f(sb))
	}
	txMetric := func(a, b string) float64 {
		ta, okA := r.tx(a, size)
		tb, okB := r.tx(b, size)
		if !okA || !okB {
			return math.NaN()
		}
		return div(ta.PPS(), tb.PPS())
	}
	capacity := func(s rxSummary) float64 { return s.Capacity }
	overload := func(s rxSummary) float64 { return s.OverloadRecv }
	cpu := func(s rxSummary) float64 { return s.ProcAtRef }
	app := func(s rxSummary) float64 { return s.AppAtRef }
	return []ratio{
		{A: nameMmsg, B: nameUDP, Metric: "rx", Size: size, Value: rxMetric(nameMmsg, nameUDP, capacity), Goal: 1.4},
		{A: nameMmsg, B: nameUDP, Metric: "tx", Size: size, Value: txMetric(nameMmsg, nameUDP), Goal: 1.1},
		{A: nameMmsg, B: nameUDP, Metric: "overload", Size: size, Value: rxMetric(nameMmsg, nameUDP, overload), Goal: 2},
		// The same two receivers with GRO on the receiving veth (NAPI, as on a NIC), where
		// mmsg's UDP_GRO takes runs of datagrams as one.
		{A: nameMmsgNAPI, B: nameUDPNAPI, Metric: "rx", Size: size, Value: rxMetric(nameMmsgNAPI, nameUDPNAPI, capacity), Goal: 1.4},
		{A: nameMmsgNAPI, B: nameUDPNAPI, Metric: "overload", Size: size, Value: rxMetric(nameMmsgNAPI, nameUDPNAPI, overload), Goal: 2},
		{A: nameAFXDP, B: nameUDP, Metric: "rx", Size: size, Value: rxMetric(nameAFXDP, nameUDP, capacity), Goal: 2.5},
		{A: nameAFXDP, B: nameAsavie, Metric: "rx", Size: size, Value: rxMetric(nameAFXDP, nameAsavie, capacity), Goal: 1},
		{A: nameAFXDP, B: nameAsavie, Metric: "cpu-per-pkt", Size: size, Value: rxMetric(nameAFXDP, nameAsavie, cpu), Goal: 0.8, Lower: true},
		// The same comparison without the NAPI thread: the part of the receive work the receivers
		// themselves do (on veth the kernel's share dominates and is the same for both).
		{A: nameAFXDP, B: nameAsavie, Metric: "app-cpu-per-pkt", Size: size, Value: rxMetric(nameAFXDP, nameAsavie, app), Goal: 0.8, Lower: true},
		{A: nameAFXDP, B: nameUDP, Metric: "tx", Size: size, Value: txMetric(nameAFXDP, nameUDP), Goal: 1.8},
	}
}

// div is a/b, NaN when either is not a positive finite number.
func div(a, b float64) float64 {
	if !(a > 0) || !(b > 0) || math.IsInf(a, 0) || math.IsInf(b, 0) {
		return math.NaN()
	}
	return a / b
}

// write prints the Markdown tables and, last, the ratio lines.
func (r *results) write(w io.Writer) error {
	p := &printer{w: w}
	if len(r.RX) > 0 {
		p.line(fmt.Sprintf("## Receive sweep (load: %s sender; sender and receiver on one core each)", r.Load))
		p.line("")
		p.line("| payload | receiver | offered | sent pps | received pps | loss | rx CPU ns/pkt | of which app | rx core ns/pkt | rx core busy |")
		p.line("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, run := range r.RX {
			for _, st := range run.Steps {
				p.line(fmt.Sprintf("| %d B | %s | %s | %s | %s | %s | %s | %s | %s | %s |", run.Size, run.Receiver,
					formatRate(st.Offered), fmtPPS(st.SentRate()), fmtPPS(st.RecvRate()), fmtPercent(st.Loss()),
					fmtNs(st.ProcPerPacket()), fmtNs(st.AppPerPacket()), fmtNs(st.CorePerPacket()), fmtPercent(st.CoreBusy())))
			}
		}
		p.line("")
		p.line("rx CPU: receiver process plus its NAPI thread (the kernel's XDP and copy work, when XDP is attached); " +
			"of which app: the receiver process alone; rx core: everything the receiver's core did " +
			"(softirq included, and any other load: a busy share well above rx CPU x received pps means other " +
			"processes were running there).")
		p.line("")
		p.line("## Receive summary")
		p.line("")
		p.line(fmt.Sprintf("| payload | receiver | capacity pps (<1%% loss) | received pps at %s offered (sent) | overload / capacity | rx CPU ns/pkt at %s | of which app | rx core ns/pkt at %s |",
			formatRate(r.OverloadRate), formatRate(r.CPURate), formatRate(r.CPURate)))
		p.line("|---:|---|---:|---:|---:|---:|---:|---:|")
		for _, run := range r.RX {
			s := summarize(run.Steps, r.CPURate, r.OverloadRate)
			capacity := fmtPPS(s.Capacity)
			if s.SenderBound {
				capacity = ">= " + capacity + " (sender-bound)"
			}
			p.line(fmt.Sprintf("| %d B | %s | %s | %s (%s) | %s | %s | %s | %s |", run.Size, run.Receiver, capacity,
				fmtPPS(s.OverloadRecv), fmtPPS(s.OverloadSent), fmtRatio(div(s.OverloadRecv, s.Capacity)),
				fmtNs(s.ProcAtRef), fmtNs(s.AppAtRef), fmtNs(s.CoreAtRef)))
		}
		p.line("")
	}
	if len(r.TX) > 0 {
		p.line("## Send (unpaced, receiver: afxdp)")
		p.line("")
		p.line("| payload | sender | pps | Gbit/s | tx CPU ns/pkt | delivered pps |")
		p.line("|---:|---|---:|---:|---:|---:|")
		for _, run := range r.TX {
			t := run.Result
			p.line(fmt.Sprintf("| %d B | %s | %s | %.2f | %s | %s |", run.Size, run.Sender, fmtPPS(t.PPS()), t.Gbps(),
				fmtNs(t.CPUPerPacket()), fmtPPS(t.DeliveredPPS())))
		}
		p.line("")
	}
	ratios := r.ratios()
	p.line("## Goals at 64 B (issues 6 and 7)")
	p.line("")
	p.line(fmt.Sprintf("rx: capacity (highest rate received with < 1%% loss); overload: rate received at %s offered; "+
		"cpu-per-pkt: rx CPU ns/pkt at %s offered (app-cpu-per-pkt: the receiver process alone); tx: unpaced send rate.",
		formatRate(r.OverloadRate), formatRate(r.CPURate)))
	p.line("")
	p.line("| ratio | measured | goal | met |")
	p.line("|---|---:|---:|---|")
	for _, q := range ratios {
		op := ">="
		if q.Lower {
			op = "<="
		}
		p.line(fmt.Sprintf("| %s | %s | %s %s | %s |", q.Name(), fmtRatio3(q.Value), op, fmtRatio(q.Goal), yesNo(q.Met())))
	}
	if run, ok := r.rx(nameAFXDP, 64); ok {
		s := summarize(run.Steps, r.CPURate, r.OverloadRate)
		v := div(s.OverloadRecv, s.Capacity)
		p.line(fmt.Sprintf("| afxdp overload/capacity-64 | %s | >= 0.90 | %s |", fmtRatio3(v), yesNo(v >= 0.9)))
	}
	p.line("")
	for _, n := range r.Notes {
		p.line("- " + n)
	}
	if len(r.Notes) > 0 {
		p.line("")
	}
	for _, q := range ratios {
		p.line(fmt.Sprintf("ratio %s %s", q.Name(), fmtRatio(q.Value)))
	}
	return p.err
}

// printer writes lines and keeps the first error.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) line(s string) {
	if p.err == nil {
		_, p.err = io.WriteString(p.w, s+"\n")
	}
}

// fmtPPS writes a rate in packets per second: "1.35M", "712k", "950", "0" for none.
func fmtPPS(v float64) string {
	switch {
	case math.IsNaN(v) || v <= 0:
		return "0"
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', 0, 64) + "k"
	default:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
}

// fmtPercent writes a fraction as a percentage with one decimal.
func fmtPercent(v float64) string {
	return strconv.FormatFloat(v*100, 'f', 1, 64) + "%"
}

// fmtNs writes nanoseconds without decimals, "-" when unknown.
func fmtNs(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// fmtRatio writes a ratio with two decimals, "n/a" when unknown.
func fmtRatio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// fmtRatio3 writes a ratio with three decimals (the goals table, so that a ratio just below
// its goal does not print as equal to it), "n/a" when unknown.
func fmtRatio3(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// note adds a remark printed under the tables, on one line.
func (r *results) note(format string, args ...any) {
	r.Notes = append(r.Notes, strings.Join(strings.Fields(fmt.Sprintf(format, args...)), " "))
}
