package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"slices"
	"syscall"
	"time"
)

// result is what one workload measured. On failure it holds what completed before.
type result struct {
	name      string
	elapsed   time.Duration
	cpu       time.Duration   // process CPU time (user + system) while measuring
	kernelCPU time.Duration   // the system part of cpu
	latencies []time.Duration // one per completed call, in no particular order
	frames    float64         // RPC frames per QUIC packet sent by the clients (nq only)
	syscalls  float64         // socket system calls per datagram, both ends (backends that count)
	packets   float64         // QUIC packets the clients sent and received, per completed call
}

// start begins measuring (and profiling, when asked) and returns the function that ends it.
// The nq workload's profile goes to cfg.CPUProfile, the raw quic-go peer's to the same name
// with ".quic-go" appended.
func (r *result) start(cfg config) (stop func(), err error) {
	var prof *os.File
	if cfg.CPUProfile != "" {
		path := cfg.CPUProfile
		if r.name != "nq" {
			path += ".quic-go"
		}
		if prof, err = os.Create(path); err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(prof); err != nil {
			prof.Close()
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
	}
	cpu0, sys0 := cpuTime()
	t0 := time.Now()
	return func() {
		cpu1, sys1 := cpuTime()
		r.elapsed, r.cpu, r.kernelCPU = time.Since(t0), cpu1-cpu0, sys1-sys0
		if prof != nil {
			pprof.StopCPUProfile()
			prof.Close()
		}
	}, nil
}

func (r *result) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(len(r.latencies)) / r.elapsed.Seconds()
}

// report writes r as a few labelled lines.
func (r *result) report(out io.Writer, cfg config) {
	done := len(r.latencies)
	fmt.Fprintf(out, "%s\n", r.name)
	fmt.Fprintf(out, "  calls      %d of %d in %v (handshakes excluded)\n", done, cfg.Conns*cfg.Calls, r.elapsed.Round(time.Millisecond))
	if done == 0 || r.elapsed <= 0 {
		return
	}
	slices.Sort(r.latencies)
	fmt.Fprintf(out, "  req/s      %.0f\n", r.rate())
	fmt.Fprintf(out, "  latency    p50 %v  p99 %v  p999 %v  max %v\n", percentile(r.latencies, 50), percentile(r.latencies, 99),
		percentile(r.latencies, 99.9), r.latencies[done-1].Round(time.Microsecond))
	fmt.Fprintf(out, "  cpu        %.2f us per call (server and clients together), %.0f%% of it in the kernel\n",
		float64(r.cpu.Nanoseconds())/1e3/float64(done), 100*ratioOf(r.kernelCPU, r.cpu))
	if r.frames > 0 {
		fmt.Fprintf(out, "  batching   %.1f RPC frames per QUIC packet (client side)\n", r.frames)
	}
	if r.packets > 0 {
		fmt.Fprintf(out, "  packets    %.3f per call (client side, sent + received)\n", r.packets)
	}
	if r.syscalls > 0 {
		fmt.Fprintf(out, "  syscalls   %.3f per datagram (both sockets)\n", r.syscalls)
	}
}

// percentile returns the p-th percentile (nearest rank) of sorted, which must not be empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))].Round(time.Microsecond)
}

// ratioOf returns part/whole, 0 when whole is not positive.
func ratioOf(part, whole time.Duration) float64 {
	if whole <= 0 {
		return 0
	}
	return float64(part) / float64(whole)
}

// cpuTime returns the CPU time the process has used (user and system) and the system part of
// it: the kernel's share is what any packet I/O backend could at most save.
func cpuTime() (total, system time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), time.Duration(ru.Stime.Nano())
}
