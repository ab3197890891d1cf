package report

import (
	"fmt"
	"strings"

	"github.com/naquid/naquid/bench/internal/workload"
)

// figure is one compared number: its name, how to read it, and whether lower is better.
type figure struct {
	name        string
	get         func(workload.Result) float64
	lowerBetter bool
}

var figures = []figure{
	{"req/s", func(r workload.Result) float64 { return r.ReqPerSec }, false},
	{"p99_us", func(r workload.Result) float64 { return r.P99us }, true},
	{"cpu_us/req", func(r workload.Result) float64 { return r.CPUusPerReq }, true},
	{"peak_rss_kib", func(r workload.Result) float64 { return float64(r.PeakRSSKiB) }, true},
	{"conns/s", func(r workload.Result) float64 { return r.ConnsPerSec }, false},
	{"server_kib/conn", func(r workload.Result) float64 { return r.ServerKiBPerConn }, true},
	{"client_kib/conn", func(r workload.Result) float64 { return r.ClientKiBPerConn }, true},
	{"recovery_s", func(r workload.Result) float64 { return r.RecoverySeconds }, true},
}

func key(r workload.Result) string {
	k := r.Workload + " " + r.Stack
	if r.Variant != "" {
		k += " " + r.Variant
	}
	return k
}

// Compare lists how every figure of cur changed from prev, for the results present in both:
// "pipeline nq/udp req/s 1.21e+06 -> 1.30e+06 +7.4%", with "(worse)" after changes of more than
// threshold percent in the bad direction. A figure measured last time and missing now (0: the
// run failed to produce it, as a storm whose clients did not all come back) is listed as
// "not measured (worse)", a change in the error count as "(worse)" or "(better)", and results of
// prev that cur lacks as "gone".
func Compare(prev, cur []workload.Result, threshold float64) string {
	old := make(map[string]workload.Result, len(prev))
	for _, r := range prev {
		old[key(r)] = r
	}
	seen := make(map[string]bool, len(cur))
	var b strings.Builder
	for _, r := range cur {
		seen[key(r)] = true
		p, ok := old[key(r)]
		if !ok {
			fmt.Fprintf(&b, "%s: new\n", key(r))
			continue
		}
		for _, f := range figures {
			was, now := f.get(p), f.get(r)
			switch {
			case was == 0 && now == 0:
				continue
			case now == 0:
				fmt.Fprintf(&b, "%s %s %.4g -> not measured (worse)\n", key(r), f.name, was)
				continue
			case was == 0:
				fmt.Fprintf(&b, "%s %s not measured -> %.4g\n", key(r), f.name, now)
				continue
			}
			pct := (now - was) / was * 100
			mark := ""
			if (f.lowerBetter && pct > threshold) || (!f.lowerBetter && pct < -threshold) {
				mark = " (worse)"
			} else if (f.lowerBetter && pct < -threshold) || (!f.lowerBetter && pct > threshold) {
				mark = " (better)"
			}
			fmt.Fprintf(&b, "%s %s %.4g -> %.4g %+.1f%%%s\n", key(r), f.name, was, now, pct, mark)
		}
		switch {
		case r.Errors > p.Errors:
			fmt.Fprintf(&b, "%s errors %d -> %d (worse)\n", key(r), p.Errors, r.Errors)
		case r.Errors < p.Errors:
			fmt.Fprintf(&b, "%s errors %d -> %d (better)\n", key(r), p.Errors, r.Errors)
		}
	}
	for _, r := range prev {
		if !seen[key(r)] {
			fmt.Fprintf(&b, "%s: gone (no result this run)\n", key(r))
		}
	}
	return b.String()
}
