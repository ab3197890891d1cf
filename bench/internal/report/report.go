// Package report turns workload results into nqbench's outputs: JSON lines, Markdown tables,
// the closing "ratio nq/<peer> <workload> <value>" lines, and a comparison with a previous run.
package report

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/naquid/naquid/bench/internal/measure"
	"github.com/naquid/naquid/bench/internal/workload"
)

// WriteJSON writes r as one JSON line.
func WriteJSON(w io.Writer, r workload.Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	b = append(b, '\n')
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// ReadJSON reads JSON lines written by WriteJSON. Lines that are not JSON objects (progress,
// tables) are skipped.
func ReadJSON(r io.Reader) ([]workload.Result, error) {
	var out []workload.Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(b) == 0 || b[0] != '{' {
			continue
		}
		var res workload.Result
		if err := json.Unmarshal(b, &res); err != nil {
			return out, fmt.Errorf("report: line %d: %w", line, err)
		}
		out = append(out, res)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("report: %w", err)
	}
	return out, nil
}

// isNQ reports whether a stack name is one of naquid's ("nq/udp", "nq/mmsg").
func isNQ(stack string) bool { return stack == "nq" || strings.HasPrefix(stack, "nq/") }

// Metric is the figure a workload's ratios compare, oriented so that higher is better; false
// for a workload without one (storm).
func Metric(r workload.Result) (float64, bool) {
	var v float64
	switch r.Workload {
	case workload.Pipeline:
		v = r.ReqPerSec
	case workload.Tick:
		if r.P99us > 0 {
			v = 1 / r.P99us
		}
	case workload.Idle:
		if r.ServerKiBPerConn > 0 {
			v = 1 / r.ServerKiBPerConn
		}
	default:
		return 0, false
	}
	return v, v > 0
}

// MetricName says what a workload's ratio compares.
func MetricName(wl string) string {
	switch wl {
	case workload.Pipeline:
		return "req/s, nq over peer"
	case workload.Tick:
		return "p99 latency, peer over nq"
	case workload.Idle:
		return "server KiB per connection, peer over nq"
	}
	return ""
}

// Ratio compares naquid with one peer on one workload; Value > 1 means naquid is better.
type Ratio struct {
	// Workload is the workload, with its variant when it has one ("tick/10000x10Hz").
	Workload string
	// NQ is the naquid stack compared (for Ratios, the best transport of the run).
	NQ   string
	Peer string
	// Value is the ratio of the workload's metric (see MetricName).
	Value float64
}

// Line is the ratio's closing line: "ratio nq/<peer> <workload> <value>".
func (r Ratio) Line() string {
	return fmt.Sprintf("ratio nq/%s %s %.3f", r.Peer, r.Workload, r.Value)
}

// group names the results compared with each other: the workload and its variant.
func group(r workload.Result) string {
	if r.Variant == "" {
		return r.Workload
	}
	return r.Workload + "/" + r.Variant
}

// groups lists the groups of results in report order: by workload, then first appearance.
func groups(results []workload.Result) []string {
	var out []string
	for _, wl := range workload.Names() {
		for _, r := range results {
			if g := group(r); r.Workload == wl && !slices.Contains(out, g) {
				out = append(out, g)
			}
		}
	}
	return out
}

// Ratios compares the best naquid stack of each group (workload and variant) with every peer
// of that group, in the order the results came.
func Ratios(results []workload.Result) []Ratio {
	var out []Ratio
	for _, g := range groups(results) {
		bestName, best := "", 0.0
		for _, r := range results {
			if group(r) != g || !isNQ(r.Stack) {
				continue
			}
			if v, ok := Metric(r); ok && v > best {
				bestName, best = r.Stack, v
			}
		}
		if bestName == "" {
			continue
		}
		for _, r := range results {
			if group(r) != g || isNQ(r.Stack) {
				continue
			}
			if v, ok := Metric(r); ok {
				out = append(out, Ratio{Workload: g, NQ: bestName, Peer: r.Stack, Value: best / v})
			}
		}
	}
	return out
}

// TransportRatios compares every naquid stack (each transport) with every peer of its group,
// for the table.
func TransportRatios(results []workload.Result) []Ratio {
	var out []Ratio
	for _, g := range groups(results) {
		for _, n := range results {
			if group(n) != g || !isNQ(n.Stack) {
				continue
			}
			nv, ok := Metric(n)
			if !ok {
				continue
			}
			for _, p := range results {
				if group(p) != g || isNQ(p.Stack) {
					continue
				}
				if pv, ok := Metric(p); ok {
					out = append(out, Ratio{Workload: g, NQ: n.Stack, Peer: p.Stack, Value: nv / pv})
				}
			}
		}
	}
	return out
}

// Duration formats microseconds as "850µs", "1.23ms" or "2.50s".
func Duration(us float64) string {
	switch {
	case us <= 0:
		return "-"
	case us >= 1e6:
		return fmt.Sprintf("%.2fs", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.3gms", us/1e3)
	default:
		return fmt.Sprintf("%.0fµs", us)
	}
}

func mib(kib int64) string {
	if kib <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(kib)/1024)
}

func num(v float64, format string) string {
	if v == 0 || math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

// Markdown renders one table per workload present in results, then the ratios.
func Markdown(results []workload.Result) string {
	var b strings.Builder
	for _, wl := range workload.Names() {
		rs := slices.DeleteFunc(slices.Clone(results), func(r workload.Result) bool { return r.Workload != wl })
		if len(rs) == 0 {
			continue
		}
		fmt.Fprintf(&b, "### %s\n\n%s\n", wl, params(rs[0]))
		switch wl {
		case workload.Pipeline:
			b.WriteString("| stack | req/s | p50 | p99 | p99.9 | max | CPU µs/req | peak RSS MiB | errors |\n")
			b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
			for _, r := range rs {
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", r.Stack, measure.SI(r.ReqPerSec),
					Duration(r.P50us), Duration(r.P99us), Duration(r.P999us), Duration(r.MaxUs),
					num(r.CPUusPerReq, "%.2f"), mib(r.PeakRSSKiB), r.Errors)
			}
		case workload.Tick:
			b.WriteString("| stack | clients x Hz | req/s | p50 | p99 | p99.9 | max | sched lag p99 | CPU cores | CPU µs/req | peak RSS MiB | errors |\n")
			b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
			for _, r := range rs {
				fmt.Fprintf(&b, "| %s | %d x %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", r.Stack, r.Conns, r.Rate, measure.SI(r.ReqPerSec),
					Duration(r.P50us), Duration(r.P99us), Duration(r.P999us), Duration(r.MaxUs), Duration(r.LagP99us),
					num(r.CPUCores, "%.2f"), num(r.CPUusPerReq, "%.1f"), mib(r.PeakRSSKiB), r.Errors)
			}
		case workload.Idle:
			b.WriteString("| stack | conns | conns/s | server KiB/conn | client KiB/conn | peak RSS MiB (server) | errors |\n")
			b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
			for _, r := range rs {
				fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %d |\n", r.Stack, r.Conns, num(r.ConnsPerSec, "%.0f"),
					num(r.ServerKiBPerConn, "%.1f"), num(r.ClientKiBPerConn, "%.1f"), mib(r.PeakRSSKiB), r.Errors)
			}
		case workload.Storm:
			b.WriteString("| stack | variant | conns | all back after | resumed | full handshakes | CPU cores | errors |\n")
			b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|\n")
			for _, r := range rs {
				fmt.Fprintf(&b, "| %s | %s | %d | %s | %d | %d | %s | %d |\n", r.Stack, r.Variant, r.Conns,
					num(r.RecoverySeconds, "%.2fs"), r.Resumed, r.FullHandshakes, num(r.CPUCores, "%.2f"), r.Errors)
			}
		}
		for _, r := range rs {
			if r.Note != "" {
				fmt.Fprintf(&b, "\nNote (%s): %s\n", strings.TrimSuffix(r.Stack+" "+r.Variant, " "), r.Note)
			}
		}
		b.WriteString("\n")
	}
	if trs := TransportRatios(results); len(trs) > 0 {
		b.WriteString("### ratios (> 1: naquid better)\n\n| workload | metric | nq stack | peer | ratio |\n|---|---|---|---|---:|\n")
		for _, r := range trs {
			wl, _, _ := strings.Cut(r.Workload, "/")
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %.3f |\n", r.Workload, MetricName(wl), r.NQ, r.Peer, r.Value)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func params(r workload.Result) string {
	switch r.Workload {
	case workload.Pipeline:
		return fmt.Sprintf("C=%d connections x N=%d calls, W=%d in flight, %d-byte payload, %s.\n", r.Conns, r.Calls, r.Window, r.Payload, modeText(r.Mode))
	case workload.Tick:
		return fmt.Sprintf("Clients each sending a %d-byte call R times a second, open loop, latency from the scheduled send time, %.0f s measured, %d connections per client socket, %s.\n",
			r.Payload, r.Seconds, r.PerSock, modeText(r.Mode))
	case workload.Idle:
		return fmt.Sprintf("%d idle connections, %d per client socket; KiB per connection is Go heap and stacks after GC, server and clients in separate processes.\n", r.Conns, r.PerSock)
	case workload.Storm:
		return fmt.Sprintf("%d clients (%d per socket) reconnect after an in-process server restart; time until all are open again.\n", r.Conns, r.PerSock)
	}
	return ""
}

func modeText(mode string) string {
	if mode == "client" {
		return "clients only against a server in another process (CPU is the clients')"
	}
	return "server and clients in one process (CPU covers both ends)"
}
