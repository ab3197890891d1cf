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
// threshold percent in the bad direction.
func Compare(prev, cur []workload.Result, threshold float64) string {
	old := make(map[string]workload.Result, len(prev))
	for _, r := range prev {
		old[key(r)] = r
	}
	var b strings.Builder
	for _, r := range cur {
		p, ok := old[key(r)]
		if !ok {
			fmt.Fprintf(&b, "%s: new\n", key(r))
			continue
		}
		for _, f := range figures {
			was, now := f.get(p), f.get(r)
			if was == 0 || now == 0 {
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
	}
	return b.String()
}
