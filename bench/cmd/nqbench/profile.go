package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
)

// profiler writes the pprof profiles of one run into -profile-dir: CPU for the whole run, and
// heap, mutex contention and blocking at its end, as <workload>-<stack>.<kind>.pprof. The heap
// profile is written after the workload closed its connections, so its allocation samples
// (alloc_space) cover the run while its live ones (inuse_space) show only what outlived it.
type profiler struct {
	dir, base string
	cpu       *os.File
}

// startProfiles starts profiling r when dir is set; stop writes the profiles.
func startProfiles(dir string, r runSpec) (*profiler, error) {
	if dir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("profiles: %w", err)
	}
	name := r.workload + "-" + strings.ReplaceAll(r.stack, "/", "_")
	if r.transport != "" {
		name += "_" + r.transport
	}
	p := &profiler{dir: dir, base: name}
	runtime.SetMutexProfileFraction(100)
	runtime.SetBlockProfileRate(100_000) // one blocking event sampled per 100 µs blocked
	f, err := os.Create(p.path("cpu"))
	if err != nil {
		return nil, fmt.Errorf("profiles: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("profiles: %w", err)
	}
	p.cpu = f
	return p, nil
}

func (p *profiler) path(kind string) string {
	return filepath.Join(p.dir, p.base+"."+kind+".pprof")
}

// stop ends the CPU profile and writes the heap, mutex and block profiles.
func (p *profiler) stop() error {
	if p == nil {
		return nil
	}
	pprof.StopCPUProfile()
	if err := p.cpu.Close(); err != nil {
		return fmt.Errorf("profiles: %w", err)
	}
	runtime.GC() // the heap profile shows live objects as of the last GC
	for _, kind := range []string{"heap", "mutex", "block"} {
		f, err := os.Create(p.path(kind))
		if err != nil {
			return fmt.Errorf("profiles: %w", err)
		}
		err = pprof.Lookup(kind).WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("profiles: %s: %w", kind, err)
		}
	}
	runtime.SetMutexProfileFraction(0)
	runtime.SetBlockProfileRate(0)
	return nil
}
