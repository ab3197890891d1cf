package main

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The parent talks to each child process (a sender or a receiver inside a namespace) over
// its stdin and stdout, one line per message. The child prints "ready" once set up; each
// command gets one reply line; "error <text>" reports a failure.
//
//	receiver: "start" -> "ok"; "stop" -> "recv <datagrams> <rx-cpu-ns> <napi-cpu-ns> <core-cpu-ns>"
//	sender:   "run <rate> <duration-ns>" -> "sent <datagrams> <bytes> <elapsed-ns> <cpu-ns>"
//	both:     "quit" -> (exit)
const (
	msgReady = "ready"
	msgOK    = "ok"
	msgError = "error"
	msgStart = "start"
	msgStop  = "stop"
	msgRun   = "run"
	msgQuit  = "quit"
	msgRecv  = "recv"
	msgSent  = "sent"
)

// errChild is matched by errors from a child's "error" reply.
var errChild = errors.New("child failed")

// formatReply writes a reply line: a word and integers.
func formatReply(word string, vals ...int64) string {
	var b strings.Builder
	b.WriteString(word)
	for _, v := range vals {
		b.WriteByte(' ')
		b.WriteString(strconv.FormatInt(v, 10))
	}
	return b.String()
}

// parseReply checks that line is word followed by n integers and returns them. An "error"
// line becomes an error matching errChild.
func parseReply(line, word string, n int) ([]int64, error) {
	if rest, ok := strings.CutPrefix(line, msgError+" "); ok {
		return nil, fmt.Errorf("%w: %s", errChild, rest)
	}
	f := strings.Fields(line)
	if len(f) != n+1 || f[0] != word {
		return nil, fmt.Errorf("pps: reply %q: want %q and %d numbers", line, word, n)
	}
	vals := make([]int64, n)
	for i := range vals {
		v, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("pps: reply %q: field %d is not a count", line, i+1)
		}
		vals[i] = v
	}
	return vals, nil
}

// formatRun writes a sender's run command.
func formatRun(rate float64, d time.Duration) string {
	return fmt.Sprintf("%s %s %d", msgRun, strconv.FormatFloat(rate, 'f', -1, 64), d.Nanoseconds())
}

// parseRun reads a sender's run command.
func parseRun(line string) (rate float64, d time.Duration, err error) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != msgRun {
		return 0, 0, fmt.Errorf("pps: command %q: want %q <rate> <duration-ns>", line, msgRun)
	}
	rate, err = strconv.ParseFloat(f[1], 64)
	if err != nil || !(rate >= 0) || rate > maxRate {
		return 0, 0, fmt.Errorf("pps: command %q: bad rate", line)
	}
	ns, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || ns <= 0 || time.Duration(ns) > time.Hour {
		return 0, 0, fmt.Errorf("pps: command %q: bad duration", line)
	}
	return rate, time.Duration(ns), nil
}

// userHZ is the unit of /proc/stat times (USER_HZ, 100 on every Linux architecture Go runs on).
const userHZ = 100

// parseCPUBusy returns the busy time (user, nice, system, irq and softirq) of cpu from the
// contents of /proc/stat.
func parseCPUBusy(stat string, cpu int) (time.Duration, error) {
	name := "cpu" + strconv.Itoa(cpu)
	for line := range strings.SplitSeq(stat, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || f[0] != name {
			continue
		}
		var ticks int64
		for _, i := range []int{1, 2, 3, 6, 7} { // user nice system [idle iowait] irq softirq
			v, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil || v < 0 {
				return 0, fmt.Errorf("pps: /proc/stat %s: field %d %q is not a count", name, i, f[i])
			}
			ticks += v
		}
		return time.Duration(ticks) * (time.Second / userHZ), nil
	}
	return 0, fmt.Errorf("pps: /proc/stat has no line for %s", name)
}

// parseSchedstat returns the run time from the contents of /proc/<pid>/schedstat.
func parseSchedstat(s string) (time.Duration, error) {
	f := strings.Fields(s)
	if len(f) < 1 {
		return 0, fmt.Errorf("pps: schedstat %q: empty", s)
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || ns < 0 {
		return 0, fmt.Errorf("pps: schedstat %q: bad run time", s)
	}
	return time.Duration(ns), nil
}

// napiPrefix is the name prefix of the kernel threads of dev's threaded NAPI instances
// ("napi/<dev>-<id>", cut to the kernel's 15-byte task names).
func napiPrefix(dev string) string {
	p := "napi/" + dev + "-"
	if len(p) > 15 {
		p = p[:15]
	}
	return p
}

// cpuMask writes the hexadecimal CPU mask sysfs takes (rps_cpus) for one CPU.
func cpuMask(cpu int) string {
	// Groups of 32 bits separated by commas, most significant first.
	groups := make([]string, cpu/32+1)
	for i := range groups {
		groups[i] = "00000000"
	}
	groups[len(groups)-1-cpu/32] = fmt.Sprintf("%08x", uint32(1)<<(cpu%32))
	return strings.Join(groups, ",")
}

// parseSoftnetDrops returns the backlog drop count (second column) of cpu from the contents of
// /proc/net/softnet_stat, whose lines are the online CPUs in order (the 13th column, when
// present, names the CPU).
func parseSoftnetDrops(stat string, cpu int) (uint64, bool) {
	row := 0
	for line := range strings.SplitSeq(stat, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		id := row
		if len(f) >= 13 {
			v, err := strconv.ParseUint(f[12], 16, 32)
			if err != nil {
				return 0, false
			}
			id = int(v)
		}
		row++
		if id != cpu {
			continue
		}
		v, err := strconv.ParseUint(f[1], 16, 64)
		return v, err == nil
	}
	return 0, false
}

// formatDiag writes the counters that changed between two samples, sorted by name, as
// "name=delta" pairs ("no drops counted" when none changed).
func formatDiag(before, after map[string]uint64) string {
	var parts []string
	for k, v := range after {
		if d := v - before[k]; v > before[k] {
			parts = append(parts, fmt.Sprintf("%s=%d", k, d))
		}
	}
	if len(parts) == 0 {
		return "no drops counted"
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// staleNamespaces returns the namespaces in `ip netns list` output that an earlier run of this
// program created (nqpps-tx-<pid>, nqpps-rx-<pid>) and whose process is gone: alive(pid)
// reports whether that run is still going.
func staleNamespaces(list string, alive func(pid int) bool) []string {
	var out []string
	for line := range strings.SplitSeq(list, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		rest, ok := strings.CutPrefix(f[0], nsPrefix)
		if !ok {
			continue
		}
		_, id, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(id)
		if !ok || err != nil || pid <= 0 || alive(pid) {
			continue
		}
		out = append(out, f[0])
	}
	return out
}
