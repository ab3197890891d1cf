//go:build !linux

package udp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/naquid/naquid/transport"
)

// sysState is empty: no Conn is opened on this platform.
type sysState struct{}

// listen fails: this backend parses Linux control messages and uses Linux socket options.
func listen(_ context.Context, local netip.AddrPort, _ Config) (*Conn, error) {
	return nil, fmt.Errorf("udp: listen %s: %w", local, errors.ErrUnsupported)
}

// ReadBatch fails on this platform, where no Conn can be opened.
func (c *Conn) ReadBatch([]transport.Message) (int, error) {
	return 0, fmt.Errorf("udp: read: %w", errors.ErrUnsupported)
}

// WriteBatch fails on this platform, where no Conn can be opened.
func (c *Conn) WriteBatch([]transport.Message) (int, error) {
	return 0, fmt.Errorf("udp: write: %w", errors.ErrUnsupported)
}
