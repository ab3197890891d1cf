package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/naquid/naquid/transport"
)

// processCPU returns the user and system CPU time of this process (all threads).
func processCPU() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("pps: getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// coreBusy returns the busy time of cpu since boot from /proc/stat.
func coreBusy(cpu int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("pps: %w", err)
	}
	return parseCPUBusy(string(b), cpu)
}

// threadCPU returns the summed run time of the given threads (from /proc/<pid>/schedstat).
func threadCPU(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
		if err != nil {
			return 0, fmt.Errorf("pps: napi thread %d: %w", pid, err)
		}
		d, err := parseSchedstat(string(b))
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}

// napiThreadWait bounds the wait for the NAPI kernel threads to appear after threaded mode is
// turned on.
const napiThreadWait = 2 * time.Second

// pinNAPI turns threaded NAPI on for dev (in this process's network namespace: the caller runs
// under `ip netns exec`, which mounts that namespace's /sys) and pins its NAPI kernel threads to
// cpu, so that the receive work veth does in NAPI (for a device with an XDP program or with GRO
// on) runs on the receiver's core instead of the sender's. It returns the threads' ids. veth
// refuses threaded mode (EIO) while it has no NAPI.
func pinNAPI(dev string, cpu int) ([]int, error) {
	if err := os.WriteFile(filepath.Join("/sys/class/net", dev, "threaded"), []byte("1"), 0); err != nil {
		return nil, fmt.Errorf("pps: threaded NAPI on %s: %w", dev, err)
	}
	prefix := napiPrefix(dev)
	deadline := time.Now().Add(napiThreadWait)
	for {
		pids, err := findThreads(prefix)
		if err != nil {
			return nil, err
		}
		if len(pids) > 0 {
			var set unix.CPUSet
			set.Set(cpu)
			for _, pid := range pids {
				if err := unix.SchedSetaffinity(pid, &set); err != nil {
					return nil, fmt.Errorf("pps: pin napi thread %d of %s to cpu %d: %w", pid, dev, cpu, err)
				}
			}
			return pids, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("pps: no %q kernel thread after %v", prefix, napiThreadWait)
		}
		time.Sleep(5 * time.Millisecond) // polling the process table: there is nothing to wait on
	}
}

// findThreads returns the ids of the processes whose name starts with prefix.
func findThreads(prefix string) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("pps: %w", err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			continue // exited meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("pps: %w", err)
		}
		if strings.HasPrefix(strings.TrimSpace(string(comm)), prefix) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// diagCounters samples the counters that tell where datagrams were lost: the backend's own
// drop counts (when it has Stats), the device's drop counters, and the kernel's per-CPU
// backlog drops on cpu. Missing sources are left out.
func diagCounters(c any, dev string, cpu int) map[string]uint64 {
	m := make(map[string]uint64)
	if s, ok := c.(transport.Stats); ok {
		st := s.Stats()
		m["backend-drops"] = st.Drops
		m["backend-kernel-drops"] = st.KernelDrops
		m["backend-ring-full"] = st.RingFull
		m["backend-ring-empty"] = st.RingEmpty
	}
	for _, f := range []string{"rx_dropped", "tx_dropped"} {
		if b, err := os.ReadFile(filepath.Join("/sys/class/net", dev, "statistics", f)); err == nil {
			if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
				m[dev+"-"+f] = v
			}
		}
	}
	if b, err := os.ReadFile("/proc/net/softnet_stat"); err == nil {
		if v, ok := parseSoftnetDrops(string(b), cpu); ok {
			m["backlog-drops"] = v
		}
	}
	return m
}
