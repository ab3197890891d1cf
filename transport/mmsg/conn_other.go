//go:build !linux

package mmsg

import (
	"context"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/naquid/naquid/transport"
)

// Conn is the recvmmsg/sendmmsg transport; on this system it cannot be opened.
type Conn struct{}

// Listen fails with ErrUnsupported: recvmmsg/sendmmsg are Linux system calls.
func Listen(ctx context.Context, local netip.AddrPort, cfg Config) (*Conn, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("mmsg: listen %s: %w", local, ErrUnsupported)
}

// ReadBatch fails with ErrUnsupported.
func (c *Conn) ReadBatch(msgs []transport.Message) (int, error) { return 0, ErrUnsupported }

// WriteBatch fails with ErrUnsupported.
func (c *Conn) WriteBatch(msgs []transport.Message) (int, error) { return 0, ErrUnsupported }

// LocalAddr returns the zero AddrPort.
func (c *Conn) LocalAddr() netip.AddrPort { return netip.AddrPort{} }

// Capabilities returns the zero Capabilities.
func (c *Conn) Capabilities() transport.Capabilities { return transport.Capabilities{} }

// SetReadDeadline fails with ErrUnsupported.
func (c *Conn) SetReadDeadline(t time.Time) error { return ErrUnsupported }

// Close fails with ErrUnsupported.
func (c *Conn) Close() error { return ErrUnsupported }

// SyscallConn fails with ErrUnsupported.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return nil, ErrUnsupported }

// Stats returns zero counters.
func (c *Conn) Stats() transport.Counters { return transport.Counters{} }

// GSODisabled returns nil.
func (c *Conn) GSODisabled() error { return nil }
