package measure

import (
	"errors"
	"runtime"
	"runtime/debug"
	"time"
)

// ErrUnsupported is returned where the operating system lacks what a measurement needs.
var ErrUnsupported = errors.New("measure: not supported on this operating system")

// Usage is what the operating system says the process has used.
type Usage struct {
	// CPU is user plus system CPU time of the whole process since it started.
	CPU time.Duration
	// MaxRSSKiB is the peak resident set size of the process so far, in KiB.
	MaxRSSKiB int64
}

// GoMemory returns the bytes of heap and goroutine stacks in use after two garbage collections
// and a release of free memory to the OS: the live memory of the program, without garbage.
func GoMemory() uint64 {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}
