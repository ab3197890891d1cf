package nq_test

// Shared pieces of the reliability suite (docs/RELIABILITY.md): the soak switch, checked
// payloads, latency percentiles and resource gauges.

import (
	"bytes"
	"encoding/binary"
	"flag"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"
)

// soakFlag turns the reliability suite's reduced form (the default, for `go test`) into its full
// form: more calls, cycles, seeds and flood packets. NQ_SOAK=1 does the same.
var soakFlag = flag.Bool("nq.soak", false, "run the reliability suite in full (soak) form; NQ_SOAK=1 does the same")

// soak reports whether the full form runs.
func soak() bool { return *soakFlag || os.Getenv("NQ_SOAK") == "1" }

// pick returns reduced in the reduced form and full in soak mode.
func pick[T any](reduced, full T) T {
	if soak() {
		return full
	}
	return reduced
}

// checkedPayload returns the payload of call idx: the index, a tag derived from it and the salt,
// then a filler pattern, 16..215 bytes in all. validPayload recognises exactly these bytes, so
// an application that receives a corrupted payload notices.
func checkedPayload(idx, salt uint64) []byte {
	b := make([]byte, 16, 16+idx%200)
	binary.BigEndian.PutUint64(b, idx)
	binary.BigEndian.PutUint64(b[8:], payloadTag(idx, salt))
	for i := range int(idx % 200) {
		b = append(b, byte(idx)+byte(i)*31)
	}
	return b
}

func payloadTag(idx, salt uint64) uint64 { return (idx+1)*0x9E3779B97F4A7C15 ^ salt }

// validPayload returns the index of a payload made by checkedPayload with salt, or false.
func validPayload(b []byte, salt uint64) (uint64, bool) {
	if len(b) < 16 {
		return 0, false
	}
	idx := binary.BigEndian.Uint64(b)
	if idx > 1<<40 {
		return 0, false
	}
	return idx, bytes.Equal(b, checkedPayload(idx, salt))
}

// percentile returns the p-th percentile (0 < p <= 100) of ds by the nearest-rank method; ds is
// sorted in place. It returns 0 for no samples.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	rank := int(float64(len(ds))*p/100+0.999999) - 1
	return ds[min(max(rank, 0), len(ds)-1)]
}

// openFDs counts the process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(ents)
}

// heapInUse returns HeapInuse after two collections (the second frees what finalizers of the
// first released).
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// eventually polls cond every 10 ms until it holds or d has passed, and reports whether it held.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const mib = 1 << 20
