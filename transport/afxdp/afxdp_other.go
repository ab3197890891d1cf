//go:build !linux

package afxdp

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"syscall"
	"time"

	"github.com/naquid/naquid/bpf"
	"github.com/naquid/naquid/transport"
)

// Conn is an AF_XDP transport.Conn. AF_XDP exists only on Linux: elsewhere New always fails
// with ErrUnsupported, so no Conn is ever returned and its methods fail.
type Conn struct{}

// New validates cfg and fails with ErrUnsupported: AF_XDP exists only on Linux.
func New(ctx context.Context, local netip.AddrPort, cfg Config) (*Conn, error) {
	if _, err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("afxdp: %s on %s: %w", cfg.Interface, runtime.GOOS, ErrUnsupported)
}

// ReadBatch fails with ErrUnsupported.
func (c *Conn) ReadBatch(msgs []transport.Message) (int, error) { return 0, ErrUnsupported }

// WriteBatch fails with ErrUnsupported.
func (c *Conn) WriteBatch(msgs []transport.Message) (int, error) { return 0, ErrUnsupported }

// LocalAddr returns the zero address.
func (c *Conn) LocalAddr() netip.AddrPort { return netip.AddrPort{} }

// Capabilities returns the zero value.
func (c *Conn) Capabilities() transport.Capabilities { return transport.Capabilities{} }

// Info returns the zero value.
func (c *Conn) Info() Info { return Info{} }

// SyscallConn fails with ErrUnsupported.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return nil, ErrUnsupported }

// SetReadDeadline fails with ErrUnsupported.
func (c *Conn) SetReadDeadline(t time.Time) error { return ErrUnsupported }

// Close does nothing.
func (c *Conn) Close() error { return nil }

// Stats returns zero counts.
func (c *Conn) Stats() transport.Counters { return transport.Counters{} }

// KernelStats fails with ErrUnsupported.
func (c *Conn) KernelStats() (KernelStats, error) { return KernelStats{}, ErrUnsupported }

// ProgramCounters fails with ErrUnsupported.
func (c *Conn) ProgramCounters() (bpf.Counters, error) { return bpf.Counters{}, ErrUnsupported }
