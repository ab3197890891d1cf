//go:build !linux

package quic

import (
	"errors"
	"fmt"
	"net"
	"runtime"

	"github.com/naquid/naquid/transport"
)

// newAdapter reports that only kernel UDP backends can be adapted on this platform: the adapter
// speaks Linux control messages.
func newAdapter(transport.Conn) (net.PacketConn, error) {
	return nil, fmt.Errorf("only transport.KernelUDP backends on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
