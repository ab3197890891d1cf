//go:build !linux

package xdpnet

import (
	"fmt"
	"runtime"
)

// Available reports whether this process can run nq over AF_XDP: never on this system (AF_XDP
// and network namespaces exist only on Linux).
func Available() error {
	return fmt.Errorf("%w: AF_XDP exists only on Linux, not on %s", ErrUnavailable, runtime.GOOS)
}
