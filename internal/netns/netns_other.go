//go:build !linux

package netns

import (
	"fmt"
	"runtime"
	"testing"
)

// Available reports whether this process can create network namespaces: never on this system.
func Available() error {
	return fmt.Errorf("%w: %s has no Linux network namespaces", ErrUnsupported, runtime.GOOS)
}

// NewPair skips the test: network namespaces exist only on Linux.
func NewPair(t testing.TB, cfg Config) *Pair {
	t.Helper()
	t.Skip(Available())
	return nil
}

// Do fails: network namespaces exist only on Linux.
func (n *NS) Do(f func() error) error { return Available() }

// Run fails: network namespaces exist only on Linux.
func (n *NS) Run(name string, args ...string) (string, error) { return "", Available() }
