package xdpnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
)

// harness lets netns.NewPair, written for tests (it takes a testing.TB), build nqbench's network
// outside a test: a failure or a skip is recorded as an error and ends the goroutine NewPair
// runs on (runtime.Goexit, as the testing package does), and the cleanups NewPair registers
// (deleting the namespaces) are kept for Close.
//
// testing.TB has an unexported method, so the interface is embedded; it stays nil and every
// exported method is implemented here, so nothing ever calls through it.
type harness struct {
	testing.TB

	mu       sync.Mutex
	cleanups []func()
	errs     []error // from Error and Errorf (cleanups that failed) and the failure that ended NewPair
	failed   bool
	skipped  bool
}

func (h *harness) record(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.errs = append(h.errs, err)
	h.failed = true
}

// failure returns what made NewPair stop, or nil.
func (h *harness) failure() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return errors.Join(h.errs...)
}

// runCleanups runs the registered cleanups, last first, once, and returns the errors they
// reported.
func (h *harness) runCleanups() error {
	h.mu.Lock()
	cleanups := h.cleanups
	h.cleanups = nil
	h.errs = nil
	h.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	return h.failure()
}

func (h *harness) Cleanup(f func())                  { h.mu.Lock(); h.cleanups = append(h.cleanups, f); h.mu.Unlock() }
func (h *harness) Error(args ...any)                 { h.record(errors.New(fmt.Sprint(args...))) }
func (h *harness) Errorf(format string, args ...any) { h.record(fmt.Errorf(format, args...)) }
func (h *harness) Fail()                             { h.record(errors.New("failed")) }
func (h *harness) FailNow()                          { h.Fail(); runtime.Goexit() }
func (h *harness) Fatal(args ...any)                 { h.Error(args...); runtime.Goexit() }
func (h *harness) Fatalf(format string, args ...any) { h.Errorf(format, args...); runtime.Goexit() }
func (h *harness) Helper()                           {}
func (h *harness) Log(args ...any)                   {}
func (h *harness) Logf(format string, args ...any)   {}
func (h *harness) Name() string                      { return "nqbench" }
func (h *harness) Output() io.Writer                 { return io.Discard }
func (h *harness) Context() context.Context          { return context.Background() }
func (h *harness) Attr(key, value string)            {}

func (h *harness) Failed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failed
}

func (h *harness) Skip(args ...any) { h.skip(fmt.Sprint(args...)) }
func (h *harness) SkipNow()         { h.skip("skipped") }
func (h *harness) Skipf(format string, args ...any) {
	h.skip(fmt.Sprintf(format, args...))
}

func (h *harness) skip(msg string) {
	h.mu.Lock()
	h.skipped = true
	h.mu.Unlock()
	h.record(fmt.Errorf("%w: %s", ErrUnavailable, msg))
	runtime.Goexit()
}

func (h *harness) Skipped() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.skipped
}

// The rest of testing.TB is for tests only: NewPair does not use it. Each fails NewPair rather
// than pretend.
func (h *harness) Setenv(key, value string) { h.Fatalf("xdpnet: Setenv is not available here") }
func (h *harness) Chdir(dir string)         { h.Fatalf("xdpnet: Chdir is not available here") }
func (h *harness) TempDir() string          { h.Fatalf("xdpnet: TempDir is not available here"); return "" }
func (h *harness) ArtifactDir() string {
	h.Fatalf("xdpnet: ArtifactDir is not available here")
	return ""
}
